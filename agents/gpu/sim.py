"""A simulated GB300 tray, so the whole system runs and is tested without a GPU.

The model is small but keeps the properties the control plane relies on:

- Power follows load between idle and the enforced limit and never exceeds the limit, so
  power capping and the site cap can be exercised. A capped GPU lowers its SM clock and says
  so in its clock-event reasons (``SW_POWER_CAP``), an idle one says ``GPU_IDLE``.
- The energy counter is the exact integral of the power the model reported: power is held
  constant between two ``sample()`` calls and each call first integrates it up to ``clock()``.
  Metering tests can then compare the counter with the reported samples to the millijoule.
  The NVLink byte counters are integrated the same way from a held rate that follows load.
- Temperature lags power with a first-order response, as a liquid-cooled GPU does.
- It fills every field the NVML backend fills on a GB300 (inventory and telemetry), with the
  values of the real capture (``gb300.py``), so nothing upstream learns to expect ``None``.
- Profiling readings (``profiles()``: what GPM gives, DCGM_FI_PROF_* on /metrics) follow the
  load held since the last sample: engine activity is the load, SM, tensor and DRAM activity
  and PCIe traffic fixed shares of it (guesses, below), NVLink bytes the held NVLink rate, so
  they agree with the NVLink counters.

Faults are injectable so the health policy can be exercised end to end: XIDs (queued as
``XidEvent`` for ``drain_events()``), single- and double-bit ECC errors (a DBE leaves a row
remap pending until a reset), a failed row remap, a recovery action (field 230), degraded
NVLink, a GPU falling off the bus and coming back (``inventory_changed()``), and a GPU reset or
driver reload, which zeroes what NVML zeroes (energy, volatile ECC, NVLink and PCIe counters)
and clears what a reset clears (pending remap, recovery action): the signals by which
``agents.health`` sees recovery.

Everything is deterministic for a given ``seed`` and clock, and identities are derived from
``(cluster_uuid, node_index, gpu index)`` so 18 simulated trays of a rack, and many racks,
never share a UUID.
"""

from __future__ import annotations

import hashlib
import math
import random
import threading
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agents.gpu import gb300
from agents.gpu.base import GpuProfile
from agents.protocol import GpuInventory, GpuProcess, GpuTelemetry, XidEvent
from agents.xid import XID_DOUBLE_BIT_ECC, XID_FELL_OFF_THE_BUS, XID_RECOVERY_ACTION, XID_ROW_REMAP_FAILURE

# Namespace for simulated GPU UUIDs; fixed so a restarted agent keeps its identities.
_UUID_NAMESPACE = uuidlib.UUID("6f1c7a52-6a3e-4d55-9a51-5e0c2b7d3a10")

# A fully busy GB300 would draw more than its 1400 W cap (training runs are power-limited),
# so demand at 100% load is set above the limit and the cap does the rest.
_PEAK_DEMAND_W = 1470.0
_DEMAND_EXPONENT = 0.8  # concave: power climbs quickly with the first bits of load
_NOISE_FRACTION = 0.004  # ~0.7 W at idle, ~5 W at full load; NVML is only +-5% accurate anyway
# Guess: the Grace CPU feeding a busy GPU adds this much to the module reading at full load.
_MODULE_LOAD_W = 60.0

# Liquid-cooled: coolant near 34 C; the slopes reproduce the capture's 38-39 C at 180 W.
_AMBIENT_C = 33.85
_GPU_C_PER_W = (gb300.TEMP_GPU_IDLE_C - _AMBIENT_C) / gb300.POWER_IDLE_W
_MEMORY_C_PER_W = (gb300.TEMP_MEMORY_IDLE_C - _AMBIENT_C) / gb300.POWER_IDLE_W
THERMAL_TIME_CONSTANT_S = 45.0
# Share of the GPU load that shows as memory-copy utilisation (DCGM_FI_DEV_MEM_COPY_UTIL).
_MEM_COPY_SHARE = 0.6
# Guess: a fully busy GPU of a tensor-parallel job keeps a quarter of its NVLink busy each way.
NVLINK_SHARE_AT_FULL_LOAD = 0.25
# Profiling (GPM / DCGM_FI_PROF_*), as shares of the load. Guesses for a training job: the SMs
# are busy most of the time the engine is, half their warp slots filled, tensor pipes active
# for most of it (less when a power cap slows the clock), DRAM as busy as the memory-copy
# share; PCIe carries the data loader to the GPU and little back. No video: codecs idle (0 %,
# as in the capture).
SM_ACTIVE_SHARE = 0.9
SM_OCCUPANCY_SHARE = 0.5
TENSOR_SHARE_AT_FULL_CLOCK = 0.7
PCIE_RX_BYTES_PER_S_AT_FULL_LOAD = 2.0e9
PCIE_TX_BYTES_PER_S_AT_FULL_LOAD = 0.25e9
# Undrained events beyond this are dropped oldest first (xid_counts still count them).
MAX_QUEUED_EVENTS = 4096


@dataclass
class _SimGpu:
    index: int
    uuid: str
    serial: str
    rng: random.Random
    power_limit_w: float
    last_t: float
    power_mw: int  # what the last sample reported; held until the next sample
    temp_gpu_c: float
    temp_memory_c: float
    module_other_w: float  # module power minus GPU power at idle (Grace share, memory, board)
    module_power_mw: int = 0
    utilization: float = 0.0
    memory_used_mib: float = 0.0
    energy_acc_mj: float = 0.0  # exact float integral; the counter reports its floor
    nvlink_rate_kib_s: float = 0.0  # held like power_mw
    throttle: float = 1.0  # share of the max SM clock the power cap leaves (held like power_mw)
    nvlink_acc_kib: float = 0.0
    xid_last: int = 0
    xid_count: int = 0
    xid_counts: dict[int, int] = field(default_factory=dict)
    sm_clock_mhz: float = gb300.SM_CLOCK_IDLE_MHZ
    clock_event_reasons: int = gb300.CLOCKS_EVENT_REASON_GPU_IDLE
    pids: tuple[int, ...] = ()
    processes_used_mib: float | None = None  # None: the processes share the GPU's used memory
    ecc_volatile_sbe: int = 0
    ecc_volatile_dbe: int = 0
    ecc_aggregate_sbe: int = 0
    ecc_aggregate_dbe: int = 0
    remapped_rows_correctable: int = 0
    remapped_rows_uncorrectable: int = 0
    remapped_rows_pending: bool = False
    remapped_rows_failure: bool = False
    recovery_action: int = 0
    nvlink_links_up: int = gb300.NVLINK_LINKS
    nvlink_errors: int = 0
    pcie_replay_count: int = 0
    present: bool = True


class SimBackend:
    """``GpuBackend`` + ``LoadDriver`` + ``PowerLimitControl`` + ``ProfileSource`` for a
    simulated GB300 tray."""

    name: str = "sim"

    def __init__(
        self,
        gpu_count: int = gb300.GPUS_PER_TRAY,
        *,
        clock: Callable[[], float] = time.time,
        seed: int = 0,
        node_index: int = 0,
        cluster_uuid: str | None = None,
        clique_id: int = gb300.FABRIC_CLIQUE_ID,
        power_limit_w: float = gb300.POWER_LIMIT_DEFAULT_W,
        idle_w: float = gb300.POWER_IDLE_W,
    ) -> None:
        if not 1 <= gpu_count <= 64:
            raise ValueError(f"gpu_count must be 1..64, got {gpu_count}")
        if node_index < 0:
            raise ValueError(f"node_index must be >= 0, got {node_index}")
        self._clock = clock
        self._lock = threading.Lock()
        self._cluster_uuid = cluster_uuid or gb300.FABRIC_CLUSTER_UUID
        self._clique_id = clique_id
        self._idle_w = idle_w
        self._default_limit_w = _clamp_limit(power_limit_w)
        self._tray_index = node_index % gb300.COMPUTE_TRAYS_PER_RACK
        self._chassis_serial = _chassis_serial(self._cluster_uuid, node_index)
        self._events: deque[XidEvent] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._inventory_changed = False
        serial_base = _serial_base(self._cluster_uuid, node_index)
        now = clock()
        self._gpus: list[_SimGpu] = []
        for index in range(gpu_count):
            ident = f"{self._cluster_uuid}/{node_index}/{index}"
            other_w = gb300.MODULE_OTHER_IDLE_W[index % len(gb300.MODULE_OTHER_IDLE_W)]
            self._gpus.append(
                _SimGpu(
                    index=index,
                    uuid=f"GPU-{uuidlib.uuid5(_UUID_NAMESPACE, ident)}",
                    serial=gb300.board_serial(serial_base, index),
                    rng=random.Random(f"{seed}/{ident}"),
                    power_limit_w=self._default_limit_w,
                    last_t=now,
                    power_mw=round(idle_w * 1000),
                    temp_gpu_c=_AMBIENT_C + _GPU_C_PER_W * idle_w,
                    temp_memory_c=_AMBIENT_C + _MEMORY_C_PER_W * idle_w,
                    module_other_w=other_w,
                    module_power_mw=round((idle_w + other_w) * 1000),
                )
            )
        self._by_uuid = {gpu.uuid: gpu for gpu in self._gpus}
        self._profiles: dict[str, GpuProfile] = {}

    # -- GpuBackend ---------------------------------------------------------------------------

    def driver_version(self) -> str | None:
        return gb300.DRIVER_VERSION

    def inventory(self) -> list[GpuInventory]:
        with self._lock:
            return [self._inventory(gpu) for gpu in self._gpus if gpu.present]

    def memory_reserved_mib(self) -> dict[str, float]:
        with self._lock:
            return {gpu.uuid: float(gb300.MEMORY_RESERVED_MIB) for gpu in self._gpus if gpu.present}

    def sample(self) -> list[GpuTelemetry]:
        """Every GPU still on the bus, once; a lost GPU is absent until ``restore_gpu``."""
        with self._lock:
            now = self._clock()
            out = []
            self._profiles = {}
            for gpu in self._gpus:
                if not gpu.present:
                    continue
                self._advance(gpu, now)
                self._update_power(gpu)
                out.append(self._telemetry(gpu))
                self._profiles[gpu.uuid] = _profile_of(gpu)
            return out

    def profiles(self) -> dict[str, GpuProfile]:
        """``ProfileSource``: what GPM would show for the load held since the last ``sample()``."""
        with self._lock:
            return dict(self._profiles)

    def drain_events(self) -> list[XidEvent]:
        """XID and ECC events since the last call, oldest first (what NVML's event set delivers)."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
            return events

    def inventory_changed(self) -> bool:
        """True once after a GPU fell off the bus or came back: the agent re-sends its inventory."""
        with self._lock:
            changed, self._inventory_changed = self._inventory_changed, False
            return changed

    def close(self) -> None:
        """Nothing to release: the model lives in memory."""

    # -- LoadDriver / PowerLimitControl / processes -------------------------------------------
    # These accept a lost GPU (the daemon's housekeeping must not die on one); it takes effect
    # once the GPU is back.

    def set_load(self, uuid: str, utilization: float, memory_used_mib: float) -> None:
        """Takes effect at the next ``sample()``, like NVML's 1 s power average."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.utilization = min(max(utilization, 0.0), 1.0)
            gpu.memory_used_mib = min(max(memory_used_mib, 0.0), float(gb300.MEMORY_USABLE_MIB))

    def clear_load(self, uuid: str) -> None:
        self.set_load(uuid, 0.0, 0.0)

    def set_processes(self, uuid: str, pids: Iterable[int], used_mib: float | None = None) -> None:
        """The compute processes the daemon runs on this GPU (a simulated GPU cannot see them).

        ``used_mib`` is the memory they hold together, split evenly among them; ``None`` splits
        the GPU's used memory (``set_load``). An empty ``pids`` means none are running.
        """
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.pids = tuple(dict.fromkeys(pids))
            gpu.processes_used_mib = None if used_mib is None else max(0.0, float(used_mib))

    def set_power_limit(self, uuid: str, watts: float) -> float:
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.power_limit_w = _clamp_limit(watts)
            return gpu.power_limit_w

    # -- faults -------------------------------------------------------------------------------

    def inject_xid(self, uuid: str, xid: int, detail: str | None = None) -> None:
        """Raise an XID as the driver would, so the agent's XID policy can be exercised."""
        with self._lock:
            self._raise_xid(self._gpu(uuid), xid, detail)

    def inject_single_bit_error(self, uuid: str) -> None:
        """A corrected ECC error: counted, nothing else (no event, as NVML registers none here)."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.ecc_volatile_sbe += 1
            gpu.ecc_aggregate_sbe += 1

    def inject_double_bit_error(self, uuid: str) -> None:
        """An uncorrectable ECC error: DBE counters +1, the row is remapped at the next reset
        (pending until then), and the driver raises XID 48."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.ecc_volatile_dbe += 1
            gpu.ecc_aggregate_dbe += 1
            gpu.remapped_rows_uncorrectable += 1
            gpu.remapped_rows_pending = True
            self._raise_xid(gpu, XID_DOUBLE_BIT_ECC, "double-bit ECC error")

    def fail_row_remap(self, uuid: str) -> None:
        """The GPU ran out of spare rows: the failure survives resets (it needs service)."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.remapped_rows_failure = True
            self._raise_xid(gpu, XID_ROW_REMAP_FAILURE, "row remapping failed")

    def set_recovery_action(self, uuid: str, action: int) -> None:
        """Field 230 (0 none .. 7 system reboot); a non-zero action comes with XID 154."""
        if not 0 <= action <= 7:
            raise ValueError(f"recovery action must be 0..7, got {action}")
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.recovery_action = action
            if action:
                self._raise_xid(gpu, XID_RECOVERY_ACTION, f"GPU recovery action {action}")

    def set_nvlink_links_up(self, uuid: str, links_up: int) -> None:
        """Degrade (or heal) NVLink: fewer links up makes the fabric unhealthy; each lost link
        counts as a link error. A reset retrains every link."""
        if not 0 <= links_up <= gb300.NVLINK_LINKS:
            raise ValueError(f"links_up must be 0..{gb300.NVLINK_LINKS}, got {links_up}")
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.nvlink_errors += max(0, gpu.nvlink_links_up - links_up)
            gpu.nvlink_links_up = links_up

    def lose_gpu(self, uuid: str, *, xid: int | None = XID_FELL_OFF_THE_BUS) -> None:
        """The GPU falls off the bus: gone from ``inventory()`` and ``sample()``, with XID 79."""
        with self._lock:
            gpu = self._gpu(uuid)
            if not gpu.present:
                return
            self._advance(gpu, self._clock())  # the energy up to now was consumed
            gpu.present = False
            self._inventory_changed = True
            if xid is not None:
                self._raise_xid(gpu, xid, "GPU has fallen off the bus")

    def restore_gpu(self, uuid: str) -> None:
        """The GPU is back (after the node rebooted or the slot was reset), with fresh counters."""
        with self._lock:
            gpu = self._gpu(uuid)
            if gpu.present:
                return
            self._reset(gpu, self._clock())
            gpu.present = True
            self._inventory_changed = True

    def reset_gpu(self, uuid: str) -> None:
        """``nvidia-smi -r``: zero the energy, volatile ECC, NVLink and PCIe counters, apply the
        pending row remap, clear the recovery action, retrain NVLink, restore the default power
        limit (limits set at run time do not survive). Aggregate ECC and remapped-row counts,
        a remap failure and the agent-side XID counts stay."""
        with self._lock:
            self._reset(self._gpu(uuid), self._clock())

    def reload_driver(self) -> None:
        """Unload and load the driver: every GPU on the bus is reset. A lost GPU stays lost."""
        with self._lock:
            now = self._clock()
            for gpu in self._gpus:
                if gpu.present:
                    self._reset(gpu, now)

    # -- model --------------------------------------------------------------------------------

    def _gpu(self, uuid: str) -> _SimGpu:
        try:
            return self._by_uuid[uuid]
        except KeyError:
            raise KeyError(f"no simulated GPU with UUID {uuid!r}") from None

    def _raise_xid(self, gpu: _SimGpu, xid: int, detail: str | None) -> None:
        gpu.xid_last = xid
        gpu.xid_count += 1
        gpu.xid_counts[xid] = gpu.xid_counts.get(xid, 0) + 1
        self._events.append(XidEvent(uuid=gpu.uuid, xid=xid, at=self._clock(), detail=detail))

    def _reset(self, gpu: _SimGpu, now: float) -> None:
        self._advance(gpu, now)  # temperature keeps its course; the counters restart from here
        gpu.last_t = max(gpu.last_t, now)
        gpu.energy_acc_mj = 0.0
        gpu.nvlink_acc_kib = 0.0
        gpu.ecc_volatile_sbe = 0
        gpu.ecc_volatile_dbe = 0
        gpu.remapped_rows_pending = False
        gpu.recovery_action = 0
        gpu.nvlink_links_up = gb300.NVLINK_LINKS
        gpu.nvlink_errors = 0
        gpu.pcie_replay_count = 0
        gpu.power_limit_w = self._default_limit_w

    @staticmethod
    def _advance(gpu: _SimGpu, now: float) -> None:
        """Integrate the held power, NVLink rate and thermal lag from ``gpu.last_t`` to ``now``."""
        dt = now - gpu.last_t
        if dt <= 0:  # a clock that stands still or steps back adds nothing
            return
        gpu.energy_acc_mj += gpu.power_mw * dt  # mW x s = mJ
        gpu.nvlink_acc_kib += gpu.nvlink_rate_kib_s * dt
        watts = gpu.power_mw / 1000.0
        decay = math.exp(-dt / THERMAL_TIME_CONSTANT_S)
        target_gpu = _AMBIENT_C + _GPU_C_PER_W * watts
        target_mem = _AMBIENT_C + _MEMORY_C_PER_W * watts
        gpu.temp_gpu_c = target_gpu + (gpu.temp_gpu_c - target_gpu) * decay
        gpu.temp_memory_c = target_mem + (gpu.temp_memory_c - target_mem) * decay
        gpu.last_t = now

    def _update_power(self, gpu: _SimGpu) -> None:
        """Pick what is held until the next sample: power from load, noise, then the cap."""
        demand = self._idle_w + (_PEAK_DEMAND_W - self._idle_w) * gpu.utilization**_DEMAND_EXPONENT
        noisy = demand + gpu.rng.gauss(0.0, _NOISE_FRACTION * demand)
        watts = min(noisy, gpu.power_limit_w)
        gpu.power_mw = max(0, math.floor(watts * 1000))  # floor keeps it <= the limit in mW
        gpu.module_power_mw = gpu.power_mw + round((gpu.module_other_w + _MODULE_LOAD_W * gpu.utilization) * 1000)
        if gpu.utilization <= 0.0:
            gpu.sm_clock_mhz = gb300.SM_CLOCK_IDLE_MHZ
            gpu.clock_event_reasons = gb300.CLOCKS_EVENT_REASON_GPU_IDLE
            gpu.nvlink_rate_kib_s = 0.0
            gpu.throttle = 1.0
            return
        # A capped GPU meets its limit by lowering clocks.
        throttle = min(1.0, gpu.power_limit_w / demand)
        gpu.throttle = throttle
        gpu.sm_clock_mhz = float(round(max(gb300.SM_CLOCK_IDLE_MHZ, gb300.SM_CLOCK_MAX_MHZ * throttle)))
        capped = demand > gpu.power_limit_w
        gpu.clock_event_reasons = gb300.CLOCKS_EVENT_REASON_SW_POWER_CAP if capped else gb300.CLOCKS_EVENT_REASON_NONE
        # Traffic scales with the work done, and the work with the clock the cap leaves.
        gpu.nvlink_rate_kib_s = (
            gb300.NVLINK_KIB_PER_S_PER_DIRECTION * NVLINK_SHARE_AT_FULL_LOAD * gpu.utilization * throttle
        )

    def _inventory(self, gpu: _SimGpu) -> GpuInventory:
        return GpuInventory(
            index=gpu.index,
            uuid=gpu.uuid,
            name=gb300.PRODUCT_NAME,
            serial=gpu.serial,
            pci_bus_id=gb300.pci_bus_id(gpu.index),
            memory_total_mib=gb300.MEMORY_TOTAL_MIB,
            power_limit_default_w=gb300.POWER_LIMIT_DEFAULT_W,
            power_limit_min_w=gb300.POWER_LIMIT_MIN_W,
            power_limit_max_w=gb300.POWER_LIMIT_MAX_W,
            fabric_cluster_uuid=self._cluster_uuid,
            fabric_clique_id=self._clique_id,
            fabric_state=gb300.FABRIC_STATE,
            module_id=gb300.module_id(gpu.index),
            pci_device_id=gb300.PCI_DEVICE_ID_TEXT,
            memory_reserved_mib=float(gb300.MEMORY_RESERVED_MIB),
            module_power_limit_w=gb300.MODULE_POWER_LIMIT_W,
            max_sm_clock_mhz=gb300.SM_CLOCK_MAX_MHZ,
            max_mem_clock_mhz=gb300.MEM_CLOCK_MHZ,
            chassis_serial=self._chassis_serial,
            slot_number=gb300.slot_number(self._tray_index),
            tray_index=self._tray_index,
            host_id=gb300.HOST_ID,
            mig_mode=False,
        )

    @staticmethod
    def _telemetry(gpu: _SimGpu) -> GpuTelemetry:
        links_up = gpu.nvlink_links_up
        nvlink_kib = math.floor(gpu.nvlink_acc_kib)
        return GpuTelemetry(
            uuid=gpu.uuid,
            index=gpu.index,
            utilization_gpu_pct=float(round(gpu.utilization * 100)),
            utilization_memory_pct=float(round(gpu.utilization * _MEM_COPY_SHARE * 100)),
            memory_used_mib=float(round(gpu.memory_used_mib)),
            memory_total_mib=float(gb300.MEMORY_TOTAL_MIB),
            power_w=gpu.power_mw / 1000.0,
            power_limit_w=gpu.power_limit_w,
            energy_mj=math.floor(gpu.energy_acc_mj),
            # NVML reports whole degrees.
            temperature_gpu_c=float(round(gpu.temp_gpu_c)),
            temperature_memory_c=float(round(gpu.temp_memory_c)),
            sm_clock_mhz=gpu.sm_clock_mhz,
            mem_clock_mhz=gb300.MEM_CLOCK_MHZ,
            xid_last=gpu.xid_last,
            xid_count=gpu.xid_count,
            module_power_w=gpu.module_power_mw / 1000.0,
            memory_reserved_mib=float(gb300.MEMORY_RESERVED_MIB),
            clock_event_reasons=gpu.clock_event_reasons,
            processes=_processes(gpu),
            nvlink_tx_kib=nvlink_kib,
            nvlink_rx_kib=nvlink_kib,  # collective traffic is symmetric
            ecc_volatile_sbe=gpu.ecc_volatile_sbe,
            ecc_volatile_dbe=gpu.ecc_volatile_dbe,
            ecc_aggregate_sbe=gpu.ecc_aggregate_sbe,
            ecc_aggregate_dbe=gpu.ecc_aggregate_dbe,
            remapped_rows_correctable=gpu.remapped_rows_correctable,
            remapped_rows_uncorrectable=gpu.remapped_rows_uncorrectable,
            remapped_rows_pending=gpu.remapped_rows_pending,
            remapped_rows_failure=gpu.remapped_rows_failure,
            recovery_action=gpu.recovery_action,
            nvlink_links_up=links_up,
            nvlink_links_total=gb300.NVLINK_LINKS,
            nvlink_errors=gpu.nvlink_errors,
            pcie_replay_count=gpu.pcie_replay_count,
            fabric_state=gb300.FABRIC_STATE,
            fabric_healthy=links_up == gb300.NVLINK_LINKS,
            xid_counts=dict(gpu.xid_counts),
        )


def _profile_of(gpu: _SimGpu) -> GpuProfile:
    load = gpu.utilization
    nvlink_bytes = gpu.nvlink_rate_kib_s * 1024.0
    return GpuProfile(
        gr_engine_active=load,
        sm_active=load * SM_ACTIVE_SHARE,
        sm_occupancy=load * SM_OCCUPANCY_SHARE,
        pipe_tensor_active=load * TENSOR_SHARE_AT_FULL_CLOCK * gpu.throttle,
        dram_active=load * _MEM_COPY_SHARE,
        pcie_tx_bytes=load * PCIE_TX_BYTES_PER_S_AT_FULL_LOAD,
        pcie_rx_bytes=load * PCIE_RX_BYTES_PER_S_AT_FULL_LOAD,
        nvlink_tx_bytes=nvlink_bytes,
        nvlink_rx_bytes=nvlink_bytes,  # symmetric, as the counters
        enc_util_pct=0.0,
        dec_util_pct=0.0,
    )


def _processes(gpu: _SimGpu) -> list[GpuProcess]:
    if not gpu.pids:
        return []
    held = gpu.memory_used_mib if gpu.processes_used_mib is None else gpu.processes_used_mib
    each = float(round(held / len(gpu.pids)))
    return [GpuProcess(pid=pid, used_memory_mib=each) for pid in gpu.pids]


def _clamp_limit(watts: float) -> float:
    return min(max(float(watts), gb300.POWER_LIMIT_MIN_W), gb300.POWER_LIMIT_MAX_W)


def _rack_hash(cluster_uuid: str) -> int:
    return int.from_bytes(hashlib.sha256(cluster_uuid.encode()).digest()[:4], "big") % 1_000_000


def _serial_base(cluster_uuid: str, node_index: int) -> int:
    """13-digit board serials like the capture's (l.30), distinct per rack and tray."""
    return 1_650_000_000_001 + _rack_hash(cluster_uuid) * 1000 + node_index * 2


def _chassis_serial(cluster_uuid: str, node_index: int) -> str:
    """13 digits like the capture's (l.41): one per rack of 18 trays."""
    rack = _rack_hash(cluster_uuid) * 1000 + node_index // gb300.COMPUTE_TRAYS_PER_RACK
    return str(1_820_000_000_001 + rack)
