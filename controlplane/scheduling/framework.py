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

from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from controlplane.domain.reasons import PendingReason
from controlplane.scheduling.power_budget import FITS, PowerBudget
from controlplane.scheduling.queue import fair_share_order, queue_order
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


class QueueSort(Protocol):
    """The order a pass decides requests in (Kubernetes' QueueSort extension point)."""

    name: str

    def order(
        self, queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot, within: Collection[str] | None = None
    ) -> list[WorkloadRequest]:
        """``within``: the queue's reserved requests within their reservations, when the pass
        has them (``queue.within_reservation``); None: the sort works them out."""
        ...


class PriorityAge:
    """Class, reserved work within its reservation, then age: the order before fair shares."""

    name = "priority-age"

    def order(
        self, queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot, within: Collection[str] | None = None
    ) -> list[WorkloadRequest]:
        return queue_order(queue, snapshot, within)


class FairShare:
    """Class, reservations, planned starts, then weighted fair share between tenants
    (``queue.fair_share_order``)."""

    name = "fair-share"

    def order(
        self, queue: Iterable[WorkloadRequest], snapshot: FleetSnapshot, within: Collection[str] | None = None
    ) -> list[WorkloadRequest]:
        return fair_share_order(queue, snapshot, within)


@dataclass(frozen=True, slots=True)
class Profile:
    """A pass's plugins. ``planning``: blocked requests get planned starts with GPUs held for
    them, and other work backfills held GPUs only when it ends (or can be displaced) before
    that start. ``sticky_claims``: GPUs freed by a preemption are its preemptor's alone.
    ``churn_limits``: a minimum run and a notice cap per hour before a workload is a victim
    again, and victims chosen to lose the least work (``snapshot.rules`` sets the figures).
    ``one_reservation_view``: a reserved request is within its tenant's reservation only if the
    queue's age-order view says so (``queue.within_reservation``), for its place in the order,
    its phase and its preemption rights alike; without it, rights follow what the pass has
    admitted so far, so a younger request could act within the reservation from the on_demand
    part of the order while an older one waited."""

    filters: tuple[Filter, ...] = (QuotaFilter(),)
    permits: tuple[Permit, ...] = (SitePowerPermit(),)
    queue_sort: QueueSort = FairShare()
    planning: bool = True
    sticky_claims: bool = True
    churn_limits: bool = True
    one_reservation_view: bool = True

    def with_filters(self, *extra: Filter) -> Profile:
        return replace(self, filters=self.filters + extra)

    def with_permits(self, *extra: Permit) -> Profile:
        return replace(self, permits=self.permits + extra)


DEFAULT_PROFILE = Profile()
# The core as it was before planned starts (issue 10): age order in a class, no plans, claims
# re-decided each pass, no churn limits. Kept for side-by-side replays.
LEGACY_PROFILE = Profile(
    queue_sort=PriorityAge(), planning=False, sticky_claims=False, churn_limits=False, one_reservation_view=False
)
