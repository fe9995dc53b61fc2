"""Sites and their racks, from the scenario file's spec."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.errors import Conflict, InvalidRequest, NotFound
from controlplane.domain.ids import new_id
from controlplane.domain.site import SiteSpec
from controlplane.store.models import Rack, Site

NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")  # whole names only: fullmatch, so no trailing newline


def _check_name(kind: str, name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"{kind} name {name!r} must be 1-63 lowercase letters, digits or '-'")


def rack_name(number: int) -> str:
    return f"rack-{number:03d}"


def rack_fabric_uuid(site_name: str, rack: str) -> str:
    """A stable NVLink cluster UUID per rack (the real one comes from the fabric manager)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:{site_name}:{rack}"))


def site_spec(site: Site) -> SiteSpec:
    """The site's typed spec, parsed from what it was created with."""
    return SiteSpec.parse(site.spec, name=site.name)


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
    parsed = SiteSpec.parse(spec, name=name)
    if session.scalar(select(Site).where(Site.name == name)) is not None:
        raise Conflict(f"site {name!r} already exists")
    site = Site(
        id=new_id("site"),
        name=name,
        description=parsed.description,
        grid_capacity_mw=parsed.grid_capacity_mw,
        pue=parsed.pue,
        spec=spec,
        mining_planned_w=parsed.asics.full_w,
    )
    session.add(site)
    session.flush()  # racks reference it; the unit of work does not order by foreign keys
    racks = parsed.racks
    for number in range(1, racks.count + 1):
        rname = rack_name(number)
        session.add(
            Rack(
                id=new_id("rack"),
                site_id=site.id,
                name=rname,
                model=racks.model,
                nodes_expected=racks.nodes_per_rack,
                gpus_per_node=racks.gpus_per_node,
                power_capacity_kw=racks.rack_power_capacity_kw,
                fabric_cluster_uuid=rack_fabric_uuid(name, rname),
                fabric_clique_id=32766,
            )
        )
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
