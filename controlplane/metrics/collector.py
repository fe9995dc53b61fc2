"""Fleet state for Prometheus, computed at scrape time from the database (no global gauges).

Labels are bounded: GPU states, node statuses, workload states and priority classes are closed
sets; there is no per-tenant or per-workload label here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from controlplane.domain.enums import NodeStatus, PriorityClass, WorkloadState
from controlplane.runtime import Runtime
from controlplane.services.fleet import gpu_states
from controlplane.store.models import Node, Workload

GPU_STATES = ("free", "allocated", "releasing", "cordoned", "faulty", "unreachable", "lost")


class FleetCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Metric]:
        with self.runtime.read() as session:
            gpus = Counter((st.gpu.model, st.state) for st in gpu_states(session))
            nodes = Counter(dict(session.execute(select(Node.status, func.count()).group_by(Node.status)).all()))
            workloads = Counter(
                {
                    (state, priority): count
                    for state, priority, count in session.execute(
                        select(Workload.state, Workload.priority, func.count()).group_by(
                            Workload.state, Workload.priority
                        )
                    ).all()
                }
            )
        g = GaugeMetricFamily("switchyard_gpus", "GPUs by model and state", labels=["model", "state"])
        for model in sorted({m for m, _ in gpus}):
            for state in GPU_STATES:
                g.add_metric([model, state], gpus.get((model, state), 0))
        yield g
        n = GaugeMetricFamily("switchyard_nodes", "Nodes by status", labels=["status"])
        for status in NodeStatus:
            n.add_metric([status.value], nodes.get(status.value, 0))
        yield n
        w = GaugeMetricFamily("switchyard_workloads", "Workloads by state and priority", labels=["state", "priority"])
        for state in WorkloadState:
            for priority in PriorityClass:
                w.add_metric([state.value, priority.value], workloads.get((state.value, priority.value), 0))
        yield w
