"""Fold an agent's report into SQL: the state of each rank, GPUs freed once their processes are
confirmed gone, the GPUs' health and events.

Only reports that change something reach here (ingest skips the rest by fingerprint).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.protocol import (
    STALE_EPOCH,
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
    """What in a report can change SQL state: assignments, the applied generation, GPU health,
    the agent's protocol and software versions, its metrics URL.

    None when the report carries something that must always reach SQL (events, an inventory).
    """
    if report.xid_events or report.inventory is not None:
        return None
    statuses = sorted(s.model_dump_json() for s in report.assignments)
    health = sorted((g.uuid, g.health.value, g.health_action.value, g.health_reasons) for g in report.gpus)
    versions = [report.protocol_version, report.agent_version, report.metrics_url]
    blob = json.dumps([report.applied_generation, statuses, health, versions], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


_GONE = {AssignmentPhase.EXITED, AssignmentPhase.STOPPED, AssignmentPhase.REJECTED}


@dataclass(frozen=True)
class Folded:
    generation: int  # the node's desired-state generation
    gpu_uuids: list[str]  # the node's GPUs after the fold (lost ones included): whose samples count


def apply_report(session: Session, *, node_id: str, report: ReportRequest, now: datetime | None = None) -> Folded:
    """Fold an agent's report into workload state; free GPUs whose processes are confirmed gone
    (a gang's, only once the workload has ended: its state and its GPUs always agree).

    Idempotent: folding the same report again changes nothing more (phases are set, not
    appended; GPUs already freed stay freed; events already recorded are not recorded again),
    so a report whose fold committed but whose Redis record did not can be retried.
    """
    node = session.get(Node, node_id)
    # Read after the first statement, which on SQLite waits for the write lock: the times this
    # fold writes (finished_at, released_at) are when it ran, not when it started queueing.
    now = now or utcnow()
    if node is None:
        raise Forbidden("this node no longer exists")
    # The GPUs first: their row locks come before any other this fold takes.
    gpu_uuids = gpu_health.fold(
        session, node=node, gpus=report.gpus, events=report.xid_events, inventory=report.inventory, now=now
    )
    if (node.protocol_version, node.agent_version) != (report.protocol_version, report.agent_version):
        # An agent upgraded (or rolled back) in place; a version-1 agent does not say its version.
        node.protocol_version = report.protocol_version
        node.agent_version = report.agent_version
    if report.metrics_url is not None and node.metrics_url != report.metrics_url:
        # A report without it (an older agent, a spooled report kept in version 1) leaves it be.
        node.metrics_url = report.metrics_url
    if node.status != NodeStatus.READY.value:
        node.status = NodeStatus.READY.value
        node.status_reason = "reporting again"
        node.status_changed_at = now
        wakeups(session).scheduler = True
    # By placement too: a requeued workload placed again on this node while its old process is
    # still stopping has two statuses for one rank, one per epoch.
    statuses = {(s.workload_id, s.rank, s.epoch): s for s in report.assignments}
    live = session.scalars(
        select(Allocation).where(Allocation.node_id == node_id, Allocation.released_at.is_(None))
    ).all()
    touched: set[str] = set()
    to_release: list[Allocation] = []
    ended: list[Allocation] = []  # ranks this report says are gone, whose workload was not told to stop
    for alloc in live:
        status = statuses.get((alloc.workload_id, alloc.rank, alloc.epoch))
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
            ended.append(alloc)
    for workload_id in sorted(touched):
        wl = session.get(Workload, workload_id, with_for_update=True, populate_existing=True)
        if wl is not None and not is_terminal(WorkloadState(wl.state)):
            _derive_state(session, wl, now)
    to_release += _free_with_their_workload(session, ended, touched)
    lifecycle.release(session, to_release, now=now)
    lifecycle.mark_preemptions_released(session, {a.workload_id for a in to_release}, now)
    session.flush()
    return Folded(node.generation, gpu_uuids)


def _free_with_their_workload(session: Session, ended: list[Allocation], touched: set[str]) -> list[Allocation]:
    """The allocations to free now among ranks confirmed gone: only those of a workload that has ended.

    A gang's ranks end one node at a time, each known at its agent's next report. Freeing a
    rank's GPUs at once would show them free (and hand them to the next workload) while the
    workload still reads ``running``, until the last node reports. So a rank that ended while
    its workload runs keeps its GPUs, and the report that ends the workload frees, in the same
    transaction, every rank already confirmed gone on any node; the ranks still running were
    told to stop (``lifecycle.finish``) and are freed as their agents confirm.
    """
    free: list[Allocation] = []
    workload_ids = sorted({a.workload_id for a in ended} | touched)
    workloads = {wid: session.get(Workload, wid) for wid in workload_ids}
    for alloc in ended:
        wl = workloads[alloc.workload_id]
        rank = session.get(WorkloadRank, (alloc.workload_id, alloc.rank))
        gang_runs = wl is not None and wl.epoch == alloc.epoch and not is_terminal(WorkloadState(wl.state))
        if not gang_runs or rank is None or rank.node_id != alloc.node_id:
            free.append(alloc)  # nothing of a running gang: an old placement, or an unknown rank
    for wid, wl in workloads.items():
        if wl is None or not is_terminal(WorkloadState(wl.state)):
            continue
        free += session.scalars(
            select(Allocation)
            .join(
                WorkloadRank,
                (WorkloadRank.workload_id == Allocation.workload_id)
                & (WorkloadRank.rank == Allocation.rank)
                & (WorkloadRank.node_id == Allocation.node_id),
            )
            .where(
                Allocation.workload_id == wid,
                Allocation.epoch == wl.epoch,
                Allocation.released_at.is_(None),
                WorkloadRank.phase.in_([phase.value for phase in _GONE]),
            )
        ).all()
    return free


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
    """Move the workload on from its ranks' recorded phases, in the transaction folding the report.

    It ends (``lifecycle.finish``) at the first rank rejected, stopped by its agent or exited
    non-zero, or once every rank has exited 0. A rank its agent refused as a deposed
    scheduler's placement (``STALE_EPOCH``) is no fault of the tenant's: the workload is
    requeued and placed again by the current leader, whose epoch the agent accepts.

    Its ``finished_at``, like the time of every transition, is ``now``: the control plane's UTC
    clock when it folded the report that ended it, which is also the time of the terminal event
    in its history and the ``released_at`` of the GPUs freed with it
    (``_free_with_their_workload``, same transaction). It is not the agent's clock nor the moment
    a process exited: that is each rank's own ``finished_at`` (agent clock), up to a report
    interval earlier.
    """
    ranks = session.scalars(
        select(WorkloadRank).where(WorkloadRank.workload_id == wl.id).order_by(WorkloadRank.rank)
    ).all()
    phases = [r.phase for r in ranks]
    for r in ranks:
        if r.phase == AssignmentPhase.REJECTED.value and r.message.startswith(STALE_EPOCH):
            reason = f"rank {r.rank} was refused as a deposed scheduler's placement ({r.message}); requeued"
            lifecycle.requeue(session, wl, reason, now=now)
            return
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
