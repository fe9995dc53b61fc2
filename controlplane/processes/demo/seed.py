"""A fresh site for every run: the data directory, the database and the Redis keys.

The demo always starts from nothing, so what it shows (and what its verdict judges) is the
run at hand, never a leftover of an earlier one.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from controlplane.config import Settings

_FILES = ("switchyard.db", "switchyard.db-wal", "switchyard.db-shm", "celerybeat-schedule", "pepper")
_DIRS = ("agents", "logs", "redis")


@dataclass(frozen=True)
class Seeded:
    tenant_key: str
    operator_key: str
    bootstrap_tokens: list[str]  # one per compute tray of the rack
    rack_fabric_uuid: str


def reset_data_dir(data_dir: Path) -> None:
    """Remove what an earlier demo left there (only the demo's own files)."""
    for name in _FILES:
        (data_dir / name).unlink(missing_ok=True)
    for name in _DIRS:
        shutil.rmtree(data_dir / name, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)


def clear_prefix(url: str, prefix: str) -> None:
    """Drop the keys an earlier demo on the same port left in a shared Redis."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(f"{prefix}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def prepare_database(settings: Settings, site_name: str) -> Seeded:
    """Migrate, then create the site, a tenant, both keys and a bootstrap token per tray."""
    from sqlalchemy import select

    from controlplane.domain.enums import KeyScope
    from controlplane.scenarios import sites_file
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade
    from controlplane.store.models import Rack

    upgrade(settings.database_url)
    pepper = settings.pepper_bytes()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_session_factory(engine)) as session:
            spec = admin.load_scenario(sites_file(settings.scenarios_dir), site_name)
            site = admin.create_site(session, name=site_name, spec=spec)
            tenant = admin.create_tenant(session, name="demo-tenant")
            tenant_key = admin.issue_api_key(
                session, pepper=pepper, scope=KeyScope.TENANT, name="demo", tenant_id=tenant.id
            ).secret
            operator_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR, name="demo").secret
            racks = session.scalars(select(Rack).where(Rack.site_id == site.id).order_by(Rack.name)).all()
            if len(racks) != 1:
                raise RuntimeError(f"the demo runs one rack; site {site_name!r} has {len(racks)}")
            rack = racks[0]
            tokens = [
                admin.issue_bootstrap_token(session, pepper=pepper, site_name=site_name, rack=rack.name, ttl_s=3600)[1]
                for _ in range(rack.nodes_expected)
            ]
            return Seeded(tenant_key, operator_key, tokens, rack.fabric_cluster_uuid)
    finally:
        engine.dispose()
