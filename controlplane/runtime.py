"""The handles a control-plane process works with, built once from its settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.bus import Bus, Keys, connect
from controlplane.config import Settings
from controlplane.services.telemetry import LiveState
from controlplane.services.uow import unit_of_work
from controlplane.store.db import make_engine, make_session_factory
from controlplane.store.migrate import check_current


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    keys: Keys
    bus: Bus
    live: LiveState
    pepper: bytes

    @contextmanager
    def uow(self) -> Iterator[Session]:
        with unit_of_work(self.sessions, self.bus) as session:
            yield session

    def close(self) -> None:
        self.redis.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.database_url)
    check_current(engine)
    client = connect(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        redis=client,
        keys=keys,
        bus=Bus(client, keys),
        live=LiveState(client, keys),
        pepper=settings.pepper_bytes(),
    )
