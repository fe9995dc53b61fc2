"""The agent's clocks, passed in so that tests (and a replay) can drive time.

``time`` is the wall clock (unix seconds: what goes on the wire, report ``sent_at``, the health
tracker's ``now``); ``monotonic`` measures intervals and deadlines (spool drain, shutdown, a
long poll's return) and never jumps when the wall clock is set.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Unix seconds."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never going back."""
        ...


class SystemClock:
    """The host's clocks."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
