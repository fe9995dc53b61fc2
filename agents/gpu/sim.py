"""A simulated GB300 tray, so the whole system runs and is tested without a GPU.

The model is small but keeps the properties the control plane relies on:

- Power follows load between idle and the enforced limit and never exceeds the limit, so
  power capping and the site cap can be exercised.
- The energy counter is the exact integral of the power the model reported: power is held
  constant between two ``sample()`` calls and each call first integrates it up to ``clock()``.
  Metering tests can then compare the counter with the reported samples to the millijoule.
- Temperature lags power with a first-order response, as a liquid-cooled GPU does.

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
from collections.abc import Callable
from dataclasses import dataclass

from agents.gpu import gb300
from agents.protocol import GpuInventory, GpuTelemetry

# Namespace for simulated GPU UUIDs; fixed so a restarted agent keeps its identities.
_UUID_NAMESPACE = uuidlib.UUID("6f1c7a52-6a3e-4d55-9a51-5e0c2b7d3a10")

# A fully busy GB300 would draw more than its 1400 W cap (training runs are power-limited),
# so demand at 100% load is set above the limit and the cap does the rest.
_PEAK_DEMAND_W = 1470.0
_DEMAND_EXPONENT = 0.8  # concave: power climbs quickly with the first bits of load
_NOISE_FRACTION = 0.004  # ~0.7 W at idle, ~5 W at full load; NVML is only +-5% accurate anyway

# Liquid-cooled: coolant near 34 C; the slopes reproduce the capture's 38-39 C at 180 W.
_AMBIENT_C = 33.85
_GPU_C_PER_W = (gb300.TEMP_GPU_IDLE_C - _AMBIENT_C) / gb300.POWER_IDLE_W
_MEMORY_C_PER_W = (gb300.TEMP_MEMORY_IDLE_C - _AMBIENT_C) / gb300.POWER_IDLE_W
THERMAL_TIME_CONSTANT_S = 45.0
# Share of the GPU load that shows as memory-copy utilisation (DCGM_FI_DEV_MEM_COPY_UTIL).
_MEM_COPY_SHARE = 0.6


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
    utilization: float = 0.0
    memory_used_mib: float = 0.0
    energy_acc_mj: float = 0.0  # exact float integral; the counter reports its floor
    xid_last: int = 0
    xid_count: int = 0
    sm_clock_mhz: float = gb300.SM_CLOCK_IDLE_MHZ


class SimBackend:
    """``GpuBackend`` + ``LoadDriver`` + ``PowerLimitControl`` for a simulated GB300 tray."""

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
        serial_base = _serial_base(self._cluster_uuid, node_index)
        now = clock()
        self._gpus: list[_SimGpu] = []
        for index in range(gpu_count):
            ident = f"{self._cluster_uuid}/{node_index}/{index}"
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
                )
            )
        self._by_uuid = {gpu.uuid: gpu for gpu in self._gpus}

    # -- GpuBackend ---------------------------------------------------------------------------

    def driver_version(self) -> str | None:
        return gb300.DRIVER_VERSION

    def inventory(self) -> list[GpuInventory]:
        return [
            GpuInventory(
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
            )
            for gpu in self._gpus
        ]

    def memory_reserved_mib(self) -> dict[str, float]:
        return {gpu.uuid: float(gb300.MEMORY_RESERVED_MIB) for gpu in self._gpus}

    def sample(self) -> list[GpuTelemetry]:
        with self._lock:
            now = self._clock()
            out = []
            for gpu in self._gpus:
                self._advance(gpu, now)
                self._update_power(gpu)
                out.append(self._telemetry(gpu))
            return out

    def close(self) -> None:
        """Nothing to release: the model lives in memory."""

    # -- LoadDriver / PowerLimitControl -------------------------------------------------------

    def set_load(self, uuid: str, utilization: float, memory_used_mib: float) -> None:
        """Takes effect at the next ``sample()``, like NVML's 1 s power average."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.utilization = min(max(utilization, 0.0), 1.0)
            gpu.memory_used_mib = min(max(memory_used_mib, 0.0), float(gb300.MEMORY_USABLE_MIB))

    def clear_load(self, uuid: str) -> None:
        self.set_load(uuid, 0.0, 0.0)

    def set_power_limit(self, uuid: str, watts: float) -> float:
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.power_limit_w = _clamp_limit(watts)
            return gpu.power_limit_w

    def inject_xid(self, uuid: str, xid: int) -> None:
        """Raise an XID as the driver would, so the control plane's XID policy can be exercised."""
        with self._lock:
            gpu = self._gpu(uuid)
            gpu.xid_last = xid
            gpu.xid_count += 1

    # -- model --------------------------------------------------------------------------------

    def _gpu(self, uuid: str) -> _SimGpu:
        try:
            return self._by_uuid[uuid]
        except KeyError:
            raise KeyError(f"no simulated GPU with UUID {uuid!r}") from None

    @staticmethod
    def _advance(gpu: _SimGpu, now: float) -> None:
        """Integrate the held power and the thermal lag from ``gpu.last_t`` to ``now``."""
        dt = now - gpu.last_t
        if dt <= 0:  # a clock that stands still or steps back adds nothing
            return
        gpu.energy_acc_mj += gpu.power_mw * dt  # mW x s = mJ
        watts = gpu.power_mw / 1000.0
        decay = math.exp(-dt / THERMAL_TIME_CONSTANT_S)
        target_gpu = _AMBIENT_C + _GPU_C_PER_W * watts
        target_mem = _AMBIENT_C + _MEMORY_C_PER_W * watts
        gpu.temp_gpu_c = target_gpu + (gpu.temp_gpu_c - target_gpu) * decay
        gpu.temp_memory_c = target_mem + (gpu.temp_memory_c - target_mem) * decay
        gpu.last_t = now

    def _update_power(self, gpu: _SimGpu) -> None:
        """Pick the power held until the next sample: demand from load, noise, then the cap."""
        demand = self._idle_w + (_PEAK_DEMAND_W - self._idle_w) * gpu.utilization**_DEMAND_EXPONENT
        noisy = demand + gpu.rng.gauss(0.0, _NOISE_FRACTION * demand)
        watts = min(noisy, gpu.power_limit_w)
        gpu.power_mw = max(0, math.floor(watts * 1000))  # floor keeps it <= the limit in mW
        if gpu.utilization <= 0.0:
            gpu.sm_clock_mhz = gb300.SM_CLOCK_IDLE_MHZ
        else:
            # A capped GPU meets its limit by lowering clocks.
            throttle = min(1.0, gpu.power_limit_w / demand)
            gpu.sm_clock_mhz = float(round(max(gb300.SM_CLOCK_IDLE_MHZ, gb300.SM_CLOCK_MAX_MHZ * throttle)))

    @staticmethod
    def _telemetry(gpu: _SimGpu) -> GpuTelemetry:
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
        )


def _clamp_limit(watts: float) -> float:
    return min(max(float(watts), gb300.POWER_LIMIT_MIN_W), gb300.POWER_LIMIT_MAX_W)


def _serial_base(cluster_uuid: str, node_index: int) -> int:
    """13-digit board serials like the capture's (l.30), distinct per rack and tray."""
    rack = int.from_bytes(hashlib.sha256(cluster_uuid.encode()).digest()[:4], "big") % 1_000_000
    return 1_650_000_000_001 + rack * 1000 + node_index * 2
