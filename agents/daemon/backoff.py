"""Capped exponential backoff with jitter, for every loop that waits on the control plane."""

from __future__ import annotations

import random


class Backoff:
    """Capped exponential backoff with jitter, so a restarted control plane is not stampeded."""

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0) -> None:
        self._initial = initial_s
        self._cap = cap_s
        self._next = initial_s

    def delay(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self._initial
