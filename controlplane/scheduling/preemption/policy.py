"""Who may preempt whom, and how long a stopped workload gets: the one grace rule.

Rights: reserved work within its tenant's reservation may displace on_demand, spot and mining;
reserved work beyond the reservation and on_demand work may displace spot and mining; spot may
displace mining; mining displaces nothing. Reserved work is never a victim. (In the queue,
reserved work beyond the reservation competes with on_demand work: ``queue.competing_rank``.)

Grace: a workload stopped for any reason (preemption, cancel, deadline) gets SIGTERM, then
``stop_grace_s`` before SIGKILL. The core records it on every preemption and the desired state
sends it with every assignment, from this one function.
"""

from __future__ import annotations

from controlplane.domain.enums import PriorityClass

_RIGHTS: dict[str, frozenset[PriorityClass]] = {
    "reserved_within": frozenset({PriorityClass.ON_DEMAND, PriorityClass.SPOT, PriorityClass.MINING}),
    PriorityClass.RESERVED: frozenset({PriorityClass.SPOT, PriorityClass.MINING}),
    PriorityClass.ON_DEMAND: frozenset({PriorityClass.SPOT, PriorityClass.MINING}),
    PriorityClass.SPOT: frozenset({PriorityClass.MINING}),
    PriorityClass.MINING: frozenset(),
}


# Per GPU preempted: any number of mining GPUs before one spot GPU, any spot before on_demand.
_CLASS_WEIGHT = {PriorityClass.MINING: 1, PriorityClass.SPOT: 10_000, PriorityClass.ON_DEMAND: 100_000_000}


def victim_classes(priority: PriorityClass, *, within_reservation: bool) -> frozenset[PriorityClass]:
    """The classes a request may preempt (see the module docstring)."""
    if priority is PriorityClass.RESERVED and within_reservation:
        return _RIGHTS["reserved_within"]
    return _RIGHTS[priority]


def stop_grace_s(priority: PriorityClass, notice_s: float) -> float:
    """Seconds between SIGTERM and SIGKILL for a stopped workload of this class: mining stops at
    once; every tenant class (spot, on_demand, reserved) gets the notice, ``notice_s``."""
    return 0.0 if priority is PriorityClass.MINING else notice_s
