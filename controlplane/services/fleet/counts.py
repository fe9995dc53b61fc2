"""Fleet counts for the metrics collector: GPUs by model and state, nodes by status, workloads by
state and class (issue 13 moves this onto a snapshot the control plane keeps)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.gpu import GpuState
from controlplane.services.fleet.gpus import gpu_states
from controlplane.store.models import Node, Workload


@dataclass(frozen=True)
class FleetCounts:
    gpus: Counter[tuple[str, GpuState]]
    nodes: Counter[str]
    workloads: Counter[tuple[str, str]]


def fleet_counts(session: Session) -> FleetCounts:
    gpus = Counter((row.gpu.model, row.state) for row in gpu_states(session))
    nodes: Counter[str] = Counter(dict(session.execute(select(Node.status, func.count()).group_by(Node.status)).all()))
    workloads: Counter[tuple[str, str]] = Counter(
        {
            (state, priority): count
            for state, priority, count in session.execute(
                select(Workload.state, Workload.priority, func.count()).group_by(Workload.state, Workload.priority)
            )
        }
    )
    return FleetCounts(gpus, nodes, workloads)
