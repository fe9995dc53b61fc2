"""Facts about a GB300 compute tray, taken from a real capture.

Source: ``docs/reference/nvidia-smi-q-gb300.xml`` (``nvidia-smi -q -x`` on one tray: 4 GPUs,
driver 580.173.02). Line numbers below refer to that file. The simulator
and the fake NVML library take their defaults from here so both agree with real hardware.
"""

from __future__ import annotations

from typing import Final

PRODUCT_NAME: Final = "NVIDIA GB300"  # l.9
DRIVER_VERSION: Final = "580.173.02"  # l.5
PCI_DEVICE_ID: Final = 0x31C210DE  # l.80
PCI_DEVICE_ID_TEXT: Final = "0x31C210DE"  # as GpuInventory.pci_device_id carries it
GPUS_PER_TRAY: Final = 4  # l.7 attached_gpus

MEMORY_TOTAL_MIB: Final = 284208  # l.129
MEMORY_RESERVED_MIB: Final = 947  # l.130
# nvidia-smi shows 283262 free at idle (l.132): it rounds each figure separately.
MEMORY_USABLE_MIB: Final = MEMORY_TOTAL_MIB - MEMORY_RESERVED_MIB

POWER_LIMIT_DEFAULT_W: Final = 1400.0  # l.245
POWER_LIMIT_MAX_W: Final = 1400.0  # l.247
POWER_LIMIT_MIN_W: Final = 200.0  # l.246
POWER_IDLE_W: Final = 180.0  # l.241 (180.36 W); the other three idle at 176-176.3 W (l.821, l.1401)
MODULE_POWER_LIMIT_W: Final = 2900.0  # l.257: Grace CPU + 2 GPUs share it
# Module power (field 186/185 scopeId 1) minus GPU power at idle, per GPU of the tray: the Grace
# CPU's share plus memory and board (l.255-l.241 = 488.29-180.36, l.835-l.821, l.1415-l.1401,
# l.1995-l.1981). The capture's four modules idle at 486-497 W.
MODULE_OTHER_IDLE_W: Final = (307.93, 310.04, 320.93, 314.27)

SM_CLOCK_IDLE_MHZ: Final = 120.0  # l.270
SM_CLOCK_MAX_MHZ: Final = 2070.0  # l.287
MEM_CLOCK_MHZ: Final = 3996.0  # l.271, l.288: HBM runs at one clock, idle or not

TEMP_GPU_IDLE_C: Final = 38.5  # l.226 (38 C), l.806 (39 C)
TEMP_MEMORY_IDLE_C: Final = 38.0  # l.232, l.812

# Platform info (l.40-l.47): the same on the four GPUs of the tray.
CHASSIS_SERIAL: Final = "1820000000001"  # l.41
SLOT_NUMBER: Final = 25  # l.42
TRAY_INDEX: Final = 15  # l.43
HOST_ID: Final = 1  # l.44
COMPUTE_TRAYS_PER_RACK: Final = 18

# Not in the capture (nvidia-smi -q does not print NVLink): NVLink 5 spec, 18 links of 50 GB/s
# per direction = 900 GB/s per direction per GPU.
NVLINK_LINKS: Final = 18
NVLINK_KIB_PER_S_PER_DIRECTION: Final = 900e9 / 1024

# nvml.h nvmlClocksEventReason* bits (the capture at idle: gpu_idle Active, the rest Not Active, l.110-l.118).
CLOCKS_EVENT_REASON_NONE: Final = 0x0
CLOCKS_EVENT_REASON_GPU_IDLE: Final = 0x1
CLOCKS_EVENT_REASON_SW_POWER_CAP: Final = 0x4

FABRIC_STATE: Final = "completed"  # l.299 "Completed", lower-cased as NVML's enum name
FABRIC_CLIQUE_ID: Final = 32766  # l.301
FABRIC_CLUSTER_UUID: Final = "00000001-0000-0000-0000-000000000001"  # l.302 (anonymised)


def pci_bus_id(index: int) -> str:
    """PCI address of GPU ``index`` on a tray.

    The capture has domains 0x8, 0x9, 0x18, 0x19 on bus 06 (l.81, l.661, l.1241, l.1821): two
    GPUs per Grace socket, sockets 0x10 apart. PCI addresses are per host, so every tray
    repeats them, as real trays do.
    """
    domain = 0x8 + (index // 2) * 0x10 + index % 2
    return f"{domain:08X}:06:00.0"


def module_id(index: int) -> int:
    """Module id of GPU ``index``: the capture pairs them crosswise as 2, 1, 4, 3 (l.46, l.626,
    l.1206, l.1786)."""
    return (index ^ 1) + 1


def board_serial(tray_serial_base: int, index: int) -> str:
    """Board serial: one per superchip board, so two GPUs share it (l.30 and l.610 are equal,
    l.1190 and l.1770 are the next number)."""
    return str(tray_serial_base + index // 2)


def slot_number(tray_index: int) -> int:
    """Physical slot of compute tray ``tray_index`` in an NVL72 rack. A guess that fits the
    capture (tray 15 in slot 25, l.42-l.43): 10 compute trays in slots 1-10, the 9 NVSwitch
    trays in 11-19, the other 8 compute trays in 20-27."""
    return tray_index + 1 if tray_index < 10 else tray_index + 10
