"""The per-GPU series that copy dcgm-exporter: names, types, help texts, labels, semantics.

Operators' GPU dashboards (Grafana 12239 and friends) select dcgm-exporter's names and labels,
so every series with a DCGM field copies dcgm-exporter exactly: labels ``gpu, UUID,
pci_bus_id, device, modelName, Hostname, DCGM_FI_DRIVER_VERSION`` in that order (the last is
dcgm-exporter's default "label" counter: the driver version on every series), counters without
a lower-case ``_total`` suffix and the camel-case ``modelName`` (``promtool check metrics``
lints both; changing either would break the dashboards and recording rules that select them).

Semantics that are not obvious from the name:

- ``DCGM_FI_PROF_*`` come from NVML's GPM (``agents.gpu.gpm``) or the simulator, with DCGM's
  mapping and units: activity ratios 0..1, PCIe and NVLink rates in bytes per second. Absent
  where the backend has no profiling readings (GPM unsupported): nothing is made up.
- ``DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL`` is not a byte counter, whatever its TYPE says:
  DCGM (``DcgmCacheManager::ReadAndCacheNvLinkBandwidth``) reads NVML's NVLink data counters
  (fields 138/139, KiB, all links), and publishes the change of tx + rx since its previous
  reading divided by the seconds between them and by 1000 (KiB/s / 1000, truncated to an
  integer): 0 for the first reading, for a zero counter and for no elapsed time.
  dcgm-exporter declares it a counter anyway; we copy both the value and the TYPE. A counter
  that went backwards (driver reload) reads 0 here, where DCGM would print a negative rate.
- ``DCGM_FI_DEV_ENC_UTIL`` / ``DEC_UTIL``: NVML's encoder / decoder utilisation, percent.
- ``DCGM_FI_DEV_CLOCKS_EVENT_REASONS`` is DCGM field 112 under its current name (DCGM < 3.3
  called it ``DCGM_FI_DEV_CLOCK_THROTTLE_REASONS``): the nvmlClocksEventReason bitmask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agents.exporter.series import NO_EXTRA, GpuFamily, GpuView, Row, scalar
from agents.gpu.base import GpuProfile
from agents.protocol import GpuInventory, GpuTelemetry

DRIVER_VERSION_LABEL = "DCGM_FI_DRIVER_VERSION"


def labels(
    gpu: GpuTelemetry, inventory: GpuInventory | None, hostname: str, driver_version: str | None
) -> dict[str, str]:
    """dcgm-exporter's labels, in its order."""
    out = {
        "gpu": str(gpu.index),
        "UUID": gpu.uuid,
        "pci_bus_id": (inventory.pci_bus_id or "") if inventory else "",
        "device": f"nvidia{gpu.index}",
        "modelName": inventory.name if inventory else "",
        "Hostname": hostname,
    }
    if driver_version:
        out[DRIVER_VERSION_LABEL] = driver_version
    return out


class NvlinkBandwidth:
    """``DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL`` per GPU, from consecutive samples (see above)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, int]] = {}  # UUID -> (when, tx + rx KiB)

    def update(self, samples: Sequence[GpuTelemetry], at: float) -> dict[str, int]:
        out: dict[str, int] = {}
        seen: dict[str, tuple[float, int]] = {}
        for gpu in samples:
            if gpu.nvlink_tx_kib is None or gpu.nvlink_rx_kib is None:
                continue
            total = gpu.nvlink_tx_kib + gpu.nvlink_rx_kib
            seen[gpu.uuid] = (at, total)
            previous = self._last.get(gpu.uuid)
            if previous is None or total == 0 or at <= previous[0] or total < previous[1]:
                out[gpu.uuid] = 0
            else:
                out[gpu.uuid] = int((total - previous[1]) / (at - previous[0]) / 1000.0)
        self._last = seen
        return out


def _free(view: GpuView) -> list[Row]:
    gpu = view.sample
    held = gpu.memory_reserved_mib if gpu.memory_reserved_mib is not None else view.reserved_mib
    if gpu.memory_used_mib is None or gpu.memory_total_mib is None or held is None:
        return []
    # dcgm: free = total - reserved - used, never negative
    return [(NO_EXTRA, max(0.0, gpu.memory_total_mib - held - gpu.memory_used_mib))]


def _reserved(view: GpuView) -> list[Row]:
    held = view.sample.memory_reserved_mib if view.sample.memory_reserved_mib is not None else view.reserved_mib
    return [] if held is None else [(NO_EXTRA, held)]


def _nvlink_bandwidth(view: GpuView) -> list[Row]:
    return [] if view.nvlink_bandwidth is None else [(NO_EXTRA, float(view.nvlink_bandwidth))]


def _profiled(get: Callable[[GpuProfile], float | None], *, whole: bool = False) -> Callable[[GpuView], list[Row]]:
    """A profiling reading; ``whole``: DCGM's int64 fields (bytes/s), truncated as DCGM does."""

    def rows(view: GpuView) -> list[Row]:
        value = None if view.profile is None else get(view.profile)
        if value is None:
            return []
        return [(NO_EXTRA, float(int(value)) if whole else value)]

    return rows


def _dcgm(name: str, typ: str, help_text: str, get: Callable[[GpuTelemetry], float | int | bool | None]) -> GpuFamily:
    return GpuFamily(name, typ, help_text, scalar(get), dcgm=True)


def _prof(name: str, help_text: str, get: Callable[[GpuProfile], float | None], *, whole: bool = False) -> GpuFamily:
    return GpuFamily(name, "gauge", help_text, _profiled(get, whole=whole), dcgm=True)


# Help texts are dcgm-exporter's (etc/default-counters.csv, dcp-metrics-included.csv, and the
# DCGM field descriptions for the ones in neither).
DCGM_FAMILIES: tuple[GpuFamily, ...] = (
    _dcgm("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", lambda g: g.sm_clock_mhz),
    _dcgm("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", lambda g: g.mem_clock_mhz),
    _dcgm("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", lambda g: g.temperature_memory_c),
    _dcgm("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", lambda g: g.temperature_gpu_c),
    _dcgm("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda g: g.power_w),
    _dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", lambda g: g.power_limit_w),
    _dcgm(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        lambda g: g.energy_mj,
    ),
    _dcgm("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", lambda g: g.pcie_replay_count),
    _dcgm("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda g: g.utilization_gpu_pct),
    _dcgm("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", lambda g: g.utilization_memory_pct),
    _prof("DCGM_FI_DEV_ENC_UTIL", "Encoder utilization (in %).", lambda p: p.enc_util_pct),
    _prof("DCGM_FI_DEV_DEC_UTIL", "Decoder utilization (in %).", lambda p: p.dec_util_pct),
    _dcgm("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", lambda g: g.xid_last),
    _dcgm(
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        "gauge",
        "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*).",
        lambda g: g.clock_event_reasons,
    ),
    GpuFamily("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", _free, dcgm=True),
    _dcgm("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda g: g.memory_used_mib),
    GpuFamily("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", _reserved, dcgm=True),
    _dcgm("DCGM_FI_DEV_FB_TOTAL", "gauge", "Framebuffer memory total (in MiB).", lambda g: g.memory_total_mib),
    _dcgm(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "counter",
        "Total number of single-bit volatile ECC errors.",
        lambda g: g.ecc_volatile_sbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "counter",
        "Total number of double-bit volatile ECC errors.",
        lambda g: g.ecc_volatile_dbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "counter",
        "Total number of single-bit persistent ECC errors.",
        lambda g: g.ecc_aggregate_sbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "counter",
        "Total number of double-bit persistent ECC errors.",
        lambda g: g.ecc_aggregate_dbe,
    ),
    GpuFamily(
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
        _nvlink_bandwidth,
        dcgm=True,
    ),
    _dcgm(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
        lambda g: g.remapped_rows_uncorrectable,
    ),
    _dcgm(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
        lambda g: g.remapped_rows_correctable,
    ),
    _dcgm(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "gauge",
        "Whether remapping of rows has failed",
        lambda g: g.remapped_rows_failure,
    ),
    _dcgm(
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        "gauge",
        "Whether remapping of rows is pending",
        lambda g: g.remapped_rows_pending,
    ),
    # -- profiling (DCP) metrics --
    _prof(
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "Ratio of time the graphics engine is active.",
        lambda p: p.gr_engine_active,
    ),
    _prof("DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned.", lambda p: p.sm_active),
    _prof("DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM.", lambda p: p.sm_occupancy),
    _prof(
        "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        lambda p: p.pipe_tensor_active,
    ),
    _prof(
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        lambda p: p.dram_active,
    ),
    _prof(
        "DCGM_FI_PROF_PCIE_TX_BYTES",
        "The rate of data transmitted over the PCIe bus - including both protocol headers and data payloads - "
        "in bytes per second.",
        lambda p: p.pcie_tx_bytes,
        whole=True,
    ),
    _prof(
        "DCGM_FI_PROF_PCIE_RX_BYTES",
        "The rate of data received over the PCIe bus - including both protocol headers and data payloads - "
        "in bytes per second.",
        lambda p: p.pcie_rx_bytes,
        whole=True,
    ),
    _prof(
        "DCGM_FI_PROF_NVLINK_TX_BYTES",
        "The rate of data transmitted over NVLink, not including protocol headers, in bytes per second.",
        lambda p: p.nvlink_tx_bytes,
        whole=True,
    ),
    _prof(
        "DCGM_FI_PROF_NVLINK_RX_BYTES",
        "The rate of data received over NVLink, not including protocol headers, in bytes per second.",
        lambda p: p.nvlink_rx_bytes,
        whole=True,
    ),
)
