"""When the demo stops: on a signal, when its output has no reader, or when --duration is up.

Every wait in the demo goes through ``RunClock.pause``, so none of them outlasts a Ctrl-C or
the duration (start-up included: `--duration 5` means five seconds of the whole run).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class RunClock:
    duration_s: float  # 0: no limit
    stopped: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    reason: str = ""  # why it was stopped, said at the end

    def stop(self, reason: str) -> None:
        """End the run (from a signal handler too: it only sets an event)."""
        if not self.stopped.is_set():
            self.reason = reason
        self.stopped.set()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def expired(self) -> bool:
        return self.duration_s > 0 and self.elapsed() >= self.duration_s

    def over(self) -> bool:
        return self.stopped.is_set() or self.expired()

    def pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``, less if the run ends meanwhile; True if it is over."""
        if self.duration_s > 0:
            seconds = min(seconds, max(0.0, self.duration_s - self.elapsed()))
        self.stopped.wait(seconds)
        return self.over()
