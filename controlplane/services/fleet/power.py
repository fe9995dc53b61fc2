"""The site's power as the scheduler plans it: GPUs (allocated at their limit, the rest idle, node
overhead and switch trays, x PUE) and mining, against the cap and the limit.

The figure comes from the same snapshot and the same formula (``power.model``) the scheduler's
passes budget with and the mining budget is rebalanced from, so the operator sees what the
scheduler sees.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.scheduling.power_budget import planned_gpu_grid_w
from controlplane.services.admin.sites import site_spec
from controlplane.services.fleet.views import get_site
from controlplane.services.scheduler.build import build_snapshot
from controlplane.store.models import MiningEvent


@dataclass(frozen=True)
class SitePower:
    site_id: str
    cap_w: float
    limit_w: float
    pue: float
    gpu_planned_w: float
    mining_planned_w: float
    mining_fleet_w: float
    headroom_w: float
    gpus_allocated: int
    gpus_total: int
    recent_mining_events: list[MiningEvent]


def site_power(session: Session, *, site: str, events: int = 20) -> SitePower:
    found = get_site(session, site)
    snap = build_snapshot(session, site=found)
    assert snap.power is not None
    gpu_w = planned_gpu_grid_w(snap)
    recent = session.scalars(
        select(MiningEvent).where(MiningEvent.site_id == found.id).order_by(MiningEvent.id.desc()).limit(events)
    ).all()
    return SitePower(
        site_id=found.id,
        cap_w=snap.power.site_cap_w,
        limit_w=snap.power.site_limit_w,
        pue=snap.power.pue,
        gpu_planned_w=gpu_w,
        mining_planned_w=found.mining_planned_w,
        mining_fleet_w=site_spec(found).asics.full_w,
        headroom_w=snap.power.site_limit_w - gpu_w - found.mining_planned_w,
        gpus_allocated=sum(1 for n in snap.nodes for g in n.gpus if g.allocated),
        gpus_total=sum(len(n.gpus) for n in snap.nodes),
        recent_mining_events=list(recent),
    )
