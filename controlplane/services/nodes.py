"""Agent use cases: register with a bootstrap token, desired state, reports, logs."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from agents.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    AssignmentPhase,
    AssignmentStatus,
    DesiredState,
    LogUpload,
    NodeInventory,
    RegisterRequest,
    ReportRequest,
    log_key,
)
from controlplane.domain import keys
from controlplane.domain.enums import KeyScope, NodeStatus, WorkloadState
from controlplane.domain.errors import Conflict, Forbidden, InvalidRequest, Unauthorized, UnsupportedProtocol
from controlplane.domain.ids import new_id
from controlplane.domain.workload import is_terminal
from controlplane.services import admin, gpu_state, lifecycle, placement
from controlplane.services.uow import wakeups
from controlplane.services.workloads import decode_chunk
from controlplane.store.models import (
    Allocation,
    BootstrapToken,
    Gpu,
    Node,
    Rack,
    Workload,
    WorkloadLog,
    WorkloadRank,
)
from controlplane.store.types import utcnow

LOG_CAP_BYTES = 16 * 1024 * 1024


def check_protocol(version: int) -> None:
    if version != PROTOCOL_VERSION:
        raise UnsupportedProtocol(
            f"agent protocol version {version} is not supported; this control plane speaks {PROTOCOL_VERSION}"
        )


def register(
    session: Session, *, pepper: bytes, request: RegisterRequest, now: datetime | None = None
) -> tuple[Node, str]:
    """Exchange a single-use bootstrap token for a node and its credential."""
    check_protocol(request.protocol_version)
    now = now or utcnow()
    token = request.bootstrap_token
    if not keys.is_bootstrap_token(token):
        raise Unauthorized("the bootstrap token is malformed")
    row = session.scalar(select(BootstrapToken).where(BootstrapToken.digest == keys.digest(token, pepper)))
    if row is None:
        raise Unauthorized("the bootstrap token is unknown")
    if row.used_at is not None:
        raise Unauthorized("the bootstrap token was already used")
    if row.expires_at <= now:
        raise Unauthorized("the bootstrap token has expired")
    inv = request.inventory
    uuids = [g.uuid for g in inv.gpus]
    if len(set(uuids)) != len(uuids) or len({g.index for g in inv.gpus}) != len(inv.gpus):
        raise InvalidRequest("the inventory lists a GPU UUID or index twice")
    taken = session.scalars(select(Gpu.uuid).where(Gpu.uuid.in_(uuids))).all() if uuids else []
    if taken:
        raise Conflict(f"GPUs already registered to another node: {', '.join(sorted(taken))}")
    # Claim the token with a guarded update so two concurrent registrations cannot both use it.
    claimed = session.execute(
        update(BootstrapToken)
        .where(BootstrapToken.id == row.id, BootstrapToken.used_at.is_(None))
        .values(used_at=now)
        .returning(BootstrapToken.id)
    ).all()
    if len(claimed) != 1:
        raise Unauthorized("the bootstrap token was already used")
    rack_id = row.rack_id or _rack_from_fabric(session, row.site_id, inv)
    node = Node(
        id=new_id("node"),
        site_id=row.site_id,
        rack_id=rack_id,
        hostname=inv.hostname,
        address=inv.address,
        backend=inv.backend,
        driver_version=inv.driver_version,
        status=NodeStatus.READY.value,
        status_reason="registered",
        nvlink_domain=gpu_state.nvlink_domain(inv),
        registered_at=now,
        status_changed_at=now,
        generation=1,
    )
    session.add(node)
    session.flush()
    for g in inv.gpus:
        session.add(gpu_state.new_gpu(node.id, g))
    row.used_by_node_id = node.id
    issued = admin.issue_api_key(
        session, pepper=pepper, scope=KeyScope.AGENT, name=f"agent {inv.hostname}", node_id=node.id
    )
    return node, issued.secret


def _rack_from_fabric(session: Session, site_id: str, inv: NodeInventory) -> str | None:
    clusters = {g.fabric_cluster_uuid for g in inv.gpus if g.fabric_cluster_uuid}
    if len(clusters) != 1:
        return None
    rack = session.scalar(select(Rack).where(Rack.site_id == site_id, Rack.fabric_cluster_uuid == clusters.pop()))
    return rack.id if rack else None


def authorize_node(principal_node_id: str | None, node_id: str) -> None:
    if principal_node_id != node_id:
        raise Forbidden("this credential belongs to another node")


def stop_grace(priority: str, spot_grace_s: float) -> float | None:
    """A spot workload's preemption notice; mining stops at once; others: the agent's default."""
    return {"spot": spot_grace_s, "mining": 0.0}.get(priority)


def desired_state(session: Session, *, node_id: str, spot_grace_s: float = 30.0) -> DesiredState:
    node = session.get(Node, node_id)
    if node is None:
        raise Forbidden("this node no longer exists")
    allocs = session.execute(
        select(Allocation, Gpu.uuid)
        .join(Gpu, Gpu.id == Allocation.gpu_id)
        .where(
            Allocation.node_id == node_id,
            Allocation.released_at.is_(None),
            Allocation.stop_generation.is_(None),
        )
        .order_by(Allocation.workload_id, Gpu.index)
    ).all()
    by_workload: dict[str, list[tuple[Allocation, str]]] = defaultdict(list)
    for alloc, uuid in allocs:
        by_workload[alloc.workload_id].append((alloc, uuid))
    assignments = []
    for workload_id, rows in by_workload.items():
        wl = session.get(Workload, workload_id)
        if wl is None or is_terminal(WorkloadState(wl.state)):
            continue
        peers = _peer_addresses(session, workload_id)
        alloc = rows[0][0]
        assignments.append(
            Assignment(
                workload_id=workload_id,
                epoch=alloc.epoch,
                rank=alloc.rank,
                world_size=len(peers),
                gpu_uuids=[uuid for _, uuid in rows],
                command=list(wl.command),
                env=dict(wl.env),
                master_addr=peers[0],
                master_port=wl.master_port or 29500,
                peers=peers,
                sim_utilization=wl.sim_utilization,
                stop_grace_s=stop_grace(wl.priority, spot_grace_s),
            )
        )
    return DesiredState(node_id=node_id, generation=node.generation, assignments=assignments)


def _peer_addresses(session: Session, workload_id: str) -> list[str]:
    rows = session.execute(
        select(WorkloadRank.rank, Node.address)
        .join(Node, Node.id == WorkloadRank.node_id)
        .where(WorkloadRank.workload_id == workload_id)
        .order_by(WorkloadRank.rank)
    ).all()
    return [address for _, address in rows]


def current_generation(session: Session, node_id: str) -> int:
    gen = session.scalar(select(Node.generation).where(Node.id == node_id))
    if gen is None:
        raise Forbidden("this node no longer exists")
    return int(gen)


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
    gpu_state.fold(session, node=node, gpus=report.gpus, events=report.xid_events, inventory=report.inventory, now=now)
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
    placement.mark_preemptions_released(session, {a.workload_id for a in to_release}, now)
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


def append_logs(session: Session, *, node_id: str, upload: LogUpload) -> dict[str, int]:
    """Append log bytes in order; answer the offset held per rank so the agent resumes there."""
    check_protocol(upload.protocol_version)
    acked: dict[str, int] = {}
    for chunk in upload.chunks:
        owner = session.scalar(
            select(func.count())
            .select_from(Allocation)
            .where(
                Allocation.workload_id == chunk.workload_id,
                Allocation.rank == chunk.rank,
                Allocation.node_id == node_id,
            )
        )
        if not owner:
            raise Forbidden(f"workload {chunk.workload_id} rank {chunk.rank} never ran on this node")
        data = decode_chunk(chunk.data_b64)
        end = _log_end(session, chunk.workload_id, chunk.rank)
        if chunk.offset <= end < chunk.offset + len(data) and end < LOG_CAP_BYTES:
            piece = data[end - chunk.offset :][: LOG_CAP_BYTES - end]
            session.add(WorkloadLog(workload_id=chunk.workload_id, rank=chunk.rank, offset=end, data=piece))
            end += len(piece)
            if end >= LOG_CAP_BYTES:
                end = chunk.offset + len(data)  # capped: acknowledge and drop the rest
        elif end >= LOG_CAP_BYTES:
            end = max(end, chunk.offset + len(data))
        acked[log_key(chunk.workload_id, chunk.rank)] = end
        session.flush()
    return acked


def _log_end(session: Session, workload_id: str, rank: int) -> int:
    end = session.scalar(
        select(func.max(WorkloadLog.offset + func.length(WorkloadLog.data))).where(
            WorkloadLog.workload_id == workload_id, WorkloadLog.rank == rank
        )
    )
    return int(end or 0)
