"""Price plans, in Decimal dollars: per GPU-hour (by priority class and GPU model), per MWh of
energy passed through (fixed, or by time-of-use band; on facility energy, so the PUE adder is in
it, or on IT energy), per contracted kW per month, and a monthly minimum (take-or-pay).

A tenant may hold several plans (a GPU-hour plan and a colocation contract, say): a usage row's
GPU time is priced by the first plan with a rate for its class and model, its energy by the first
plan with an energy rate, and every plan's monthly lines are billed (``invoice``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from controlplane.domain.enums import PriorityClass

MJ_PER_MWH = Decimal(3_600_000_000_000)  # 1 MWh = 3.6e9 J
US_PER_HOUR = Decimal(3_600_000_000)


class EnergyBasis(StrEnum):
    FACILITY = "facility"  # IT energy x PUE: pass-through with the cooling and losses on top
    IT = "it"


@dataclass(frozen=True, slots=True)
class GpuHourRate:
    usd_per_gpu_hour: Decimal
    priority: PriorityClass | None = None  # None: any class
    gpu_model: str | None = None  # None: any model

    def matches(self, priority: PriorityClass, gpu_model: str) -> bool:
        return (self.priority is None or self.priority == priority) and (
            self.gpu_model is None or self.gpu_model == gpu_model
        )

    @property
    def specificity(self) -> int:
        return (self.gpu_model is not None) * 2 + (self.priority is not None)


@dataclass(frozen=True, slots=True)
class TimeOfUse:
    """A band of the day, [start_hour, end_hour) UTC, at its own energy price."""

    start_hour: int
    end_hour: int
    usd_per_mwh: Decimal

    def __post_init__(self) -> None:
        if not 0 <= self.start_hour < self.end_hour <= 24:
            raise ValueError(
                f"a time-of-use band is [start, end) hours within 0-24, got {self.start_hour}-{self.end_hour}"
            )


@dataclass(frozen=True, slots=True)
class EnergyRate:
    usd_per_mwh: Decimal  # outside every band
    bands: tuple[TimeOfUse, ...] = ()
    basis: EnergyBasis = EnergyBasis.FACILITY

    def __post_init__(self) -> None:
        hours = [h for b in self.bands for h in range(b.start_hour, b.end_hour)]
        if len(hours) != len(set(hours)):
            raise ValueError("time-of-use bands overlap")

    def at(self, at_us: int) -> Decimal:
        """The price of energy used at ``at_us`` (unix microseconds)."""
        hour = at_us // 3_600_000_000 % 24
        for band in self.bands:
            if band.start_hour <= hour < band.end_hour:
                return band.usd_per_mwh
        return self.usd_per_mwh


@dataclass(frozen=True, slots=True)
class PricePlan:
    plan_id: str
    gpu_hour: tuple[GpuHourRate, ...] = ()
    energy: EnergyRate | None = None
    contracted_kw: Decimal = Decimal(0)
    usd_per_kw_month: Decimal = Decimal(0)
    # Take-or-pay: the month is billed at least this much, usage counting toward it.
    minimum_usd_month: Decimal = Decimal(0)

    def rate_for(self, priority: PriorityClass, gpu_model: str) -> GpuHourRate | None:
        """The most specific rate for the class and model (model and class, model, class, any)."""
        found = [r for r in self.gpu_hour if r.matches(priority, gpu_model)]
        return max(found, key=lambda r: r.specificity) if found else None


def gpu_rate(plans: Sequence[PricePlan], priority: PriorityClass, gpu_model: str) -> tuple[str, GpuHourRate] | None:
    """(plan id, rate) of the first plan pricing this class and model's GPU time."""
    for plan in plans:
        rate = plan.rate_for(priority, gpu_model)
        if rate is not None:
            return plan.plan_id, rate
    return None


def energy_plan(plans: Sequence[PricePlan]) -> tuple[str, EnergyRate] | None:
    """(plan id, rate) of the first plan passing energy through."""
    for plan in plans:
        if plan.energy is not None:
            return plan.plan_id, plan.energy
    return None
