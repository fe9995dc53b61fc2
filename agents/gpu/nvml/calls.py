"""Calling NVML: one read that degrades to None, field values, what is remembered per GPU.

A call that fails for good (not supported, missing symbol, no permission) is remembered per GPU
and not retried until ``forget_failures`` (an inventory change: MIG toggled, the GPU back):
nvml.h documents utilisation as unsupported while MIG is on and process lists as
privilege-dependent under MIG, so "for good" holds only while the GPU's configuration does.
Field values are remembered per (field id, scope id), from each entry's own ``nvmlReturn``.

pynvml is untyped: every value crossing from it is converted to a plain type in this package.
Bindings that older nvidia-ml-py releases lack (``binding``) read as a missing symbol.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import pynvml

from agents.protocol import GpuInventory

log = logging.getLogger("agents.gpu.nvml")

T = TypeVar("T")
Handle = Any  # pynvml's ctypes device pointer: opaque here
FieldKey = tuple[int, int]  # (field id, scope id)

MIB: Final = 1024 * 1024

# Failures that will not change while the GPU's configuration does not.
PERMANENT: Final = frozenset(
    {
        pynvml.NVML_ERROR_NOT_SUPPORTED,
        pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        pynvml.NVML_ERROR_NO_PERMISSION,
        pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH,
        pynvml.NVML_ERROR_DEPRECATED,
    }
)


class GpuLostError(Exception):
    """Raised inside a read when NVML answers GPU_IS_LOST for a GPU."""


@dataclass
class Gpu:
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


def binding(name: str) -> Any:
    """A pynvml function or structure, or None where the installed nvidia-ml-py predates it."""
    return getattr(pynvml, name, None)


def missing(gpu: Gpu, name: str, symbol: str) -> None:
    """Note that the installed pynvml has no ``symbol``: absent like a driver's missing symbol."""
    if name not in gpu.unsupported:
        gpu.unsupported.add(name)
        log.info("GPU %s: %s unavailable (this nvidia-ml-py has no %s); reported as absent", gpu.uuid, name, symbol)


def read(gpu: Gpu, name: str, call: Callable[[], T]) -> T | None:
    """One NVML read that degrades to None; GPU_IS_LOST propagates as GpuLostError."""
    if name in gpu.unsupported:
        return None
    try:
        return call()
    except pynvml.NVMLError as exc:
        note_failure(gpu, name, int(exc.value), exc)
        return None


def note_failure(gpu: Gpu, name: str, code: int, exc: Exception | None = None) -> None:
    if code == pynvml.NVML_ERROR_GPU_IS_LOST:
        raise GpuLostError(gpu.uuid) from exc
    if code in PERMANENT:
        gpu.unsupported.add(name)
        log.info("GPU %s: %s unavailable (NVML error %d); reported as absent", gpu.uuid, name, code)
    elif (name, code) not in gpu.warned:  # transient: retried next time, logged once
        gpu.warned.add((name, code))
        log.warning("GPU %s: %s failed (NVML error %d); reported as absent this sample", gpu.uuid, name, code)


def forget_failures(gpu: Gpu) -> None:
    """Re-probe everything remembered as unavailable: the GPU's configuration changed."""
    if gpu.unsupported:
        log.info("GPU %s: configuration changed; re-probing %d unavailable reads", gpu.uuid, len(gpu.unsupported))
    gpu.unsupported.clear()
    gpu.warned.clear()


def field_name(key: FieldKey) -> str:
    return f"field {key[0]}/{key[1]}"


def read_fields(gpu: Gpu, keys: Iterable[FieldKey]) -> dict[FieldKey, float | int | None]:
    """Several field values in one call, support tracked per (field id, scope id).

    Each entry's own nvmlReturn decides for that entry. A call that fails whole (a driver may
    refuse a batch for one field it cannot give) is asked again one field at a time, so one
    unsupported field never switches off the others.
    """
    keys = list(keys)
    out: dict[FieldKey, float | int | None] = dict.fromkeys(keys)
    wanted = [key for key in keys if field_name(key) not in gpu.unsupported]
    if not wanted:
        return out
    code, values = _field_call(gpu, wanted)
    if code in PERMANENT and len(wanted) > 1:
        for key in wanted:  # find the entries that sank the batch
            out.update(read_fields(gpu, [key]))
        return out
    if code in PERMANENT:
        note_failure(gpu, field_name(wanted[0]), code)
        return out
    if code != pynvml.NVML_SUCCESS:  # transient: every field absent this time, logged once
        note_failure(gpu, "field values", code)
        return out
    for key, entry in zip(wanted, values, strict=True):
        entry_code = int(entry.nvmlReturn)
        if entry_code == pynvml.NVML_SUCCESS:
            out[key] = field_value(entry)
        else:
            note_failure(gpu, field_name(key), entry_code)
    return out


def _field_call(gpu: Gpu, keys: list[FieldKey]) -> tuple[int, list[Any]]:
    try:
        return pynvml.NVML_SUCCESS, list(pynvml.nvmlDeviceGetFieldValues(gpu.handle, keys))
    except pynvml.NVMLError as exc:
        code = int(exc.value)
        if code == pynvml.NVML_ERROR_GPU_IS_LOST:
            raise GpuLostError(gpu.uuid) from exc
        return code, []


def field_value(entry: Any) -> float | int | None:
    """Decode an nvmlFieldValue_t by its valueType (the union member NVML filled)."""
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}.get(
        int(entry.valueType)
    )
    if member is None:
        return None
    value = getattr(entry.value, member)
    return float(value) if member == "dVal" else int(value)


def raw_bytes(struct: ctypes.Structure, name: str, size: int) -> bytes:
    """A char field's raw bytes: pynvml's structures decode them as text, which garbles numbers."""
    offset = int(getattr(type(struct), name).offset)
    return ctypes.string_at(ctypes.addressof(struct) + offset, size)


def watts(milliwatts: float | int | None) -> float | None:
    return None if milliwatts is None else float(milliwatts) / 1000.0


def mib(value: int | None) -> float | None:
    return None if value is None else value / MIB


def first(value: T | None, fallback: Callable[[], T | None]) -> T | None:
    return value if value is not None else fallback()


def as_float(value: float | int | None) -> float | None:
    return None if value is None else float(value)


def as_int(value: float | int | None) -> int | None:
    return None if value is None else int(value)


def device_key(handle: Handle) -> int:
    return int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


def decode(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_clock(gpu: Gpu, name: str, call: Callable[[Handle, int], Any], clock: int) -> float | None:
    value = read(gpu, name, lambda: int(call(gpu.handle, clock)))
    return None if value is None else float(value)


def read_memory(gpu: Gpu) -> dict[str, int]:
    """Memory_v2 (used excludes the driver's reserve); v1 where v2 is missing."""
    v2 = read(gpu, "memory info v2", lambda: pynvml.nvmlDeviceGetMemoryInfo(gpu.handle, version=pynvml.nvmlMemory_v2))
    if v2 is not None:
        return {"total": int(v2.total), "reserved": int(v2.reserved), "used": int(v2.used)}
    v1 = read(gpu, "memory info", lambda: pynvml.nvmlDeviceGetMemoryInfo(gpu.handle))
    return {} if v1 is None else {"total": int(v1.total), "used": int(v1.used)}


# -- the system -----------------------------------------------------------------------------------

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


def init_nvml() -> None:
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        code = int(exc.value)
        message = _INIT_ERRORS.get(code, f"NVML failed to initialise: {exc} (NVML error {code}).")
        raise NvmlUnavailableError(f"NVML backend unavailable: {message}") from exc


def system_read(name: str, call: Callable[[], T]) -> T | None:
    try:
        return call()
    except pynvml.NVMLError as exc:
        log.warning("NVML %s unavailable: %s", name, exc)
        return None


def enumerate_gpus() -> dict[str, tuple[int, Handle]] | None:
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
            found[decode(pynvml.nvmlDeviceGetUUID(handle))] = (index, handle)
        except pynvml.NVMLError as exc:
            log.warning("GPU at index %d does not answer: %s", index, exc)
    return found
