"""Planned starts and backfill: a blocked request is given the earliest time GPUs of its shape will
be free, and the free GPUs it will use are held for it; other work may use held GPUs only if it
ends (by its max duration) before that start, or may be displaced by the planned request with
time to spare. Slurm's backfill scheduler does this for CPU jobs; here the shapes are NVLink
domains and the releases come from the snapshot.

When GPUs of a domain are free, over time (the ``Timeline``, a resource-time map):

- free now: the pool's free GPUs (after this pass's placements and holds);
- running work of classes the request may preempt: now, or once its minimum run is over when
  churn limits apply (counted as available: the plan then preempts it at its turn);
- other running work: at ``ends_by`` (start + max duration, enforced by the control plane;
  work with no bound never frees in a plan); work placed earlier in this pass likewise;
- GPUs under preemption notice: after the grace, for their claimant only when claims stick.

A plan is a set of domains and a start: the earliest window of its max duration in which one
domain (whole domains and one more for a larger gang) has its GPUs free; the core keeps the
domains of the request's earlier plan while they start it no later, so a plan stays put across
passes. A plan occupies its GPUs in the map (the ones it holds from now, the rest from its
start, all until its start + max duration), and so does work placed in the pass: a later plan
only finds windows around them.
"""

from __future__ import annotations

import heapq
import math
from bisect import insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from controlplane.domain.enums import PRIORITY_RANK, NvlinkPolicy, PriorityClass
from controlplane.scheduling.index import POOL_DOMAIN, Fleet, ModelPool
from controlplane.scheduling.preemption.candidates import usable_by_dom
from controlplane.scheduling.snapshot import FleetSnapshot, WorkloadRequest

NEVER = math.inf
ANYWHERE = -1  # a release or a hold outside any usable NVLink domain
_RESERVED = PRIORITY_RANK[PriorityClass.RESERVED]


# GPUs that come free: (at, count, rank, claimed_for, preemptible_from), for running work or work
# placed this pass. ``rank``: its class's PRIORITY_RANK; ``claimed_for``: the one preemptor they
# free for ("": anyone); ``preemptible_from``: when its minimum run is over (0: at once). A plain
# tuple of numbers and a string, not a class: the garbage collector stops tracking exact tuples of
# such, and a campus map holds thousands (tracked ones kept over a pass bring on full collections).
Release = tuple[float, int, int, str, float]


_RANKS: dict[frozenset[PriorityClass], frozenset[int]] = {}


def _ranks(rights: frozenset[PriorityClass]) -> frozenset[int]:
    """The ranks of the classes in ``rights`` (a release's class is its rank)."""
    ranks = _RANKS.get(rights)
    if ranks is None:
        ranks = _RANKS[rights] = frozenset(PRIORITY_RANK[c] for c in rights)
    return ranks


@dataclass(slots=True)
class Timeline:
    """Per domain, how many GPUs are free over time (Slurm backfill's resource-time map):
    ``base`` free when the timeline was built, ``releases`` of running work (their time depends
    on the asking request's rights), and ``events`` (+/- GPUs at a time) of what this pass placed
    or planned since. ``usable``: per domain, the GPUs that could take work at all."""

    base: dict[int, int] = field(default_factory=dict)
    releases: dict[int, list[Release]] = field(default_factory=dict)
    events: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    usable: dict[int, int] = field(default_factory=dict)
    # Domains with releases claimed by one preemptor (their steps differ per asking request).
    claimed: set[int] = field(default_factory=set)
    # Steps per (domain, rights, claimant), valid while the domain's version is unchanged.
    cache: dict[tuple[int, frozenset[PriorityClass], str], tuple[int, list[tuple[float, int]]]] = field(
        default_factory=dict
    )
    version: dict[int, int] = field(default_factory=dict)
    # Per (rights, claimant): every time GPUs come free, (time, domain, GPUs), in time order, over
    # all domains; a bound that lets a search stop early (``first_reaching``).
    sweeps: dict[tuple[frozenset[PriorityClass], str], list[tuple[float, int, int]]] = field(default_factory=dict)

    def _changed(self, dom: int) -> None:
        self.version[dom] = self.version.get(dom, 0) + 1

    def add(self, dom: int, release: Release) -> None:
        self.releases.setdefault(dom, []).append(release)
        if release[3]:
            self.claimed.add(dom)
        self._changed(dom)
        self.sweeps.clear()

    def add_unclaimed(self, releases: Iterable[tuple[int, Release]]) -> None:
        """Many releases with no claimant at once (building the map: no cache to keep)."""
        by_dom = self.releases
        for dom, release in releases:
            got = by_dom.get(dom)
            if got is None:
                by_dom[dom] = [release]
            else:
                got.append(release)
        self.cache.clear()
        self.version.clear()
        self.sweeps.clear()

    def sweep(self, *, rights: frozenset[PriorityClass], claimant: str, now: float) -> list[tuple[float, int, int]]:
        """Every increase of free GPUs after ``now``, in time order (decreases left out: the free
        counts it gives are upper bounds, so the first time a domain could have enough)."""
        key = (rights, claimant if self.claimed else "")
        out = self.sweeps.get(key)
        if out is None:
            out = []
            ranks = _ranks(rights)
            for dom, releases in self.releases.items():
                for at, count, rank, claimed_for, preemptible_from in releases:
                    if claimed_for and claimed_for != claimant:
                        continue
                    if rank in ranks:
                        at = min(at, max(now, preemptible_from))
                    if at < NEVER:
                        out.append((at, dom, count))
            for dom, events in self.events.items():
                out.extend((at, dom, delta) for at, delta in events if delta > 0)
            out.sort()
            self.sweeps[key] = out
        return out

    def occupy(self, dom: int, count: int, start: float, end: float | None) -> None:
        """``count`` GPUs of ``dom`` are taken from ``start`` to ``end`` (None: for good)."""
        if count <= 0:
            return
        ev = self.events.setdefault(dom, [])
        ev.append((start, -count))
        if end is not None and end < NEVER:
            ev.append((end, count))
            for sweep in self.sweeps.values():
                insort(sweep, (end, dom, count))
        self._changed(dom)

    def vacate(self, dom: int, count: int, start: float, end: float | None) -> None:
        """Undo one ``occupy`` with the same arguments (a sweep keeps the increase: still a bound)."""
        if count <= 0:
            return
        ev = self.events[dom]
        ev.remove((start, -count))
        if end is not None and end < NEVER:
            ev.remove((end, count))
        self._changed(dom)

    def steps(
        self, dom: int, *, rights: frozenset[PriorityClass], claimant: str, now: float
    ) -> list[tuple[float, int]]:
        """[(time, GPUs free from then on)], from ``now``, for this request."""
        key = (dom, rights, claimant if dom in self.claimed else "")
        version = self.version.get(dom, 0)
        hit = self.cache.get(key)
        if hit is not None and hit[0] == version:
            return hit[1]
        out = self._steps(dom, rights=rights, claimant=claimant, now=now)
        self.cache[key] = (version, out)
        return out

    def _steps(
        self, dom: int, *, rights: frozenset[PriorityClass], claimant: str, now: float
    ) -> list[tuple[float, int]]:
        deltas: list[tuple[float, int]] = list(self.events.get(dom, ()))
        ranks = _ranks(rights)
        for at, count, rank, claimed_for, preemptible_from in self.releases.get(dom, ()):
            if claimed_for and claimed_for != claimant:
                continue
            if rank in ranks:
                at = min(at, max(now, preemptible_from))
            if at < NEVER:
                deltas.append((at, count))
        deltas.sort()
        free = self.base.get(dom, 0)
        out: list[tuple[float, int]] = []
        for at, delta in deltas:
            if at <= now:
                free += delta
                continue
            if not out:
                out.append((now, free))
            free += delta
            if out[-1][0] == at:
                out[-1] = (at, free)
            else:
                out.append((at, free))
        if not out:
            out.append((now, free))
        return out

    def earliest(
        self,
        dom: int,
        need: int,
        duration: float,
        *,
        rights: frozenset[PriorityClass],
        claimant: str,
        now: float,
    ) -> float:
        """The earliest start with ``need`` GPUs of ``dom`` free for ``duration`` (NEVER if none)."""
        steps = self.steps(dom, rights=rights, claimant=claimant, now=now)
        return _first_window(steps, need, duration)

    def fits(
        self,
        dom: int,
        need: int,
        start: float,
        duration: float,
        *,
        rights: frozenset[PriorityClass],
        claimant: str,
        now: float,
    ) -> bool:
        steps = self.steps(dom, rights=rights, claimant=claimant, now=now)
        free_at = steps[0][1]
        for at, free in steps:
            if at <= start:
                free_at = free
            elif at < start + duration:
                if free < need:
                    return False
            else:
                break
        return free_at >= need


def _first_window(steps: list[tuple[float, int]], need: int, duration: float) -> float:
    for i, (start, free) in enumerate(steps):
        if free < need:
            continue
        end = start + duration
        ok = True
        for at, later in steps[i + 1 :]:
            if at >= end:
                break
            if later < need:
                ok = False
                break
        if ok:
            return start
    return NEVER


def build_timeline(
    snapshot: FleetSnapshot,
    fleet: Fleet,
    pool: ModelPool,
    *,
    sticky_claims: bool,
    churn_limits: bool,
    claimants: Iterable[str],
    usage: Mapping[str, tuple[int, dict[int, int]]] | None = None,
) -> Timeline:
    """The resource-time map of one GPU model (see the module docstring), from the pool's free
    GPUs now and the snapshot's running work."""
    model = pool.model
    out = Timeline()
    for d, free in enumerate(pool.dom_free):
        if free:
            out.base[d] = free
    out.usable = {d: k for d, k in enumerate(pool.dom_usable) if k}
    queued = set(claimants) if sticky_claims else set()
    unclaimed: list[tuple[int, Release]] = []
    now, grace, min_run = snapshot.now, snapshot.stop_grace_s, snapshot.rules.min_run_s
    max_preemptions = snapshot.rules.max_preemptions
    for run in snapshot.running:
        if run.gpu_model != model:
            continue
        known = usage.get(run.workload_id) if usage is not None else None
        if known is not None:
            per = known[1]
        else:
            per = {}
            usable_by_dom(run, fleet, pool, per)
        if run.preempting:
            claim = run.claimed_for if run.claimed_for in queued else ""
            # Its notice's grace ends a grace after the notice (the last one it had); one overdue
            # frees at any moment.
            at = max(now, run.noticed_at[-1] + grace) if run.noticed_at else now + grace
            for d, x in per.items():
                # Reserved stands for "not preemptible" here: these free on their own, after the grace.
                out.add(d, (at, x, _RESERVED, claim, 0.0))
            continue
        at = NEVER if run.ends_by is None else run.ends_by
        start_ok = run.started_at + min_run if churn_limits and run.preemptions else 0.0
        if churn_limits and run.preemptions >= max_preemptions:
            start_ok = NEVER  # it runs to its end (only a reservation's contract overrides that)
        rank = PRIORITY_RANK[run.priority]
        unclaimed.extend((d, (at, x, rank, "", start_ok)) for d, x in per.items())
    out.add_unclaimed(unclaimed)
    return out


def gang_parts(dom_size: Sequence[int], count: int, doms: Iterable[int]) -> tuple[list[tuple[int, int]], int]:
    """A planned gang's GPUs per domain of its plan (whole domains first, the remainder in the
    last one), and how many the domains leave out (0 unless they are too few or too small)."""
    parts: list[tuple[int, int]] = []
    left = count
    for d in doms:
        want = min(left, dom_size[d])
        parts.append((d, want))
        left -= want
    return parts, left


def plan_window(
    dom_size: Sequence[int], dom_index: Mapping[str, int], req: WorkloadRequest
) -> list[tuple[int, int, float, float | None]]:
    """The window a request's plan of an earlier pass occupies in the map: (domain, GPUs, start,
    end) per domain of the plan (end None: no max duration, for good)."""
    assert req.plan is not None
    start = req.plan.start_at
    end = start + req.max_duration_s if req.max_duration_s is not None else None
    split, _ = gang_parts(dom_size, req.gpu_count, (dom_index[n] for n in req.plan.domains))
    return [(d, want, start, end) for d, want in split]


class PlacedEarly:
    """Work placed this pass before its model's map is built, as the releases it adds to the map
    when it is: GPUs per (usable domain, end by its max duration, class), per model, in placement
    order. Counted at each placement instead of keeping the placements: a campus pass places
    thousands of requests before its first blocked one, and a plan kept alive per placement costs
    the garbage collector more than the counting does."""

    __slots__ = ("by_model",)

    def __init__(self) -> None:
        self.by_model: dict[str, dict[tuple[int, float, int], int]] = {}  # (domain, end, rank) -> GPUs

    def add(self, model: str, end: float, priority: PriorityClass, by_dom: Mapping[int, int]) -> None:
        """``by_dom``: GPUs placed per usable domain (``ModelPool.take``'s count), ending by ``end``."""
        agg = self.by_model.get(model)
        if agg is None:
            agg = self.by_model[model] = {}
        rank = PRIORITY_RANK[priority]
        for d, x in by_dom.items():
            k = (d, end, rank)  # numbers only: untracked by the collector while kept
            agg[k] = agg.get(k, 0) + x

    def move_into(self, model: str, timeline: Timeline) -> None:
        """The model's releases (one per domain, end and class) join its map, once: it is built."""
        by_dom = timeline.releases
        for (d, end, rank), x in self.by_model.pop(model, {}).items():
            got = by_dom.get(d)
            if got is None:
                by_dom[d] = [(end, x, rank, "", 0.0)]
            else:
                got.append((end, x, rank, "", 0.0))
        timeline.cache.clear()
        timeline.version.clear()
        timeline.sweeps.clear()


@dataclass(slots=True)
class Hold:
    """GPUs held this pass for a planned start: free GPUs (by node) its gang will use."""

    workload_id: str
    priority: PriorityClass
    model: str
    start_at: float
    domains: list[int]
    gpus: dict[int, list[str]]  # node -> held GPU ids
    # Smallest gang (per NVLink-required or not) that found no room in it: held GPUs only fall,
    # so any gang as large fails too.
    failed: dict[bool, int] = field(default_factory=dict)
    # Held at the start of the pass for a preemptor whose victims are still stopping: only it (or
    # reserved work within its reservation, which may displace its class) may use them.
    firm: bool = False


def plan_one_domain(
    pool: ModelPool,
    timeline: Timeline,
    c: int,
    duration: float,
    *,
    rights: frozenset[PriorityClass],
    claimant: str,
    now: float,
    excluded: set[int],
    only: Iterable[int] | None = None,
) -> tuple[float, list[int]] | None:
    """The domain with the earliest window of ``c`` GPUs for ``duration``: (start, [domain]), or
    None. Ties go to the one with the most of them free now (least held idle). ``only``: among
    these domains."""
    usable = timeline.usable
    best: tuple[float, int, int] | None = None

    def consider(d: int) -> None:
        nonlocal best
        at = timeline.earliest(d, c, duration, rights=rights, claimant=claimant, now=now)
        if at < NEVER:
            key = (at, -min(pool.dom_free[d], c), d)
            if best is None or key < best:
                best = key

    def valid(d: int) -> bool:
        return d >= 0 and d not in excluded and usable.get(d, 0) >= c

    if only is not None:
        for d in only:
            if valid(d):
                consider(d)
        return None if best is None else (best[0], [best[2]])
    # Branch and bound over the sweep: a domain's window cannot open before the first time its
    # free GPUs could reach ``c``; domains are tried in that order until that time passes the
    # best window found.
    free = dict(timeline.base)
    tried: set[int] = set()
    for d, f in timeline.base.items():
        if f >= c and valid(d):
            tried.add(d)
            consider(d)
    for at, d, x in timeline.sweep(rights=rights, claimant=claimant, now=now):
        if best is not None and at > best[0]:
            break
        f = free.get(d, 0) + x
        free[d] = f
        if f >= c and d not in tried and valid(d):
            tried.add(d)
            consider(d)
    return None if best is None else (best[0], [best[2]])


def window_starts(steps: list[tuple[float, int]], need: int, duration: float) -> list[tuple[float, float]]:
    """Every start with ``need`` GPUs free for ``duration``, as intervals [first, last] of start
    times: each run of steps with enough free, less ``duration`` at its end (the last step's free
    count lasts for ever)."""
    out: list[tuple[float, float]] = []
    run: float | None = None
    for at, free in steps:
        if free >= need:
            if run is None:
                run = at
        elif run is not None:
            if at - run >= duration:
                out.append((run, at - duration))
            run = None
    if run is not None:
        out.append((run, NEVER))
    return out


def plan_whole_domains(
    pool: ModelPool,
    timeline: Timeline,
    c: int,
    duration: float,
    *,
    rights: frozenset[PriorityClass],
    claimant: str,
    now: float,
    excluded: set[int],
    only: Iterable[int] | None = None,
) -> tuple[float, list[int]] | None:
    """A gang larger than any domain: the earliest start at which enough whole domains (and one
    more for the remainder) are free for its duration. ``only``: among these domains.

    Each domain's possible starts are intervals of time (``window_starts``); a sweep over them in
    time order keeps the domains open at each moment, and the first moment they are enough is
    the start: exact, however far ahead, in one pass over the domains' steps."""
    dom_size, usable = pool.dom_size, timeline.usable
    intervals: list[tuple[float, float, int]] = []
    first: dict[int, float] = {}
    for d in range(len(dom_size)) if only is None else sorted(only):
        size = dom_size[d]
        if not size or d in excluded or size > c or usable.get(d, 0) < size:
            continue  # a domain with GPUs that cannot take work is never whole
        steps = timeline.steps(d, rights=rights, claimant=claimant, now=now)
        ivs = window_starts(steps, size, duration)
        if ivs:
            first[d] = ivs[0][0]
            intervals.extend((a, b, d) for a, b in ivs)
    if not intervals:
        return None
    intervals.sort()
    dmax = max(dom_size[d] for d in first)
    open_until: dict[int, float] = {}
    ends: list[tuple[float, int]] = []
    open_size = 0
    best: tuple[float, list[int]] | None = None  # found with a remainder opening after a sweep point
    whole_sizes = {dom_size[d] for d in first}
    rest: list[int] | None = None
    rest_windows: dict[tuple[int, int], list[tuple[float, float]]] = {}
    i = 0
    while i < len(intervals):
        start = intervals[i][0]
        if best is not None and start >= best[0]:
            return best
        while i < len(intervals) and intervals[i][0] == start:
            _, last, d = intervals[i]
            open_until[d] = last
            open_size += dom_size[d]
            heapq.heappush(ends, (last, d))
            i += 1
        while ends and ends[0][0] < start:
            last, d = heapq.heappop(ends)
            if open_until.get(d) == last:
                del open_until[d]
                open_size -= dom_size[d]
        if open_size < c - dmax:
            continue  # not enough whole domains open, whatever the remainder
        chosen: list[int] = []
        left = c
        for d in sorted(open_until, key=lambda d: (first[d], d)):
            if dom_size[d] <= left:
                chosen.append(d)
                left -= dom_size[d]
                if not left:
                    return start, chosen
        if left and left < c and left not in whole_sizes:
            # The remainder in part of one more domain: its earliest window from here on while the
            # whole domains chosen are still open. (A remainder the size of a whole domain is one
            # more whole domain: the sweep reaches it when it opens.)
            until = min(open_until[d] for d in chosen)
            taken = set(chosen) | excluded
            if rest is None:
                rest = sorted(
                    set(timeline.base) | set(timeline.releases) | set(timeline.events) if only is None else set(only)
                )
            for d in rest:
                if d < 0 or d in taken or usable.get(d, 0) < left:
                    continue
                wins = rest_windows.get((d, left))
                if wins is None:
                    steps = timeline.steps(d, rights=rights, claimant=claimant, now=now)
                    wins = rest_windows[d, left] = window_starts(steps, left, duration)
                for a, b in wins:
                    at = max(a, start)
                    if at <= b:
                        if at <= until and (best is None or at < best[0]):
                            best = (at, [*chosen, d])
                        break
            if best is not None and best[0] == start:
                return best
    return best


def fit_held(hold: Hold, pool: ModelPool, c: int, nvlink: NvlinkPolicy) -> list[tuple[int, int]] | None:
    """Where ``c`` GPUs of ``hold`` go, as [(node, count)]: one domain for an NVLink gang (the
    tightest node that covers it, else the fullest nodes first), anywhere otherwise."""
    shaped = nvlink is NvlinkPolicy.REQUIRED and c > 1
    if c >= hold.failed.get(shaped, 1 << 30):
        return None
    plan = _fit_held(hold, pool, c, nvlink)
    if plan is None:
        hold.failed[shaped] = c
    return plan


def _fit_held(hold: Hold, pool: ModelPool, c: int, nvlink: NvlinkPolicy) -> list[tuple[int, int]] | None:
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
