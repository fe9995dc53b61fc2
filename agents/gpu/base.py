"""The contract every GPU backend meets, so the daemon never knows which one it drives.

Only the wire models cross this boundary: a backend turns whatever its source speaks (NVML,
the simulator's physics) into ``GpuInventory`` and ``GpuTelemetry``, with ``None`` for a field
it cannot read rather than a made-up zero.
"""

from __future__ import annotations

from collections.abc import Iterable
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
