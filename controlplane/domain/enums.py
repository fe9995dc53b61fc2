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
    """As the agent's XID/ECC policy judges it (the wire's ``GpuHealthState``, same values)."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"  # usable; the tenant or operator is told
    UNHEALTHY = "unhealthy"  # admits no new work until the condition clears


class HealthAction(StrEnum):
    """What NVIDIA's XID catalog asks for (the wire's ``HealthAction``, same values)."""

    NONE = "none"
    NOTIFY_TENANT = "notify_tenant"
    RESET_GPU = "reset_gpu"
    DRAIN_NODE = "drain_node"
    REBOOT_NODE = "reboot_node"
    DRAIN_NVLINK_PEERS = "drain_nvlink_peers"


# Actions that take the whole node out of scheduling until the GPU recovers.
NODE_ACTIONS = frozenset({HealthAction.DRAIN_NODE, HealthAction.REBOOT_NODE})


class OverQuotaPolicy(StrEnum):
    """What a workload over its tenant's quota gets."""

    REJECT = "reject"  # refused at submission (403)
    HOLD = "hold"  # accepted, held pending with the reason


class UnreachablePolicy(StrEnum):
    """What happens to the workloads of a node unreachable past its grace."""

    REQUEUE = "requeue"
    FAIL = "fail"


class KeyScope(StrEnum):
    TENANT = "tenant"
    OPERATOR = "operator"
    AGENT = "agent"
