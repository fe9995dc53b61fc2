"""The bad-input suite (issue 8), on PostgreSQL and SQLite: zero 500s, every 4xx problem+json,
nothing changed in any table or Redis key. The cases, and how they are made from the app's
route table, are in ``tests/badinput.py``; ``test_bad_input_controls.py`` shows that each
route's request without its fault is accepted, so each case fails for its fault alone.

One world per database serves every case: a case that changed anything fails on the spot
(the world is compared with its snapshot after every request).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from badinput import (
    CASES,
    EXAMPLES,
    PROBLEM,
    ROUTE_BY_ID,
    ROUTES,
    Case,
    World,
    body_model,
    build_world,
    route_id,
    snapshot,
    valid_request,
)
from fastapi.testclient import TestClient
from testenv import PEPPER, REDIS_URL, empty_tables

from controlplane.api import bodies
from controlplane.api.app import create_app
from controlplane.config import Settings
from controlplane.runtime import Runtime, build_runtime


@dataclass
class Stage:
    """One world on one database, and what it holds; ``reset`` builds it anew after a case that
    changed it, so that case fails alone rather than every case after it."""

    url: str
    prefix: str
    runtime: Runtime
    client: TestClient
    world: World
    state: dict[str, Any]

    def snapshot(self) -> dict[str, Any]:
        return snapshot(self.runtime, self.prefix)

    def reset(self) -> None:
        _forget_redis(self.prefix)
        empty_tables(self.url)
        self.world = build_world(self.client, self.runtime)
        self.state = self.snapshot()


def _forget_redis(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(f"{prefix}:*"))
    if keys:
        r.delete(*keys)
    r.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stage(
    request: pytest.FixtureRequest, migrated_urls: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stage]:
    url = migrated_urls[request.param]
    empty_tables(url)
    prefix = f"sytest-{uuid.uuid4().hex[:12]}"
    settings = Settings(
        database_url=url,
        redis_url=REDIS_URL,
        redis_prefix=prefix,
        pepper=PEPPER,
        data_dir=Path(tmp_path_factory.mktemp("bad-input")),
        watch_timeout_s=5,
    )
    runtime = build_runtime(settings)
    try:
        with TestClient(create_app(settings, runtime=runtime), raise_server_exceptions=False) as client:
            world = build_world(client, runtime)
            yield Stage(url, prefix, runtime, client, world, snapshot(runtime, prefix))
    finally:
        runtime.close()
        _forget_redis(prefix)
        empty_tables(url)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(stage: Stage, case: Case) -> None:
    r = case.bend(valid_request(ROUTE_BY_ID[case.route], stage.world)).send(stage.client)
    changed = stage.snapshot() != stage.state
    if changed:
        stage.reset()
    assert r.status_code < 500, (r.status_code, r.text)
    if case.at_bound:
        assert r.status_code < 300 or r.headers["content-type"] == PROBLEM, r.text
    else:
        assert r.status_code in case.statuses, (r.status_code, r.text)
        assert r.headers["content-type"] == PROBLEM
        problem = r.json()
        assert problem["status"] == r.status_code and problem["detail"]
    assert not changed, "a refused request changed the database or Redis"


def test_every_route_is_guarded_and_covered(stage: Stage) -> None:
    spec = stage.client.get("/v1/openapi.json").json()
    operations = {f"{method.upper()} {path}" for path, ops in spec["paths"].items() for method in ops}
    assert operations == set(ROUTE_BY_ID), "a route outside api.app.ROUTERS is not in the bad-input suite"
    for route in ROUTES:
        assert isinstance(route, bodies.GuardedRoute), route_id(route)
        model = body_model(route)
        assert model is None or model in EXAMPLES, f"{route_id(route)}: add an example body for {model.__name__}"
    covered = {c.route for c in CASES}
    assert covered == set(ROUTE_BY_ID)
    assert len(CASES) >= 90  # per database, as the issue asks
