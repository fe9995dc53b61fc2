"""The immutable fleet snapshot and queue the placement core works on: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.domain.enums import NvlinkPolicy, PriorityClass


@dataclass(frozen=True, slots=True)
class GpuSlot:
    gpu_id: str
    index: int
    model: str
    healthy: bool
    allocated: bool


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    # "<clusterUuid>.<cliqueId>" when the node's fabric is complete; None: no NVLink domain.
    domain: str | None
    # Why the node admits no new work ("cordoned", "draining", "unreachable"), or "" if it does.
    unschedulable: str
    gpus: tuple[GpuSlot, ...]
    # A GPU of this node's NVLink domain asked to drain its NVLink peers (recovery action 3/5):
    # no new multi-GPU NVLink work here until it clears.
    nvlink_draining: bool = False


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    nodes: tuple[NodeView, ...]


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    workload_id: str
    gpu_count: int
    gpu_model: str
    nvlink: NvlinkPolicy
    priority: PriorityClass
    submitted_at: float


@dataclass(frozen=True, slots=True)
class RankPlacement:
    node_id: str
    gpu_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    workload_id: str
    # One entry per node; the list index is the rank.
    ranks: tuple[RankPlacement, ...]

    @property
    def gpu_count(self) -> int:
        return sum(len(r.gpu_ids) for r in self.ranks)


@dataclass(frozen=True, slots=True)
class Unplaced:
    workload_id: str
    reason: str


Decision = Placement | Unplaced
