"""The contract every GPU backend meets, so the daemon never knows which one it drives.

Only the wire models cross this boundary: a backend turns whatever its source speaks (NVML,
the simulator's physics) into ``GpuInventory`` and ``GpuTelemetry``, with ``None`` for a field
it cannot read rather than a made-up zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agents.protocol import GpuInventory, GpuTelemetry, XidEvent


class GpuBackend(Protocol):
    """A source of GPU facts for one node."""

    name: str  # "sim" | "nvml": what the agent declares in its inventory

    def driver_version(self) -> str | None: ...

    def inventory(self) -> list[GpuInventory]: ...

    def sample(self) -> list[GpuTelemetry]:
        """Read every GPU once. Cumulative counters (energy, XID count) never go backwards
        except across a driver reload, which the control plane detects as a reset."""
        ...

    def memory_reserved_mib(self) -> dict[str, float]:
        """Framebuffer the driver keeps for itself, by GPU UUID (NVML ``Memory_v2.reserved``).

        Static per GPU and absent from the wire telemetry; the exporter needs it for
        ``DCGM_FI_DEV_FB_RESERVED`` and a dcgm-compatible ``DCGM_FI_DEV_FB_FREE``.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class PowerLimitControl(Protocol):
    """Backends that can cap a GPU's power (NVML as root, the simulator)."""

    def set_power_limit(self, uuid: str, watts: float) -> float:
        """Apply a limit and return the value read back: hardware clamps and may refuse."""
        ...


@runtime_checkable
class LoadDriver(Protocol):
    """Only the simulator has it: the daemon tells it which GPUs a running workload keeps busy,
    since a simulated GPU cannot observe the tenant process itself."""

    def set_load(self, uuid: str, utilization: float, memory_used_mib: float) -> None: ...

    def clear_load(self, uuid: str) -> None: ...

    def set_processes(self, uuid: str, pids: Iterable[int], used_mib: float | None = None) -> None:
        """The PIDs running on the GPU, as NVML's running-processes list would show them."""
        ...


@runtime_checkable
class XidEventSource(Protocol):
    """Backends that see XID (and ECC) events as they happen: NVML's event set, the simulator."""

    def drain_events(self) -> list[XidEvent]:
        """Every event since the previous call, oldest first; each event is returned once."""
        ...


@runtime_checkable
class InventoryWatcher(Protocol):
    """Backends that notice GPUs leaving or joining (a GPU fell off the bus, or came back)."""

    def inventory_changed(self) -> bool:
        """True once after each change (``inventory()`` then returns the new list)."""
        ...


@runtime_checkable
class LibraryVersions(Protocol):
    """Backends over a vendor library (NVML) that can say which versions they talk to."""

    def nvml_version(self) -> str | None: ...

    def cuda_driver_version(self) -> int | None: ...


@dataclass(frozen=True)
class GpuProfile:
    """One GPU's profiling readings over the last sampling interval, for ``/metrics`` only.

    They never go on the wire (the protocol carries what the control plane decides on); the
    exporter shows them under DCGM's names with DCGM's semantics. ``None``: not readable here
    (no GPM before Hopper, a metric the driver refused). Ratios are 0..1 as DCGM's
    ``DCGM_FI_PROF_*`` fields (GPM's percentages / 100); bandwidths are bytes per second (GPM's
    MiB/s x 2**20, as DCGM converts them); codec utilisation is a percentage as NVML gives it.
    """

    gr_engine_active: float | None = None  # DCGM_FI_PROF_GR_ENGINE_ACTIVE <- GPM GRAPHICS_UTIL
    sm_active: float | None = None  # DCGM_FI_PROF_SM_ACTIVE <- GPM SM_UTIL
    sm_occupancy: float | None = None  # DCGM_FI_PROF_SM_OCCUPANCY <- GPM SM_OCCUPANCY
    pipe_tensor_active: float | None = None  # DCGM_FI_PROF_PIPE_TENSOR_ACTIVE <- GPM ANY_TENSOR_UTIL
    dram_active: float | None = None  # DCGM_FI_PROF_DRAM_ACTIVE <- GPM DRAM_BW_UTIL
    pcie_tx_bytes: float | None = None  # DCGM_FI_PROF_PCIE_TX_BYTES <- GPM PCIE_TX_PER_SEC
    pcie_rx_bytes: float | None = None  # DCGM_FI_PROF_PCIE_RX_BYTES <- GPM PCIE_RX_PER_SEC
    nvlink_tx_bytes: float | None = None  # DCGM_FI_PROF_NVLINK_TX_BYTES <- GPM NVLINK_TOTAL_TX_PER_SEC
    nvlink_rx_bytes: float | None = None  # DCGM_FI_PROF_NVLINK_RX_BYTES <- GPM NVLINK_TOTAL_RX_PER_SEC
    enc_util_pct: float | None = None  # DCGM_FI_DEV_ENC_UTIL <- nvmlDeviceGetEncoderUtilization
    dec_util_pct: float | None = None  # DCGM_FI_DEV_DEC_UTIL <- nvmlDeviceGetDecoderUtilization


@runtime_checkable
class ProfileSource(Protocol):
    """Backends that give profiling readings (NVML's GPM, the simulator)."""

    def profiles(self) -> dict[str, GpuProfile]:
        """By GPU UUID, over the interval since the previous call; the exporter calls it right
        after each ``sample()``. A GPU with nothing to give is absent."""
        ...
