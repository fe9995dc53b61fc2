"""The NVML backend: a node's real GPUs, read through pynvml (the ``nvidia-ml-py`` package).

Three cadences, because NVML calls cost 0.1-0.4 ms each and the health counters change slowly:

- inventory: identity, limits and topology, read once per GPU (and again when a GPU returns);
- fast: every ``sample()`` (utilisation, memory, power, energy, temperatures, clocks,
  processes, NVLink throughput);
- slow: every ``slow_interval_s`` of the injected clock, and at once for a GPU that raised an
  ECC or recovery-action event (ECC, remapped rows, field 230, NVLink state and errors, PCIe
  replays, fabric). Its last values are repeated in every sample.

An event thread waits on ``nvmlEventSetWait_v2`` and queues ``XidEvent`` for ``drain_events()``.

A field a GPU or driver cannot give is ``None``, never a made-up zero, and never stops the
loop; calls that fail for good (not supported, missing symbol, no permission) are remembered per
GPU and not retried. A GPU that answers GPU_IS_LOST leaves ``sample()`` and ``inventory()`` and
sets ``inventory_changed()`` so the daemon re-sends the inventory; a slow round re-enumerates
and brings it back once it answers again.

pynvml is untyped: every value crossing from it is converted to a plain type right here.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pynvml

from agents.gpu.gpm import GpmReader, GpuProfile
from agents.protocol import EventKind, GpuInventory, GpuProcess, GpuTelemetry, MigDevice, XidEvent

log = logging.getLogger(__name__)

T = TypeVar("T")
Handle = Any  # pynvml's ctypes device pointer: opaque here
FieldKey = tuple[int, int]  # (field id, scope id)

MIB: Final = 1024 * 1024
ALL_LINKS: Final = 0xFFFFFFFF  # scopeId that sums NVLink throughput over all links

# Field ids (nvml.h NVML_FI_DEV_*).
FI_MEMORY_TEMP: Final = 82
FI_NVLINK_LINK_COUNT: Final = 91
FI_NVLINK_ERRORS: Final = (38, 45, 52, 59)  # CRC flit, CRC data, replay, recovery: totals
FI_NVLINK_DATA_TX: Final = 138
FI_NVLINK_DATA_RX: Final = 139
FI_NVLINK_RAW_TX: Final = 140
FI_NVLINK_RAW_RX: Final = 141
FI_NVLINK_STATE: Final = 165
FI_POWER_AVERAGE: Final = 185
FI_POWER_INSTANT: Final = 186
FI_POWER_CURRENT_LIMIT: Final = 190
FI_RECOVERY_ACTION: Final = 230
SCOPE_GPU: Final = 0
SCOPE_MODULE: Final = 1
NVLINK_STATE_ACTIVE: Final = 1

EVENT_SBE: Final = 0x1
EVENT_DBE: Final = 0x2
EVENT_XID: Final = 0x8
# Only where the installed pynvml knows it (nvidia-ml-py 12.560+).
EVENT_RECOVERY_ACTION: Final[int | None] = getattr(pynvml, "nvmlEventTypeGpuRecoveryAction", None)
XID_DOUBLE_BIT_ECC: Final = 48  # the XID NVIDIA's catalog gives a DBE

FABRIC_STATES: Final = {1: "not_started", 2: "in_progress", 3: "completed"}
FABRIC_COMPLETED: Final = 3
FABRIC_HEALTHY: Final = 1

# Failures that will not change while the agent runs: not retried on that GPU.
_PERMANENT: Final = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
        pynvml.NVML_ERROR_DEPRECATED,
    }
)

_INIT_ERRORS: Final = {
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        "libnvidia-ml.so.1 was not found: the NVIDIA driver is not installed on this host, or its "
        "library is not on the loader path (check `ldconfig -p | grep libnvidia-ml`). On a machine "
        "without NVIDIA GPUs run the agent with --backend sim."
    ),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (
        "the NVIDIA kernel driver is not loaded (nvidia.ko); `nvidia-smi` will report the same. "
        "Load the driver or reboot after installing it."
    ),
    pynvml.NVML_ERROR_NO_PERMISSION: "no permission to open the NVIDIA devices (/dev/nvidia*) as this user.",
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        "the NVML library and the loaded kernel driver have different versions, usually a driver "
        "upgrade without a reboot. Reboot the node (or reload the driver)."
    ),
}


class NvmlUnavailableError(RuntimeError):
    """NVML cannot be used on this host; the message tells an operator what to do."""


class PowerLimitError(RuntimeError):
    """The driver refused a power limit (not root, not supported, or out of range)."""


class _GpuLostError(Exception):
    """Raised inside a sample when NVML answers GPU_IS_LOST for a GPU."""


@dataclass
class _Gpu:
    index: int
    uuid: str
    handle: Handle
    static: GpuInventory | None = None
    unsupported: set[str] = field(default_factory=set)
    warned: set[tuple[str, int]] = field(default_factory=set)
    lost: bool = False
    slow_due: bool = True
    health: dict[str, Any] = field(default_factory=dict)
    xid_last: int | None = None
    xid_count: int = 0
    xid_counts: dict[int, int] = field(default_factory=dict)


# -- calling NVML ---------------------------------------------------------------------------------


def _read(gpu: _Gpu, name: str, call: Callable[[], T]) -> T | None:
    """One NVML read that degrades to None; GPU_IS_LOST propagates as _GpuLostError."""
    if name in gpu.unsupported:
        return None
    try:
        return call()
    except pynvml.NVMLError as exc:
        _note_failure(gpu, name, int(exc.value), exc)
        return None


def _note_failure(gpu: _Gpu, name: str, code: int, exc: Exception | None = None) -> None:
    if code == pynvml.NVML_ERROR_GPU_IS_LOST:
        raise _GpuLostError(gpu.uuid) from exc
    if code in _PERMANENT:
        gpu.unsupported.add(name)
        log.info("GPU %s: %s unavailable (NVML error %d); reported as absent", gpu.uuid, name, code)
    elif (name, code) not in gpu.warned:  # transient: retried next time, logged once
        gpu.warned.add((name, code))
        log.warning("GPU %s: %s failed (NVML error %d); reported as absent this sample", gpu.uuid, name, code)


def _read_fields(gpu: _Gpu, keys: Iterable[FieldKey]) -> dict[FieldKey, float | int | None]:
    """Several field values in one call, checking each entry's own nvmlReturn."""
    keys = list(keys)
    out: dict[FieldKey, float | int | None] = dict.fromkeys(keys)
    wanted = [key for key in keys if f"field {key[0]}/{key[1]}" not in gpu.unsupported]
    if not wanted:
        return out
    values = _read(gpu, "nvmlDeviceGetFieldValues", lambda: pynvml.nvmlDeviceGetFieldValues(gpu.handle, wanted))
    if values is None:
        return out
    for key, entry in zip(wanted, values, strict=True):
        code = int(entry.nvmlReturn)
        if code == pynvml.NVML_SUCCESS:
            out[key] = _field_value(entry)
        else:
            _note_failure(gpu, f"field {key[0]}/{key[1]}", code)
    return out


def _field_value(entry: Any) -> float | int | None:
    """Decode an nvmlFieldValue_t by its valueType (the union member NVML filled)."""
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(
        int(entry.valueType)
    )
    if member is None:
        return None
    value = getattr(entry.value, member)
    return float(value) if member == "dVal" else int(value)


def _raw_bytes(struct: ctypes.Structure, name: str, size: int) -> bytes:
    """A char field's raw bytes: pynvml's structures decode them as text, which garbles numbers."""
    offset = int(getattr(type(struct), name).offset)
    return ctypes.string_at(ctypes.addressof(struct) + offset, size)


def _watts(milliwatts: float | int | None) -> float | None:
    return None if milliwatts is None else float(milliwatts) / 1000.0


def _first(value: T | None, fallback: Callable[[], T | None]) -> T | None:
    return value if value is not None else fallback()


def _device_key(handle: Handle) -> int:
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


def _decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- static inventory -----------------------------------------------------------------------------


def _read_inventory(gpu: _Gpu) -> GpuInventory:
    h = gpu.handle
    pci = _read(gpu, "pci info", lambda: pynvml.nvmlDeviceGetPciInfo_v3(h))
    memory = _read_memory(gpu)
    limits = _read(gpu, "power limit constraints", lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h))
    default_mw = _read(gpu, "default power limit", lambda: int(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h)))
    module_limit = _read_fields(gpu, [(FI_POWER_CURRENT_LIMIT, SCOPE_MODULE)])[(FI_POWER_CURRENT_LIMIT, SCOPE_MODULE)]
    platform = _read_platform(gpu)
    fabric = _read_fabric(gpu)
    mig_mode, mig_devices = _read_mig(gpu)
    module_id = platform.get("module_id")
    if module_id is None:
        module_id = _read(gpu, "module id", lambda: int(pynvml.nvmlDeviceGetModuleId(h)))
    return GpuInventory(
        index=gpu.index,
        uuid=gpu.uuid,
        name=_read(gpu, "name", lambda: _decode(pynvml.nvmlDeviceGetName(h))) or "unknown",
        serial=_read(gpu, "serial", lambda: _decode(pynvml.nvmlDeviceGetSerial(h))),
        pci_bus_id=None if pci is None else _decode(pci.busId),
        pci_device_id=None if pci is None else f"0x{int(pci.pciDeviceId):08X}",
        memory_total_mib=round(memory["total"] / MIB) if memory else 0,
        memory_reserved_mib=_mib(memory.get("reserved")) if memory else None,
        power_limit_default_w=_watts(default_mw),
        power_limit_min_w=None if limits is None else _watts(int(limits[0])),
        power_limit_max_w=None if limits is None else _watts(int(limits[1])),
        module_power_limit_w=_watts(module_limit),
        max_sm_clock_mhz=_read_clock(gpu, "max sm clock", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        max_mem_clock_mhz=_read_clock(gpu, "max mem clock", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
        fabric_cluster_uuid=fabric.get("cluster_uuid"),
        fabric_clique_id=fabric.get("clique_id"),
        fabric_state=fabric.get("state"),
        module_id=module_id,
        chassis_serial=platform.get("chassis_serial"),
        slot_number=platform.get("slot_number"),
        tray_index=platform.get("tray_index"),
        host_id=platform.get("host_id"),
        mig_mode=mig_mode,
        mig_devices=mig_devices,
    )


def _mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


def _read_clock(gpu: _Gpu, name: str, call: Callable[[Handle, int], Any], clock: int) -> float | None:
    value = _read(gpu, name, lambda: int(call(gpu.handle, clock)))
    return None if value is None else float(value)


def _read_platform(gpu: _Gpu) -> dict[str, Any]:
    info = pynvml.c_nvmlPlatformInfo_v2_t()
    if _read(gpu, "platform info", lambda: pynvml.nvmlDeviceGetPlatformInfo(gpu.handle, ctypes.byref(info))) is None:
        return {}
    serial = _raw_bytes(info, "chassisSerialNumber", 16).split(b"\0", 1)[0].decode("ascii", "replace")
    return {
        "chassis_serial": serial or None,
        "slot_number": _raw_bytes(info, "slotNumber", 1)[0],
        "tray_index": _raw_bytes(info, "trayIndex", 1)[0],
        "host_id": _raw_bytes(info, "hostId", 1)[0],
        "module_id": _raw_bytes(info, "moduleId", 1)[0],
    }


def _read_fabric(gpu: _Gpu) -> dict[str, Any]:
    """Fabric identity and health from GetGpuFabricInfoV: v3 (health summary), else v2."""
    info: Any = pynvml.c_nvmlGpuFabricInfo_v3_t()
    got = _read(gpu, "fabric info v3", lambda: pynvml.nvmlDeviceGetGpuFabricInfoV(gpu.handle, ctypes.byref(info)))
    if got is None:
        info = pynvml.c_nvmlGpuFabricInfo_v2_t()
        got = _read(gpu, "fabric info v2", lambda: pynvml.nvmlDeviceGetGpuFabricInfoV(gpu.handle, ctypes.byref(info)))
    if got is None:
        return {}
    state = int(info.state)
    raw_uuid = bytes(_raw_bytes(info, "clusterUuid", 16))
    summary = int(getattr(info, "healthSummary", 0))
    return {
        "state": FABRIC_STATES.get(state),
        "cluster_uuid": str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else None,
        "clique_id": int(info.cliqueId) if state == FABRIC_COMPLETED else None,
        "healthy": _fabric_healthy(state, int(info.status), int(info.healthMask), summary),
    }


def _fabric_healthy(state: int, status: int, mask: int, summary: int) -> bool | None:
    if state == FABRIC_COMPLETED and status != pynvml.NVML_SUCCESS:
        return False
    if summary:  # v3: NVML's own verdict
        return summary == FABRIC_HEALTHY
    if not mask:
        return None
    degraded_bw = mask & 0x3 == 1
    route_unhealthy = (mask >> 4) & 0x3 == 1
    bad_config = (mask >> 8) & 0xF > 1
    return not (degraded_bw or route_unhealthy or bad_config)


def _read_mig(gpu: _Gpu) -> tuple[bool | None, list[MigDevice]]:
    modes = _read(gpu, "mig mode", lambda: pynvml.nvmlDeviceGetMigMode(gpu.handle))
    if modes is None:
        return None, []
    enabled = int(modes[0]) == pynvml.NVML_DEVICE_MIG_ENABLE
    if not enabled:
        return False, []
    count = _read(gpu, "max mig devices", lambda: int(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))) or 0
    devices: list[MigDevice] = []
    for slot in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
        except pynvml.NVMLError as exc:
            if int(exc.value) == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise _GpuLostError(gpu.uuid) from exc
            continue  # NOT_FOUND: an empty slot
        device = _read_mig_device(gpu, mig)
        if device is not None:
            devices.append(device)
    return True, devices[:8]  # the wire allows 8; NVML has at most 7


def _read_mig_device(gpu: _Gpu, mig: Handle) -> MigDevice | None:
    uuid = _read(gpu, "mig uuid", lambda: _decode(pynvml.nvmlDeviceGetUUID(mig)))
    if uuid is None:
        return None
    memory = _read(gpu, "mig memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(mig))
    return MigDevice(
        uuid=uuid,
        gpu_instance_id=_read(gpu, "mig gpu instance", lambda: int(pynvml.nvmlDeviceGetGpuInstanceId(mig))),
        compute_instance_id=_read(gpu, "mig compute instance", lambda: int(pynvml.nvmlDeviceGetComputeInstanceId(mig))),
        memory_total_mib=None if memory is None else int(memory.total) / MIB,
    )


# -- fast sample ----------------------------------------------------------------------------------

_FAST_FIELDS: Final[tuple[FieldKey, ...]] = (
    (FI_POWER_AVERAGE, SCOPE_GPU),
    (FI_POWER_AVERAGE, SCOPE_MODULE),
    (FI_POWER_INSTANT, SCOPE_MODULE),
    (FI_MEMORY_TEMP, SCOPE_GPU),
    (FI_NVLINK_DATA_TX, ALL_LINKS),
    (FI_NVLINK_DATA_RX, ALL_LINKS),
    (FI_NVLINK_RAW_TX, ALL_LINKS),
    (FI_NVLINK_RAW_RX, ALL_LINKS),
)


def _read_memory(gpu: _Gpu) -> dict[str, int]:
    """Memory_v2 (used excludes the driver's reserve); v1 where v2 is missing."""
    v2 = _read(gpu, "memory info v2", lambda: pynvml.nvmlDeviceGetMemoryInfo(gpu.handle, version=pynvml.nvmlMemory_v2))
    if v2 is not None:
        return {"total": int(v2.total), "reserved": int(v2.reserved), "used": int(v2.used)}
    v1 = _read(gpu, "memory info", lambda: pynvml.nvmlDeviceGetMemoryInfo(gpu.handle))
    return {} if v1 is None else {"total": int(v1.total), "used": int(v1.used)}


def _read_fast(gpu: _Gpu) -> dict[str, Any]:
    h = gpu.handle
    fields = _read_fields(gpu, _FAST_FIELDS)
    util = _read(gpu, "utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
    memory = _read_memory(gpu)
    power_mw = _first(
        fields[(FI_POWER_AVERAGE, SCOPE_GPU)],
        lambda: _read(gpu, "power usage", lambda: int(pynvml.nvmlDeviceGetPowerUsage(h))),
    )
    limit_mw = _read(gpu, "enforced power limit", lambda: int(pynvml.nvmlDeviceGetEnforcedPowerLimit(h)))
    reasons = _read(gpu, "clock event reasons", lambda: int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)))
    return {
        "utilization_gpu_pct": None if util is None else float(util.gpu),
        "utilization_memory_pct": None if util is None else float(util.memory),
        "memory_used_mib": _mib(memory.get("used")),
        "memory_total_mib": _mib(memory.get("total")),
        "memory_reserved_mib": _mib(memory.get("reserved")),
        "power_w": _watts(power_mw),
        "module_power_w": _watts(
            _first(fields[(FI_POWER_AVERAGE, SCOPE_MODULE)], lambda: fields[(FI_POWER_INSTANT, SCOPE_MODULE)])
        ),
        "power_limit_w": _watts(limit_mw),
        "energy_mj": _read(gpu, "total energy", lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))),
        "temperature_gpu_c": _read_gpu_temperature(gpu),
        "temperature_memory_c": _as_float(fields[(FI_MEMORY_TEMP, SCOPE_GPU)]),
        "sm_clock_mhz": _read_clock(gpu, "sm clock", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": _read_clock(gpu, "mem clock", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        "clock_event_reasons": reasons,
        "processes": _read_processes(gpu),
        "nvlink_tx_kib": _as_int(
            _first(fields[(FI_NVLINK_DATA_TX, ALL_LINKS)], lambda: fields[(FI_NVLINK_RAW_TX, ALL_LINKS)])
        ),
        "nvlink_rx_kib": _as_int(
            _first(fields[(FI_NVLINK_DATA_RX, ALL_LINKS)], lambda: fields[(FI_NVLINK_RAW_RX, ALL_LINKS)])
        ),
    }


def _as_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def _as_int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def _read_gpu_temperature(gpu: _Gpu) -> float | None:
    """GetTemperatureV (the old GetTemperature goes away in CUDA 14), else GetTemperature."""
    sensor = pynvml.NVML_TEMPERATURE_GPU
    value = _read(gpu, "temperature v", lambda: int(pynvml.nvmlDeviceGetTemperatureV(gpu.handle, sensor)))
    if value is None:
        value = _read(gpu, "temperature", lambda: int(pynvml.nvmlDeviceGetTemperature(gpu.handle, sensor)))
    return _as_float(value)


def _read_processes(gpu: _Gpu) -> list[GpuProcess] | None:
    procs = _read(gpu, "compute processes", lambda: pynvml.nvmlDeviceGetComputeRunningProcesses_v3(gpu.handle))
    if procs is None:
        return None
    return [
        GpuProcess(pid=int(p.pid), used_memory_mib=None if p.usedGpuMemory is None else int(p.usedGpuMemory) / MIB)
        for p in procs
    ]


# -- slow sample ----------------------------------------------------------------------------------


_ECC_COUNTERS: Final = {
    "ecc_volatile_sbe": (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_volatile_dbe": (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_aggregate_sbe": (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC),
    "ecc_aggregate_dbe": (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC),
}


def _read_ecc(gpu: _Gpu, name: str, error: int, counter: int) -> int | None:
    return _read(gpu, name, lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(gpu.handle, error, counter)))


def _read_health(gpu: _Gpu) -> dict[str, Any]:
    h = gpu.handle
    ecc = {name: _read_ecc(gpu, name, error, counter) for name, (error, counter) in _ECC_COUNTERS.items()}
    rows = _read(gpu, "remapped rows", lambda: pynvml.nvmlDeviceGetRemappedRows(h))
    fabric = _read_fabric(gpu)
    return {
        **ecc,
        "remapped_rows_correctable": None if rows is None else int(rows[0]),
        "remapped_rows_uncorrectable": None if rows is None else int(rows[1]),
        "remapped_rows_pending": None if rows is None else bool(rows[2]),
        "remapped_rows_failure": None if rows is None else bool(rows[3]),
        "pcie_replay_count": _read(gpu, "pcie replay counter", lambda: int(pynvml.nvmlDeviceGetPcieReplayCounter(h))),
        "fabric_state": fabric.get("state"),
        "fabric_healthy": fabric.get("healthy"),
        **_read_links(gpu),
    }


def _read_links(gpu: _Gpu) -> dict[str, Any]:
    """NVLink state per link, error totals and the recovery action, in two field calls."""
    count = _as_int(_read_fields(gpu, [(FI_NVLINK_LINK_COUNT, 0)])[(FI_NVLINK_LINK_COUNT, 0)])
    states = [(FI_NVLINK_STATE, link) for link in range(count or 0)]
    errors = [(fid, 0) for fid in FI_NVLINK_ERRORS]
    fields = _read_fields(gpu, [(FI_RECOVERY_ACTION, 0), *errors, *states])
    state_values = [fields[key] for key in states]
    error_values = [int(v) for v in (fields[key] for key in errors) if v is not None]
    return {
        "recovery_action": _as_int(fields[(FI_RECOVERY_ACTION, 0)]),
        "nvlink_links_total": count,
        "nvlink_links_up": (
            None
            if count is None or (count and all(v is None for v in state_values))
            else sum(1 for v in state_values if v == NVLINK_STATE_ACTIVE)
        ),
        "nvlink_errors": sum(error_values) if error_values else None,
    }


# -- the backend ----------------------------------------------------------------------------------


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
        _init_nvml()
        self._slow_interval_s = slow_interval_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._event_poll_ms = event_poll_ms
        self._lock = threading.RLock()
        self._gpus: dict[str, _Gpu] = {}
        self._by_key: dict[int, _Gpu] = {}
        self._next_slow: float | None = None
        self._changed = False
        self._events: list[XidEvent] = []
        self._stop = threading.Event()
        self._event_set: Any = None
        self._thread: threading.Thread | None = None
        self._closed = False
        self._gpm = GpmReader(clock=clock)
        try:
            self._driver_version = _system_read("driver version", pynvml.nvmlSystemGetDriverVersion)
            self._nvml_version = _system_read("NVML version", pynvml.nvmlSystemGetNVMLVersion)
            cuda = _system_read("CUDA driver version", pynvml.nvmlSystemGetCudaDriverVersion)
            self._cuda_driver_version = None if cuda is None else int(cuda)
            if watch_events:
                self._event_set = _system_read("event set", pynvml.nvmlEventSetCreate)
            self._rescan()
            self._changed = False  # the first inventory is not a change
            if self._event_set is not None:
                self._thread = threading.Thread(target=self._watch_events, name="nvml-events", daemon=True)
                self._thread.start()
        except BaseException:
            self.close()
            raise

    # -- GpuBackend ---------------------------------------------------------------------------

    def driver_version(self) -> str | None:
        return None if self._driver_version is None else _decode(self._driver_version)

    def nvml_version(self) -> str | None:
        return None if self._nvml_version is None else _decode(self._nvml_version)

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
        """True once after a GPU was lost, came back or changed index: re-send inventory()."""
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
                    fast = _read_fast(gpu)
                    if slow_round or gpu.slow_due:
                        gpu.health = _read_health(gpu)
                        gpu.slow_due = False
                except _GpuLostError:
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
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._event_set is not None:
            _system_read("free event set", lambda: pynvml.nvmlEventSetFree(self._event_set))
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

    def _present(self) -> list[_Gpu]:
        return sorted((gpu for gpu in self._gpus.values() if not gpu.lost), key=lambda gpu: gpu.index)

    def _telemetry(self, gpu: _Gpu, fast: dict[str, Any]) -> GpuTelemetry:
        return GpuTelemetry(
            uuid=gpu.uuid,
            index=gpu.index,
            **fast,
            **gpu.health,
            xid_last=gpu.xid_last,
            xid_count=gpu.xid_count,
            xid_counts=dict(gpu.xid_counts),
        )

    def _mark_lost(self, gpu: _Gpu) -> None:
        if not gpu.lost:
            log.error("GPU %s (index %d) is lost (fell off the bus?): removed from reports", gpu.uuid, gpu.index)
            gpu.lost = True
            self._changed = True

    def _rescan(self) -> None:
        """Enumerate the GPUs: adds new ones, revives returned ones, marks vanished ones lost."""
        found = _enumerate()
        if found is None:
            return
        for uuid, (index, handle) in found.items():
            gpu = self._gpus.get(uuid)
            if gpu is not None and not gpu.lost and gpu.index == index:
                continue
            gpu = gpu or _Gpu(index=index, uuid=uuid, handle=handle)
            gpu.index, gpu.handle, gpu.lost, gpu.slow_due = index, handle, False, True
            try:
                gpu.static = _read_inventory(gpu)
            except _GpuLostError:
                gpu.lost = True
                continue
            self._gpus[uuid] = gpu
            self._by_key[_device_key(handle)] = gpu
            self._register_events(gpu)
            self._changed = True
            log.info("GPU %s at index %d", uuid, index)
        for gpu in self._gpus.values():
            if gpu.uuid not in found:
                self._mark_lost(gpu)

    # -- events -------------------------------------------------------------------------------

    def _register_events(self, gpu: _Gpu) -> None:
        if self._event_set is None:
            return
        wanted = EVENT_XID | EVENT_DBE | EVENT_SBE | (EVENT_RECOVERY_ACTION or 0)
        supported = _read(
            gpu, "supported event types", lambda: int(pynvml.nvmlDeviceGetSupportedEventTypes(gpu.handle))
        )
        mask = wanted if supported is None else wanted & supported
        if mask:
            _read(gpu, "register events", lambda: pynvml.nvmlDeviceRegisterEvents(gpu.handle, mask, self._event_set))

    def _watch_events(self) -> None:
        while not self._stop.is_set():
            try:
                data = pynvml.nvmlEventSetWait_v2(self._event_set, self._event_poll_ms)
            except pynvml.NVMLError as exc:
                code = int(exc.value)
                if code in _PERMANENT:
                    log.error("NVML events unavailable (%s): XIDs will not be reported", exc)
                    return
                if code != pynvml.NVML_ERROR_TIMEOUT:
                    log.warning("NVML event wait failed: %s", exc)
                    self._stop.wait(self._event_poll_ms / 1000.0)  # no busy loop on a broken set
                continue
            self._on_event(_device_key(data.device), int(data.eventType), int(data.eventData))

    def _on_event(self, key: int, event_type: int, event_data: int) -> None:
        with self._lock:
            gpu = self._by_key.get(key)
            if gpu is None:
                log.warning("NVML event 0x%x for an unknown device", event_type)
                return
            at = self._wall_clock()
            if event_type & EVENT_XID:
                gpu.xid_last = event_data
                gpu.xid_count += 1
                gpu.xid_counts[event_data] = gpu.xid_counts.get(event_data, 0) + 1
                self._events.append(XidEvent(uuid=gpu.uuid, xid=event_data, at=at))
                log.warning("GPU %s: XID %d", gpu.uuid, event_data)
            if event_type & EVENT_DBE:
                detail = "double-bit ECC error (nvmlEventTypeDoubleBitEccError)"
                self._events.append(
                    XidEvent(uuid=gpu.uuid, xid=XID_DOUBLE_BIT_ECC, kind=EventKind.ECC_DBE, at=at, detail=detail)
                )
                log.warning("GPU %s: double-bit ECC error", gpu.uuid)
            # ECC and recovery-action events: re-read the health counters at the next sample.
            if event_type & (EVENT_DBE | EVENT_SBE | (EVENT_RECOVERY_ACTION or 0)):
                gpu.slow_due = True


def _init_nvml() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        code = int(exc.value)
        message = _INIT_ERRORS.get(code, f"NVML failed to initialise: {exc} (NVML error {code}).")
        raise NvmlUnavailableError(f"NVML backend unavailable: {message}") from exc


def _system_read(name: str, call: Callable[[], T]) -> T | None:
    try:
        return call()
    except pynvml.NVMLError as exc:
        log.warning("NVML %s unavailable: %s", name, exc)
        return None


def _enumerate() -> dict[str, tuple[int, Handle]] | None:
    """UUID -> (index, handle) of every GPU that answers; None if the count itself fails."""
    try:
        count = int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError as exc:
        log.warning("nvmlDeviceGetCount failed: %s", exc)
        return None
    found: dict[str, tuple[int, Handle]] = {}
    for index in range(count):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            found[_decode(pynvml.nvmlDeviceGetUUID(handle))] = (index, handle)
        except pynvml.NVMLError as exc:
            log.warning("GPU at index %d does not answer: %s", index, exc)
    return found
