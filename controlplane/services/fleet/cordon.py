"""Cordon and drain: a node admits no new work until an operator uncordons it."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controlplane.domain.errors import NotFound
from controlplane.services.uow import wakeups
from controlplane.store.models import Node
from controlplane.store.types import utcnow


def get_node(session: Session, node_id: str) -> Node:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFound(f"no node {node_id!r}")
    return node


def cordon(session: Session, *, node_id: str, reason: str, drain: bool = False) -> Node:
    """Cordon: admit no new work. Drain: the same, and say the node is being emptied on purpose.

    Neither moves running work; the operator (or a later policy) decides what to do with it.
    """
    node = get_node(session, node_id)
    node.cordoned = True
    node.draining = drain or node.draining
    node.cordon_reason = reason
    node.status_changed_at = utcnow()
    return node


def uncordon(session: Session, *, node_id: str) -> Node:
    node = get_node(session, node_id)
    node.cordoned = False
    node.draining = False
    node.cordon_reason = ""
    node.status_changed_at = utcnow()
    wakeups(session).scheduler = True
    return node
