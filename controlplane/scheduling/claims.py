"""Claims that stick (issue 10): GPUs freed for a preemptor are its own.

Functions of the pass (``core.SchedulingPass``, seen through ``pass_state.PassState``), called
at the points of its run where they apply: ``hold_claims`` at the start (the free part of a claim
whose victims are still stopping is held for it), ``start_due`` before the queue (plans and
claims whose GPUs are free now go first), ``wait_on_claim`` for a claim with no NVLink shape, and
``claim_fits`` while choosing victims (only domains the planning map has room in).
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling import fit, planning, preemption
from controlplane.scheduling.filters import gpus_of
from controlplane.scheduling.index import HELD, ModelPool
from controlplane.scheduling.pass_state import PassState
from controlplane.scheduling.queue import competing_rank
from controlplane.scheduling.snapshot import Unplaced, WorkloadRequest


def hold_claims(sp: PassState) -> None:
    """A preemptor whose victims are still stopping keeps the free GPUs of its claim (the
    rest of its gang) from the start of the pass: work arriving in the meantime, whatever its
    class, does not take them (it would need a second round of notices). Reserved work within
    its reservation may still use them (``backfill``): it may displace the preemptor's class."""
    runs = [r for r in sp.snapshot.running if r.preempting and r.claimed_for]
    if not runs:
        return
    usage, grace, now = sp.usage(), sp.snapshot.stop_grace_s, sp.snapshot.now
    by_dom: dict[str, dict[int, int]] = {}
    freeing: dict[str, int] = {}  # GPUs its victims free, per preemptor
    for run in runs:
        wid = run.claimed_for
        useful, per = usage.get(run.workload_id, (0, {}))
        mine = by_dom.setdefault(wid, {})
        for d, x in per.items():
            mine[d] = mine.get(d, 0) + x
        freeing[wid] = freeing.get(wid, 0) + useful
        ends = max(now, run.noticed_at[-1] + grace) if run.noticed_at else now + grace
        sp.stopping_until[wid] = max(sp.stopping_until.get(wid, now), ends)
    sp.stopping_for = set(by_dom)
    for req in sp.queue:
        per_dom = by_dom.get(req.workload_id)
        pool = sp.pools.get(req.gpu_model)
        if per_dom is None or pool is None or req.plan is None:
            continue
        gpus: dict[int, list[str]] = {}
        doms: list[int] = []
        if not req.plan.domains:
            take = min(pool.free_total, req.gpu_count - freeing[req.workload_id])
            part = fit.spread(pool, take, None) if take > 0 else None
            for n, ids in pool.take(part, HELD) if part else ():
                gpus.setdefault(n, []).extend(ids)
        elif sp.kept_domains(req) is not None:
            assert sp.dom_index is not None
            sp.timeline(req.gpu_model)  # built first: the map counts the held GPUs free for their claim
            doms = [sp.dom_index[n] for n in req.plan.domains]
            for d, want in planning.gang_parts(pool.dom_size, req.gpu_count, doms)[0]:
                take = min(pool.dom_free[d], want - per_dom.get(d, 0))
                part = fit.take_nodes(pool, d, take, None, {}) if take > 0 else None
                for n, ids in pool.take(part, HELD) if part else ():
                    gpus.setdefault(n, []).extend(ids)
        if gpus:
            sp.holds.append(
                planning.Hold(req.workload_id, req.priority, req.gpu_model, req.plan.start_at, doms, gpus, firm=True)
            )


def held_for(sp: PassState, wid: str) -> int:
    """GPUs held for ``wid`` since the pass began (its claim's free part)."""
    return sum(sum(map(len, h.gpus.values())) for h in sp.holds if h.firm and h.workload_id == wid)


def wait_on_claim(sp: PassState, req: WorkloadRequest) -> None:
    """A preemptor (no NVLink domain asked) whose victims are still stopping waits for them:
    its free GPUs are held, the rest is theirs once stopped; no search, no new victims."""
    why = PendingReason(
        PendingCode.PREEMPTION,
        f"waiting for {gpus_of(req.gpu_count, req.gpu_model)}: {held_for(sp, req.workload_id)} held, the rest "
        "being freed by work already under preemption notice",
    )
    until = sp.stopping_until[req.workload_id]
    sp.decisions.append(Unplaced(req.workload_id, why.text, why.code, sp.planned_start(req, until, ())))


def start_due(sp: PassState) -> set[str]:
    """Plans whose start has come and whose domains have their GPUs free (victims released
    for a preemptor, work drained for a planned start) are decided before anything else: the
    GPUs freed for them are theirs, not the first request's in the queue, whatever its class
    (reserved work within its reservation may still preempt them). Only plans alone on their
    domains: between plans the queue order decides, in the map of the class phase. A claim
    with no NVLink shape (no domains) is due when its victims have stopped and the fleet has
    its GPUs free: those are what its victims freed, and the queue would hand them to others."""
    now = sp.snapshot.now
    due = []
    for req in sp.spread_claims:
        plan, pool = req.plan, sp.pools.get(req.gpu_model)
        if plan is None or plan.domains or plan.start_at > now or pool is None:
            continue
        if req.workload_id not in sp.stopping_for and 0 < req.gpu_count <= pool.free_total:
            due.append(req)
    plans_on: dict[tuple[str, str], int] = {}
    for req in sp.planned_queue:
        assert req.plan is not None
        for name in req.plan.domains:
            plans_on[req.gpu_model, name] = plans_on.get((req.gpu_model, name), 0) + 1
    for req in sp.planned_queue:
        assert req.plan is not None
        pool = sp.pools.get(req.gpu_model)
        if req.plan.start_at > now or pool is None or sp.kept_domains(req) is None:
            continue
        if any(plans_on[req.gpu_model, name] > 1 for name in req.plan.domains):
            continue
        assert sp.dom_index is not None
        split, left = planning.gang_parts(pool.dom_size, req.gpu_count, (sp.dom_index[n] for n in req.plan.domains))
        if not left and all(pool.dom_free[d] >= want for d, want in split):
            due.append(req)
    due.sort(key=lambda r: (r.plan.planned_at or 0.0) if r.plan is not None else 0.0)
    sp.due_spread = {r.workload_id for r in due if r.plan is not None and not r.plan.domains}
    for req in due:
        sp.decide(req)
    sp.due_spread = set()
    return {r.workload_id for r in due}


# Searches for a due claim's room elsewhere, each sparing the domains the last one would break.
_KEEP_TRIES = 4


def keep_windows(sp: PassState, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy, plan: fit.Plan) -> fit.Plan:
    """Where a claim with no NVLink shape starts at its victims' release. It is decided at the
    head of the pass, before any plan's turn has held its domains' free GPUs, so ``plan`` (the
    search's best fit) may take GPUs a plan of its class or a higher one counts on, and break
    it for a request that arrived after it. It starts instead where every such plan's window
    stays whole in the map, if the fleet has that room; else on ``plan`` (its victims are
    stopped: no second round of notices)."""
    now = sp.snapshot.now
    rank = competing_rank(req.priority, within=sp.ledger.within_reservation(req))
    windows: dict[int, list[tuple[int, float, float | None]]] = {}
    for r in sp.planned_queue:
        if r is req or r.gpu_model != req.gpu_model or sp.kept_domains(r) is None:
            continue
        if competing_rank(r.priority, within=sp.ledger.within_reservation(r)) > rank:
            continue  # lower-class plans give way to it anyway
        assert sp.dom_index is not None
        for d, want, start, end in planning.plan_window(pool.dom_size, sp.dom_index, r):
            windows.setdefault(d, []).append((want, start, end))
    if not any(d in windows for d in sp.per_domain(plan)):
        return plan
    tl = sp.timeline(req.gpu_model)
    duration = req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    rights = preemption.victim_classes(req.priority, within_reservation=sp.ledger.within_reservation(req))

    def breaks(p: fit.Plan) -> set[int]:
        out = set()
        for d, x in sp.per_domain(p).items():
            ws = windows.get(d)
            if not ws:
                continue
            for want, start, end in ws:
                tl.occupy(d, want, start, end)
            if not tl.fits(d, x, now, duration, rights=rights, claimant=req.workload_id, now=now):
                out.add(d)
            for want, start, end in ws:
                tl.vacate(d, want, start, end)
        return out

    spared = breaks(plan)
    for _ in range(_KEEP_TRIES):
        if not spared:
            return plan
        other = fit.find(pool, req.gpu_count, mode, fit.SparingRoom(sp.room, sp.fleet.node_rack, pool.node_dom, spared))
        if other is None:
            break
        worse = breaks(other)
        if not worse:
            return other
        spared |= worse
    return plan


def claim_fits(sp: PassState, req: WorkloadRequest, rights: frozenset[PriorityClass]) -> Callable[[int, int], bool]:
    """Where a preemption for ``req`` may claim GPUs: domains whose map has room for its
    run from the end of the notice's grace, its victims' GPUs counted free by then. Elsewhere
    the claim would cut into another plan's window, and at its victims' release the claimant
    could not start there: a second round of notices."""
    tl, now = sp.timeline(req.gpu_model), sp.snapshot.now
    start = now + sp.snapshot.stop_grace_s
    duration = req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    wid = req.workload_id

    def fits(d: int, n: int) -> bool:
        return tl.fits(d, n, start, duration, rights=rights, claimant=wid, now=now)

    return fits
