"""The desired-state long poll: held by the control plane until a newer generation exists, woken
through Redis on its side; on this side retried with backoff while the control plane is away."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from agents.client import ControlPlaneError
from agents.daemon.backoff import Backoff
from agents.daemon.clock import Clock

log = logging.getLogger(__name__)

SPIN_GUARD_S = 0.5  # a poll that returns sooner with nothing new was not held: wait a second


def watch_loop(
    *,
    fetch: Callable[[float], None],
    generation: Callable[[], int],
    timeout_s: float,
    stop: threading.Event,
    wake: threading.Event,
    clock: Clock,
) -> None:
    """Poll until ``stop``: ``fetch(wait_s)`` applies what it gets; ``wake`` cuts a backoff short."""
    backoff = Backoff()
    while not stop.is_set():
        try:
            before, began = generation(), clock.monotonic()
            fetch(timeout_s)
            backoff.reset()
            if generation() == before and clock.monotonic() - began < SPIN_GUARD_S:
                stop.wait(1.0)  # a server that does not hold the poll must not make us spin
        except ControlPlaneError as exc:
            if stop.is_set():
                return
            delay = backoff.delay()
            log.warning("watching desired state failed: %s; retrying in %.1fs", exc, delay)
            wake.wait(delay)
            wake.clear()
        except Exception:
            log.exception("watch loop error; continuing")
            stop.wait(1.0)
