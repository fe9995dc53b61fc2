"""Extension points of a pass, shaped like the Kubernetes scheduling framework's.

A pass decides each request in queue order: the core's own checks (the model exists, the size is
possible), then the profile's **filters** in order (each may hold the request, with its reason),
then the topology search over the per-pass index (the default and only "fit": best fit on nodes
and NVLink domains), then the profile's **permits** in order (each may hold the placement found,
or ask for mining to be shed first), then reserve (every plugin's ``reserve`` sees the placement,
so per-pass state such as quota usage and the power budget moves with it).

Curtailment and GPU-mining admission arrive as plugins in a profile, not as branches of
``SchedulingPass.decide``. A plugin is a named object; its reasons reach the tenant as the
pending reason, with a bounded code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from controlplane.domain.reasons import PendingReason
from controlplane.scheduling.power_budget import FITS, PowerBudget
from controlplane.scheduling.quota import QuotaLedger
from controlplane.scheduling.snapshot import FleetSnapshot, WorkloadRequest


class PassView(Protocol):
    """What a plugin may read of the pass deciding (``core.SchedulingPass``): its snapshot, the
    tenants' usage so far this pass, and the power budget (None: the site plans no power)."""

    snapshot: FleetSnapshot
    ledger: QuotaLedger
    power: PowerBudget | None


class Filter(Protocol):
    """Holds a request before the topology search, or lets it through (None)."""

    name: str
    # Whether ``reserve`` does anything (False: the pass never calls it).
    reserves: bool

    def active(self, sched: PassView) -> bool:
        """Whether the plugin has anything to check this pass (asked once per pass: a plugin
        with nothing to do costs the decisions nothing)."""
        ...

    def check(self, sched: PassView, req: WorkloadRequest) -> PendingReason | None: ...

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        """The request was placed: update this plugin's per-pass state."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A permit's answer: hold (``reason``), or go after shedding ``shed_w`` of mining first."""

    shed_w: float = 0.0
    reason: PendingReason | None = None


ALLOW = Verdict()


class Permit(Protocol):
    """Sees a placement the topology search found for ``gpus`` GPUs, and may hold it."""

    name: str
    reserves: bool

    def active(self, sched: PassView) -> bool:
        """Whether the plugin has anything to check this pass (asked once per pass)."""
        ...

    def permit(self, sched: PassView, req: WorkloadRequest, gpus: int) -> Verdict: ...

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        """The request was placed: update this plugin's per-pass state."""


class QuotaFilter:
    """Tenant quotas (concurrent GPUs, GPU-hours, spend) with this pass's admissions counted."""

    name = "quota"
    reserves = False  # the ledger is the pass's own (reservations and preemption rights read it)

    def active(self, sched: PassView) -> bool:
        return bool(sched.ledger.policies)

    def check(self, sched: PassView, req: WorkloadRequest) -> PendingReason | None:
        return sched.ledger.hold_reason(req)

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        """The ledger is the pass's (reservations and preemption rights read it): the pass admits."""


class SitePowerPermit:
    """The site's planned draw stays under its limit: mining is shed first, never below its minimum."""

    name = "site-power"
    reserves = False  # the power budget is the pass's own (rack room reads it)

    def active(self, sched: PassView) -> bool:
        return sched.power is not None

    def permit(self, sched: PassView, req: WorkloadRequest, gpus: int) -> Verdict:
        assert sched.power is not None
        site = sched.power.check_site(gpus)
        return ALLOW if site is FITS else Verdict(site.shed_w, site.reason)

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        """The power budget is the pass's (rack room reads it): the pass commits the draw."""


@dataclass(frozen=True, slots=True)
class Profile:
    filters: tuple[Filter, ...] = (QuotaFilter(),)
    permits: tuple[Permit, ...] = (SitePowerPermit(),)

    def with_filters(self, *extra: Filter) -> Profile:
        return Profile(self.filters + extra, self.permits)

    def with_permits(self, *extra: Permit) -> Profile:
        return Profile(self.filters, self.permits + extra)


DEFAULT_PROFILE = Profile()

# LOCAL STAND-IN on branch i10-replay, not the lead's: today's behaviour as a named profile so the
# replay can run its "today's core" column before the lead's framework.LEGACY_PROFILE lands. On
# merge, take the lead's definition and drop this one.
LEGACY_PROFILE = DEFAULT_PROFILE
