"""Operator use cases: sites from the scenario file, tenants, API keys, agent bootstrap tokens."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain import keys
from controlplane.domain.enums import KeyScope
from controlplane.domain.errors import Conflict, InvalidRequest, NotFound
from controlplane.domain.ids import new_id
from controlplane.store.models import ApiKey, BootstrapToken, Rack, Site, Tenant
from controlplane.store.types import utcnow

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _check_name(kind: str, name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidRequest(f"{kind} name {name!r} must be 1-63 lowercase letters, digits or '-'")


def rack_name(number: int) -> str:
    return f"rack-{number:03d}"


def rack_fabric_uuid(site_name: str, rack: str) -> str:
    """A stable NVLink cluster UUID per rack (the real one comes from the fabric manager)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:{site_name}:{rack}"))


def mining_fleet_w(spec: dict[str, Any]) -> float:
    """The ASIC fleet's full draw: what mining takes when no GPU needs the power."""
    asics = spec.get("asics") or {}
    return float(asics.get("count", 0)) * float(asics.get("power_w", 0))


def load_scenario(path: Path, name: str) -> dict[str, Any]:
    try:
        sites = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidRequest(f"cannot read sites from {path}: {exc}") from exc
    if not isinstance(sites, dict) or name not in sites:
        known = ", ".join(sorted(sites)) if isinstance(sites, dict) else "none"
        raise NotFound(f"site {name!r} is not in {path} (it has: {known})")
    spec = sites[name]
    if not isinstance(spec, dict):
        raise InvalidRequest(f"site {name!r} in {path} is not an object")
    return spec


def create_site(session: Session, *, name: str, spec: dict[str, Any]) -> Site:
    _check_name("site", name)
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"site {name!r} already exists")
    try:
        racks = spec["racks"]
        site = Site(
            id=new_id("site"),
            name=name,
            description=str(spec.get("description", "")),
            grid_capacity_mw=float(spec["grid_capacity_mw"]),
            pue=float(spec["pue"]),
            spec=spec,
            mining_planned_w=mining_fleet_w(spec),
        )
        session.add(site)
        session.flush()  # racks reference it; the unit of work does not order by foreign keys
        for number in range(1, int(racks["count"]) + 1):
            rname = rack_name(number)
            session.add(
                Rack(
                    id=new_id("rack"),
                    site_id=site.id,
                    name=rname,
                    model=str(racks["model"]),
                    nodes_expected=int(racks["nodes_per_rack"]),
                    gpus_per_node=int(racks["gpus_per_node"]),
                    power_capacity_kw=float(racks["rack_power_capacity_kw"]),
                    fabric_cluster_uuid=rack_fabric_uuid(name, rname),
                    fabric_clique_id=32766,
                )
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidRequest(f"site spec for {name!r} is incomplete or malformed: {exc!r}") from exc
    session.flush()
    return site


def get_site(session: Session, name: str) -> Site:
    site = session.scalar(select(Site).where(Site.name == name))
    if site is None:
        raise NotFound(f"no site named {name!r}")
    return site


def get_rack(session: Session, site: Site, name: str) -> Rack:
    rack = session.scalar(select(Rack).where(Rack.site_id == site.id, Rack.name == name))
    if rack is None:
        raise NotFound(f"site {site.name!r} has no rack {name!r}")
    return rack


def create_tenant(session: Session, *, name: str) -> Tenant:
    _check_name("tenant", name)
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = Tenant(id=new_id("tnt"), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, name_or_id: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id)))
    if tenant is None:
        raise NotFound(f"no tenant {name_or_id!r}")
    return tenant


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once, never stored


def issue_api_key(
    session: Session,
    *,
    pepper: bytes,
    scope: KeyScope,
    name: str = "",
    tenant_id: str | None = None,
    node_id: str | None = None,
) -> IssuedKey:
    if scope is KeyScope.TENANT and tenant_id is None:
        raise InvalidRequest("a tenant key needs a tenant")
    if scope is KeyScope.AGENT and node_id is None:
        raise InvalidRequest("an agent key needs a node")
    secret = keys.generate(scope)
    row = ApiKey(
        id=new_id("key"),
        scope=scope.value,
        name=name,
        tenant_id=tenant_id,
        node_id=node_id,
        display_prefix=keys.display_prefix(secret),
        digest=keys.digest(secret, pepper),
    )
    session.add(row)
    session.flush()
    return IssuedKey(row, secret)


def revoke_api_key(session: Session, *, key_id: str, tenant_id: str | None = None) -> ApiKey:
    row = session.get(ApiKey, key_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise NotFound(f"no API key {key_id!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    return row


def issue_bootstrap_token(
    session: Session, *, pepper: bytes, site_name: str, rack: str | None, ttl_s: float
) -> tuple[BootstrapToken, str]:
    site = get_site(session, site_name)
    rack_row = get_rack(session, site, rack) if rack else None
    secret = keys.generate_bootstrap_token()
    row = BootstrapToken(
        id=new_id("boot"),
        digest=keys.digest(secret, pepper),
        site_id=site.id,
        rack_id=rack_row.id if rack_row else None,
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    return row, secret


POLICY_FIELDS = frozenset(
    {"reserved_gpus", "max_gpus", "gpu_hours_limit", "spend_cap_usd", "over_quota", "price_usd_per_gpu_hour"}
)
NOT_NULL = {"reserved_gpus": 0, "over_quota": "hold", "price_usd_per_gpu_hour": 3.0}


def update_tenant_policy(session: Session, *, tenant_id: str, changes: dict[str, Any]) -> Tenant:
    tenant = get_tenant(session, tenant_id)
    unknown = set(changes) - POLICY_FIELDS
    if unknown:
        raise InvalidRequest(f"not tenant policy fields: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if value is None and name in NOT_NULL:
            value = NOT_NULL[name]
        setattr(tenant, name, value)
    return tenant
