"""An agent joins: a single-use bootstrap token is exchanged for a node and its credential."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from agents.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    NodeInventory,
    RegisterRequest,
)
from controlplane.domain import keys
from controlplane.domain.audit import ActorKind
from controlplane.domain.enums import KeyScope, NodeStatus
from controlplane.domain.errors import Conflict, Forbidden, InvalidRequest, Unauthorized, UnsupportedProtocol
from controlplane.domain.ids import new_id
from controlplane.services import admin
from controlplane.services.agents import gpu_health
from controlplane.services.audit import NO_ORIGIN, Actor, AuditContext, Origin
from controlplane.store.models import (
    BootstrapToken,
    Gpu,
    Node,
    Rack,
)
from controlplane.store.types import utcnow


def check_protocol(version: int) -> None:
    """Refuse a protocol version outside the range this control plane speaks (400, naming it).

    The agent steps down on this refusal, so it must come before anything the request changes.
    """
    if not MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION:
        raise UnsupportedProtocol(
            f"agent protocol version {version} is not supported; this control plane speaks protocol "
            f"versions {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}"
        )


BATCH_SINCE = 3  # the protocol version that added the report batch


def check_batch_protocol(version: int, report_versions: list[int]) -> None:
    """A batch speaks protocol 3 or later, within this control plane's range, as do its reports."""
    check_protocol(version)
    if version < BATCH_SINCE:
        raise UnsupportedProtocol(
            f"report batches need protocol version {BATCH_SINCE} or later; this request speaks {version}"
        )
    for each in report_versions:
        check_protocol(each)


def register(
    session: Session,
    *,
    pepper: bytes,
    request: RegisterRequest,
    now: datetime | None = None,
    origin: Origin = NO_ORIGIN,
) -> tuple[Node, str]:
    """Exchange a single-use bootstrap token for a node and its credential.

    The protocol check comes first: a refused version must leave the single-use token unspent,
    since the agent retries with an older version. The new credential is audited as created by
    the token, from ``origin``.
    """
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
    if row.revoked_at is not None:
        raise Unauthorized("the bootstrap token was revoked")
    if row.expires_at <= now:
        raise Unauthorized("the bootstrap token has expired")
    inv = request.inventory
    uuids = [g.uuid for g in inv.gpus]
    if len(set(uuids)) != len(uuids) or len({g.index for g in inv.gpus}) != len(inv.gpus):
        raise InvalidRequest("the inventory lists a GPU UUID or index twice")
    rack_id = row.rack_id or _rack_from_fabric(session, row.site_id, inv)
    shape = gpu_health.gpus_per_node(session, site_id=row.site_id, rack_id=rack_id)
    if len(inv.gpus) > shape:
        raise InvalidRequest(f"the inventory lists {len(inv.gpus)} GPUs; a node of this site has {shape}")
    taken = session.scalars(select(Gpu.uuid).where(Gpu.uuid.in_(uuids))).all() if uuids else []
    if taken:
        raise Conflict(f"GPUs already registered to another node: {', '.join(sorted(taken))}")
    # Claim the token with a guarded update so two concurrent registrations cannot both use it.
    claimed = session.execute(
        update(BootstrapToken)
        .where(BootstrapToken.id == row.id, BootstrapToken.used_at.is_(None), BootstrapToken.revoked_at.is_(None))
        .values(used_at=now)
        .returning(BootstrapToken.id)
    ).all()
    if len(claimed) != 1:
        raise Unauthorized("the bootstrap token was already used")
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
        nvlink_domain=gpu_health.nvlink_domain(inv),
        registered_at=now,
        status_changed_at=now,
        generation=1,
        protocol_version=request.protocol_version,
        agent_version=request.agent_version,
        metrics_url=request.metrics_url,
    )
    session.add(node)
    session.flush()
    for g in inv.gpus:
        session.add(gpu_health.new_gpu(node.id, g))
    row.used_by_node_id = node.id
    issued = admin.issue_api_key(
        session,
        pepper=pepper,
        scope=KeyScope.AGENT,
        name=f"agent {inv.hostname}",
        node_id=node.id,
        audit=AuditContext(Actor(ActorKind.BOOTSTRAP, row.id), origin),
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
