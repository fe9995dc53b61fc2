"""Planned starts and backfill: a blocked request is given the earliest time GPUs of its shape will
be free, and the free GPUs it will use are held for it; other work may use held GPUs only if it
ends (by its max duration) before that start, or may be displaced by the planned request with
time to spare. Slurm's backfill scheduler does this for CPU jobs; here the shapes are NVLink
domains and the releases come from the snapshot.

When GPUs of a domain free (the ``Timeline``):

- free now: the pool's free GPUs (after this pass's placements and holds);
- running work of classes the request may preempt: now, or once its minimum run is over when
  churn limits apply (counted as available: the plan then preempts it at its turn);
- other running work: at ``ends_by`` (start + max duration, enforced by the control plane;
  work with no bound never frees in a plan); work placed earlier in this pass likewise;
- GPUs under preemption notice: after the grace, for their claimant only when claims stick.

A plan is a set of domains and a start: one domain for a gang that fits in one (the one that
frees soonest; the core keeps the domains of the request's earlier plan while they start it no
later, so a plan stays put across passes), whole domains then one more for the remainder for a larger NVLink
gang, anywhere for work with no NVLink shape. A plan promises itself the GPUs it still lacks
from its domains' earliest releases and gives its GPUs back at its start + max duration
(``Timeline.promise``): later plans of the pass count only the rest.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.scheduling.index import POOL_DOMAIN, Fleet, ModelPool
from controlplane.scheduling.preemption.candidates import _usable
from controlplane.scheduling.snapshot import FleetSnapshot

NEVER = math.inf
ANYWHERE = -1  # a release or a hold outside any usable NVLink domain


@dataclass(slots=True)
class Release:
    at: float
    count: int
    priority: PriorityClass
    claimed_for: str = ""
    # When it may first be preempted (its minimum run over); 0: at once.
    preemptible_from: float = 0.0


@dataclass(slots=True)
class Timeline:
    """Per domain (``ANYWHERE``: nodes with no usable domain) the GPUs that free, and when;
    ``usable``: per domain, the GPUs that could take work at all (healthy, schedulable)."""

    by_dom: dict[int, list[Release]] = field(default_factory=dict)
    usable: dict[int, int] = field(default_factory=dict)
    # GPUs of a domain's releases already promised to earlier plans of the pass (the earliest
    # ones, conservatively): a later plan counts only what frees after them.
    debt: dict[int, int] = field(default_factory=dict)

    def add(self, dom: int, release: Release) -> None:
        self.by_dom.setdefault(dom, []).append(release)

    def promise(self, dom: int, owed: int, gpus: int, *, until: float | None, priority: PriorityClass) -> None:
        """An earlier plan takes ``owed`` GPUs of ``dom``'s releases (it holds the rest of its
        ``gpus`` now) and gives all ``gpus`` back at ``until`` (start + max duration; None: never)."""
        if owed > 0:
            self.debt[dom] = self.debt.get(dom, 0) + owed
        if until is not None and gpus > 0:
            self.add(dom, Release(until, gpus, priority))

    def times(
        self, dom: int, *, rights: frozenset[PriorityClass], claimant: str, now: float
    ) -> list[tuple[float, int]]:
        out: list[tuple[float, int]] = []
        for r in self.by_dom.get(dom, ()):
            if r.claimed_for and r.claimed_for != claimant:
                continue
            at = r.at
            if r.priority in rights:
                at = min(at, max(now, r.preemptible_from))
            out.append((at, r.count))
        return out

    def ready_at(
        self,
        dom: int,
        need: int,
        *,
        rights: frozenset[PriorityClass],
        claimant: str,
        now: float,
    ) -> float:
        """The earliest time ``need`` more GPUs of ``dom`` are free for this request (NEVER if not)."""
        if need <= 0:
            return now
        return _when(self.times(dom, rights=rights, claimant=claimant, now=now), need + self.debt.get(dom, 0), now)


def _when(times: list[tuple[float, int]], need: int, now: float) -> float:
    times.sort()
    got = 0
    for at, count in times:
        got += count
        if got >= need:
            return max(at, now)
    return NEVER


def build_timeline(
    snapshot: FleetSnapshot,
    fleet: Fleet,
    model: str,
    *,
    sticky_claims: bool,
    churn_limits: bool,
    claimants: Iterable[str],
) -> Timeline:
    """The releases of one GPU model's running work, per domain (see the module docstring)."""
    out = Timeline()
    node_dom, draining, index = fleet.node_dom, fleet.draining, fleet.node_index
    for n, node in enumerate(snapshot.nodes):
        d = node_dom[n]
        if d >= 0 and not draining[n] and not node.unschedulable:
            k = sum(1 for g in node.gpus if g.model == model and g.healthy)
            if k:
                out.usable[d] = out.usable.get(d, 0) + k
    queued = set(claimants) if sticky_claims else set()
    now, grace, min_run = snapshot.now, snapshot.stop_grace_s, snapshot.rules.min_run_s
    for run in snapshot.running:
        if run.gpu_model != model:
            continue
        per: dict[int, int] = {}
        for node_id, gpu_id in run.gpus:
            at_node = index.get(node_id)
            if at_node is None or _usable(snapshot.nodes[at_node], gpu_id) is None:
                continue
            d = node_dom[at_node]
            d = d if d >= 0 and not draining[at_node] else ANYWHERE
            per[d] = per.get(d, 0) + 1
        if run.preempting:
            claim = run.claimed_for if run.claimed_for in queued else ""
            for d, x in per.items():
                # Reserved stands for "not preemptible" here: these free on their own, after the grace.
                out.add(d, Release(now + grace, x, PriorityClass.RESERVED, claim))
            continue
        at = NEVER if run.ends_by is None else run.ends_by
        start_ok = run.started_at + min_run if churn_limits and run.preemptions else 0.0
        for d, x in per.items():
            out.add(d, Release(at, x, run.priority, "", start_ok))
    return out


@dataclass(slots=True)
class Hold:
    """GPUs held this pass for a planned start: free GPUs (by node) its gang will use."""

    workload_id: str
    priority: PriorityClass
    model: str
    start_at: float
    domains: list[int]
    gpus: dict[int, list[str]]  # node -> held GPU ids


def plan_one_domain(
    pool: ModelPool,
    timeline: Timeline,
    c: int,
    *,
    rights: frozenset[PriorityClass],
    claimant: str,
    now: float,
    excluded: set[int],
) -> tuple[float, list[int]] | None:
    """The domain where ``c`` GPUs free soonest: (start, [domain]), or None. Ties go to the one
    whose free GPUs cover most of the gang (least held idle)."""
    dom_free = pool.dom_free
    usable = timeline.usable
    cands = {d for d in timeline.by_dom if d >= 0} | {d for d, f in enumerate(dom_free) if f}
    best: tuple[float, int, int] | None = None
    for d in cands:
        if d in excluded or usable.get(d, 0) < c:
            continue
        at = timeline.ready_at(d, c - dom_free[d], rights=rights, claimant=claimant, now=now)
        if at >= NEVER:
            continue
        key = (at, -min(dom_free[d], c), d)
        if best is None or key < best:
            best = key
    return None if best is None else (best[0], [best[2]])


def plan_whole_domains(
    pool: ModelPool,
    timeline: Timeline,
    c: int,
    *,
    rights: frozenset[PriorityClass],
    claimant: str,
    now: float,
    excluded: set[int],
) -> tuple[float, list[int]] | None:
    """A gang larger than any domain: whole domains freeing soonest, then one for the remainder."""
    dom_free, dom_size, usable = pool.dom_free, pool.dom_size, timeline.usable
    whole: list[tuple[float, int]] = []
    for d, size in enumerate(dom_size):
        if not size or d in excluded or size > c or usable.get(d, 0) < size:
            continue  # a domain with GPUs that cannot take work is never whole
        at = timeline.ready_at(d, size - dom_free[d], rights=rights, claimant=claimant, now=now)
        if at < NEVER:
            whole.append((at, d))
    whole.sort()
    chosen: list[int] = []
    left = c
    start = now
    for at, d in whole:
        if dom_size[d] > left:
            continue
        chosen.append(d)
        left -= dom_size[d]
        start = max(start, at)
        if not left:
            break
    if left:
        rest = plan_one_domain(
            pool,
            timeline,
            left,
            rights=rights,
            claimant=claimant,
            now=now,
            excluded=excluded | set(chosen),
        )
        if rest is None:
            return None
        start = max(start, rest[0])
        chosen += rest[1]
    return start, chosen


def fit_held(hold: Hold, pool: ModelPool, c: int, nvlink: NvlinkPolicy) -> list[tuple[int, int]] | None:
    """Where ``c`` GPUs of ``hold`` go, as [(node, count)]: one domain for an NVLink gang (the
    tightest node that covers it, else the fullest nodes first), anywhere otherwise."""
    node_dom = pool.node_dom
    if nvlink is NvlinkPolicy.REQUIRED and c > 1:
        by_dom: dict[int, list[int]] = {}
        for n, ids in hold.gpus.items():
            if ids and pool.pool[n] == POOL_DOMAIN:
                by_dom.setdefault(node_dom[n], []).append(n)
        best: list[tuple[int, int]] | None = None
        best_size = 0
        for nodes in by_dom.values():
            size = sum(len(hold.gpus[n]) for n in nodes)
            if size < c or (best is not None and size >= best_size):
                continue
            plan = _cover(hold, nodes, c)
            if plan is not None:
                best, best_size = plan, size
        return best
    return _cover(hold, [n for n, ids in hold.gpus.items() if ids], c)


def _cover(hold: Hold, nodes: list[int], c: int) -> list[tuple[int, int]] | None:
    covering = [(len(hold.gpus[n]), n) for n in nodes if len(hold.gpus[n]) >= c]
    if covering:
        return [(min(covering)[1], c)]
    plan: list[tuple[int, int]] = []
    need = c
    for k, n in sorted(((len(hold.gpus[n]), n) for n in nodes), key=lambda t: (-t[0], t[1])):
        take = min(k, need)
        plan.append((n, take))
        need -= take
        if not need:
            return plan
    return None
