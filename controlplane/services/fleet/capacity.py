"""What the fleet offers: GPUs per model, free now, and the largest blocks a gang can get."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from controlplane.domain.gpu import GpuState
from controlplane.services.admin.sites import site_spec
from controlplane.services.fleet.gpus import gpu_states
from controlplane.store.models import Gpu, Site


def capacity_by_model(session: Session) -> dict[str, int]:
    """GPUs a workload may ask for: the larger of what sites declare and what agents registered."""
    declared: Counter[str] = Counter()
    for site in session.scalars(select(Site)).all():
        racks = site_spec(site).racks
        declared[racks.gpu_model] += racks.gpus
    registered = Counter(
        dict(session.execute(select(Gpu.model, func.count()).where(Gpu.present).group_by(Gpu.model)).all())
    )
    return {model: max(declared[model], registered[model]) for model in set(declared) | set(registered)}


@dataclass(frozen=True)
class Offering:
    gpu_model: str
    total: int
    available: int
    # Largest gang that fits right now on one node and inside one NVLink domain.
    largest_node_block: int
    largest_nvlink_block: int
    memory_mib: int


def offerings(session: Session) -> list[Offering]:
    capacity = capacity_by_model(session)
    free_by_node: dict[str, Counter[str]] = defaultdict(Counter)
    free_by_domain: dict[str, Counter[str]] = defaultdict(Counter)
    memory: dict[str, int] = {}
    for st in gpu_states(session):
        memory[st.gpu.model] = st.gpu.memory_total_mib
        if st.state is GpuState.FREE:
            free_by_node[st.gpu.model][st.node.id] += 1
            if st.node.nvlink_domain:
                free_by_domain[st.gpu.model][st.node.nvlink_domain] += 1
    return [
        Offering(
            gpu_model=model,
            total=total,
            available=sum(free_by_node[model].values()),
            largest_node_block=max(free_by_node[model].values(), default=0),
            largest_nvlink_block=max(free_by_domain[model].values(), default=0),
            memory_mib=memory.get(model, 0),
        )
        for model, total in sorted(capacity.items())
    ]
