"""Drive the fake NVML library from a test: load it where pynvml will find it, then set values.

How the fake reaches pynvml: pynvml opens ``CDLL("libnvidia-ml.so.1")`` on its first
``nvmlInit()``. The dynamic loader answers a bare soname with an object already loaded under
that soname, so loading the fake by absolute path first (``load_fake_nvml``) is enough; pynvml
itself is not patched. ``load_fake_nvml`` checks that the soname lookup really resolves to the
fake, and refuses a second, different fake in the same process: a process can hold only one
``libnvidia-ml.so.1``, so variants built with ``omit=`` run in a subprocess.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from .build import SONAME

# NVML return codes a test passes to fail(); the values of nvml.h.
NOT_SUPPORTED = 3
NO_PERMISSION = 4
NOT_FOUND = 6
TIMEOUT = 10
GPU_IS_LOST = 15
UNKNOWN = 999

EVENT_SINGLE_BIT_ECC = 0x1
EVENT_DOUBLE_BIT_ECC = 0x2
EVENT_XID = 0x8
EVENT_RECOVERY_ACTION = 0x8000

_loaded: FakeNvml | None = None


class FakeNvml:
    """Typed handle on the fake's ``fake_nvml_*`` control functions. GPU arguments are slots
    (the fake's physical order), which equal NVML indices until a GPU is dropped."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib = lib
        self.path = path
        _declare(lib)

    def reset(self) -> None:
        """Back to the default GB300 tray: 4 GPUs, capture values, no overrides."""
        self.lib.fake_nvml_reset()

    def set(self, gpu: int, **values: int) -> None:
        """Set telemetry by name, e.g. ``set(0, power_mw=700_000, temp_gpu=71)``."""
        for name, value in values.items():
            _check(self.lib.fake_nvml_set_value(gpu, name.encode(), int(value)), f"set {name} on GPU {gpu}")

    def get(self, gpu: int, name: str) -> int:
        out = ctypes.c_longlong()
        _check(self.lib.fake_nvml_get_value(gpu, name.encode(), ctypes.byref(out)), f"get {name} on GPU {gpu}")
        return out.value

    def value_names(self) -> list[str]:
        names: list[str] = []
        while (name := self.lib.fake_nvml_value_name(len(names))) is not None:
            names.append(name.decode())
        return names

    def set_string(self, gpu: int, name: str, value: str) -> None:
        """uuid, name, serial, chassis_serial, cluster_uuid; or gpu -1 for driver_version and
        nvml_version."""
        _check(self.lib.fake_nvml_set_string(gpu, name.encode(), value.encode()), f"set {name}")

    def set_cuda_driver_version(self, version: int) -> None:
        self.lib.fake_nvml_set_cuda_driver_version(version)

    def set_nvlink_state(self, gpu: int, link: int, state: int) -> None:
        _check(self.lib.fake_nvml_set_nvlink_state(gpu, link, state), "set NVLink state")

    def fail(self, function: str, ret: int = NOT_SUPPORTED, gpu: int = -1) -> None:
        """Make the C function ``function`` return ``ret`` (on one GPU, or all with -1)."""
        _check(self.lib.fake_nvml_set_return(function.encode(), gpu, ret), f"fail {function}")

    def heal(self, function: str, gpu: int = -1) -> None:
        self.fail(function, 0, gpu)

    def fail_field(self, gpu: int, field_id: int, ret: int = NOT_SUPPORTED) -> None:
        """Make one entry of nvmlDeviceGetFieldValues carry ``ret`` (0 restores it)."""
        _check(self.lib.fake_nvml_set_field_return(gpu, field_id, ret), f"fail field {field_id}")

    def fail_field_batch(self, gpu: int, field_id: int, ret: int = NOT_SUPPORTED) -> None:
        """Make every nvmlDeviceGetFieldValues call that asks ``field_id`` fail whole with ``ret``
        (as a driver refuses a batch for one field it cannot give); heal with fail_field(.., 0)."""
        _check(self.lib.fake_nvml_set_field_return(gpu, field_id, -ret), f"fail batches with field {field_id}")

    def set_link_counter(self, gpu: int, link: int, field_id: int, value: int) -> None:
        """A per-link error field (38/45/52/59, or NVLINK_COUNT_* 206-215) on one link."""
        _check(self.lib.fake_nvml_set_link_counter(gpu, link, field_id, value), f"set field {field_id} link {link}")

    def set_device_count(self, count: int) -> None:
        _check(self.lib.fake_nvml_set_device_count(count), "set device count")

    def lose_gpu(self, gpu: int, *, drop: bool = False) -> None:
        """GPU_IS_LOST from every call on it; ``drop`` also removes it from the count."""
        _check(self.lib.fake_nvml_lose_gpu(gpu, int(drop)), "lose GPU")

    def restore_gpu(self, gpu: int) -> None:
        _check(self.lib.fake_nvml_restore_gpu(gpu), "restore GPU")

    def add_process(self, gpu: int, pid: int, used_mib: int) -> None:
        _check(self.lib.fake_nvml_add_process(gpu, pid, used_mib * 1024 * 1024), "add process")

    def remove_process(self, gpu: int, pid: int) -> None:
        _check(self.lib.fake_nvml_remove_process(gpu, pid), f"remove process {pid}")

    def set_mig(self, gpu: int, *, enabled: bool, count: int = 0, pending: bool | None = None) -> None:
        pending_mode = enabled if pending is None else pending
        _check(self.lib.fake_nvml_set_mig(gpu, int(enabled), int(pending_mode), count), "set MIG")

    def inject_event(self, gpu: int, event_type: int, data: int = 0) -> int:
        """Queue an event for every registered event set; returns how many sets took it."""
        delivered = int(self.lib.fake_nvml_inject_event(gpu, event_type, data))
        _check(min(delivered, 0), "inject event")
        return delivered

    def inject_xid(self, gpu: int, xid: int) -> int:
        """An XID on GPU slot ``gpu``; -1 sends it with no device (a NULL handle)."""
        return self.inject_event(gpu, EVENT_XID, xid)

    def inject_double_bit_ecc(self, gpu: int) -> int:
        """A DBE as the driver reports it: both ECC counters move, then the event fires."""
        self.set(
            gpu,
            ecc_dbe_volatile=self.get(gpu, "ecc_dbe_volatile") + 1,
            ecc_dbe_aggregate=self.get(gpu, "ecc_dbe_aggregate") + 1,
        )
        return self.inject_event(gpu, EVENT_DOUBLE_BIT_ECC)

    def pending_events(self) -> int:
        return int(self.lib.fake_nvml_pending_events())

    def calls(self, function: str) -> int:
        """How often the C function ``function`` was called since the last reset()."""
        return int(self.lib.fake_nvml_calls(function.encode()))

    def init_count(self) -> int:
        return int(self.lib.fake_nvml_init_count())

    def layout(self) -> dict[str, int]:
        """sizeof / offsetof as the fake was compiled (names as in layout.h)."""
        out: dict[str, int] = {}
        while (name := self.lib.fake_nvml_layout_name(len(out))) is not None:
            out[name.decode()] = int(self.lib.fake_nvml_layout_value(len(out)))
        return out

    @staticmethod
    def command_env(
        path: Path,
        *,
        processes: Iterable[tuple[int, int, int]] = (),
        values: Iterable[tuple[int, str, int]] = (),
        base: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """The environment for an NVML client run as a command on the fake at ``path``: its
        directory first on LD_LIBRARY_PATH (as ``libnvidia-ml.so.1``), and FAKE_NVML_SETUP, which
        the fake applies at the command's first nvmlInit: ``processes`` as (gpu, pid, MiB) and
        ``values`` as (gpu, name, value), the same as add_process() and set() here."""
        env = dict(os.environ if base is None else base)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(path.parent), env.get("LD_LIBRARY_PATH", "")) if p)
        entries = [f"process {gpu} {pid} {mib}" for gpu, pid, mib in processes]
        entries += [f"set {gpu} {name} {int(value)}" for gpu, name, value in values]
        env["FAKE_NVML_SETUP"] = "; ".join(entries)
        return env


def load_fake_nvml(path: Path) -> FakeNvml:
    """Load the fake so pynvml's ``CDLL("libnvidia-ml.so.1")`` gets it; once per process."""
    global _loaded
    if _loaded is not None:
        if _loaded.path != path:
            raise RuntimeError(
                f"this process already loaded {_loaded.path}; a process holds one {SONAME}: "
                "run other variants in a subprocess"
            )
        return _loaded
    pynvml = sys.modules.get("pynvml")
    if pynvml is not None and getattr(pynvml, "nvmlLib", None) is not None:
        raise RuntimeError("pynvml already opened an NVML library; load the fake before the first nvmlInit()")
    lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    by_soname = ctypes.CDLL(SONAME)  # exactly what pynvml does
    if by_soname._handle != lib._handle:
        raise RuntimeError(f"{SONAME} resolves to another library than the fake at {path}")
    _loaded = FakeNvml(lib, path)
    return _loaded


def _declare(lib: ctypes.CDLL) -> None:
    ll, i, s, ull = ctypes.c_longlong, ctypes.c_int, ctypes.c_char_p, ctypes.c_ulonglong
    signatures: dict[str, tuple[type | None, list[type]]] = {
        "fake_nvml_reset": (None, []),
        "fake_nvml_set_value": (i, [i, s, ll]),
        "fake_nvml_get_value": (i, [i, s, ctypes.POINTER(ll)]),
        "fake_nvml_value_name": (s, [i]),
        "fake_nvml_set_string": (i, [i, s, s]),
        "fake_nvml_set_cuda_driver_version": (None, [i]),
        "fake_nvml_set_nvlink_state": (i, [i, i, i]),
        "fake_nvml_set_return": (i, [s, i, i]),
        "fake_nvml_set_field_return": (i, [i, i, i]),
        "fake_nvml_set_link_counter": (i, [i, i, i, ll]),
        "fake_nvml_set_device_count": (i, [i]),
        "fake_nvml_lose_gpu": (i, [i, i]),
        "fake_nvml_restore_gpu": (i, [i]),
        "fake_nvml_add_process": (i, [i, ctypes.c_uint, ull]),
        "fake_nvml_remove_process": (i, [i, ctypes.c_uint]),
        "fake_nvml_set_mig": (i, [i, i, i, i]),
        "fake_nvml_inject_event": (i, [i, ull, ull]),
        "fake_nvml_pending_events": (i, []),
        "fake_nvml_init_count": (i, []),
        "fake_nvml_calls": (ctypes.c_long, [s]),
        "fake_nvml_layout_name": (s, [i]),
        "fake_nvml_layout_value": (ctypes.c_long, [i]),
    }
    for name, (restype, argtypes) in signatures.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _check(code: int, what: str) -> None:
    if code == -1:
        raise KeyError(f"fake NVML: {what}: unknown name")
    if code < 0:
        raise ValueError(f"fake NVML: {what}: bad argument")
