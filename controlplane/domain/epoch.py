"""The placement epoch: which leader made a placement, and in which of its passes.

The leader's fencing epoch sits in the high bits, so a newer leader's placements always outrank
an older one's (agents refuse an assignment older than the newest they have seen); the pass
number sits in the low 32 bits, so two placements of one workload (before and after a requeue)
never share an epoch. Stored and sent as the one integer ``value``.
"""

from __future__ import annotations

from dataclasses import dataclass

_PASS_BITS = 32
_PASS_MASK = (1 << _PASS_BITS) - 1


@dataclass(frozen=True, slots=True, order=True)
class PlacementEpoch:
    leader: int
    pass_number: int

    def __post_init__(self) -> None:
        if self.leader < 0 or not 0 <= self.pass_number <= _PASS_MASK:
            raise ValueError(f"not a placement epoch: leader {self.leader}, pass {self.pass_number}")

    @classmethod
    def of(cls, leader: int, pass_number: int) -> PlacementEpoch:
        """The epoch of ``pass_number`` (wrapping at 2**32) under ``leader``."""
        return cls(leader, pass_number & _PASS_MASK)

    @classmethod
    def from_value(cls, value: int) -> PlacementEpoch:
        return cls(value >> _PASS_BITS, value & _PASS_MASK)

    @property
    def value(self) -> int:
        return (self.leader << _PASS_BITS) | self.pass_number
