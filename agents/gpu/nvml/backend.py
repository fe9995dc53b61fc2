"""``NvmlBackend``: the GPUs of a node through NVML, on three cadences.

- inventory: identity, limits and topology, read when a GPU is first seen or returns; MIG state
  on every inventory pass (each slow round). A MIG change re-sends the inventory and re-probes
  every read remembered as unavailable;
- fast: every ``sample()`` (``fast.py``);
- slow: every ``slow_interval_s`` of the injected clock, and at once for a GPU that raised an
  ECC or recovery-action event (``slow.py``).

A GPU that answers GPU_IS_LOST (from a read, or from the event wait) leaves ``sample()`` and
``inventory()`` and sets ``inventory_changed()`` so the daemon re-sends the inventory; a slow
round re-enumerates and brings it back once it answers again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pynvml

from agents.gpu.gpm import GpmReader, GpuProfile
from agents.protocol import EventKind, GpuInventory, GpuTelemetry, XidEvent
from agents.xid import XID_DOUBLE_BIT_ECC

from .calls import (
    Gpu,
    GpuLostError,
    Handle,
    decode,
    device_key,
    enumerate_gpus,
    forget_failures,
    init_nvml,
    log,
    system_read,
)
from .events import EVENT_DBE, EVENT_XID, HEALTH_EVENTS, EventWatcher, register_events
from .fast import read_fast
from .inventory import read_inventory, read_mig
from .slow import read_health


class PowerLimitError(RuntimeError):
    """The driver refused a power limit (not root, not supported, or out of range)."""


class NvmlBackend:
    """``GpuBackend`` + ``PowerLimitControl`` over NVML. Thread-safe; call ``close()``."""

    name: str = "nvml"

    def __init__(
        self,
        *,
        slow_interval_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        event_poll_ms: int = 500,
        watch_events: bool = True,
    ) -> None:
        init_nvml()
        self._slow_interval_s = slow_interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.RLock()
        self._gpus: dict[str, Gpu] = {}
        self._by_key: dict[int, Gpu] = {}
        self._next_slow: float | None = None
        self._changed = False
        self._events: list[XidEvent] = []
        self._event_set: Any = None
        self._watcher: EventWatcher | None = None
        self._closed = False
        self._gpm = GpmReader(clock=clock)
        try:
            self._driver_version = system_read("driver version", pynvml.nvmlSystemGetDriverVersion)
            self._nvml_version = system_read("NVML version", pynvml.nvmlSystemGetNVMLVersion)
            cuda = system_read("CUDA driver version", pynvml.nvmlSystemGetCudaDriverVersion)
            self._cuda_driver_version = None if cuda is None else int(cuda)
            if watch_events:
                self._event_set = system_read("event set", pynvml.nvmlEventSetCreate)
            self._rescan()
            self._changed = False  # the first inventory is not a change
            if self._event_set is not None:
                self._watcher = EventWatcher(
                    self._event_set,
                    poll_ms=event_poll_ms,
                    clock=clock,
                    on_event=self._on_event,
                    on_gpu_lost=self._on_wait_gpu_lost,
                )
        except BaseException:
            self.close()
            raise

    # -- GpuBackend ---------------------------------------------------------------------------

    def driver_version(self) -> str | None:
        return None if self._driver_version is None else decode(self._driver_version)

    def nvml_version(self) -> str | None:
        return None if self._nvml_version is None else decode(self._nvml_version)

    def cuda_driver_version(self) -> int | None:
        """E.g. 13000 for CUDA 13.0, as NodeInventory.cuda_driver_version wants it."""
        return self._cuda_driver_version

    def inventory(self) -> list[GpuInventory]:
        with self._lock:
            return [gpu.static for gpu in self._present() if gpu.static is not None]

    def memory_reserved_mib(self) -> dict[str, float]:
        with self._lock:
            return {
                gpu.uuid: gpu.static.memory_reserved_mib
                for gpu in self._present()
                if gpu.static is not None and gpu.static.memory_reserved_mib is not None
            }

    def inventory_changed(self) -> bool:
        """True once after a GPU was lost, came back, changed index or MIG state: re-send
        inventory()."""
        with self._lock:
            changed, self._changed = self._changed, False
            return changed

    def sample(self) -> list[GpuTelemetry]:
        with self._lock:
            now = self._clock()
            slow_round = self._next_slow is None or now >= self._next_slow
            if slow_round:
                self._next_slow = now + self._slow_interval_s
                self._rescan()
            out = []
            for gpu in self._present():
                try:
                    fast = read_fast(gpu)
                    if slow_round or gpu.slow_due:
                        gpu.health = read_health(gpu)
                        gpu.slow_due = False
                except GpuLostError:
                    self._mark_lost(gpu)
                    continue
                out.append(self._telemetry(gpu, fast))
            return out

    def profiles(self) -> dict[str, GpuProfile]:
        """GPM profiling metrics for /metrics (``agents.gpu.gpm``), read after each sample()."""
        with self._lock:
            return self._gpm.read((gpu.uuid, gpu.handle) for gpu in self._present())

    def drain_events(self) -> list[XidEvent]:
        """XID and double-bit ECC events since the last call, oldest first."""
        with self._lock:
            events, self._events = self._events, []
            return events

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.stop()
        if self._event_set is not None:
            system_read("free event set", lambda: pynvml.nvmlEventSetFree(self._event_set))
        self._gpm.close()
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError as exc:
            log.warning("nvmlShutdown failed: %s", exc)

    # -- PowerLimitControl --------------------------------------------------------------------

    def set_power_limit(self, uuid: str, watts: float) -> float:
        """Clamp to the GPU's constraints, set, and return the enforced limit read back.

        Uses nvmlDeviceSetPowerManagementLimit: its _v2 variant in pynvml drops the return code,
        so a refusal would pass silently. Needs root; a refusal raises PowerLimitError.
        """
        with self._lock:
            gpu = self._gpus.get(uuid)
            if gpu is None or gpu.lost:
                raise KeyError(f"no NVML GPU with UUID {uuid!r}")
            try:
                low, high = (int(v) for v in pynvml.nvmlDeviceGetPowerManagementLimitConstraints(gpu.handle))
                milliwatts = min(max(round(watts * 1000), low), high)
                pynvml.nvmlDeviceSetPowerManagementLimit(gpu.handle, milliwatts)
                return int(pynvml.nvmlDeviceGetEnforcedPowerLimit(gpu.handle)) / 1000.0
            except pynvml.NVMLError as exc:
                if int(exc.value) == pynvml.NVML_ERROR_GPU_IS_LOST:
                    self._mark_lost(gpu)
                raise PowerLimitError(f"GPU {uuid}: power limit {watts} W refused: {exc}") from exc

    # -- internals ----------------------------------------------------------------------------

    def _present(self) -> list[Gpu]:
        return sorted((gpu for gpu in self._gpus.values() if not gpu.lost), key=lambda gpu: gpu.index)

    def _telemetry(self, gpu: Gpu, fast: dict[str, Any]) -> GpuTelemetry:
        return GpuTelemetry(
            uuid=gpu.uuid,
            index=gpu.index,
            **fast,
            **gpu.health,
            xid_last=gpu.xid_last,
            xid_count=gpu.xid_count,
            xid_counts=dict(gpu.xid_counts),
        )

    def _mark_lost(self, gpu: Gpu) -> None:
        if not gpu.lost:
            log.error("GPU %s (index %d) is lost (fell off the bus?): removed from reports", gpu.uuid, gpu.index)
            gpu.lost = True
            self._changed = True

    def _rescan(self) -> None:
        """Enumerate the GPUs: adds new ones, revives returned ones, marks vanished ones lost,
        and re-reads the MIG state of the known ones."""
        found = enumerate_gpus()
        if found is None:
            return
        for uuid, (index, handle) in found.items():
            gpu = self._gpus.get(uuid)
            if gpu is not None and not gpu.lost and gpu.index == index:
                self._refresh_mig(gpu)
                continue
            gpu = gpu or Gpu(index=index, uuid=uuid, handle=handle)
            gpu.index, gpu.handle, gpu.lost, gpu.slow_due = index, handle, False, True
            forget_failures(gpu)  # a GPU back after a reset is re-probed from scratch
            try:
                gpu.static = read_inventory(gpu)
            except GpuLostError:
                gpu.lost = True
                continue
            self._gpus[uuid] = gpu
            self._by_key[device_key(handle)] = gpu
            if self._event_set is not None:
                register_events(gpu, self._event_set)
            self._changed = True
            log.info("GPU %s at index %d", uuid, index)
        for gpu in self._gpus.values():
            if gpu.uuid not in found:
                self._mark_lost(gpu)

    def _refresh_mig(self, gpu: Gpu) -> None:
        """MIG is switched and reconfigured at run time: a change re-reads the inventory, and
        re-probes the reads remembered as unavailable (utilisation is unsupported under MIG)."""
        static = gpu.static
        if static is None:
            return
        try:
            mode, devices = read_mig(gpu)
        except GpuLostError:
            self._mark_lost(gpu)
            return
        if (mode, devices) == (static.mig_mode, static.mig_devices):
            return
        log.info("GPU %s: MIG %s -> %s (%d instances)", gpu.uuid, static.mig_mode, mode, len(devices))
        forget_failures(gpu)
        try:
            gpu.static = read_inventory(gpu)
        except GpuLostError:
            self._mark_lost(gpu)
            return
        gpu.slow_due = True
        self._changed = True

    # -- events -------------------------------------------------------------------------------

    def _on_event(self, device: Handle, event_type: int, event_data: int) -> None:
        with self._lock:
            gpu = self._find(device)
            at = self._wall_clock()
            if gpu is None:
                if event_type & EVENT_XID:
                    # Like NVIDIA's device plugin: an XID no GPU claims is every GPU's.
                    log.warning("XID %d with no known device: counted on every GPU of the node", event_data)
                    for each in self._present():
                        self._record_xid(each, event_data, at)
                else:
                    log.warning("NVML event 0x%x for an unknown device: ignored", event_type)
                return
            if event_type & EVENT_XID:
                self._record_xid(gpu, event_data, at)
                log.warning("GPU %s: XID %d", gpu.uuid, event_data)
            if event_type & EVENT_DBE:
                detail = "double-bit ECC error (nvmlEventTypeDoubleBitEccError)"
                self._events.append(
                    XidEvent(uuid=gpu.uuid, xid=XID_DOUBLE_BIT_ECC, kind=EventKind.ECC_DBE, at=at, detail=detail)
                )
                log.warning("GPU %s: double-bit ECC error", gpu.uuid)
            # ECC and recovery-action events: re-read the health counters at the next sample.
            if event_type & HEALTH_EVENTS:
                gpu.slow_due = True

    def _find(self, device: Handle) -> Gpu | None:
        """The GPU an event names: by handle, else by the UUID the handle answers; None for no
        device (a NULL handle) or one this backend does not know."""
        key = device_key(device)
        if not key:
            return None
        gpu = self._by_key.get(key)
        if gpu is not None:
            return gpu
        try:
            uuid = decode(pynvml.nvmlDeviceGetUUID(device))
        except pynvml.NVMLError:
            return None
        return self._gpus.get(uuid)

    def _record_xid(self, gpu: Gpu, xid: int, at: float) -> None:
        gpu.xid_last = xid
        gpu.xid_count += 1
        gpu.xid_counts[xid] = gpu.xid_counts.get(xid, 0) + 1
        self._events.append(XidEvent(uuid=gpu.uuid, xid=xid, at=at))

    def _on_wait_gpu_lost(self) -> None:
        """The event wait answered GPU_IS_LOST: find which GPUs no longer answer and take them
        out, as a read that met GPU_IS_LOST would."""
        with self._lock:
            for gpu in self._present():
                try:
                    pynvml.nvmlDeviceGetUUID(gpu.handle)
                except pynvml.NVMLError as exc:
                    if int(exc.value) == pynvml.NVML_ERROR_GPU_IS_LOST:
                        self._mark_lost(gpu)
