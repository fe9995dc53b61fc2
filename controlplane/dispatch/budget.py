"""The mining budget: every watt the GPUs' planned draw leaves under the site limit, up to what
the ASIC fleet can draw, and never below zero. Shed for GPU work at once; given back the moment
GPUs free up."""

from __future__ import annotations

from controlplane.power.model import PowerModel


def mining_target_w(model: PowerModel, *, gpu_grid_w: float, fleet_full_w: float) -> float:
    """What mining may plan to draw beside ``gpu_grid_w`` of planned GPU-side draw."""
    return max(0.0, min(fleet_full_w, model.site_limit_w - gpu_grid_w))
