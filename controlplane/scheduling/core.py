"""Placement core: snapshot + queue -> decisions. Pure; the scheduler process does the I/O.

Shaped like the Kubernetes scheduling framework: queue sort (``queue``), per-GPU filters counted
once per pass (``filters``, into the ``index``), request filters that say why (model, quota, NVLink
shape, rack power, site power), best-fit scores (``scores``, searched through the index by
``fit``), reserve within the pass (the index and the power budget are updated, so later requests
see earlier ones), and preemption only when filtering leaves nothing (``preemption``).

With the default profile (``framework``) the queue is sorted by class, then reservations, then
planned starts in the order they were made, then weighted fair share between tenants; a request
the search cannot place may backfill GPUs held for a planned start (``planning``: only where the
resource-time map has room, so no plan is delayed), then preempt (claims stick to their
preemptor; churn limits protect work restarted recently or noticed too often), then get a
planned start of its own with the free GPUs of its domains held for it. A request with a plan
from an earlier pass starts only in its planned domains; its plan is kept while those domains
still start it no later. That path is ``planned`` (planned starts, backfill) and ``claims``
(claims that stick), functions of this pass; the map they read is ``planning``.

Per request, in queue order, the decisions are one of:
- [ShedMining?, Placement]: placed; mining shed first when the site cap needs it;
- [Preempt..., Unplaced]: waits for the GPUs its victims (or earlier notices) are freeing; the
  next pass, after they release, places it;
- [Unplaced]: pending, with the reason (and its planned start, ``Unplaced.plan``, if it has one).

Failed shapes are memoised per pass: free GPUs only fall during a pass, so a (model, size, NVLink)
shape that did not fit still does not fit until the pool changes, and one that could not be made
to fit by preemption never can again in this pass.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Callable, Sequence

from controlplane.domain.enums import PRIORITY_RANK, NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling import claims, fit, planned, planning, preemption
from controlplane.scheduling.filters import describe, gpus_of, plural
from controlplane.scheduling.framework import DEFAULT_PROFILE, Profile
from controlplane.scheduling.index import HELD, Fleet, ModelPool, build_pools
from controlplane.scheduling.power_budget import PowerBudget
from controlplane.scheduling.queue import competing_rank, queue_order, within_reservation
from controlplane.scheduling.quota import QuotaLedger
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    Placement,
    PlannedStart,
    Preempt,
    RankPlacement,
    ShedMining,
    Unplaced,
    WorkloadRequest,
)

__all__ = ["SchedulingPass", "place", "queue_order", "schedule"]

_ANYWHERE = NvlinkPolicy.NONE  # a single GPU has no NVLink shape
# Blocked by GPUs of its shape being busy: what a planned start answers (not power, not quota).
_PLANNABLE = frozenset(
    {
        PendingCode.GPUS,
        PendingCode.SHAPE,
        PendingCode.NVLINK_DOMAIN,
        PendingCode.WHOLE_DOMAINS,
        PendingCode.NVLINK_DRAINING,
    }
)


class SchedulingPass:
    """One pass over one snapshot: the indexes are built here, the decisions in ``run``."""

    def __init__(self, snapshot: FleetSnapshot, profile: Profile = DEFAULT_PROFILE) -> None:
        self.snapshot = snapshot
        self.profile = profile
        self.fleet = Fleet(snapshot)
        self.pools = build_pools(snapshot, self.fleet)
        self.power = PowerBudget(snapshot, self.fleet.rack_names) if snapshot.power is not None else None
        self.room = self._rack_room()
        self.ledger = QuotaLedger.from_snapshot(snapshot)
        self.preempt: dict[str, preemption.ModelPreemption] | None = None
        self.fit_failed: dict[tuple[str, int, NvlinkPolicy], tuple[int, PendingReason]] = {}
        self.preempt_failed: set[tuple[str, int, NvlinkPolicy, frozenset[PriorityClass]]] = set()
        self.decisions: list[Decision] = []
        # Planned starts made this pass: their held GPUs, the domains they hold, their timelines.
        self.holds: list[planning.Hold] = []
        self.holds_by_start: tuple[int, list[planning.Hold]] = (0, [])  # latest start first, as of len(holds)
        self.wants_whole: dict[str, bool] = {}  # per model: a planned request needs a whole domain
        self.new_plans = 0
        self.timelines: dict[str, planning.Timeline] = {}
        # Placed this pass before the model's map existed (their releases join it when built).
        self.placed_early = planning.PlacedEarly()
        # Claims made before a model's map was built: (domain, GPUs, from, until) it counts free.
        self.claims_early: dict[str, list[tuple[int, int, float, float | None]]] = {}
        self.plan_failed: set[tuple[str, int, NvlinkPolicy, frozenset[PriorityClass]]] = set()
        self.claimants: frozenset[str] = frozenset()
        # Preemptors whose victims are still stopping (their claims are held for them), and when
        # the last of them has stopped.
        self.stopping_for: set[str] = set()
        self.stopping_until: dict[str, float] = {}
        self.dom_index: dict[str, int] | None = None
        # Planned requests of earlier passes, and the class (and reservation) phase being decided.
        self.planned_queue: list[WorkloadRequest] = []
        self.spread_claims: list[WorkloadRequest] = []  # plans of no domains: claims anywhere
        self.due_spread: set[str] = set()  # those starting at the pass's head (``claims.start_due``)
        self.plan_domains: dict[str, set[int]] = {}  # per model, the domains of any kept plan
        # Planned gangs larger than this decide first, the smaller plans giving way (``decide_large``;
        # past any gang's size when the rule is off or the profile does not plan).
        self.large = (snapshot.rules.large_gang_gpus or 1 << 62) if profile.planning else 1 << 62
        self.giving_way = False
        # Smaller plans whose window a large gang took part of this pass (their reason says so).
        self.gave_way: set[str] = set()
        self.phase: tuple[int, int] = (-1, 0)
        self.decided: set[str] = set()
        self._usage: dict[str, tuple[int, dict[int, int]]] | None = None
        self.queue: Sequence[WorkloadRequest] = ()
        # The windows of earlier passes' plans, seeded into each model's map before anything is
        # decided: (domain, GPUs, start, end) per workload, until its turn replaces them.
        self.seeded: dict[str, list[tuple[int, int, float, float | None]]] = {}
        # Plugins with nothing to do this pass (no quotas, no power model) are left out of it, and
        # their methods are bound once: a campus pass decides ten thousand requests.
        self.filters = tuple(p for p in profile.filters if p.active(self))
        self.permits = tuple(p for p in profile.permits if p.active(self))
        self._checks = tuple(p.check for p in self.filters)
        self.permit_calls = tuple(p.permit for p in self.permits)
        reserves: list[Callable[[SchedulingPass, WorkloadRequest, dict[int, int], int], None]] = [
            p.reserve for p in self.filters if p.reserves
        ]
        reserves += [p.reserve for p in self.permits if p.reserves]
        self._reserves = tuple(reserves)

    def _rack_room(self) -> fit.RackRoom | None:
        """Racks whose cap leaves room for fewer GPUs than they have free; None if no rack binds.

        Room and free GPUs fall together as GPUs are placed, so a rack that does not bind at the
        start of the pass never binds during it."""
        if self.power is None or not any(c is not None for c in self.power.rack_cap):
            return None
        node_rack = self.fleet.node_rack
        free = [0] * len(self.fleet.rack_names)
        for pool in self.pools.values():
            for n, k in enumerate(pool.k):
                if k and node_rack[n] >= 0:
                    free[node_rack[n]] += k
        left = {r: room for r, f in enumerate(free) if (room := self.power.rack_room_gpus(r)) < f}
        return fit.RackRoom(node_rack, left) if left else None

    def run(self, queue: Sequence[WorkloadRequest]) -> list[Decision]:
        """Decide ``queue``. The cyclic collector is paused for the pass and resumed after: every
        object a pass allocates lives until its end (indexes, decisions, the planning map), so
        its scans of them are pure cost (a tenth of a campus pass); nothing is left uncollected."""
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            return self._run(queue)
        finally:
            if paused:
                gc.enable()

    def _run(self, queue: Sequence[WorkloadRequest]) -> list[Decision]:
        if self.profile.sticky_claims and self.snapshot.running:
            self.claimants = frozenset(r.workload_id for r in queue)
        self.queue = queue
        if self.profile.one_reservation_view:
            self.ledger.eligible = frozenset(within_reservation(queue, self.snapshot))
        with_plan = [r for r in queue if r.plan is not None]
        self.planned_queue = [r for r in with_plan if r.plan is not None and r.plan.domains]
        self.spread_claims = [r for r in with_plan if r.plan is not None and not r.plan.domains]
        ordered = self.profile.queue_sort.order(queue, self.snapshot, self.ledger.eligible)
        if self.profile.sticky_claims and self.profile.planning:
            claims.hold_claims(self)
            self.decided = claims.start_due(self)  # in the map of no phase: nothing seeded yet
        if not self.planned_queue:
            self.phase = (len(PRIORITY_RANK), 1)  # nothing to seed
            for req in ordered:
                if req.workload_id not in self.decided:
                    self.decide(req)
            return self.decisions
        for req in ordered:
            if req.workload_id in self.decided:
                continue
            within = self.ledger.within_reservation(req)
            phase = (competing_rank(req.priority, within=within), 0 if within else 1)
            if phase != self.phase:
                self.phase = phase
                for model, tl in self.timelines.items():
                    self.seed(model, tl)
            self.decide(req)
            self.decided.add(req.workload_id)
        return self.decisions

    def decide(self, req: WorkloadRequest) -> None:
        if (
            req.gpu_count > self.large
            and req.plan is not None
            and req.plan.domains
            and not self.giving_way
            and req.gpu_model in self.pools
        ):
            return self.decide_large(req)
        pool = self.pools.get(req.gpu_model)
        c = req.gpu_count
        if pool is None:
            return self.unplaced(req, PendingReason(PendingCode.NO_SUCH_MODEL, f"no {req.gpu_model} GPUs in the fleet"))
        if c <= 0:
            return self.unplaced(req, PendingReason(PendingCode.NO_GPUS, "asks for no GPUs"))
        if c > pool.total:
            return self.unplaced(
                req,
                PendingReason(PendingCode.TOO_LARGE, f"asks for {c} GPUs; the fleet has {pool.total} {req.gpu_model}"),
            )
        for check in self._checks:
            held = check(self, req)
            if held is not None:
                return self.unplaced(req, held)
        mode = req.nvlink if c > 1 else _ANYWHERE
        if req.plan is not None and not req.plan.domains and req.workload_id in self.stopping_for:
            return claims.wait_on_claim(self, req)
        if req.plan is not None and req.plan.domains and self.profile.planning:
            self.timeline(req.gpu_model)  # seeds every earlier plan's window
            self.unseed(req)
            started = planned.start_planned(self, pool, req, mode)
            if started is not None:
                return None
            if req.workload_id not in self.stopping_for:
                # Earlier elsewhere, where no plan's window breaks: a plan is a "no later than".
                early = planned.start_elsewhere(self, pool, req, mode)
                if early is not None:
                    return None
                if self.holds and planned.backfill(self, pool, req, mode):
                    return None
            if planned.plan_start(self, pool, req, mode, kept_only=True):
                return None
        key = (req.gpu_model, c, mode)
        failed = self.fit_failed.get(key)
        plan = None
        if failed is None or failed[0] != pool.version:
            plan = fit.find(pool, c, mode, self.room)
            if plan is not None and self.planned_queue:
                plan = planned.spare_plans(self, pool, req, mode, plan)
                if req.workload_id in self.due_spread:
                    plan = claims.keep_windows(self, pool, req, mode, plan)
        if plan is None:
            if failed is not None and failed[0] == pool.version:
                reason = failed[1]
            else:
                reason = self.fit_reason(pool, req, mode)
                self.fit_failed[key] = (pool.version, reason)
            if self.holds and planned.backfill(self, pool, req, mode):
                return None
            if self.preempt_or_wait(pool, req, mode, reason):
                return None
            if (
                self.profile.planning
                and reason.code in _PLANNABLE
                and planned.plan_start(self, pool, req, mode, blocked=reason)
            ):
                return None
            return self.unplaced(req, reason)
        shed = 0.0
        for permit in self.permit_calls:
            verdict = permit(self, req, c)
            if verdict.reason is not None:
                return self.unplaced(req, verdict.reason)
            shed += verdict.shed_w
        self.commit(pool, req, plan, shed)

    def decide_large(self, req: WorkloadRequest) -> None:
        """A planned gang larger than ``self.large`` GPUs decides in a map where the windows of
        its class's smaller plans (seeded, their turn still to come) have given way: they are
        planned again around what it takes. Work decided before it (higher classes, reserved
        work within its reservation) and plans placed this pass stay in the map."""
        tl = self.timeline(req.gpu_model)
        ledger = self.ledger
        rank = competing_rank(req.priority, within=ledger.within_reservation(req))
        ids = [
            r.workload_id
            for r in self.planned_queue
            if r.workload_id in self.seeded
            and r.gpu_count <= self.large
            and r.gpu_model == req.gpu_model
            and competing_rank(r.priority, within=ledger.within_reservation(r)) == rank
        ]
        away = [self.seeded[wid] for wid in ids]
        for parts in away:
            for d, want, start, end in parts:
                tl.vacate(d, want, start, end)
        touched = {d for parts in away for d, _, _, _ in parts}
        before = {d: Counter(tl.events.get(d, ())) for d in touched}
        self.giving_way = True
        try:
            self.decide(req)
        finally:
            self.giving_way = False
            # What it took: the windows it added to those domains (its plan's, or its run's).
            taken: dict[int, tuple[float, float]] = {}
            for d in touched:
                new = Counter(tl.events.get(d, ())) - before[d]
                if new:
                    starts = [t for t, c in new if c < 0] or [self.snapshot.now]
                    ends = [t for t, c in new if c > 0]
                    taken[d] = (min(starts), max(ends) if ends else planning.NEVER)
            for wid, parts in zip(ids, away, strict=True):
                for d, want, start, end in parts:
                    tl.occupy(d, want, start, end)
                    span = taken.get(d)
                    if span is not None and start < span[1] and (end is None or end > span[0]):
                        self.gave_way.add(wid)

    def commit(
        self,
        pool: ModelPool,
        req: WorkloadRequest,
        plan: fit.Plan,
        shed: float,
        taken: list[tuple[int, tuple[str, ...]]] | None = None,
    ) -> None:
        """Place ``req`` on ``plan`` (free GPUs), or on ``taken`` (held GPUs it backfills)."""
        if taken is None:
            if self.profile.planning and req.gpu_model not in self.timelines:
                by_dom: dict[int, int] = {}
                taken = pool.take(plan, by_dom=by_dom)
                if req.max_duration_s is not None:  # work with no bound never frees in a plan
                    self.placed_early.add(req.gpu_model, self.snapshot.now + req.max_duration_s, req.priority, by_dom)
            else:
                taken = pool.take(plan)
                if self.profile.planning:
                    self.note_placed(req, plan)
        node_ids, node_rack = self.fleet.node_ids, self.fleet.node_rack
        per_rack: dict[int, int] = {}
        loose = 0
        for n, x in plan:
            r = node_rack[n]
            if r < 0:
                loose += x
            else:
                per_rack[r] = per_rack.get(r, 0) + x
        if self.power is not None:
            if shed > 0:
                before = self.power.mining_w
                self.decisions.append(
                    ShedMining(
                        shed,
                        req.workload_id,
                        f"site power: {req.gpu_count} GPUs need {shed / 1e6:,.3f} MW of mining's "
                        f"{before / 1e6:,.3f} MW to stay under the {self.power.site_limit_w / 1e6:,.3f} MW limit",
                    )
                )
            self.power.commit(per_rack, loose, shed)
            if self.room is not None:
                for r, x in per_rack.items():
                    if r in self.room.left:
                        self.room.left[r] -= x
        if self.ledger.policies:
            self.ledger.admit(req, reserved=self.ledger.within_reservation(req))
        for reserve in self._reserves:
            reserve(self, req, per_rack, loose)
        self.decisions.append(
            Placement(req.workload_id, tuple([RankPlacement(node_ids[n], gpus) for n, gpus in taken]))
        )

    def unplaced(self, req: WorkloadRequest, why: PendingReason) -> None:
        self.decisions.append(Unplaced(req.workload_id, why.text, why.code))

    # -- reasons ---------------------------------------------------------------------------------

    def fit_reason(self, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy) -> PendingReason:
        c, model = req.gpu_count, req.gpu_model
        free, total = pool.free_total, pool.total
        counts = f"{free}/{total} free ({describe(pool.excluded)})"
        if free < c:
            return PendingReason(PendingCode.GPUS, f"waiting for {gpus_of(c, model)}: {counts}")
        if self.room is not None and fit.find(pool, c, mode, None) is not None:
            racks = [self.power.rack_reason(r) for r in self.room.left if self.room.left[r] < c] if self.power else []
            example = f" (e.g. {racks[0]})" if racks else ""
            return PendingReason(
                PendingCode.RACK_POWER,
                f"waiting for rack power for {gpus_of(c, model)}: the racks that could hold them are at their caps"
                f"{example}",
            )
        if mode is not NvlinkPolicy.REQUIRED:
            return PendingReason(
                PendingCode.SHAPE, f"waiting for {gpus_of(c, model)}: {counts}, none placeable in the shape asked"
            )
        nvl_free = pool.free_by_pool[0]
        draining = pool.free_by_pool[2]
        if draining and nvl_free < c:
            return PendingReason(
                PendingCode.NVLINK_DRAINING,
                f"waiting for {gpus_of(c, model)} on NVLink: {draining} free GPUs are in NVLink domains draining "
                f"their peers ({counts})",
            )
        largest = pool.largest_domain_free()
        if c > pool.dmax:
            whole = len(pool.whole_domains())
            return PendingReason(
                PendingCode.WHOLE_DOMAINS,
                f"waiting for {gpus_of(c, model)} in whole NVLink domains of {pool.dmax}: {counts}, "
                f"{plural(whole, 'whole domain')} free, at most {largest} in any one domain",
            )
        return PendingReason(
            PendingCode.NVLINK_DOMAIN,
            f"waiting for {gpus_of(c, model)} in one NVLink domain: {counts}, at most {largest} in any one domain "
            f"({plural(pool.doms_with_free, 'domain')} with free GPUs)",
        )

    # -- preemption ------------------------------------------------------------------------------

    def preempt_or_wait(self, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy, reason: PendingReason) -> bool:
        """Preempt for ``req``, or wait on GPUs already being freed: True when decided so."""
        if not self.snapshot.running:
            return False
        c = req.gpu_count
        within = self.ledger.within_reservation(req)
        rights = preemption.victim_classes(req.priority, within_reservation=within)
        key = (req.gpu_model, c, mode, rights)
        if self.preempt is None:
            self.preempt = self.build_preemption()
        mp = self.preempt.get(req.gpu_model)
        claiming = mp is not None and req.workload_id in mp.claims
        if key in self.preempt_failed and not claiming:
            return False
        choice = None
        if mp is not None:
            contractual = within and req.priority is PriorityClass.RESERVED
            with mp.claimed_by(req.workload_id), mp.revealed(contractual):
                if mode is NvlinkPolicy.REQUIRED:
                    allowed = (
                        claims.claim_fits(self, req, rights) if self.planned_queue and self.profile.planning else None
                    )
                    if c <= pool.dmax:
                        choice = preemption.choose_in_domain(pool, mp, c, rights, allowed)
                    else:
                        choice = preemption.choose_across_domains(pool, mp, c, rights, allowed)
                else:
                    choice = preemption.choose_anywhere(pool, mp, c, rights)
                if choice is not None:
                    preemption.claim(mp, choice)
        if choice is None or mp is None:
            if not claiming:
                self.preempt_failed.add(key)
            return False
        # Hold what the preemptor will use: its free GPUs, the GPUs being freed, its victims.
        taken: list[fit.Plan] = []
        if choice.parts:
            for d, f, _ in choice.parts:
                held = fit.take_nodes(pool, d, f, None, {}) if f else None
                if held:
                    pool.take(held, HELD)
                    taken.append(held)
        elif choice.free_used:
            if choice.domain >= 0:
                held = fit.take_nodes(pool, choice.domain, min(choice.free_used, c), None, {})
            else:
                held = fit.spread(pool, min(choice.free_used, c), None)
            if held:
                pool.take(held, HELD)
                taken.append(held)
        if within:
            self.ledger.hold_reserved(req.tenant_id, c)
        doms = [d for d, _, _ in choice.parts] if choice.parts else [choice.domain] if choice.domain >= 0 else []
        scope = f" in {len(doms)} NVLink domains" if len(doms) > 1 else " in one NVLink domain" if doms else ""
        freed = 0
        grace_max = 0.0
        for v in choice.victims:
            useful = sum(v.useful_by_dom.get(d, 0) for d in doms) if doms else v.useful
            freed += useful
            grace = preemption.stop_grace_s(v.run.priority, self.snapshot.stop_grace_s)
            grace_max = max(grace_max, grace)
            why = (
                f"preempted: {v.run.priority.value} work ({_grace(grace)}) makes room for "
                f"{req.priority.value}{' (within its reservation)' if within else ''} workload {req.workload_id}, "
                f"which needs {c} {req.gpu_model} GPUs{scope}; frees {useful} of them"
            )
            self.decisions.append(Preempt(v.run.workload_id, req.workload_id, why, grace, v.run.gpu_count))
        parts = []
        if choice.free_used:
            parts.append(f"{min(choice.free_used, c)} free")
        if choice.soon_used:
            parts.append(f"{choice.soon_used} being freed by work already under preemption notice")
        if choice.victims:
            parts.append(f"{min(freed, c)} being freed by preempting {_describe_victims(choice, self.snapshot)}")
        waiting = PendingReason(
            PendingCode.PREEMPTION, f"waiting for {gpus_of(c, req.gpu_model)}{scope}: " + ", ".join(parts)
        )
        if not self.profile.planning:
            self.unplaced(req, waiting)
            return True
        # The claim is a planned start: at the grace's end (what is already under notice frees
        # within one grace too), on the domains chosen.
        now = self.snapshot.now
        wait = grace_max if choice.victims else (self.snapshot.stop_grace_s if choice.soon_used else 0.0)
        start = now + wait
        if not choice.victims and req.plan is not None:
            start = max(now, min(start, req.plan.start_at))  # the notices went out before: their end stands
        if self.profile.planning:
            self._occupy_claim(pool, req, choice, doms, taken, start)
        names = tuple(self.fleet.dom_names[d] for d in doms)
        plan = self.planned_start(req, start, names)
        text = waiting.text + planned.gave_way_note(self, req, plan)
        self.decisions.append(Unplaced(req.workload_id, text, waiting.code, plan))
        return True

    def _occupy_claim(
        self,
        pool: ModelPool,
        req: WorkloadRequest,
        choice: preemption.Choice,
        doms: list[int],
        taken: list[fit.Plan],
        start: float,
    ) -> None:
        """A claim made in this pass, in the map from now until its run ends: the map was built
        before it and counts what it holds free (its free GPUs, its victims' for work that may
        displace them), and a later plan of the pass must not count on them. Its domains' share
        of the gang; with no NVLink shape, the free GPUs it holds and its victims' GPUs. A map
        built later counts the held free GPUs out already (they are not free then): only the
        rest joins it."""
        now, c = self.snapshot.now, req.gpu_count
        end = start + req.max_duration_s if req.max_duration_s is not None else None
        held: dict[int, int] = {}
        for part in taken:
            for n, x in part:
                held[pool.node_dom[n]] = held.get(pool.node_dom[n], 0) + x
        if doms:
            occ = dict(planning.gang_parts(pool.dom_size, c, doms)[0]) if choice.parts else {doms[0]: c}
        else:
            occ = dict(held)
            left = c - sum(held.values())
            for v in choice.victims:
                for d, x in v.useful_by_dom.items():
                    y = min(x, left)
                    if y > 0:
                        occ[d] = occ.get(d, 0) + y
                        left -= y
        tl = self.timelines.get(req.gpu_model)
        if tl is not None:
            for d, x in occ.items():
                if d >= 0 and x > 0:
                    tl.occupy(d, x, now, end)
            return
        early = self.claims_early.setdefault(req.gpu_model, [])
        for d, x in occ.items():
            rest = x - held.get(d, 0)
            if d >= 0 and rest > 0:
                early.append((d, rest, now, end))

    # -- the planning map (the planned path is in ``planned``, claims in ``claims``) ---------------

    def planned_start(self, req: WorkloadRequest, start_at: float, domains: tuple[str, ...]) -> PlannedStart:
        prev = req.plan
        if prev is None:
            return PlannedStart(start_at, domains, start_at, self.snapshot.now)
        first = prev.first_start_at if prev.first_start_at is not None else prev.start_at
        made = prev.planned_at if prev.planned_at is not None else self.snapshot.now
        gave_way = start_at > prev.start_at and req.workload_id in self.gave_way
        return PlannedStart(start_at, domains, first, made, gave_way)

    def timeline(self, model: str) -> planning.Timeline:
        tl = self.timelines.get(model)
        if tl is None:
            tl = self.timelines[model] = planning.build_timeline(
                self.snapshot,
                self.fleet,
                self.pools[model],
                sticky_claims=self.profile.sticky_claims,
                churn_limits=self.profile.churn_limits,
                claimants=self.claimants,
                usage=self.usage(),
            )
            # Work placed this pass frees by its max duration: one release per domain, end and class.
            self.placed_early.move_into(model, tl)
            for d, x, since, until in self.claims_early.pop(model, ()):
                tl.occupy(d, x, since, until)
            self.seed(model, tl)
        return tl

    def seed(self, model: str, tl: planning.Timeline) -> None:
        """Every plan of an earlier pass occupies its window in the map before any request of its
        class is decided, so no decision of the class (an early start, a plan moved, a backfill)
        breaks a plan decided later in it. Plans of lower classes are seeded only when their class's
        turn comes: higher-class work is not held back by them (and reserved work within its
        reservation comes before its class's plans)."""
        pool = self.pools[model]
        upto = self.phase
        for req in self.planned_queue:
            if req.gpu_model != model or req.workload_id in self.seeded or req.workload_id in self.decided:
                continue
            if (competing_rank(req.priority, within=self.ledger.within_reservation(req)), 1) > upto:
                continue
            kept = self.kept_domains(req)
            if kept is None or req.plan is None:
                continue
            assert self.dom_index is not None
            window = planning.plan_window(pool.dom_size, self.dom_index, req)
            for d, want, start, end in window:
                tl.occupy(d, want, start, end)
            self.seeded[req.workload_id] = window

    def unseed(self, req: WorkloadRequest) -> None:
        """Its turn: the window seeded for it leaves the map (what it decides now replaces it)."""
        tl = self.timelines.get(req.gpu_model)
        parts = self.seeded.pop(req.workload_id, None)
        if tl is None or not parts:
            return
        for d, want, start, end in parts:
            tl.vacate(d, want, start, end)

    def per_domain(self, plan: fit.Plan) -> dict[int, int]:
        per: dict[int, int] = {}
        node_dom, draining = self.fleet.node_dom, self.fleet.draining
        for n, x in plan:
            d = node_dom[n]
            if d >= 0 and not draining[n]:
                per[d] = per.get(d, 0) + x
        return per

    def note_placed(self, req: WorkloadRequest, plan: fit.Plan) -> None:
        """Work placed this pass holds its GPUs until its max duration: later plans see that.
        Before the model's map exists its free GPUs already count it out, so only its release
        joins the map when it is built (``placed_early``, counted in ``commit``); after, it
        occupies the map from now."""
        tl = self.timelines[req.gpu_model]
        now = self.snapshot.now
        end = now + req.max_duration_s if req.max_duration_s is not None else None
        for d, x in self.per_domain(plan).items():
            tl.occupy(d, x, now, end)

    def kept_domains(self, req: WorkloadRequest) -> set[int] | None:
        """The domains of the request's earlier plan, if it has one and they all still exist."""
        if req.plan is None or not req.plan.domains:
            return None
        if self.dom_index is None:
            self.dom_index = {name: d for d, name in enumerate(self.fleet.dom_names)}
        kept = {self.dom_index[n] for n in req.plan.domains if n in self.dom_index}
        return kept if len(kept) == len(req.plan.domains) else None

    def build_preemption(self) -> dict[str, preemption.ModelPreemption]:
        return preemption.build(
            self.snapshot,
            self.fleet,
            claimants=self.claimants,
            churn_limits=self.profile.churn_limits,
            pools=self.pools,
            usage=self.usage() if self.profile.planning else None,
        )

    def usage(self) -> dict[str, tuple[int, dict[int, int]]]:
        """Per running workload, its GPUs usable once freed, in all and per usable NVLink domain:
        counted once per pass for the preemption candidates and the planning map alike."""
        if self._usage is None:
            self._usage = {}
            for run in self.snapshot.running:
                pool = self.pools.get(run.gpu_model)
                if pool is not None:
                    by_dom: dict[int, int] = {}
                    useful = preemption.usable_by_dom(run, self.fleet, pool, by_dom)
                    self._usage[run.workload_id] = (useful, by_dom)
        return self._usage

    def permitted(self, req: WorkloadRequest, gpus: int) -> float | None:
        """The permits' answer for a placement found: the mining to shed first, or None (held,
        and the request's reason recorded)."""
        shed = 0.0
        for permit in self.permit_calls:
            verdict = permit(self, req, gpus)
            if verdict.reason is not None:
                self.unplaced(req, verdict.reason)
                return None
            shed += verdict.shed_w
        return shed


def _grace(grace: float) -> str:
    return "at once" if grace <= 0 else f"grace {grace:g} s"


def _describe_victims(choice: preemption.Choice, snapshot: FleetSnapshot) -> str:
    by_class: dict[PriorityClass, int] = {}
    for v in choice.victims:
        by_class[v.run.priority] = by_class.get(v.run.priority, 0) + 1
    return " and ".join(
        f"{plural(n, f'{cls.value} workload')} ({_grace(preemption.stop_grace_s(cls, snapshot.stop_grace_s))})"
        for cls, n in sorted(by_class.items(), key=lambda kv: kv[0].value)
    )


def schedule(
    snapshot: FleetSnapshot, queue: Sequence[WorkloadRequest], profile: Profile = DEFAULT_PROFILE
) -> list[Decision]:
    """One pass: every decision (placements, preemptions, mining shed, pending reasons) in queue order."""
    return SchedulingPass(snapshot, profile).run(queue)


def place(snapshot: FleetSnapshot, queue: Sequence[WorkloadRequest]) -> list[Placement | Unplaced]:
    """The placements and pending reasons of one pass, for callers that commit only those.

    A snapshot with running work or a power model can yield preemptions and mining shed that such
    a caller would drop: that raises, so the caller moves to ``schedule``."""
    out: list[Placement | Unplaced] = []
    for d in schedule(snapshot, queue):
        if not isinstance(d, Placement | Unplaced):
            raise ValueError(f"{type(d).__name__} decisions need schedule(), not place()")
        out.append(d)
    return out
