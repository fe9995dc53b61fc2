"""What a per-GPU series is: a family of rows computed from one GPU's view at render time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agents.gpu.base import GpuProfile
from agents.protocol import GpuTelemetry

# One per-GPU sample: (extra labels, value). Most families have one row per GPU and no extras.
Row = tuple[tuple[tuple[str, str], ...], float]
NO_EXTRA: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GpuView:
    """Everything a family may read about one GPU for one render."""

    sample: GpuTelemetry
    reserved_mib: float | None = None  # the backend's static reserve, when the sample has none
    profile: GpuProfile | None = None  # profiling readings (GPM), never on the wire
    nvlink_bandwidth: int | None = None  # DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL's value (dcgm.py)


@dataclass(frozen=True)
class GpuFamily:
    name: str
    type: str  # "gauge" | "counter"
    help: str
    rows: Callable[[GpuView], list[Row]]
    dcgm: bool  # dcgm-exporter's label set (with modelName, driver version); else Switchyard's


def scalar(get: Callable[[GpuTelemetry], float | int | bool | None]) -> Callable[[GpuView], list[Row]]:
    """One row from a sample field; none when the field is absent."""

    def rows(view: GpuView) -> list[Row]:
        value = get(view.sample)
        return [] if value is None else [(NO_EXTRA, float(value))]

    return rows
