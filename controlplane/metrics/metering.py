"""Metered usage for Prometheus: per tenant, GPU-seconds and energy (IT and facility joules) as
counters, computed at scrape time from the ledger's hourly sums (``metering.views.tenant_totals``:
one statement over tenants x hours, never the ledger's rows). The tenant label is bounded by the
site's contracts (tens), never a workload.

Not here yet (issue 11): revenue counters (they wait for priced ledger rows: a counter computed
at today's price would not be monotonic when a price changes), the site's power split.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.runtime import Runtime
from controlplane.services.metering.views import tenant_totals

_US = Decimal(1_000_000)
_MJ = Decimal(1000)


class MeteringCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        with self.runtime.read() as session:
            totals = tenant_totals(session)
        gpu = CounterMetricFamily(
            "switchyard_metered_gpu_seconds", "GPU time held, from the usage ledger", labels=["tenant"]
        )
        energy = CounterMetricFamily(
            "switchyard_metered_energy_joules",
            "Energy metered from GPU counters, IT and facility (x PUE), from the usage ledger",
            labels=["tenant", "basis"],
        )
        for t in totals:
            gpu.add_metric([t.tenant_id], float(Decimal(t.gpu_us) / _US))
            energy.add_metric([t.tenant_id, "it"], float(Decimal(t.it_mj) / _MJ))
            energy.add_metric([t.tenant_id, "facility"], float(Decimal(t.facility_mj) / _MJ))
        yield gpu
        yield energy
