"""Fenced singletons: one leader per role (scheduler, dispatcher), safe even when two believe
they lead.

The Redis lease (``live.lease``) says who should lead; the database's fence row per role says
who may write. Epochs come from the fence alone: a new leader claims the next one in the
database (``claim_epoch``: the fence moves to it at once), so epochs strictly increase and are
never reused, whatever Redis lost, and from that moment every older leader's commit is refused.
Every commit of a leader first checks the fence against its epoch (``advance_fence``), and the
row lock serialises a commit with a claim or another commit that races it.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from controlplane.live.lease import LeaderLease
from controlplane.services.uow import UnitOfWork
from controlplane.store.models import LeaderFence


class FencedOut(RuntimeError):
    """A leader with a newer epoch exists: this one lost its lease and must stand down."""


def advance_fence(session: Session, *, role: str, epoch: int) -> None:
    """Advance the role's fence to ``epoch`` inside the caller's transaction, or raise FencedOut."""
    if _advance(session, role, epoch):
        return
    if _fence(session, role) is None:
        _create_row(session, role)
        if _advance(session, role, epoch):
            return
    raise FencedOut(f"{role} epoch {epoch} is fenced out by epoch {_fence(session, role)}")


def claim_epoch(session: Session, *, role: str) -> int:
    """The role's next epoch, from its durable fence, which moves to it in the caller's
    transaction: no epoch is handed out twice, and every older epoch is fenced out once it commits."""
    for _ in range(2):
        claimed = session.execute(
            update(LeaderFence)
            .where(LeaderFence.role == role)
            .values(epoch=LeaderFence.epoch + 1)
            .returning(LeaderFence.epoch)
        ).scalar()
        if claimed is not None:
            return int(claimed)
        _create_row(session, role)
    raise RuntimeError(f"no fence row for {role}")  # pragma: no cover - the row was just created


def _create_row(session: Session, role: str) -> None:
    """The role's fence row, at epoch 0 (two first leaders may race; one row wins)."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(LeaderFence).values(role=role, epoch=0).on_conflict_do_nothing())


def _advance(session: Session, role: str, epoch: int) -> bool:
    """The row lock this takes also serialises the commits of two leaders that both think they lead."""
    return bool(
        session.execute(
            update(LeaderFence)
            .where(LeaderFence.role == role, LeaderFence.epoch <= epoch)
            .values(epoch=epoch)
            .returning(LeaderFence.role)
        ).all()
    )


def _fence(session: Session, role: str) -> int | None:
    return session.scalar(select(LeaderFence.epoch).where(LeaderFence.role == role))


def fence_epoch(read: sessionmaker[Session], role: str) -> int:
    """The newest epoch of ``role`` claimed or committed (0: none yet)."""
    with read() as session:
        return _fence(session, role) or 0


def acquire(lease: LeaderLease, uow: UnitOfWork) -> int | None:
    """Try to lead ``lease.role``: the epoch won, above every epoch ever handed out, or None.

    Redis first (is the lease free?), then the database claims the epoch in its own unit of
    work, then the lease records it. A lease lost in between (expired, or Redis flushed) burns
    the claimed epoch (it is never reused) and answers None; a claim that fails gives the lease
    back, so nobody waits a lease TTL for an instance that never led.
    """
    if not lease.take():
        return None
    try:
        with uow() as session:
            epoch = claim_epoch(session, role=lease.role)
    except BaseException:
        lease.release()
        raise
    if not lease.confirm(epoch):
        return None
    return epoch
