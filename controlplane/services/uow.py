"""Units of work: one transaction, and the wake-ups it causes sent after it commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from controlplane.live.bus import Bus, Wakeups


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
