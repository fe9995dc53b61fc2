"""A naive first-fit scheduler, the yardstick for the benchmark: scan nodes in snapshot order and
take the first that fit. It knows NVLink domains only for ``required`` (the first domain with
enough free GPUs), keeps no best fit, no power, quota or preemption, and explains nothing beyond
"does not fit". It keeps running free counts (a scan, not an index) so it is naive, not absurd.
"""

from __future__ import annotations

from collections.abc import Sequence

from controlplane.domain.enums import NvlinkPolicy
from controlplane.domain.reasons import PendingCode
from controlplane.scheduling.filters import exclusion
from controlplane.scheduling.queue import queue_order
from controlplane.scheduling.snapshot import FleetSnapshot, Placement, RankPlacement, Unplaced, WorkloadRequest


class FirstFit:
    """The baseline's state for one pass; ``decide`` one request at a time (the bench times it)."""

    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.nodes = snapshot.nodes
        self.free: list[list[str]] = []
        self.model: list[str] = []
        self.dom_nodes: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            gpus = [g for g in sorted(node.gpus, key=lambda g: g.index) if not exclusion(node, g)]
            self.free.append([g.gpu_id for g in gpus])
            self.model.append(node.gpus[0].model if node.gpus else "")
            if node.domain is not None:
                self.dom_nodes.setdefault(node.domain, []).append(i)

    def decide(self, req: WorkloadRequest) -> Placement | Unplaced:
        free, model, c = self.free, self.model, req.gpu_count
        ranks: list[tuple[int, int]] | None = None
        if c <= 4 or req.nvlink is not NvlinkPolicy.REQUIRED:
            for i, gl in enumerate(free):
                if len(gl) >= c and model[i] == req.gpu_model:
                    ranks = [(i, c)]
                    break
        if ranks is None and req.nvlink is NvlinkPolicy.REQUIRED and c > 1:
            for members in self.dom_nodes.values():
                if sum(len(free[i]) for i in members if model[i] == req.gpu_model) >= c:
                    ranks, need = [], c
                    for i in members:
                        if need and free[i] and model[i] == req.gpu_model:
                            x = min(need, len(free[i]))
                            ranks.append((i, x))
                            need -= x
                    break
        elif ranks is None:
            ranks, need = [], c
            for i, gl in enumerate(free):
                if gl and model[i] == req.gpu_model:
                    x = min(need, len(gl))
                    ranks.append((i, x))
                    need -= x
                    if not need:
                        break
            if need:
                ranks = None
        if ranks is None:
            return Unplaced(req.workload_id, f"no first fit for {c} {req.gpu_model} GPUs", PendingCode.GPUS)
        placed = []
        for i, x in ranks:
            placed.append(RankPlacement(self.nodes[i].node_id, tuple(free[i][:x])))
            free[i] = free[i][x:]
        return Placement(req.workload_id, tuple(placed))


def first_fit(snapshot: FleetSnapshot, queue: Sequence[WorkloadRequest]) -> list[Placement | Unplaced]:
    state = FirstFit(snapshot)
    return [state.decide(req) for req in queue_order(queue)]
