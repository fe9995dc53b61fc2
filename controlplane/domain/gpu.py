"""The GPU state machine (DESIGN section 2): every state a GPU can be in, and which changes exist.

A GPU's state is derived, not stored: from its presence, its live allocation (and whose), its
node and its health (``derive``). What is checked is that every change anyone can observe is
in ``TRANSITIONS``: above all, a GPU never passes from one owner to another without its
processes being confirmed gone (allocated -> releasing -> free, or allocated -> free when the
process ended on its own and the agent said so). Scrubbing (memory cleared, power limit restored
between owners) is a state of the machine that no path produces yet: GPU mining hand-overs
(mining -> scrubbing -> tenant) bring it.
"""

from __future__ import annotations

from enum import StrEnum

from controlplane.domain.enums import GpuHealth, PriorityClass


class GpuState(StrEnum):
    FREE = "free"  # can take work now
    ALLOCATED = "allocated"  # a tenant's workload holds it
    RELEASING = "releasing"  # its workload was told to stop; held until the agent confirms the process gone
    MINING = "mining"  # an internal GPU-mining workload holds it (preempted at once)
    SCRUBBING = "scrubbing"  # between owners: memory cleared, power limit restored
    CORDONED = "cordoned"  # its node admits no new work (cordon or drain)
    FAULTY = "faulty"  # unhealthy by the agent's XID/ECC policy
    UNREACHABLE = "unreachable"  # its node's lease expired: nobody can say
    LOST = "lost"  # fell off the bus: not in the node's inventory


S = GpuState

TRANSITIONS: dict[GpuState, frozenset[GpuState]] = {
    S.FREE: frozenset({S.ALLOCATED, S.MINING, S.CORDONED, S.FAULTY, S.UNREACHABLE, S.LOST}),
    # Released directly only when the agent reported the process ended on its own.
    S.ALLOCATED: frozenset({S.RELEASING, S.FREE, S.LOST}),
    S.MINING: frozenset({S.RELEASING, S.FREE, S.SCRUBBING, S.LOST}),
    S.RELEASING: frozenset({S.FREE, S.SCRUBBING, S.CORDONED, S.FAULTY, S.UNREACHABLE, S.LOST}),
    S.SCRUBBING: frozenset({S.FREE, S.CORDONED, S.FAULTY, S.UNREACHABLE, S.LOST}),
    S.CORDONED: frozenset({S.FREE, S.FAULTY, S.UNREACHABLE, S.LOST}),
    S.FAULTY: frozenset({S.FREE, S.CORDONED, S.UNREACHABLE, S.LOST}),
    S.UNREACHABLE: frozenset({S.FREE, S.CORDONED, S.FAULTY, S.LOST}),
    # Back on the bus: whatever it is now, including still held by the workload it had.
    S.LOST: frozenset({S.FREE, S.ALLOCATED, S.MINING, S.RELEASING, S.CORDONED, S.FAULTY, S.UNREACHABLE}),
}

HELD = frozenset({S.ALLOCATED, S.MINING, S.RELEASING})


def derive(
    *,
    present: bool,
    holder: PriorityClass | None,
    stopping: bool,
    node_ready: bool,
    health: GpuHealth,
    cordoned: bool,
) -> GpuState:
    """The state from the facts, most telling first: a lost GPU is lost whoever held it; a held one
    is held whatever its node's state (its process may still run there)."""
    if not present:
        return S.LOST
    if holder is not None:
        if stopping:
            return S.RELEASING
        return S.MINING if holder is PriorityClass.MINING else S.ALLOCATED
    if not node_ready:
        return S.UNREACHABLE
    if health is GpuHealth.UNHEALTHY:
        return S.FAULTY
    if cordoned:
        return S.CORDONED
    return S.FREE


def can_change(before: GpuState, before_owner: str | None, after: GpuState, after_owner: str | None) -> bool:
    """Whether an observed change is allowed: a state change in the table, or the same state with
    the same owner. The owner is the workload of the GPU's live allocation (kept while the GPU is
    lost, too): a GPU that is held by a new owner while its last owner had not let go is the
    forbidden hand-over."""
    if after in HELD and before_owner is not None and before_owner != after_owner:
        return False
    if before is after:
        return before not in HELD or before_owner == after_owner
    return after in TRANSITIONS[before]
