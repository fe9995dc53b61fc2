"""Fold an agent's report into SQL: the state of each rank, GPUs freed once their processes are
confirmed gone, the GPUs' health and events.

Only reports that change something reach here (ingest skips the rest by fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.protocol import (
    AssignmentPhase,
    AssignmentStatus,
    ReportRequest,
)
from controlplane.domain.enums import NodeStatus, WorkloadState
from controlplane.domain.errors import Forbidden
from controlplane.domain.workload import is_terminal
from controlplane.services.agents import gpu_health
from controlplane.services.uow import wakeups
from controlplane.services.workloads import lifecycle
from controlplane.store.models import (
    Allocation,
    Node,
    Workload,
    WorkloadRank,
)
from controlplane.store.types import utcnow


def report_fingerprint(report: ReportRequest) -> str | None:
    """What in a report can change SQL state: assignments, the applied generation, GPU health.

    None when the report carries something that must always reach SQL (events, an inventory).
    """
    if report.xid_events or report.inventory is not None:
        return None
    statuses = sorted(s.model_dump_json() for s in report.assignments)
    health = sorted((g.uuid, g.health.value, g.health_action.value, g.health_reasons) for g in report.gpus)
    blob = json.dumps([report.applied_generation, statuses, health], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


_GONE = {AssignmentPhase.EXITED, AssignmentPhase.STOPPED, AssignmentPhase.REJECTED}


def apply_report(session: Session, *, node_id: str, report: ReportRequest, now: datetime | None = None) -> int:
    """Fold an agent's report into workload state; free GPUs whose processes are confirmed gone.

    Returns the node's desired-state generation.
    """
    now = now or utcnow()
    node = session.get(Node, node_id)
    if node is None:
        raise Forbidden("this node no longer exists")
    if node.status != NodeStatus.READY.value:
        node.status = NodeStatus.READY.value
        node.status_reason = "reporting again"
        node.status_changed_at = now
        wakeups(session).scheduler = True
    gpu_health.fold(session, node=node, gpus=report.gpus, events=report.xid_events, inventory=report.inventory, now=now)
    statuses = {(s.workload_id, s.rank): s for s in report.assignments}
    live = session.scalars(
        select(Allocation).where(Allocation.node_id == node_id, Allocation.released_at.is_(None))
    ).all()
    touched: set[str] = set()
    to_release: list[Allocation] = []
    for alloc in live:
        status = statuses.get((alloc.workload_id, alloc.rank))
        if status is not None and status.epoch != alloc.epoch:
            status = None  # a report about an older placement of the same workload
        if alloc.stop_generation is not None:
            if status is not None:
                _record_rank(session, alloc, status, now)  # the rank's last word, kept for the tenant
            running = status is not None and status.phase not in _GONE
            if (status is not None and status.phase in _GONE) or (
                report.applied_generation >= alloc.stop_generation and not running
            ):
                to_release.append(alloc)
            continue
        if status is None:
            continue
        if _record_rank(session, alloc, status, now):
            touched.add(alloc.workload_id)
        if status.phase in _GONE:
            to_release.append(alloc)
    for workload_id in sorted(touched):
        wl = session.get(Workload, workload_id, with_for_update=True, populate_existing=True)
        if wl is not None and not is_terminal(WorkloadState(wl.state)):
            _derive_state(session, wl, now)
    lifecycle.release(session, to_release, now=now)
    lifecycle.mark_preemptions_released(session, {a.workload_id for a in to_release}, now)
    session.flush()
    return node.generation


def _record_rank(session: Session, alloc: Allocation, status: AssignmentStatus, now: datetime) -> bool:
    wl = session.get(Workload, alloc.workload_id)
    if wl is None or wl.epoch != alloc.epoch:
        return False  # an earlier placement of a requeued workload: its ranks are gone
    rank = session.get(WorkloadRank, (alloc.workload_id, alloc.rank))
    if rank is None or rank.node_id != alloc.node_id:
        return False
    changed = rank.phase != status.phase.value or rank.exit_code != status.exit_code
    rank.phase = status.phase.value
    rank.exit_code = status.exit_code
    rank.message = status.message or ""
    if status.started_at is not None and rank.started_at is None:
        rank.started_at = datetime.fromtimestamp(status.started_at, tz=now.tzinfo)
    if status.finished_at is not None and rank.finished_at is None:
        rank.finished_at = datetime.fromtimestamp(status.finished_at, tz=now.tzinfo)
    return changed


def _derive_state(session: Session, wl: Workload, now: datetime) -> None:
    ranks = session.scalars(
        select(WorkloadRank).where(WorkloadRank.workload_id == wl.id).order_by(WorkloadRank.rank)
    ).all()
    phases = [r.phase for r in ranks]
    for r in ranks:
        if r.phase == AssignmentPhase.REJECTED.value:
            lifecycle.finish(session, wl, WorkloadState.FAILED, f"rank {r.rank} was rejected: {r.message}", now=now)
            return
        if r.phase == AssignmentPhase.EXITED.value and r.exit_code != 0:
            detail = f": {r.message}" if r.message else ""
            lifecycle.finish(
                session,
                wl,
                WorkloadState.FAILED,
                f"rank {r.rank} exited with code {r.exit_code}{detail}",
                now=now,
            )
            return
        if r.phase == AssignmentPhase.STOPPED.value:
            lifecycle.finish(
                session,
                wl,
                WorkloadState.FAILED,
                f"rank {r.rank} was stopped by its agent: {r.message}",
                now=now,
            )
            return
    if phases and all(p == AssignmentPhase.EXITED.value for p in phases):
        lifecycle.finish(session, wl, WorkloadState.SUCCEEDED, "all ranks exited with code 0", now=now)
        return
    current = WorkloadState(wl.state)
    started = [p for p in phases if p in (AssignmentPhase.RUNNING.value, AssignmentPhase.EXITED.value)]
    if len(started) == len(phases) and current is not WorkloadState.RUNNING:
        lifecycle.transition(
            session,
            wl,
            WorkloadState.RUNNING,
            f"all {len(phases)} ranks running" if len(phases) > 1 else "running",
            now=now,
        )
    elif current is WorkloadState.SCHEDULED and any(p != "assigned" for p in phases):
        lifecycle.transition(session, wl, WorkloadState.STARTING, "agents are starting the ranks", now=now)
