"""Shared fixtures: real PostgreSQL and SQLite (the same tests on both), a real Redis.

Each backend is migrated once per session with Alembic; each test starts from empty tables and
its own Redis key prefix, so tests are isolated without paying for a migration each.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from testenv import PEPPER, REDIS_URL, empty_tables, pg_database

if TYPE_CHECKING:
    # For annotations only: the fixtures import these when they run, so loading this file pulls in no server stack.
    from fastapi.testclient import TestClient

    from controlplane.config import Settings
    from controlplane.runtime import Runtime


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def migrated_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from controlplane.store.migrate import upgrade

    pg_name = f"switchyard_test_{os.getpid()}"
    urls = {
        "sqlite": f"sqlite:///{tmp_path_factory.mktemp('db') / 'switchyard.db'}",
        "postgresql": pg_database(pg_name, drop=False),
    }
    for url in urls.values():
        upgrade(url)
    yield urls
    pg_database(pg_name, drop=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, migrated_urls: dict[str, str]) -> Iterator[str]:
    url = migrated_urls[request.param]
    empty_tables(url)
    yield url


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    import redis

    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture
def settings(db_url: str, redis_prefix: str, tmp_path: Path) -> Settings:
    from controlplane.config import Settings

    return Settings(
        database_url=db_url,
        redis_url=REDIS_URL,
        redis_prefix=redis_prefix,
        pepper=PEPPER,
        data_dir=tmp_path,
        watch_timeout_s=5,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    from controlplane.runtime import build_runtime

    rt = build_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def client(settings: Settings, runtime: Runtime) -> Iterator[TestClient]:
    from fastapi.testclient import TestClient

    from controlplane.api.app import create_app

    with TestClient(create_app(settings, runtime=runtime), raise_server_exceptions=False) as c:
        yield c
