"""The per-pass power budget: the site cap, each rack's cap, and mining as the block shed first.

The budget starts from the snapshot's planned draw, by the one formula of ``power.model`` (every
allocated GPU at its power limit, every other at idle, every node's overhead, every rack's switch
trays) and grows with each placement by (limit - idle) per GPU taken. Mining is preemptible at
once, so a placement that would cross the site limit sheds the watts it needs from the mining
block, never below the block's minimum.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.power.model import PowerModel, Tally, site_tally, tally_by_rack
from controlplane.scheduling.snapshot import FleetSnapshot, NodeView


def node_rack(node: NodeView) -> str | None:
    """The rack a node draws from: ``power.model.rack_key``, spelled inline (called per node of a
    campus in every pass; tests/unit/test_power_model.py holds the two to the same answer)."""
    return node.rack_id if node.rack_id is not None else node.domain


def snapshot_tally(snapshot: FleetSnapshot) -> dict[str | None, Tally]:
    """The snapshot's planned-draw counts per rack key: what every power view is computed from."""
    return tally_by_rack(snapshot.nodes)


def planned_gpu_grid_w(snapshot: FleetSnapshot, extra_allocated: int = 0) -> float:
    """The snapshot's planned GPU-side draw from the grid (x PUE), with ``extra_allocated`` more
    GPUs taken (a pass's placements)."""
    model = snapshot.power
    if model is None:
        return 0.0
    total = site_tally(snapshot_tally(snapshot))
    total.allocated += extra_allocated
    return model.grid_w(total)


def _mw(watts: float) -> str:
    return f"{watts / 1e6:,.3f} MW"


def _kw(watts: float) -> str:
    return f"{watts / 1e3:,.1f} kW"


@dataclass(slots=True)
class SiteCheck:
    shed_w: float  # mining to shed first (0: fits as is)
    reason: PendingReason | None  # set: does not fit even with mining at its minimum


FITS = SiteCheck(0.0, None)  # the common answer, not allocated per request


class PowerBudget:
    """Mutable for one pass; racks are small ints (index order of first appearance)."""

    __slots__ = (
        "model",
        "rack_names",
        "rack_draw",
        "rack_cap",
        "it_w",
        "mining_w",
        "mining_min_w",
        "marginal_w",
    )

    def __init__(self, snapshot: FleetSnapshot, rack_names: list[str]) -> None:
        model = snapshot.power
        assert model is not None
        self.model: PowerModel = model
        self.rack_names = rack_names
        tallies = snapshot_tally(snapshot)
        self.rack_draw = [model.it_w(tallies[name]) for name in rack_names]
        self.rack_cap = [model.rack_cap_w.get(name) for name in rack_names]
        self.it_w = model.it_w(site_tally(tallies))
        mining = snapshot.mining
        self.mining_w = mining.power_w if mining else 0.0
        self.mining_min_w = mining.min_w if mining else 0.0
        self.marginal_w = model.marginal_gpu_w

    @property
    def site_limit_w(self) -> float:
        return self.model.site_limit_w

    @property
    def site_planned_w(self) -> float:
        return self.it_w * self.model.pue + self.mining_w

    def rack_room_gpus(self, rack: int) -> int:
        """How many more GPUs the rack can take under its cap (a large number when uncapped)."""
        cap = self.rack_cap[rack]
        if cap is None or self.marginal_w <= 0:
            return 1 << 30
        return max(0, int((cap - self.rack_draw[rack]) / self.marginal_w + 1e-9))

    def rack_reason(self, rack: int) -> str:
        cap = self.rack_cap[rack]
        return f"rack {self.rack_names[rack]} at its power cap ({_kw(self.rack_draw[rack])}/{_kw(cap or 0.0)} planned)"

    def check_site(self, gpus: int) -> SiteCheck:
        extra = gpus * self.marginal_w * self.model.pue
        over = self.site_planned_w + extra - self.site_limit_w
        if over <= 1e-6:
            return FITS
        sheddable = max(0.0, self.mining_w - self.mining_min_w)
        if over <= sheddable + 1e-6:
            return SiteCheck(min(over, sheddable), None)
        mining = (
            f"mining already at its {_mw(self.mining_min_w)} minimum"
            if self.mining_w > 0 or self.mining_min_w > 0
            else "no mining to shed"
        )
        if sheddable > 0:
            mining = f"shedding mining to its {_mw(self.mining_min_w)} minimum frees only {_mw(sheddable)}"
        return SiteCheck(
            0.0,
            PendingReason(
                PendingCode.SITE_POWER,
                f"waiting for site power: {gpus} GPUs add {_mw(extra)} (x PUE {self.model.pue:g}) to "
                f"{_mw(self.site_planned_w)} planned, over the {_mw(self.site_limit_w)} limit "
                f"({_mw(self.model.site_cap_w)} cap - {_mw(self.model.safety_margin_w)} margin); {mining}",
            ),
        )

    def commit(self, per_rack: dict[int, int], loose_gpus: int, shed_w: float) -> None:
        for rack, n in per_rack.items():
            self.rack_draw[rack] += n * self.marginal_w
        self.it_w += (sum(per_rack.values()) + loose_gpus) * self.marginal_w
        self.mining_w -= shed_w
