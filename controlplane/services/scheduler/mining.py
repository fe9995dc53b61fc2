"""The mining budget, rebalanced every pass: shed for GPU work at once, given back as GPUs free.

The target comes from ``dispatch.budget`` over the planned draw of ``power.model``: the same
formula the pass budgeted with, so mining is never handed power the scheduler did not count.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from controlplane.dispatch.budget import mining_target_w
from controlplane.scheduling.power_budget import planned_gpu_grid_w
from controlplane.scheduling.snapshot import Decision, FleetSnapshot, Placement, ShedMining
from controlplane.services.admin.sites import site_spec
from controlplane.store.models import MiningEvent, Site


def rebalance_mining(
    session: Session,
    *,
    site: Site,
    snapshot: FleetSnapshot,
    decisions: list[Decision],
    sheds: list[ShedMining],
    now: datetime,
) -> float:
    """Mining gets every watt the GPUs' planned draw leaves under the limit, and no more."""
    model = snapshot.power
    if model is None:
        return site.mining_planned_w
    placed = sum(d.gpu_count for d in decisions if isinstance(d, Placement))
    target = mining_target_w(
        model, gpu_grid_w=planned_gpu_grid_w(snapshot, placed), fleet_full_w=site_spec(site).asics.full_w
    )
    delta = target - site.mining_planned_w
    if abs(delta) >= 1.0:
        if delta < 0:
            reason = "; ".join(s.reason for s in sheds) or "GPU work needs the power"
        else:
            reason = "GPUs freed: power returned to mining"
        site.mining_planned_w = target
        session.add(MiningEvent(site_id=site.id, delta_w=delta, planned_w=target, reason=reason, at=now))
    return site.mining_planned_w
