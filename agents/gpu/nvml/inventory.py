"""A GPU's inventory: identity, limits, platform, fabric and MIG.

Read when a GPU is first seen or comes back; MIG state (``read_mig``) is read again on every
inventory pass, because MIG is enabled and reconfigured at run time on real sites.
"""

from __future__ import annotations

import ctypes
import uuid as uuidlib
from functools import partial
from typing import Any, Final

import pynvml

from agents.protocol import GpuInventory, MigDevice

from .calls import (
    MIB,
    Gpu,
    GpuLostError,
    Handle,
    binding,
    decode,
    mib,
    missing,
    raw_bytes,
    read,
    read_clock,
    read_fields,
    read_memory,
    watts,
)

FI_POWER_CURRENT_LIMIT: Final = 190
SCOPE_MODULE: Final = 1

FABRIC_STATES: Final = {1: "not_started", 2: "in_progress", 3: "completed"}
FABRIC_COMPLETED: Final = 3
FABRIC_HEALTHY: Final = 1

MigState = tuple[bool | None, list[MigDevice]]


def read_inventory(gpu: Gpu) -> GpuInventory:
    h = gpu.handle
    pci = read(gpu, "pci info", lambda: pynvml.nvmlDeviceGetPciInfo_v3(h))
    memory = read_memory(gpu)
    limits = read(gpu, "power limit constraints", lambda: pynvml.nvmlDeviceGetPowerManagementLimitConstraints(h))
    default_mw = read(gpu, "default power limit", lambda: int(pynvml.nvmlDeviceGetPowerManagementDefaultLimit(h)))
    module_limit = read_fields(gpu, [(FI_POWER_CURRENT_LIMIT, SCOPE_MODULE)])[(FI_POWER_CURRENT_LIMIT, SCOPE_MODULE)]
    platform = read_platform(gpu)
    fabric = read_fabric(gpu)
    mig_mode, mig_devices = read_mig(gpu)
    module_id = platform.get("module_id")
    if module_id is None:
        module_id = read(gpu, "module id", lambda: _module_id(h))
    return GpuInventory(
        index=gpu.index,
        uuid=gpu.uuid,
        name=read(gpu, "name", lambda: decode(pynvml.nvmlDeviceGetName(h))) or "unknown",
        serial=read(gpu, "serial", lambda: decode(pynvml.nvmlDeviceGetSerial(h))),
        pci_bus_id=None if pci is None else decode(pci.busId),
        pci_device_id=None if pci is None else f"0x{int(pci.pciDeviceId):08X}",
        memory_total_mib=round(memory["total"] / MIB) if memory else 0,
        memory_reserved_mib=mib(memory.get("reserved")) if memory else None,
        power_limit_default_w=watts(default_mw),
        power_limit_min_w=None if limits is None else watts(int(limits[0])),
        power_limit_max_w=None if limits is None else watts(int(limits[1])),
        module_power_limit_w=watts(module_limit),
        max_sm_clock_mhz=read_clock(gpu, "max sm clock", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_SM),
        max_mem_clock_mhz=read_clock(gpu, "max mem clock", pynvml.nvmlDeviceGetMaxClockInfo, pynvml.NVML_CLOCK_MEM),
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


def _module_id(handle: Handle) -> int:
    """nvmlDeviceGetModuleId with the out-parameter passed by reference: the one form that old
    (12.535: no default, no return check) and new nvidia-ml-py take alike."""
    value = ctypes.c_uint()
    ret = int(pynvml.nvmlDeviceGetModuleId(handle, ctypes.byref(value)))
    if ret != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(ret)
    return int(value.value)


def read_platform(gpu: Gpu) -> dict[str, Any]:
    """Platform info v2 (nvidia-ml-py 12.570+ has the structure); absent with older bindings."""
    struct, call = binding("c_nvmlPlatformInfo_v2_t"), binding("nvmlDeviceGetPlatformInfo")
    if struct is None or call is None:
        missing(gpu, "platform info", "c_nvmlPlatformInfo_v2_t")
        return {}
    info = struct()
    if read(gpu, "platform info", lambda: call(gpu.handle, ctypes.byref(info))) is None:
        return {}
    serial = raw_bytes(info, "chassisSerialNumber", 16).split(b"\0", 1)[0].decode("ascii", "replace")
    return {
        "chassis_serial": serial or None,
        "slot_number": raw_bytes(info, "slotNumber", 1)[0],
        "tray_index": raw_bytes(info, "trayIndex", 1)[0],
        "host_id": raw_bytes(info, "hostId", 1)[0],
        "module_id": raw_bytes(info, "moduleId", 1)[0],
    }


def read_fabric(gpu: Gpu) -> dict[str, Any]:
    """Fabric identity and health from GetGpuFabricInfoV: v3 (health summary), else v2; absent
    where the installed nvidia-ml-py has neither structure."""
    call = binding("nvmlDeviceGetGpuFabricInfoV")
    got: Any = None
    info: Any = None
    for version in ("v3", "v2"):
        struct = binding(f"c_nvmlGpuFabricInfo_{version}_t")
        if call is None or struct is None:
            missing(gpu, f"fabric info {version}", f"c_nvmlGpuFabricInfo_{version}_t")
            continue
        info = struct()
        got = read(gpu, f"fabric info {version}", partial(_fill, call, gpu.handle, info))
        if got is not None:
            break
    if got is None:
        return {}
    state = int(info.state)
    raw_uuid = bytes(raw_bytes(info, "clusterUuid", 16))
    summary = int(getattr(info, "healthSummary", 0))
    return {
        "state": FABRIC_STATES.get(state),
        "cluster_uuid": str(uuidlib.UUID(bytes=raw_uuid)) if any(raw_uuid) else None,
        "clique_id": int(info.cliqueId) if state == FABRIC_COMPLETED else None,
        "healthy": _fabric_healthy(state, int(info.status), int(info.healthMask), summary),
    }


def _fill(call: Any, handle: Handle, info: Any) -> Any:
    return call(handle, ctypes.byref(info))


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


def read_mig(gpu: Gpu) -> MigState:
    modes = read(gpu, "mig mode", lambda: pynvml.nvmlDeviceGetMigMode(gpu.handle))
    if modes is None:
        return None, []
    enabled = int(modes[0]) == pynvml.NVML_DEVICE_MIG_ENABLE
    if not enabled:
        return False, []
    count = read(gpu, "max mig devices", lambda: int(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))) or 0
    devices: list[MigDevice] = []
    for slot in range(count):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, slot)
        except pynvml.NVMLError as exc:
            if int(exc.value) == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLostError(gpu.uuid) from exc
            continue  # NOT_FOUND: an empty slot
        device = _read_mig_device(gpu, mig)
        if device is not None:
            devices.append(device)
    return True, devices[:8]  # the wire allows 8; NVML has at most 7


def _read_mig_device(gpu: Gpu, mig: Handle) -> MigDevice | None:
    uuid = read(gpu, "mig uuid", lambda: decode(pynvml.nvmlDeviceGetUUID(mig)))
    if uuid is None:
        return None
    memory = read(gpu, "mig memory", lambda: pynvml.nvmlDeviceGetMemoryInfo(mig))
    return MigDevice(
        uuid=uuid,
        gpu_instance_id=read(gpu, "mig gpu instance", lambda: int(pynvml.nvmlDeviceGetGpuInstanceId(mig))),
        compute_instance_id=read(gpu, "mig compute instance", lambda: int(pynvml.nvmlDeviceGetComputeInstanceId(mig))),
        memory_total_mib=None if memory is None else int(memory.total) / MIB,
    )
