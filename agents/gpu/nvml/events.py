"""NVML events: registration per GPU and the thread that waits on ``nvmlEventSetWait_v2``.

Per nvml.h one unsupported type in ``nvmlDeviceRegisterEvents`` registers none, so XID is
registered alone first and every other type on its own after it: a type the GPU refuses never
costs the XIDs. A wait that answers GPU_IS_LOST is handed to the backend's lost-GPU path; its
repeated warnings are rate-limited.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any, Final

import pynvml

from .calls import PERMANENT, Gpu, Handle, log, read

EVENT_SBE: Final = 0x1
EVENT_DBE: Final = 0x2
EVENT_XID: Final = 0x8
# Only where the installed pynvml knows it (nvidia-ml-py 12.560+).
EVENT_RECOVERY_ACTION: Final[int | None] = getattr(pynvml, "nvmlEventTypeGpuRecoveryAction", None)
# Types that make the slow counters be read again at the next sample.
HEALTH_EVENTS: Final = EVENT_DBE | EVENT_SBE | (EVENT_RECOVERY_ACTION or 0)

WAIT_WARNING_INTERVAL_S: Final = 300.0  # one warning per failing code, then one per interval


def register_events(gpu: Gpu, event_set: Any) -> int:
    """Register XID first and alone, then each other wanted type; returns the registered mask."""
    supported = read(gpu, "supported event types", lambda: int(pynvml.nvmlDeviceGetSupportedEventTypes(gpu.handle)))
    registered = 0
    for event_type in (EVENT_XID, EVENT_DBE, EVENT_SBE, EVENT_RECOVERY_ACTION or 0):
        if not event_type or (supported is not None and not supported & event_type):
            continue
        if read(gpu, f"register events 0x{event_type:x}", partial(_register, gpu, event_type, event_set)):
            registered |= event_type
    if not registered & EVENT_XID:
        log.error("GPU %s: XID events could not be registered: XIDs on it will not be reported", gpu.uuid)
    return registered


def _register(gpu: Gpu, event_type: int, event_set: Any) -> bool:
    pynvml.nvmlDeviceRegisterEvents(gpu.handle, event_type, event_set)
    return True


class EventWatcher:
    """Waits on the event set in a thread and hands each event (or a lost GPU) to callbacks."""

    def __init__(
        self,
        event_set: Any,
        *,
        poll_ms: int,
        clock: Callable[[], float],
        on_event: Callable[[Handle, int, int], None],
        on_gpu_lost: Callable[[], None],
    ) -> None:
        self._event_set = event_set
        self._poll_ms = poll_ms
        self._clock = clock
        self._on_event = on_event
        self._on_gpu_lost = on_gpu_lost
        self._stop = threading.Event()
        self._warned_at: dict[int, float] = {}
        self._suppressed: dict[int, int] = {}
        self._thread = threading.Thread(target=self._run, name="nvml-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, self._poll_ms)
            except pynvml.NVMLError as exc:
                code = int(exc.value)
                if code in PERMANENT:
                    log.error("NVML events unavailable (%s): XIDs will not be reported", exc)
                    return
                if code == pynvml.NVML_ERROR_TIMEOUT:
                    continue
                self._warn(code, exc)
                if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                    self._on_gpu_lost()
                self._stop.wait(self._poll_ms / 1000.0)  # no busy loop on a broken set
                continue
            self._on_event(data.device, int(data.eventType), int(data.eventData))

    def _warn(self, code: int, exc: Exception) -> None:
        """The first failure of each code, then one line per WAIT_WARNING_INTERVAL_S with the
        number of repeats in between."""
        now = self._clock()
        last = self._warned_at.get(code)
        if last is not None and now - last < WAIT_WARNING_INTERVAL_S:
            self._suppressed[code] = self._suppressed.get(code, 0) + 1
            return
        repeats = self._suppressed.pop(code, 0)
        self._warned_at[code] = now
        more = f" (and {repeats} times since the last warning)" if repeats else ""
        log.warning("NVML event wait failed: %s%s", exc, more)
