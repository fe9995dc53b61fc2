"""Placement core: snapshot + queue -> decisions. Pure; the scheduler process does the I/O.

Shaped like the Kubernetes scheduling framework, reduced to what the first cut needs: the queue
is sorted by priority class then age; filters drop GPUs and count why (model, node state,
health, allocation); the fit step keeps a gang whole (all GPUs or none), inside one NVLink
domain when the workload requires it; scoring is best fit, so whole nodes and whole domains
stay free for large gangs. Reserve happens in a working copy, so later workloads in the same
pass see earlier placements.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from controlplane.domain.enums import PRIORITY_RANK, NvlinkPolicy
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    NodeView,
    Placement,
    RankPlacement,
    Unplaced,
    WorkloadRequest,
)


def queue_order(queue: Iterable[WorkloadRequest]) -> list[WorkloadRequest]:
    return sorted(queue, key=lambda w: (PRIORITY_RANK[w.priority], w.submitted_at, w.workload_id))


class _Free:
    """Free, healthy GPUs per schedulable node, with the reasons the others are excluded."""

    def __init__(self, snapshot: FleetSnapshot) -> None:
        self.nodes: dict[str, NodeView] = {n.node_id: n for n in snapshot.nodes}
        self.free: dict[str, list[str]] = {}
        self.model_of: dict[str, str] = {}
        self.excluded_by_model: dict[str, Counter[str]] = defaultdict(Counter)
        self.total_by_model: Counter[str] = Counter()
        for node in snapshot.nodes:
            free: list[str] = []
            for gpu in sorted(node.gpus, key=lambda g: g.index):
                self.total_by_model[gpu.model] += 1
                reason = _exclusion(node, gpu.healthy, gpu.allocated)
                if reason:
                    self.excluded_by_model[gpu.model][reason] += 1
                else:
                    free.append(gpu.gpu_id)
                    self.model_of[gpu.gpu_id] = gpu.model
            self.free[node.node_id] = free

    def free_of_model(self, node_id: str, model: str) -> list[str]:
        return [g for g in self.free[node_id] if self.model_of[g] == model]

    def reserve(self, placement: Placement) -> None:
        for rank in placement.ranks:
            taken = set(rank.gpu_ids)
            self.free[rank.node_id] = [g for g in self.free[rank.node_id] if g not in taken]
            model = self.model_of[rank.gpu_ids[0]]
            self.excluded_by_model[model]["allocated"] += len(taken)


def _exclusion(node: NodeView, healthy: bool, allocated: bool) -> str:
    if allocated:
        return "allocated"
    if node.unschedulable:
        return node.unschedulable
    if not healthy:
        return "unhealthy"
    return ""


def place(snapshot: FleetSnapshot, queue: Sequence[WorkloadRequest]) -> list[Decision]:
    state = _Free(snapshot)
    decisions: list[Decision] = []
    for request in queue_order(queue):
        decision = _place_one(state, request)
        if isinstance(decision, Placement):
            state.reserve(decision)
        decisions.append(decision)
    return decisions


def _place_one(state: _Free, req: WorkloadRequest) -> Decision:
    total = state.total_by_model.get(req.gpu_model, 0)
    if total == 0:
        return Unplaced(req.workload_id, f"no {req.gpu_model} GPUs in the fleet")
    if req.gpu_count > total:
        return Unplaced(req.workload_id, f"asks for {req.gpu_count} GPUs; the fleet has {total} {req.gpu_model}")
    candidates = {node_id: gpus for node_id in state.nodes if (gpus := state.free_of_model(node_id, req.gpu_model))}
    free_total = sum(len(g) for g in candidates.values())
    if free_total < req.gpu_count:
        return Unplaced(req.workload_id, _shortage(state, req, free_total, total))
    if req.nvlink is NvlinkPolicy.REQUIRED and req.gpu_count > 1:
        draining = sum(len(g) for n, g in candidates.items() if state.nodes[n].nvlink_draining)
        candidates = {n: g for n, g in candidates.items() if not state.nodes[n].nvlink_draining}
        if draining and sum(len(g) for g in candidates.values()) < req.gpu_count:
            return Unplaced(
                req.workload_id,
                f"waiting for {req.gpu_count} {req.gpu_model} GPUs on NVLink: {draining} free GPUs are in "
                "NVLink domains draining their peers",
            )

    single = _fit_single_node(state, candidates, req.gpu_count)
    if single is not None:
        return Placement(req.workload_id, (single,))
    if req.nvlink in (NvlinkPolicy.REQUIRED, NvlinkPolicy.PREFERRED):
        in_domain = _fit_in_domain(state, candidates, req.gpu_count)
        if in_domain is not None:
            return Placement(req.workload_id, in_domain)
        if req.nvlink is NvlinkPolicy.REQUIRED:
            return Unplaced(req.workload_id, _domain_shortage(state, candidates, req, total))
    spread = _fit_across(state, candidates, req.gpu_count)
    return Placement(req.workload_id, spread)


def _domain_free(state: _Free, candidates: dict[str, list[str]]) -> dict[str, int]:
    """Free GPUs per NVLink domain, over the candidate nodes."""
    per: Counter[str] = Counter()
    for node_id, gpus in candidates.items():
        domain = state.nodes[node_id].domain
        if domain is not None:
            per[domain] += len(gpus)
    return dict(per)


def _fit_single_node(state: _Free, candidates: dict[str, list[str]], count: int) -> RankPlacement | None:
    """Best fit on one node: the node left with the fewest free GPUs, in the fullest domain."""
    if count > max((len(g) for g in candidates.values()), default=0):
        return None
    domain_free = _domain_free(state, candidates)
    best: tuple[int, int, str] | None = None
    for node_id, gpus in candidates.items():
        if len(gpus) < count:
            continue
        domain = state.nodes[node_id].domain
        key = (len(gpus) - count, domain_free.get(domain, 0) if domain else 1 << 30, node_id)
        if best is None or key < best:
            best = key
    if best is None:
        return None
    node_id = best[2]
    return RankPlacement(node_id, tuple(candidates[node_id][:count]))


def _take_nodes(candidates: dict[str, list[str]], node_ids: list[str], count: int) -> tuple[RankPlacement, ...]:
    """Whole free nodes first, then the fullest partial ones, so fewer nodes share the gang."""
    order = sorted(node_ids, key=lambda n: (-len(candidates[n]), n))
    ranks: list[RankPlacement] = []
    need = count
    # Prefer a set whose last node is filled exactly: pick largest first, then the smallest that
    # covers the remainder.
    while need > 0:
        exact = [n for n in order if len(candidates[n]) >= need]
        if exact:
            pick = min(exact, key=lambda n: (len(candidates[n]), n))
            ranks.append(RankPlacement(pick, tuple(candidates[pick][:need])))
            break
        pick = order.pop(0)
        ranks.append(RankPlacement(pick, tuple(candidates[pick])))
        need -= len(candidates[pick])
        order = [n for n in order if n != pick]
    return tuple(ranks)


def _fit_in_domain(state: _Free, candidates: dict[str, list[str]], count: int) -> tuple[RankPlacement, ...] | None:
    by_domain: dict[str, list[str]] = defaultdict(list)
    for node_id in candidates:
        domain = state.nodes[node_id].domain
        if domain is not None:
            by_domain[domain].append(node_id)
    fitting = [
        (sum(len(candidates[n]) for n in nodes), domain)
        for domain, nodes in by_domain.items()
        if sum(len(candidates[n]) for n in nodes) >= count
    ]
    if not fitting:
        return None
    _, domain = min(fitting)  # best fit: the domain left with the fewest free GPUs
    return _take_nodes(candidates, by_domain[domain], count)


def _fit_across(state: _Free, candidates: dict[str, list[str]], count: int) -> tuple[RankPlacement, ...]:
    in_domain = _fit_in_domain(state, candidates, count)
    if in_domain is not None:
        return in_domain
    return _take_nodes(candidates, list(candidates), count)


def _shortage(state: _Free, req: WorkloadRequest, free_total: int, total: int) -> str:
    excluded = state.excluded_by_model[req.gpu_model]
    parts = [f"{n} {why}" for why, n in sorted(excluded.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    detail = ", ".join(parts) if parts else "none excluded"
    return f"waiting for {req.gpu_count} {req.gpu_model} GPUs: {free_total}/{total} free ({detail})"


def _domain_shortage(state: _Free, candidates: dict[str, list[str]], req: WorkloadRequest, total: int) -> str:
    domain_free = _domain_free(state, candidates)
    largest = max(domain_free.values(), default=0)
    free_total = sum(len(g) for g in candidates.values())
    return (
        f"waiting for {req.gpu_count} {req.gpu_model} GPUs in one NVLink domain: {free_total}/{total} free, "
        f"at most {largest} in any one domain ({len(domain_free)} domains with free GPUs)"
    )
