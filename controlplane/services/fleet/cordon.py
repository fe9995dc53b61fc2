"""Cordon and drain: a node admits no new work until an operator uncordons it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controlplane.domain import audit as actions
from controlplane.domain.errors import NotFound
from controlplane.services.audit import AuditContext, record
from controlplane.services.uow import wakeups
from controlplane.store.models import Node
from controlplane.store.types import utcnow


def get_node(session: Session, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    return node


def cordon(session: Session, audit: AuditContext, *, node_id: str, reason: str, drain: bool = False) -> Node:
    """Cordon: admit no new work. Drain: the same, and say the node is being emptied on purpose.

    Neither moves running work; the operator (or a later policy) decides what to do with it.
    Audited in the same transaction.
    """
    node = get_node(session, node_id)
    node.cordoned = True
    node.draining = drain or node.draining
    node.cordon_reason = reason
    node.status_changed_at = utcnow()
    action = actions.NODE_DRAINED if drain else actions.NODE_CORDONED
    record(session, audit, action=action, target_kind="node", target_id=node_id, detail={"reason": reason})
    return node


def uncordon(session: Session, audit: AuditContext, *, node_id: str) -> Node:
    node = get_node(session, node_id)
    node.cordoned = False
    node.draining = False
    node.cordon_reason = ""
    node.status_changed_at = utcnow()
    wakeups(session).scheduler = True
    record(session, audit, action=actions.NODE_UNCORDONED, target_kind="node", target_id=node_id)
    return node
