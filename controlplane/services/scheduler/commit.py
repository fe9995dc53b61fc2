"""Commit one pass's decisions in one transaction: placements, preemptions, mining sheds, and
what waiting work is told (its pending reason, and its planned start when the core gave one).

Every allocation carries the scheduler's fencing epoch, and the partial unique index on live
allocations makes a second owner of a GPU impossible even if two schedulers ever run at once:
the loser's transaction fails as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.domain.epoch import PlacementEpoch
from controlplane.live.lease import SCHEDULER
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    Placement,
    PlannedStart,
    Preempt,
    ShedMining,
    Unplaced,
)
from controlplane.services.scheduler.mining import rebalance_mining
from controlplane.services.singleton import advance_fence
from controlplane.services.workloads import lifecycle
from controlplane.store.bulk import insert_rows, table_of
from controlplane.store.models import (
    Allocation,
    Preemption,
    Site,
    Workload,
    WorkloadEvent,
    WorkloadRank,
)
from controlplane.store.models.workloads import encode_domains
from controlplane.store.types import utcnow


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
    """Apply one pass's decisions in one transaction: placements, preemptions, mining sheds.

    Placements are written in bulk (one statement per table, not one per row): at campus scale
    a pass commits thousands of workloads and a hundred thousand allocations.
    """
    now = now or utcnow()
    advance_fence(session, role=SCHEDULER, epoch=PlacementEpoch.from_value(epoch).leader)
    preempted = 0
    sheds: list[ShedMining] = []
    for decision in decisions:
        if isinstance(decision, Preempt):
            preempted += _preempt(session, decision, now)
        elif isinstance(decision, ShedMining):
            sheds.append(decision)
    writes = _Writes()
    pending = _lock_pending(session, [d.workload_id for d in decisions if isinstance(d, Placement | Unplaced)])
    for decision in decisions:
        if not isinstance(decision, Placement | Unplaced):
            continue
        current = pending.get(decision.workload_id)
        if current is None:
            continue  # not ours to decide any more: cancelled, or placed by someone else since the snapshot
        if isinstance(decision, Unplaced):
            told = _told(decision, current)
            if told != current:
                writes.reasons.append(
                    {
                        "b_id": decision.workload_id,
                        "b_reason": told.reason,
                        "b_code": told.code,
                        "b_expected": told.expected_start_at,
                        "b_domains": told.planned_domains,
                        "b_first": told.first_expected_start_at,
                        "b_planned_at": told.planned_at,
                    }
                )
        else:
            writes.add_placement(decision, epoch, now)
    writes.flush(session, epoch, now)  # the unique index on live allocations speaks here
    lifecycle.bump_generations(session, writes.nodes)
    mining_w = None
    if site is not None and snapshot is not None:
        mining_w = rebalance_mining(session, site=site, snapshot=snapshot, decisions=decisions, sheds=sheds, now=now)
    return CommitResult(
        placed=len(writes.placed),
        still_pending=sum(isinstance(d, Unplaced) for d in decisions),
        preempted=preempted,
        mining_w=mining_w,
    )


class _Told(NamedTuple):
    """What a pending workload says of itself: its reason, and its planned start if it has one."""

    reason: str
    code: str | None
    expected_start_at: datetime | None
    planned_domains: str | None
    first_expected_start_at: datetime | None
    planned_at: datetime | None


def _told(decision: Unplaced, current: _Told) -> _Told:
    """What ``decision`` tells the workload: its reason; its plan's start and held domains (or
    none, without a plan); the first planned start, set once and kept."""
    plan: PlannedStart | None = decision.plan
    if plan is None:
        return _Told(decision.reason, decision.code.value, None, None, current.first_expected_start_at, None)
    first = current.first_expected_start_at
    if first is None:
        first = _at(plan.first_start_at if plan.first_start_at is not None else plan.start_at)
    made = _at(plan.planned_at) if plan.planned_at is not None else current.planned_at
    return _Told(decision.reason, decision.code.value, _at(plan.start_at), encode_domains(plan.domains), first, made)


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def _lock_pending(session: Session, workload_ids: list[str]) -> dict[str, _Told]:
    """Lock the decided workloads that are still pending; what each says now, by id."""
    found: dict[str, _Told] = {}
    for start in range(0, len(workload_ids), 5000):
        chunk = workload_ids[start : start + 5000]
        rows = session.execute(
            select(
                Workload.id,
                Workload.reason,
                Workload.reason_code,
                Workload.expected_start_at,
                Workload.planned_domains,
                Workload.first_expected_start_at,
                Workload.planned_at,
            )
            .where(Workload.id.in_(chunk), Workload.state == WorkloadState.PENDING.value)
            .with_for_update()
        ).all()
        found.update({str(row[0]): _Told(str(row[1]), *row[2:]) for row in rows})
    return found


@dataclass
class _Writes:
    placed: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    ranks: list[dict[str, Any]] = field(default_factory=list)
    allocations: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    nodes: set[str] = field(default_factory=set)

    def add_placement(self, decision: Placement, epoch: int, now: datetime) -> None:
        wl_id = decision.workload_id
        for rank_no, rank in enumerate(decision.ranks):
            self.ranks.append({"workload_id": wl_id, "rank": rank_no, "node_id": rank.node_id, "phase": "assigned"})
            self.nodes.add(rank.node_id)
            self.allocations.extend(
                {
                    "workload_id": wl_id,
                    "gpu_id": gpu_id,
                    "node_id": rank.node_id,
                    "rank": rank_no,
                    "epoch": epoch,
                    "created_at": now,
                }
                for gpu_id in rank.gpu_ids
            )
        nodes = len(decision.ranks)
        reason = f"placed on {decision.gpu_count} GPUs across {nodes} node{'s' if nodes > 1 else ''}"
        self.placed.append({"b_id": wl_id, "b_reason": reason})
        self.events.append(
            {
                "workload_id": wl_id,
                "from_state": WorkloadState.PENDING.value,
                "to_state": WorkloadState.SCHEDULED.value,
                "reason": reason,
                "at": now,
            }
        )

    def flush(self, session: Session, epoch: int, now: datetime) -> None:
        session.flush()
        if self.placed:
            # Core statements on the tables (COPY on PostgreSQL), no ORM objects for 100k rows.
            insert_rows(session, table_of(WorkloadRank), self.ranks)
            insert_rows(session, table_of(Allocation), self.allocations)
            insert_rows(session, table_of(WorkloadEvent), self.events)
            workloads = table_of(Workload)
            session.execute(
                update(workloads)
                .where(workloads.c.id == bindparam("b_id"))
                .values(
                    state=WorkloadState.SCHEDULED.value,
                    reason=bindparam("b_reason"),
                    reason_code=None,
                    epoch=epoch,
                    scheduled_at=now,
                    updated_at=now,
                    # Placed: no longer expected; the first planned start stays, to be measured.
                    expected_start_at=None,
                    planned_domains=None,
                    planned_at=None,
                ),
                self.placed,
            )
        if self.reasons:
            workloads = table_of(Workload)
            session.execute(
                update(workloads)
                .where(workloads.c.id == bindparam("b_id"))
                .values(
                    reason=bindparam("b_reason"),
                    reason_code=bindparam("b_code"),
                    expected_start_at=bindparam("b_expected", type_=workloads.c.expected_start_at.type),
                    planned_domains=bindparam("b_domains"),
                    first_expected_start_at=bindparam("b_first", type_=workloads.c.first_expected_start_at.type),
                    planned_at=bindparam("b_planned_at", type_=workloads.c.planned_at.type),
                ),
                self.reasons,
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
