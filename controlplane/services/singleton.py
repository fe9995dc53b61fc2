"""Fenced singletons: one leader per role (scheduler, dispatcher), safe even when two believe
they lead.

The Redis lease (``live.lease``) says who should lead; the database's fence row per role says
who may write: every commit of a leader first advances the role's fence to its epoch, which
fails if a newer leader has already committed (and the row lock serialises two commits that
race). A new leader starts from an epoch above the fence, so a Redis that lost its counter
never reissues an epoch that already wrote.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from controlplane.live.lease import LeaderLease
from controlplane.store.models import LeaderFence


class FencedOut(RuntimeError):
    """A leader with a newer epoch has committed: this one lost its lease and must stand down."""


def advance_fence(session: Session, *, role: str, epoch: int) -> None:
    """Advance the role's fence to ``epoch`` inside the caller's transaction, or raise FencedOut."""
    if _advance(session, role, epoch):
        return
    if _fence(session, role) is None:
        # The role's first commit ever: create its row (two first leaders may race; one row wins).
        insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        session.execute(insert(LeaderFence).values(role=role, epoch=0).on_conflict_do_nothing())
        if _advance(session, role, epoch):
            return
    raise FencedOut(f"{role} epoch {epoch} is fenced out by epoch {_fence(session, role)}")


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
    """The newest epoch of ``role`` that committed (0: none yet)."""
    with read() as session:
        return _fence(session, role) or 0


def acquire(lease: LeaderLease, read: sessionmaker[Session]) -> int | None:
    """Try to lead ``lease.role``: the epoch won (above every epoch that ever committed), or None."""
    return lease.try_acquire(floor=fence_epoch(read, lease.role))
