"""Placement core: snapshot + queue -> decisions. Pure; the scheduler process does the I/O.

Shaped like the Kubernetes scheduling framework: queue sort (``queue``), per-GPU filters counted
once per pass (``filters``, into the ``index``), request filters that say why (model, quota, NVLink
shape, rack power, site power), best-fit scores (``scores``, searched through the index by
``fit``), reserve within the pass (the index and the power budget are updated, so later requests
see earlier ones), and preemption only when filtering leaves nothing (``preemption``).

Per request, in queue order, the decisions are one of:
- [ShedMining?, Placement]: placed; mining shed first when the site cap needs it;
- [Preempt..., Unplaced]: waits for the GPUs its victims (or earlier notices) are freeing; the
  next pass, after they release, places it;
- [Unplaced]: pending, with the reason.

Failed shapes are memoised per pass: free GPUs only fall during a pass, so a (model, size, NVLink)
shape that did not fit still does not fit until the pool changes, and one that could not be made
to fit by preemption never can again in this pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling import fit, preemption
from controlplane.scheduling.filters import describe, plural
from controlplane.scheduling.framework import DEFAULT_PROFILE, Profile
from controlplane.scheduling.index import HELD, Fleet, ModelPool, build_pools
from controlplane.scheduling.power_budget import PowerBudget
from controlplane.scheduling.queue import queue_order
from controlplane.scheduling.quota import QuotaLedger
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    Placement,
    Preempt,
    RankPlacement,
    ShedMining,
    Unplaced,
    WorkloadRequest,
)

__all__ = ["SchedulingPass", "place", "queue_order", "schedule"]

_ANYWHERE = NvlinkPolicy.NONE  # a single GPU has no NVLink shape


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
        # Plugins with nothing to do this pass (no quotas, no power model) are left out of it, and
        # their methods are bound once: a campus pass decides ten thousand requests.
        self.filters = tuple(p for p in profile.filters if p.active(self))
        self.permits = tuple(p for p in profile.permits if p.active(self))
        self._checks = tuple(p.check for p in self.filters)
        self._permit_calls = tuple(p.permit for p in self.permits)
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
        for req in queue_order(queue, self.snapshot):
            self.decide(req)
        return self.decisions

    def decide(self, req: WorkloadRequest) -> None:
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
        key = (req.gpu_model, c, mode)
        failed = self.fit_failed.get(key)
        plan = None
        if failed is None or failed[0] != pool.version:
            plan = fit.find(pool, c, mode, self.room)
        if plan is None:
            if failed is not None and failed[0] == pool.version:
                reason = failed[1]
            else:
                reason = self.fit_reason(pool, req, mode)
                self.fit_failed[key] = (pool.version, reason)
            return self.preempt_or_wait(pool, req, mode, reason)
        shed = 0.0
        for permit in self._permit_calls:
            verdict = permit(self, req, c)
            if verdict.reason is not None:
                return self.unplaced(req, verdict.reason)
            shed += verdict.shed_w
        self.commit(pool, req, plan, shed)

    def commit(self, pool: ModelPool, req: WorkloadRequest, plan: fit.Plan, shed: float) -> None:
        within = self.ledger.within_reservation(req)
        taken = pool.take(plan)
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
            self.ledger.admit(req, reserved=within)
        for reserve in self._reserves:
            reserve(self, req, per_rack, loose)
        self.decisions.append(Placement(req.workload_id, tuple(RankPlacement(node_ids[n], gpus) for n, gpus in taken)))

    def unplaced(self, req: WorkloadRequest, why: PendingReason) -> None:
        self.decisions.append(Unplaced(req.workload_id, why.text, why.code))

    # -- reasons ---------------------------------------------------------------------------------

    def fit_reason(self, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy) -> PendingReason:
        c, model = req.gpu_count, req.gpu_model
        free, total = pool.free_total, pool.total
        counts = f"{free}/{total} free ({describe(pool.excluded)})"
        if free < c:
            return PendingReason(PendingCode.GPUS, f"waiting for {_gpus(c, model)}: {counts}")
        if self.room is not None and fit.find(pool, c, mode, None) is not None:
            racks = [self.power.rack_reason(r) for r in self.room.left if self.room.left[r] < c] if self.power else []
            example = f" (e.g. {racks[0]})" if racks else ""
            return PendingReason(
                PendingCode.RACK_POWER,
                f"waiting for rack power for {_gpus(c, model)}: the racks that could hold them are at their caps"
                f"{example}",
            )
        if mode is not NvlinkPolicy.REQUIRED:
            return PendingReason(
                PendingCode.SHAPE, f"waiting for {_gpus(c, model)}: {counts}, none placeable in the shape asked"
            )
        nvl_free = pool.free_by_pool[0]
        draining = pool.free_by_pool[2]
        if draining and nvl_free < c:
            return PendingReason(
                PendingCode.NVLINK_DRAINING,
                f"waiting for {_gpus(c, model)} on NVLink: {draining} free GPUs are in NVLink domains draining "
                f"their peers ({counts})",
            )
        largest = pool.largest_domain_free()
        if c > pool.dmax:
            whole = len(pool.whole_domains())
            return PendingReason(
                PendingCode.WHOLE_DOMAINS,
                f"waiting for {_gpus(c, model)} in whole NVLink domains of {pool.dmax}: {counts}, "
                f"{plural(whole, 'whole domain')} free, at most {largest} in any one domain",
            )
        return PendingReason(
            PendingCode.NVLINK_DOMAIN,
            f"waiting for {_gpus(c, model)} in one NVLink domain: {counts}, at most {largest} in any one domain "
            f"({plural(pool.doms_with_free, 'domain')} with free GPUs)",
        )

    # -- preemption ------------------------------------------------------------------------------

    def preempt_or_wait(self, pool: ModelPool, req: WorkloadRequest, mode: NvlinkPolicy, reason: PendingReason) -> None:
        if not self.snapshot.running:
            return self.unplaced(req, reason)
        c = req.gpu_count
        within = self.ledger.within_reservation(req)
        rights = preemption.victim_classes(req.priority, within_reservation=within)
        key = (req.gpu_model, c, mode, rights)
        if key in self.preempt_failed:
            return self.unplaced(req, reason)
        if self.preempt is None:
            self.preempt = preemption.build(self.snapshot, self.fleet)
        mp = self.preempt.get(req.gpu_model)
        choice = None
        if mp is not None:
            if mode is NvlinkPolicy.REQUIRED:
                if c <= pool.dmax:
                    choice = preemption.choose_in_domain(pool, mp, c, rights)
                else:
                    choice = preemption.choose_across_domains(pool, mp, c, rights)
            else:
                choice = preemption.choose_anywhere(pool, mp, c, rights)
        if choice is None or mp is None:
            self.preempt_failed.add(key)
            return self.unplaced(req, reason)
        # Hold what the preemptor will use: its free GPUs, the GPUs being freed, its victims.
        if choice.parts:
            for d, f, _ in choice.parts:
                held = fit.take_nodes(pool, d, f, None, {}) if f else None
                if held:
                    pool.take(held, HELD)
        elif choice.free_used:
            if choice.domain >= 0:
                held = fit.take_nodes(pool, choice.domain, min(choice.free_used, c), None, {})
            else:
                held = fit.spread(pool, min(choice.free_used, c), None)
            if held:
                pool.take(held, HELD)
        preemption.claim(mp, choice)
        if within:
            self.ledger.hold_reserved(req.tenant_id, c)
        doms = [d for d, _, _ in choice.parts] if choice.parts else [choice.domain] if choice.domain >= 0 else []
        scope = f" in {len(doms)} NVLink domains" if len(doms) > 1 else " in one NVLink domain" if doms else ""
        freed = 0
        for v in choice.victims:
            useful = sum(v.useful_by_dom.get(d, 0) for d in doms) if doms else v.useful
            freed += useful
            grace = preemption.stop_grace_s(v.run.priority, self.snapshot.stop_grace_s)
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
        self.unplaced(
            req,
            PendingReason(PendingCode.PREEMPTION, f"waiting for {_gpus(c, req.gpu_model)}{scope}: " + ", ".join(parts)),
        )


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


def _gpus(n: int, model: str) -> str:
    return f"{n} {model} GPU{'' if n == 1 else 's'}"
