"""Units of work: one transaction, and the wake-ups it causes sent after it commits.

Who owns the transaction: the shell. A router, a Celery task, the CLI or a process loop opens a
unit of work (``Runtime.uow()``) and passes its session to the service, which reads and writes
through it and never commits; the commit happens when the ``with`` block ends, and the wake-ups
the service recorded (``wakeups(session)``) are published only after it. A use case that must
talk to Redis and SQL in order (report ingest, the liveness sweep, a node view) takes the
handles it needs and opens its own units of work, so no network call ever runs inside a
transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

from sqlalchemy.orm import Session, sessionmaker

from controlplane.live.bus import Bus, Wakeups

# What services that open their own transactions are given: ``with uow() as session: ...``.
UnitOfWork = Callable[[], AbstractContextManager[Session]]


def wakeups(session: Session) -> Wakeups:
    found = session.info.get("wakeups")
    if found is None:
        found = session.info["wakeups"] = Wakeups()
    assert isinstance(found, Wakeups)
    return found


@contextmanager
def unit_of_work(factory: sessionmaker[Session], bus: Bus | None) -> Iterator[Session]:
    with factory() as session:
        with session.begin():
            yield session
        pending = wakeups(session)
        session.info.pop("wakeups", None)
    if bus is not None:
        bus.publish(pending)
