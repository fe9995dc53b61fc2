"""The fast loop: what every ``sample()`` reads (utilisation, memory, power, energy,
temperatures, clocks, processes, NVLink throughput)."""

from __future__ import annotations

from typing import Any, Final

import pynvml

from agents.protocol import GpuProcess

from .calls import (
    MIB,
    FieldKey,
    Gpu,
    as_float,
    as_int,
    binding,
    first,
    mib,
    missing,
    read,
    read_clock,
    read_fields,
    read_memory,
    watts,
)

ALL_LINKS: Final = 0xFFFFFFFF  # scopeId that sums NVLink throughput over all links

# Field ids (nvml.h NVML_FI_DEV_*).
FI_MEMORY_TEMP: Final = 82
FI_NVLINK_DATA_TX: Final = 138
FI_NVLINK_DATA_RX: Final = 139
FI_NVLINK_RAW_TX: Final = 140
FI_NVLINK_RAW_RX: Final = 141
FI_POWER_AVERAGE: Final = 185
FI_POWER_INSTANT: Final = 186
SCOPE_GPU: Final = 0
SCOPE_MODULE: Final = 1

FAST_FIELDS: Final[tuple[FieldKey, ...]] = (
    (FI_POWER_AVERAGE, SCOPE_GPU),
    (FI_POWER_AVERAGE, SCOPE_MODULE),
    (FI_POWER_INSTANT, SCOPE_MODULE),
    (FI_MEMORY_TEMP, SCOPE_GPU),
    (FI_NVLINK_DATA_TX, ALL_LINKS),
    (FI_NVLINK_DATA_RX, ALL_LINKS),
    (FI_NVLINK_RAW_TX, ALL_LINKS),
    (FI_NVLINK_RAW_RX, ALL_LINKS),
)


def read_fast(gpu: Gpu) -> dict[str, Any]:
    h = gpu.handle
    fields = read_fields(gpu, FAST_FIELDS)
    util = read(gpu, "utilization", lambda: pynvml.nvmlDeviceGetUtilizationRates(h))
    memory = read_memory(gpu)
    power_mw = first(
        fields[(FI_POWER_AVERAGE, SCOPE_GPU)],
        lambda: read(gpu, "power usage", lambda: int(pynvml.nvmlDeviceGetPowerUsage(h))),
    )
    limit_mw = read(gpu, "enforced power limit", lambda: int(pynvml.nvmlDeviceGetEnforcedPowerLimit(h)))
    reasons = read(gpu, "clock event reasons", lambda: int(pynvml.nvmlDeviceGetCurrentClocksEventReasons(h)))
    return {
        "utilization_gpu_pct": None if util is None else float(util.gpu),
        "utilization_memory_pct": None if util is None else float(util.memory),
        "memory_used_mib": mib(memory.get("used")),
        "memory_total_mib": mib(memory.get("total")),
        "memory_reserved_mib": mib(memory.get("reserved")),
        "power_w": watts(power_mw),
        "module_power_w": watts(
            first(fields[(FI_POWER_AVERAGE, SCOPE_MODULE)], lambda: fields[(FI_POWER_INSTANT, SCOPE_MODULE)])
        ),
        "power_limit_w": watts(limit_mw),
        "energy_mj": read(gpu, "total energy", lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(h))),
        "temperature_gpu_c": read_gpu_temperature(gpu),
        "temperature_memory_c": as_float(fields[(FI_MEMORY_TEMP, SCOPE_GPU)]),
        "sm_clock_mhz": read_clock(gpu, "sm clock", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        "mem_clock_mhz": read_clock(gpu, "mem clock", pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
        "clock_event_reasons": reasons,
        "processes": read_processes(gpu),
        "nvlink_tx_kib": as_int(
            first(fields[(FI_NVLINK_DATA_TX, ALL_LINKS)], lambda: fields[(FI_NVLINK_RAW_TX, ALL_LINKS)])
        ),
        "nvlink_rx_kib": as_int(
            first(fields[(FI_NVLINK_DATA_RX, ALL_LINKS)], lambda: fields[(FI_NVLINK_RAW_RX, ALL_LINKS)])
        ),
    }


def read_gpu_temperature(gpu: Gpu) -> float | None:
    """GetTemperatureV (the old GetTemperature goes away in CUDA 14), else GetTemperature."""
    sensor = pynvml.NVML_TEMPERATURE_GPU
    value: int | None = None
    temperature_v = binding("nvmlDeviceGetTemperatureV")
    if temperature_v is None:
        missing(gpu, "temperature v", "nvmlDeviceGetTemperatureV")
    else:
        value = read(gpu, "temperature v", lambda: int(temperature_v(gpu.handle, sensor)))
    if value is None:
        value = read(gpu, "temperature", lambda: int(pynvml.nvmlDeviceGetTemperature(gpu.handle, sensor)))
    return as_float(value)


def read_processes(gpu: Gpu) -> list[GpuProcess] | None:
    procs = read(gpu, "compute processes", lambda: pynvml.nvmlDeviceGetComputeRunningProcesses_v3(gpu.handle))
    if procs is None:
        return None
    return [
        GpuProcess(pid=int(p.pid), used_memory_mib=None if p.usedGpuMemory is None else int(p.usedGpuMemory) / MIB)
        for p in procs
    ]
