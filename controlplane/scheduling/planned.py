"""Planned starts and backfill (issue 10), as functions of the pass (``core.SchedulingPass``,
seen through ``pass_state.PassState``).

A blocked request gets a planned start (``plan_start``: the earliest window of its shape in the
resource-time map of ``planning``, on domains it is pinned to, the free GPUs there held for it);
a request with a plan starts in its planned domains when they have its GPUs (``start_planned``,
``start_on_holds``), or earlier elsewhere where no other plan's window breaks
(``start_elsewhere``, ``start_in_map``); other work may start on held GPUs only if the map has
room for it (``backfill``: it ends before the planned start, or the planned request may displace
it in time). Work decided before a plan's turn spares its domains when it can (``spare_plans``).
"""

from __future__ import annotations

from datetime import UTC, datetime

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling import claims, fit, planning, preemption
from controlplane.scheduling.filters import gpus_of
from controlplane.scheduling.index import HELD_PLAN, ModelPool
from controlplane.scheduling.pass_state import PassState
from controlplane.scheduling.snapshot import PlannedStart, Unplaced, WorkloadRequest


def plan_start(
    sp: PassState,
    pool: ModelPool,
    req: WorkloadRequest,
    mode: NvlinkPolicy,
    *,
    kept_only: bool = False,
    blocked: PendingReason | None = None,
) -> bool:
    """Give a blocked request its planned start and hold the free GPUs it will use
    (``kept_only``: only if its earlier plan still holds; a broken one is planned afresh
    after the ordinary search). ``blocked``, what keeps it from starting now, is told after
    the plan: the tenant and the operator still see a cordoned node or an unhealthy GPU."""
    rules = sp.snapshot.rules
    # The budget is for requests planned for the first time: one whose plan broke (higher-class
    # work took its domains) is planned again at once, keeping its place among the plans.
    fresh = req.plan is None or not req.plan.domains
    if sp.new_plans >= rules.max_plans and fresh:
        return False
    c, now = req.gpu_count, sp.snapshot.now
    within = sp.ledger.within_reservation(req)
    rights = preemption.victim_classes(req.priority, within_reservation=within)
    if kept_only and req.workload_id in sp.stopping_for:
        rights = frozenset()  # its claim: what its victims free, no further preemption
    key = (req.gpu_model, c, mode, rights)
    if key in sp.plan_failed and req.plan is None and not kept_only:
        return False
    tl = sp.timeline(req.gpu_model)

    found = None
    kept = sp.kept_domains(req)
    if kept is not None:
        # Kept across passes: the domains planned before, while they still start it no later.
        assert req.plan is not None
        found = find_plan(sp, pool, req, rights, only=kept)
        if found is not None and found[0] > req.plan.start_at:
            found = None
    if found is None and kept_only:
        return False
    if found is None:
        found = find_plan(sp, pool, req, rights)
    if found is None:
        sp.plan_failed.add(key)
        return False
    start, doms = found
    if start <= now and kept_only and req.workload_id in sp.stopping_for:
        start = now  # its victims are overdue: it starts at the pass after they stop
    elif start <= now:
        # The GPUs are there: what holds it is not in the map (its shape inside a domain, power).
        if req.plan is None:
            sp.plan_failed.add(key)
        return False
    start = with_notice(sp, pool, req, rights, start, doms)
    gpus: dict[int, list[str]] = {}
    until = start + req.max_duration_s if req.max_duration_s is not None else None
    tl = sp.timeline(req.gpu_model)
    if doms:
        for d, want in planning.gang_parts(pool.dom_size, c, doms)[0]:
            take = min(pool.dom_free[d], want)
            if take:
                part = fit.take_nodes(pool, d, take, None, {})
                if part:
                    for n, ids in pool.take(part, HELD_PLAN):
                        gpus.setdefault(n, []).extend(ids)
            # In the map from its start: before it, what it holds may take work that ends
            # in time (backfill, and plans whose windows close before it).
            tl.occupy(d, want, start, until)
        protect_held(sp, req.gpu_model, doms)
    sp.holds.append(planning.Hold(req.workload_id, req.priority, req.gpu_model, start, doms, gpus))
    if fresh:
        sp.new_plans += 1
    names = tuple(sp.fleet.dom_names[d] for d in doms)
    held = sum(len(ids) for ids in gpus.values())
    scope = f" in {len(doms)} NVLink domains" if len(doms) > 1 else " in one NVLink domain" if doms else ""
    plan = sp.planned_start(req, start, names)
    if req.workload_id in sp.stopping_for:
        # Its claim: the GPUs held for it since the pass began, the rest its victims' once stopped.
        held += claims.held_for(sp, req.workload_id)
        why = PendingReason(
            PendingCode.PREEMPTION,
            f"waiting for {gpus_of(c, req.gpu_model)}{scope}: {held} held, the rest being freed by work already "
            f"under preemption notice (start {_at(start)}, {_in(start - now)})",
        )
    else:
        why = PendingReason(
            PendingCode.PLANNED,
            f"planned start {_at(start)} ({_in(start - now)}): {gpus_of(c, req.gpu_model)}{scope}, "
            f"{held} held now, the rest freed by then by running work's max durations"
            + (f"; now {blocked.text}" if blocked is not None else "")
            + gave_way_note(sp, req, plan),
        )
    sp.decisions.append(Unplaced(req.workload_id, why.text, why.code, plan))
    return True


def gave_way_note(sp: PassState, req: WorkloadRequest, plan: PlannedStart) -> str:
    """What a tenant's reason adds when a larger gang of its class moved its plan (``gave_way``)."""
    if not plan.gave_way or req.plan is None:
        return ""
    return (
        f"; later than its plan of the last pass ({_at(req.plan.start_at)}): a gang larger than "
        f"{sp.large} GPUs of its class plans first and took part of its window"
    )


def with_notice(
    sp: PassState,
    pool: ModelPool,
    req: WorkloadRequest,
    rights: frozenset[PriorityClass],
    start: float,
    doms: list[int],
) -> float:
    """The planned start of a window that counts on preempting work is one grace later: at the
    window's start its victims get their notice, and the gang starts when they have stopped."""
    grace = sp.snapshot.stop_grace_s
    if grace <= 0 or not rights - {PriorityClass.MINING}:
        return start
    tl, now = sp.timeline(req.gpu_model), sp.snapshot.now
    duration = req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    parts, _ = planning.gang_parts(pool.dom_size, req.gpu_count, doms)
    wid = req.workload_id
    if all(tl.fits(d, x, start, duration, rights=frozenset(), claimant=wid, now=now) for d, x in parts):
        return start  # free by then without preempting anything
    if all(tl.fits(d, x, start + grace, duration, rights=rights, claimant=wid, now=now) for d, x in parts):
        return start + grace
    return start


def find_plan(
    sp: PassState,
    pool: ModelPool,
    req: WorkloadRequest,
    rights: frozenset[PriorityClass],
    only: set[int] | None = None,
) -> tuple[float, list[int]] | None:
    """Every plan is pinned to domains (one, or whole ones and one more), whatever the NVLink
    policy: what a plan counts on is then what only it may take."""
    tl = sp.timeline(req.gpu_model)
    c, now = req.gpu_count, sp.snapshot.now
    duration = req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    if c <= pool.dmax:
        return planning.plan_one_domain(
            pool, tl, c, duration, rights=rights, claimant=req.workload_id, now=now, excluded=set(), only=only
        )
    return planning.plan_whole_domains(
        pool, tl, c, duration, rights=rights, claimant=req.workload_id, now=now, excluded=set(), only=only
    )


def start_planned(sp: PassState, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy) -> bool | None:
    """A request with a kept plan starts in its planned domains only, as soon as they have
    its GPUs: True (placed), False (held by a permit: decided), None (not there yet)."""
    kept = sp.kept_domains(req)
    if kept is None:
        return None
    assert req.plan is not None
    c = req.gpu_count
    doms = [sp.dom_index[n] for n in req.plan.domains] if sp.dom_index else []
    if sum(pool.dom_free[d] for d in doms) < c:
        return start_on_holds(sp, pool, req, doms)
    plan: fit.Plan = []
    used: dict[int, int] = {}
    if len(doms) == 1 and c <= pool.node_size and mode is NvlinkPolicy.REQUIRED:
        node = [(pool.k[n], n) for n in pool.dom_nodes[doms[0]] if pool.k[n] >= c]
        if node:
            plan = [(min(node)[1], c)]
    if not plan:
        split, short = planning.gang_parts(pool.dom_size, c, doms)
        if short:
            return None
        for d, want in split:
            part = fit.take_nodes(pool, d, want, sp.room, used)
            if part is None:
                return None
            plan += part
    # Early (before its planned start) only where the map has room: later plans' windows stay.
    per: dict[int, int] = {}
    for n, x in plan:
        per[pool.node_dom[n]] = per.get(pool.node_dom[n], 0) + x
    return start_in_map(sp, pool, req, plan, per)


def spare_plans(sp: PassState, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy, plan: fit.Plan) -> fit.Plan:
    """Work decided before a plan's turn (higher-class work, reserved work within its
    reservation) takes the free GPUs of that plan's domains only where it fits nowhere else:
    best fit would send it to exactly the domains a plan is draining, and break the plan for
    nothing. Planned requests are decided in their class before the rest of it, so this only
    steers work that may break them anyway."""
    node_dom = pool.node_dom
    planned = sp.plan_domains.get(req.gpu_model)
    if planned is None:
        planned = sp.plan_domains[req.gpu_model] = set()
        for r in sp.planned_queue:
            if r.gpu_model == req.gpu_model:
                planned |= sp.kept_domains(r) or set()
    if not any(node_dom[n] in planned for n, _ in plan):
        return plan
    spared: set[int] = set()
    for r in sp.planned_queue:
        if r.gpu_model == req.gpu_model and r.workload_id not in sp.decided and r is not req:
            spared |= sp.kept_domains(r) or set()
    if not spared or not any(node_dom[n] in spared for n, _ in plan):
        return plan
    other = fit.find(pool, req.gpu_count, mode, fit.SparingRoom(sp.room, sp.fleet.node_rack, node_dom, spared))
    return other if other is not None else plan


def start_in_map(
    sp: PassState, pool: ModelPool, req: WorkloadRequest, plan: fit.Plan, per: dict[int, int]
) -> bool | None:
    """Start ``req`` now on ``plan`` (``per``: its GPUs per domain) if the resource-time map has
    room for its whole window in each domain: True (placed), False (held by a permit:
    decided), None (a plan's window would break)."""
    tl, now = sp.timeline(req.gpu_model), sp.snapshot.now
    duration = req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    rights = preemption.victim_classes(req.priority, within_reservation=sp.ledger.within_reservation(req))
    wid = req.workload_id
    if not all(tl.fits(d, x, now, duration, rights=rights, claimant=wid, now=now) for d, x in per.items()):
        return None
    shed = sp.permitted(req, req.gpu_count)
    if shed is None:
        return False
    sp.commit(pool, req, plan, shed)
    return True


def start_elsewhere(sp: PassState, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy) -> bool | None:
    """A planned request starts now outside its planned domains where the search finds free
    GPUs and the map has room for its whole window there (no other plan's GPUs are taken):
    True (placed), False (held by a permit: decided), None (not here)."""
    c = req.gpu_count
    failed = sp.fit_failed.get((req.gpu_model, c, mode))
    if failed is not None and failed[0] == pool.version:
        return None
    plan = fit.find(pool, c, mode, sp.room)
    if plan is None:
        return None
    if whole_wanted(sp, req.gpu_model, pool):
        node_dom = pool.node_dom
        for d in {node_dom[n] for n, _ in plan}:
            if d >= 0 and pool.dom_free[d] == pool.dom_size[d] and c < pool.dom_size[d]:
                return None  # whole free domains are for the waiting gangs that need one
    return start_in_map(sp, pool, req, plan, sp.per_domain(plan))


def whole_wanted(sp: PassState, model: str, pool: ModelPool) -> bool:
    """Whether a request waiting with a plan needs a whole NVLink domain (or several) of ``model``."""
    got = sp.wants_whole.get(model)
    if got is None:
        got = sp.wants_whole[model] = any(r.gpu_model == model and r.gpu_count >= pool.dmax for r in sp.planned_queue)
    return got


def start_on_holds(sp: PassState, pool: ModelPool, req: WorkloadRequest, doms: list[int]) -> bool | None:
    """Start in its domains on free GPUs and on GPUs held for other plans (several plans'
    holds at once, where ``backfill`` takes one's), if the map has room for every window."""
    now, c = sp.snapshot.now, req.gpu_count
    if req.max_duration_s is None:
        return None
    end = now + req.max_duration_s
    # Any plan's held GPUs: the map (checked below) says whether its window still holds.
    lenders = [h for h in sp.holds if h.model == req.gpu_model and (not h.firm or h.workload_id == req.workload_id)]
    wanted, left = planning.gang_parts(pool.dom_size, c, doms)
    if left:
        return None
    for d, want in wanted:
        have = pool.dom_free[d] + sum(len(ids) for h in lenders for n, ids in h.gpus.items() if pool.node_dom[n] == d)
        if have < want:
            return None
    tl = sp.timeline(req.gpu_model)
    within = sp.ledger.within_reservation(req)
    rights = preemption.victim_classes(req.priority, within_reservation=within)
    if not all(
        tl.fits(d, x, now, req.max_duration_s, rights=rights, claimant=req.workload_id, now=now) for d, x in wanted
    ):
        return None
    shed = sp.permitted(req, c)
    if shed is None:
        return False
    plan: fit.Plan = []
    taken: list[tuple[int, tuple[str, ...]]] = []
    for d, want in wanted:
        free = min(pool.dom_free[d], want)
        if free:
            part = fit.take_nodes(pool, d, free, None, {})
            assert part is not None
            for n, got in pool.take(part):
                plan.append((n, len(got)))
                taken.append((n, got))
        need = want - free
        for h in lenders:
            for n, held in h.gpus.items():
                if need and held and pool.node_dom[n] == d:
                    x = min(len(held), need)
                    plan.append((n, x))
                    taken.append((n, tuple(held[:x])))
                    h.gpus[n] = held[x:]
                    need -= x
        tl.occupy(d, want, now, end)
    sp.commit(pool, req, plan, shed, taken)
    return True


def protect_held(sp: PassState, model: str, doms: list[int]) -> None:
    """Running work in held domains is the plan's to preempt at its start, not later requests'."""
    if sp.preempt is None:
        sp.preempt = sp.build_preemption()
    mp = sp.preempt.get(model)
    if mp is None:
        return
    for d in doms:
        for v in mp.by_dom.get(d, ()):
            if not v.taken:
                v.taken = True
                mp.count(v, -1)


def backfill(
    sp: PassState, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy, only: set[int] | None = None
) -> bool:
    """Start ``req`` on GPUs held for a planned start it cannot delay: it ends (by its max
    duration) before that start, or the planned request may displace it with time to spare;
    and the resource-time map has room for it, so no other plan's window is broken.
    ``only``: in these domains (a request with a plan of its own starts in its domains)."""
    now, rules = sp.snapshot.now, sp.snapshot.rules
    end = now + req.max_duration_s if req.max_duration_s is not None else planning.NEVER
    c = req.gpu_count
    within = sp.ledger.within_reservation(req)
    rights = preemption.victim_classes(req.priority, within_reservation=within)
    tl = sp.timeline(req.gpu_model)
    if sp.holds_by_start[0] != len(sp.holds):  # holds are only appended in a pass
        sp.holds_by_start = (len(sp.holds), sorted(sp.holds, key=lambda h: -h.start_at))
    for hold in sp.holds_by_start[1]:
        if hold.model != req.gpu_model or (only is not None and not only & set(hold.domains)):
            continue
        if hold.firm and (hold.workload_id == req.workload_id or hold.priority not in rights):
            continue
        plan = planning.fit_held(hold, pool, c, mode)
        if plan is None:
            continue
        if sp.room is not None and any(sp.room.cap(n, {}) < x for n, x in plan):
            continue
        per: dict[int, int] = {}
        for n, x in plan:
            per[pool.node_dom[n]] = per.get(pool.node_dom[n], 0) + x

        def room(until: float, per: dict[int, int] = per) -> bool:
            return all(
                tl.fits(d, x, now, until - now, rights=rights, claimant=req.workload_id, now=now)
                for d, x in per.items()
            )

        until = end
        if not room(until):
            # Work the planned request may displace can use the gap up to its start.
            displaceable = req.priority in preemption.victim_classes(hold.priority, within_reservation=False)
            if not displaceable or end <= hold.start_at:
                continue
            if sp.profile.churn_limits and (
                hold.start_at - now < rules.min_run_s or req.preemptions >= rules.max_preemptions
            ):
                continue
            until = hold.start_at
            if not room(until):
                continue
        shed = 0.0
        for permit in sp.permit_calls:
            verdict = permit(sp, req, c)
            if verdict.reason is not None:
                return False
            shed += verdict.shed_w
        taken: list[tuple[int, tuple[str, ...]]] = []
        for n, x in plan:
            ids = hold.gpus[n]
            taken.append((n, tuple(ids[:x])))
            hold.gpus[n] = ids[x:]
        for d, x in per.items():
            tl.occupy(d, x, now, until)
        sp.commit(pool, req, plan, shed, taken)
        return True
    return False


def _at(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _in(seconds: float) -> str:
    s = max(int(seconds), 0)
    if s < 60:
        return f"in {s} s"
    if s < 3600:
        return f"in {s // 60} min"
    return f"in {s // 3600} h {s % 3600 // 60:02d} min"
