"""The handles a control-plane process works with, built once from its settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from controlplane.config import Settings
from controlplane.live.bus import Bus, connect
from controlplane.live.keys import Keys
from controlplane.live.nodes import LiveState
from controlplane.services.auth import PrincipalCache
from controlplane.services.metering.record import Checkpoints
from controlplane.services.uow import unit_of_work
from controlplane.store.db import make_engine, make_reader_factory, make_session_factory
from controlplane.store.migrate import check_current


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    # Read-only sessions: no write lock on SQLite, READ ONLY transactions on PostgreSQL.
    read: sessionmaker[Session]
    redis: redis.Redis
    keys: Keys
    bus: Bus
    live: LiveState
    pepper: bytes
    principals: PrincipalCache
    # When agents' reports checkpoint their energy readings into SQL (per process).
    checkpoints: Checkpoints = field(default_factory=Checkpoints)

    @contextmanager
    def uow(self) -> Iterator[Session]:
        with unit_of_work(self.sessions, self.bus) as session:
            yield session

    def close(self) -> None:
        self.bus.close()
        self.redis.close()
        self.engine.dispose()


def build_runtime(settings: Settings) -> Runtime:
    engine = make_engine(settings.database_url)
    check_current(engine)
    client = connect(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    pepper = settings.pepper_bytes()
    return Runtime(
        settings=settings,
        engine=engine,
        sessions=make_session_factory(engine),
        read=make_reader_factory(engine),
        redis=client,
        keys=keys,
        bus=Bus(client, keys),
        live=LiveState(client, keys),
        pepper=pepper,
        principals=PrincipalCache(pepper=pepper, ttl_s=settings.auth_cache_ttl_s),
    )
