"""Tenant quotas and budgets: concurrent GPUs, GPU-hours per month, spend cap.

``check_quota`` is the one rule, called by the submission service (to reject when the tenant's
policy says "reject") and by the core (to hold). Where the request gives no maximum duration,
GPU-hours and spend are checked on what is already used: the workload is admitted while the
tenant is under its limit, since what it will use cannot be known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from controlplane.domain.enums import PriorityClass
from controlplane.domain.money import cents, gpu_time_cost
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling.snapshot import FleetSnapshot, TenantPolicy, WorkloadRequest


def expected_gpu_hours(request: WorkloadRequest) -> float | None:
    if request.max_duration_s is None:
        return None
    return request.gpu_count * request.max_duration_s / 3600.0


def expected_spend(request: WorkloadRequest) -> Decimal | None:
    """The most the request can cost: every GPU for its whole maximum duration, at its rate."""
    if request.max_duration_s is None:
        return None
    return gpu_time_cost(
        Decimal(request.gpu_count) * Decimal(str(request.max_duration_s)), request.price_usd_per_gpu_hour
    )


def _usd(amount: Decimal) -> str:
    return f"${cents(amount):,.2f}"


def check_quota(
    policy: TenantPolicy,
    request: WorkloadRequest,
    running_gpus: int,
    *,
    extra_gpu_hours: float = 0.0,
    extra_spend_usd: Decimal = Decimal(0),
) -> PendingReason | None:
    """Why ``request`` is over ``policy``, or None. ``running_gpus``: the tenant's GPUs held now;
    the extras: what this pass already admitted for the tenant (the core passes them)."""
    if policy.max_gpus is not None and running_gpus + request.gpu_count > policy.max_gpus:
        return PendingReason(
            PendingCode.QUOTA_GPUS,
            f"tenant over its concurrent-GPU quota ({running_gpus + request.gpu_count}/{policy.max_gpus})",
        )
    hours = expected_gpu_hours(request)
    if policy.gpu_hours_limit is not None:
        used = policy.gpu_hours_used + extra_gpu_hours
        if hours is None:
            if used >= policy.gpu_hours_limit:
                return PendingReason(
                    PendingCode.QUOTA_GPU_HOURS,
                    f"tenant has used its monthly GPU-hours quota ({used:,.1f}/{policy.gpu_hours_limit:,.1f} GPU-h)",
                )
        elif used + hours > policy.gpu_hours_limit:
            return PendingReason(
                PendingCode.QUOTA_GPU_HOURS,
                f"tenant over its monthly GPU-hours quota ({used + hours:,.1f}/{policy.gpu_hours_limit:,.1f} GPU-h "
                f"with this workload's {hours:,.1f})",
            )
    if policy.spend_cap_usd is not None:
        spent = policy.spend_used_usd + extra_spend_usd
        expected = expected_spend(request)
        if expected is None:
            if spent >= policy.spend_cap_usd:
                return PendingReason(
                    PendingCode.QUOTA_SPEND,
                    f"tenant has reached its spend cap ({_usd(spent)}/{_usd(policy.spend_cap_usd)})",
                )
        elif spent + expected > policy.spend_cap_usd:
            return PendingReason(
                PendingCode.QUOTA_SPEND,
                f"tenant over its spend cap ({_usd(spent + expected)}/{_usd(policy.spend_cap_usd)} "
                f"with this workload's expected {_usd(expected)})",
            )
    return None


@dataclass(slots=True)
class _Usage:
    gpus: int = 0
    reserved_gpus: int = 0
    gpu_hours: float = 0.0
    spend_usd: Decimal = Decimal(0)


@dataclass(slots=True)
class QuotaLedger:
    """Per-pass tenant usage: the snapshot's running work plus what this pass admits."""

    policies: dict[str, TenantPolicy]
    usage: dict[str, _Usage] = field(default_factory=dict)
    # The queue's reserved requests within their reservations (``queue.within_reservation``):
    # no other request is within this pass, whatever the pass admits (None: not set).
    eligible: frozenset[str] | None = None

    @classmethod
    def from_snapshot(cls, snapshot: FleetSnapshot) -> QuotaLedger:
        ledger = cls(dict(snapshot.tenants))
        for run in snapshot.running:
            u = ledger.usage.setdefault(run.tenant_id, _Usage())
            u.gpus += run.gpu_count
            if run.priority is PriorityClass.RESERVED:
                u.reserved_gpus += run.gpu_count
        return ledger

    def hold_reason(self, request: WorkloadRequest) -> PendingReason | None:
        policy = self.policies.get(request.tenant_id)
        if policy is None:
            return None
        u = self.usage.get(request.tenant_id) or _Usage()
        why = check_quota(policy, request, u.gpus, extra_gpu_hours=u.gpu_hours, extra_spend_usd=u.spend_usd)
        return PendingReason(why.code, f"held: {why.text}") if why else None

    def admit(self, request: WorkloadRequest, *, reserved: bool) -> None:
        u = self.usage.setdefault(request.tenant_id, _Usage())
        u.gpus += request.gpu_count
        if reserved:
            u.reserved_gpus += request.gpu_count
        hours = expected_gpu_hours(request)
        if hours is not None:
            u.gpu_hours += hours
            policy = self.policies.get(request.tenant_id)
            if policy is not None and policy.spend_cap_usd is not None:  # money only where a cap reads it
                spend = expected_spend(request)
                assert spend is not None
                u.spend_usd += spend

    def reserved_in_use(self, tenant_id: str) -> int:
        u = self.usage.get(tenant_id)
        return u.reserved_gpus if u else 0

    def reservation(self, tenant_id: str) -> int:
        policy = self.policies.get(tenant_id)
        return policy.reserved_gpus if policy else 0

    def hold_reserved(self, tenant_id: str, gpus: int) -> None:
        """A reserved preemptor waiting on GPUs counts against its reservation for the rest of the pass."""
        self.usage.setdefault(tenant_id, _Usage()).reserved_gpus += gpus

    def within_reservation(self, request: WorkloadRequest) -> bool:
        if self.eligible is not None and request.workload_id not in self.eligible:
            return False
        return request.priority is PriorityClass.RESERVED and self.reserved_in_use(
            request.tenant_id
        ) + request.gpu_count <= self.reservation(request.tenant_id)
