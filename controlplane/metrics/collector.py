"""Fleet state for Prometheus, computed at scrape time from a service view (no global gauges).

Labels are bounded: GPU states, node statuses, workload states and priority classes are closed
sets; there is no per-tenant or per-workload label here.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controlplane.domain.enums import NodeStatus, PriorityClass, WorkloadState
from controlplane.domain.gpu import GpuState
from controlplane.runtime import Runtime
from controlplane.services.fleet.counts import fleet_counts


class FleetCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        with self.runtime.read() as session:
            counts = fleet_counts(session)
        g = GaugeMetricFamily("switchyard_gpus", "GPUs by model and state", labels=["model", "state"])
        for model in sorted({m for m, _ in counts.gpus}):
            for state in GpuState:
                g.add_metric([model, state.value], counts.gpus.get((model, state), 0))
        yield g
        n = GaugeMetricFamily("switchyard_nodes", "Nodes by status", labels=["status"])
        for status in NodeStatus:
            n.add_metric([status.value], counts.nodes.get(status.value, 0))
        yield n
        w = GaugeMetricFamily("switchyard_workloads", "Workloads by state and priority", labels=["state", "priority"])
        for wstate in WorkloadState:
            for priority in PriorityClass:
                w.add_metric([wstate.value, priority.value], counts.workloads.get((wstate.value, priority.value), 0))
        yield w
