"""The `site` fixture: a real control plane and NODES real agent processes on PostgreSQL + Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import NODES, Site, free_port, process_env, start_sim_agent, wait_for


@pytest.fixture
def site_redis_url() -> str:
    """The Redis the site's processes use: the shared one (a test module may give its own)."""
    from testenv import REDIS_URL

    return REDIS_URL


@pytest.fixture
def site(tmp_path: Path, redis_prefix: str, site_redis_url: str) -> Iterator[Site]:
    from testenv import PEPPER, pg_database

    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    db_name = f"switchyard_e2e_{uuid.uuid4().hex[:8]}"
    db_url = pg_database(db_name, drop=False)
    upgrade(db_url)
    port = free_port()
    redis_url = site_redis_url
    env = process_env(tmp_path, db_url=db_url, redis_url=redis_url, redis_prefix=redis_prefix, pepper=PEPPER, port=port)
    settings = Settings(database_url=db_url, redis_url=redis_url, redis_prefix=redis_prefix, pepper=PEPPER)
    engine = make_engine(db_url)
    with transaction(make_session_factory(engine)) as session:
        from factories import demo_spec

        admin.create_site(session, name="demo-rack", spec=demo_spec())
        tenant = admin.create_tenant(session, name="acme")
        pepper = settings.pepper_bytes()
        tenant_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.TENANT, tenant_id=tenant.id).secret
        ops_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR).secret
        tokens = [
            admin.issue_bootstrap_token(session, pepper=pepper, site_name="demo-rack", rack="rack-001", ttl_s=600)[1]
            for _ in range(NODES)
        ]
    engine.dispose()
    s = Site(workdir=tmp_path, env=env, url=f"http://127.0.0.1:{port}")
    s.env["TENANT_KEY"] = tenant_key
    s.env["OPS_KEY"] = ops_key
    try:
        s.start("api", "api")
        s.start("scheduler", "scheduler")
        s.start("worker", "worker", "--beat", "--concurrency", "1")
        wait_for(
            lambda: httpx.get(f"{s.url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            site=s,
            what="the API",
        )
        from controlplane.services.admin import rack_fabric_uuid

        for i, token in enumerate(tokens, start=1):
            start_sim_agent(s, i, token, cluster_uuid=rack_fabric_uuid("demo-rack", "rack-001"))
        yield s
    finally:
        s.stop_all()
        pg_database(db_name, drop=True)
