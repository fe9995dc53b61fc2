"""The scheduler's shell: build the snapshot, run the pure core, commit decisions.

The commit is one transaction. Every allocation carries the scheduler's fencing epoch, and the
partial unique index on live allocations makes a second owner of a GPU impossible even if two
schedulers ever run at once: the loser's transaction fails as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.scheduling.snapshot import Decision, FleetSnapshot, Placement, Preempt, ShedMining, Unplaced
from controlplane.services import lifecycle
from controlplane.services.admin import mining_fleet_w
from controlplane.store.models import (
    Allocation,
    MiningEvent,
    Preemption,
    SchedulerFence,
    Site,
    Workload,
    WorkloadRank,
)
from controlplane.store.types import utcnow


class FencedOut(RuntimeError):
    """A scheduler with a newer epoch has committed: this one lost its lease and must stand down."""


def check_fence(session: Session, leader_epoch: int) -> None:
    """Advance the database's fence to this leader's epoch, or fail if a newer leader got there.

    The row lock this takes also serialises commits of two schedulers that both think they lead.
    """
    advanced = session.execute(
        update(SchedulerFence)
        .where(SchedulerFence.id == 1, SchedulerFence.epoch <= leader_epoch)
        .values(epoch=leader_epoch)
        .returning(SchedulerFence.id)
    ).all()
    if advanced:
        return
    current = session.get(SchedulerFence, 1)
    if current is None:
        session.add(SchedulerFence(id=1, epoch=leader_epoch))
        session.flush()
        return
    raise FencedOut(f"scheduler epoch {leader_epoch} is fenced out by epoch {current.epoch}")


@dataclass(frozen=True)
class CommitResult:
    placed: int
    still_pending: int
    preempted: int = 0
    mining_w: float | None = None


def commit(
    session: Session,
    *,
    decisions: list[Decision],
    epoch: int,
    site: Site | None = None,
    snapshot: FleetSnapshot | None = None,
    now: datetime | None = None,
) -> CommitResult:
    """Apply one pass's decisions in one transaction: placements, preemptions, mining sheds."""
    now = now or utcnow()
    check_fence(session, epoch >> 32)
    placed = preempted = 0
    touched_nodes: set[str] = set()
    sheds: list[ShedMining] = []
    for decision in decisions:
        if isinstance(decision, Preempt):
            preempted += _preempt(session, decision, now)
            continue
        if isinstance(decision, ShedMining):
            sheds.append(decision)
            continue
        wl = session.get(Workload, decision.workload_id, with_for_update=True, populate_existing=True)
        if wl is None or wl.state != WorkloadState.PENDING.value:
            continue  # cancelled (or placed by someone else) since the snapshot
        if isinstance(decision, Unplaced):
            if wl.reason != decision.reason:
                wl.reason = decision.reason
            continue
        _place(session, wl, decision, epoch, now)
        touched_nodes.update(rank.node_id for rank in decision.ranks)
        placed += 1
    session.flush()  # the unique index speaks here, inside the transaction
    lifecycle.bump_generations(session, touched_nodes)
    mining_w = None
    if site is not None and snapshot is not None:
        mining_w = rebalance_mining(session, site=site, snapshot=snapshot, decisions=decisions, sheds=sheds, now=now)
    return CommitResult(
        placed=placed,
        still_pending=sum(isinstance(d, Unplaced) for d in decisions),
        preempted=preempted,
        mining_w=mining_w,
    )


def _place(session: Session, wl: Workload, decision: Placement, epoch: int, now: datetime) -> None:
    for rank_no, rank in enumerate(decision.ranks):
        session.add(WorkloadRank(workload_id=wl.id, rank=rank_no, node_id=rank.node_id, phase="assigned"))
        for gpu_id in rank.gpu_ids:
            session.add(
                Allocation(
                    workload_id=wl.id, gpu_id=gpu_id, node_id=rank.node_id, rank=rank_no, epoch=epoch, created_at=now
                )
            )
    wl.epoch = epoch
    nodes = len(decision.ranks)
    lifecycle.transition(
        session,
        wl,
        WorkloadState.SCHEDULED,
        f"placed on {decision.gpu_count} GPUs across {nodes} node{'s' if nodes > 1 else ''}",
        now=now,
    )


def _preempt(session: Session, decision: Preempt, now: datetime) -> int:
    """Notice to the victim: it leaves the desired state, its agent SIGTERMs it and gives it its
    grace; its GPUs free when the agent confirms the process gone."""
    victim = session.get(Workload, decision.victim_id, with_for_update=True, populate_existing=True)
    if victim is None or victim.state not in (
        WorkloadState.SCHEDULED.value,
        WorkloadState.STARTING.value,
        WorkloadState.RUNNING.value,
    ):
        return 0
    lifecycle.finish(session, victim, WorkloadState.PREEMPTED, decision.reason, now=now)
    session.add(
        Preemption(
            victim_id=victim.id,
            for_workload_id=decision.for_workload_id,
            victim_priority=victim.priority,
            gpu_count=decision.gpu_count,
            reason=decision.reason,
            grace_s=decision.grace_s,
            noticed_at=now,
        )
    )
    return 1


def planned_gpu_draw_w(snapshot: FleetSnapshot, allocated_gpus: int) -> float:
    """The site's planned GPU-side draw (grid side, x PUE) with this many GPUs allocated."""
    power = snapshot.power
    if power is None:
        return 0.0
    gpus = sum(len(n.gpus) for n in snapshot.nodes)
    racks = {n.rack_id for n in snapshot.nodes}
    it_w = (
        len(racks) * power.switch_trays_w_per_rack
        + len(snapshot.nodes) * power.node_overhead_w
        + allocated_gpus * power.gpu_limit_w
        + (gpus - allocated_gpus) * power.gpu_idle_w
    )
    return it_w * power.pue


def rebalance_mining(
    session: Session,
    *,
    site: Site,
    snapshot: FleetSnapshot,
    decisions: list[Decision],
    sheds: list[ShedMining],
    now: datetime,
) -> float:
    """Mining gets every watt the GPUs' planned draw leaves under the cap, and no more: shed for
    GPU work at once, given back the moment GPUs free up."""
    power = snapshot.power
    if power is None:
        return site.mining_planned_w
    allocated = sum(1 for n in snapshot.nodes for g in n.gpus if g.allocated)
    allocated += sum(d.gpu_count for d in decisions if isinstance(d, Placement))
    budget = power.site_cap_w - power.safety_margin_w - planned_gpu_draw_w(snapshot, allocated)
    target = max(0.0, min(mining_fleet_w(site.spec), budget))
    delta = target - site.mining_planned_w
    if abs(delta) >= 1.0:
        if delta < 0:
            reason = "; ".join(s.reason for s in sheds) or "GPU work needs the power"
        else:
            reason = "GPUs freed: power returned to mining"
        site.mining_planned_w = target
        session.add(MiningEvent(site_id=site.id, delta_w=delta, planned_w=target, reason=reason, at=now))
    return site.mining_planned_w


def mark_preemptions_released(session: Session, workload_ids: set[str], now: datetime) -> None:
    """When a preempted workload's last GPU is free, its preemption records say when."""
    for wl_id in workload_ids:
        still_held = session.scalar(
            select(Allocation.id).where(Allocation.workload_id == wl_id, Allocation.released_at.is_(None)).limit(1)
        )
        if still_held is None:
            for record in session.scalars(
                select(Preemption).where(Preemption.victim_id == wl_id, Preemption.released_at.is_(None))
            ).all():
                record.released_at = now
