"""Enumerations of the domain model (DESIGN.md section 2)."""

from __future__ import annotations

from enum import StrEnum


class WorkloadState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    STARTING = "starting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"


TERMINAL_STATES = frozenset(
    {WorkloadState.SUCCEEDED, WorkloadState.FAILED, WorkloadState.CANCELLED, WorkloadState.PREEMPTED}
)


class PriorityClass(StrEnum):
    RESERVED = "reserved"
    ON_DEMAND = "on_demand"
    SPOT = "spot"
    MINING = "mining"


# Lower rank sorts first in the queue.
PRIORITY_RANK = {
    PriorityClass.RESERVED: 0,
    PriorityClass.ON_DEMAND: 1,
    PriorityClass.SPOT: 2,
    PriorityClass.MINING: 3,
}


class NvlinkPolicy(StrEnum):
    REQUIRED = "required"
    PREFERRED = "preferred"
    NONE = "none"


class NodeStatus(StrEnum):
    # Registered, reporting, its lease alive.
    READY = "ready"
    # Lease expired: maybe a network blip, maybe dead. Admits no work.
    UNREACHABLE = "unreachable"


class GpuHealth(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class KeyScope(StrEnum):
    TENANT = "tenant"
    OPERATOR = "operator"
    AGENT = "agent"
