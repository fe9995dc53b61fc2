"""A site as its operator describes it: grid connection, racks, ASIC fleet, power price.

Parsed once, here, from the scenario file's entry (stored as given in ``sites.spec``), with every
default in one place: the scheduler's power model, the mining budget, the operator's views, the
demo and the benchmarks all read the same typed spec. An incomplete or mistyped spec is refused
with the field that is wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controlplane.domain.errors import InvalidRequest


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RackSpec(_Spec):
    """The site's racks, all alike: an NVL72 rack is one NVLink domain of 18 trays x 4 GPUs."""

    count: int = Field(ge=0)
    model: str = Field(min_length=1, max_length=64)
    nodes_per_rack: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    gpu_model: str = Field(min_length=1, max_length=96)
    gpu_power_limit_w: float = Field(gt=0)
    gpu_idle_w: float = Field(ge=0)
    node_overhead_w: float = Field(ge=0)  # CPUs, NICs, fans of a tray: drawn whether it runs work or not
    rack_power_capacity_kw: float = Field(gt=0)
    switch_trays_w: float = Field(ge=0)  # the rack's NVLink switch trays

    @property
    def gpus(self) -> int:
        return self.count * self.nodes_per_rack * self.gpus_per_node


class AsicFleetSpec(_Spec):
    """The ASIC miners, all alike; ``count`` 0: a site with no mining fleet."""

    count: int = Field(default=0, ge=0)
    model: str = Field(default="", max_length=64)
    efficiency_j_per_th: float | None = Field(default=None, gt=0)
    power_w: float = Field(default=0.0, ge=0)
    min_power_w: float = Field(default=0.0, ge=0)
    firmware: str = Field(default="cgminer", max_length=32)

    @property
    def full_w(self) -> float:
        """The fleet's full draw: what mining takes when no GPU needs the power."""
        return self.count * self.power_w


class SiteSpec(_Spec):
    description: str = Field(default="", max_length=500)
    grid_capacity_mw: float = Field(gt=0)
    pue: float = Field(ge=1.0, le=3.0)
    racks: RackSpec
    asics: AsicFleetSpec = AsicFleetSpec()
    # A fixed $/MWh, or the name of a price file beside the sites file (5-minute steps).
    power_price_usd_per_mwh: Decimal | str | None = None
    gpu_mining: bool = False
    # Planned draw is held this far under the cap (room for measurement error and ramps).
    safety_margin_mw: float = Field(default=0.0, ge=0)

    @property
    def cap_w(self) -> float:
        return self.grid_capacity_mw * 1e6

    @property
    def safety_margin_w(self) -> float:
        return self.safety_margin_mw * 1e6

    @classmethod
    def parse(cls, raw: Mapping[str, Any], *, name: str = "site") -> SiteSpec:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise InvalidRequest(f"site spec for {name!r} is incomplete or malformed: {problems}") from None
