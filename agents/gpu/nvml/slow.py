"""The slow loop: health counters read every ``slow_interval_s`` (and at once after an ECC or
recovery-action event): ECC, remapped rows, PCIe replays, fabric, NVLink state and errors, and
the recovery action (field 230). Its last values are repeated in every sample."""

from __future__ import annotations

from typing import Any, Final

import pynvml

from .calls import Gpu, GpuLostError, as_int, field_name, note_failure, read, read_fields
from .inventory import read_fabric

FI_NVLINK_LINK_COUNT: Final = 91
FI_NVLINK_STATE: Final = 165
FI_RECOVERY_ACTION: Final = 230
NVLINK_STATE_ACTIVE: Final = 1
NVLINK_MAX_LINKS: Final = 36  # nvml.h NVML_NVLINK_MAX_LINKS; a GB300 has 18

# Per-link error totals (all lanes of the link whose id is the scopeId): CRC flit, CRC data,
# replay, recovery (nvml.h NVML_FI_DEV_NVLINK_*_ERROR_COUNT_TOTAL).
FI_NVLINK_ERRORS: Final = (38, 45, 52, 59)
# Where those are unsupported (NVLink5, Blackwell), nvml.h points at the NVLINK_COUNT_* family,
# also per link: packets received with errors, local link integrity errors, transmit discards,
# link recovery events (NVML_FI_DEV_NVLINK_COUNT_RCV_ERRORS, _LOCAL_LINK_INTEGRITY_ERRORS,
# _XMIT_DISCARDS, _LINK_RECOVERY_EVENTS).
FI_NVLINK_COUNT_ERRORS: Final = (208, 211, 212, 215)

_ECC_COUNTERS: Final = {
    "ecc_volatile_sbe": (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_volatile_dbe": (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC),
    "ecc_aggregate_sbe": (pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_AGGREGATE_ECC),
    "ecc_aggregate_dbe": (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_AGGREGATE_ECC),
}


def _read_ecc(gpu: Gpu, name: str, error: int, counter: int) -> int | None:
    return read(gpu, name, lambda: int(pynvml.nvmlDeviceGetTotalEccErrors(gpu.handle, error, counter)))


def read_health(gpu: Gpu) -> dict[str, Any]:
    h = gpu.handle
    ecc = {name: _read_ecc(gpu, name, error, counter) for name, (error, counter) in _ECC_COUNTERS.items()}
    rows = read(gpu, "remapped rows", lambda: pynvml.nvmlDeviceGetRemappedRows(h))
    fabric = read_fabric(gpu)
    return {
        **ecc,
        "remapped_rows_correctable": None if rows is None else int(rows[0]),
        "remapped_rows_uncorrectable": None if rows is None else int(rows[1]),
        "remapped_rows_pending": None if rows is None else bool(rows[2]),
        "remapped_rows_failure": None if rows is None else bool(rows[3]),
        "pcie_replay_count": read(gpu, "pcie replay counter", lambda: int(pynvml.nvmlDeviceGetPcieReplayCounter(h))),
        "fabric_state": fabric.get("state"),
        "fabric_healthy": fabric.get("healthy"),
        **read_links(gpu),
    }


def read_links(gpu: Gpu) -> dict[str, Any]:
    """NVLink state of every link, error totals summed over every link, the recovery action.

    The link count is field 91, else the links nvmlDeviceGetNvLinkState answers for. The error
    fields take the link id as scopeId, so each link is asked on its own; a link whose legacy
    counters are unsupported is asked for the NVLINK_COUNT_* ones instead.
    """
    count = as_int(read_fields(gpu, [(FI_NVLINK_LINK_COUNT, 0)])[(FI_NVLINK_LINK_COUNT, 0)])
    probed: list[int | None] | None = None
    if count is None:
        probed = _probe_link_states(gpu)
        count = len(probed) if probed else None
    links = range(count or 0)
    states = [] if probed is not None else [(FI_NVLINK_STATE, link) for link in links]
    legacy = [(fid, link) for link in links for fid in FI_NVLINK_ERRORS]
    fields = read_fields(gpu, [(FI_RECOVERY_ACTION, 0), *legacy, *states])
    modern = [
        (fid, link)
        for link in links
        if all(field_name((old, link)) in gpu.unsupported for old in FI_NVLINK_ERRORS)
        for fid in FI_NVLINK_COUNT_ERRORS
    ]
    if modern:
        fields.update(read_fields(gpu, modern))
    state_values = probed if probed is not None else [fields[key] for key in states]
    error_values = [int(v) for v in (fields[key] for key in (*legacy, *modern)) if v is not None]
    return {
        "recovery_action": as_int(fields[(FI_RECOVERY_ACTION, 0)]),
        "nvlink_links_total": count,
        "nvlink_links_up": (
            None
            if count is None or (count and all(v is None for v in state_values))
            else sum(1 for v in state_values if v == NVLINK_STATE_ACTIVE)
        ),
        "nvlink_errors": sum(error_values) if error_values else None,
    }


def _probe_link_states(gpu: Gpu) -> list[int | None]:
    """nvmlDeviceGetNvLinkState for links 0.. until one is out of range (INVALID_ARGUMENT), at
    most NVML_NVLINK_MAX_LINKS: 1 active, 0 not, None unreadable. Empty if the call is not
    there or not supported."""
    if "nvlink state" in gpu.unsupported:
        return []
    out: list[int | None] = []
    for link in range(NVLINK_MAX_LINKS):
        try:
            out.append(int(pynvml.nvmlDeviceGetNvLinkState(gpu.handle, link)))
        except pynvml.NVMLError as exc:
            code = int(exc.value)
            if code == pynvml.NVML_ERROR_GPU_IS_LOST:
                raise GpuLostError(gpu.uuid) from exc
            if code == pynvml.NVML_ERROR_INVALID_ARGUMENT:
                break  # past the last link
            if link == 0:
                note_failure(gpu, "nvlink state", code, exc)  # remembered if permanent
                return []
            out.append(None)
    return out
