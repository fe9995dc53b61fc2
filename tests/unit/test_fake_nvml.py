"""The fake libnvidia-ml itself, driven through the real pynvml: if the fake lies about NVML,
every backend test built on it lies too."""

from __future__ import annotations

import ctypes
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fakes.nvml.build import FakeNvmlBuildError, build_fake_nvml, find_real_nvml_header, real_nvml_layout
from fakes.nvml.control import EVENT_DOUBLE_BIT_ECC, EVENT_XID, FakeNvml, load_fake_nvml
from fakes.nvml.fixtures import fake_nvml, fake_nvml_cache, fake_nvml_path  # noqa: F401

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def nvml(fake_nvml: FakeNvml) -> Iterator[FakeNvml]:  # noqa: F811
    pynvml.nvmlInit()
    yield fake_nvml
    pynvml.nvmlShutdown()


def handle(index: int) -> ctypes._Pointer[Any]:
    device = pynvml.nvmlDeviceGetHandleByIndex(index)
    assert isinstance(device, ctypes._Pointer)
    return device


def pynvml_struct(name: str) -> type[ctypes.Structure | ctypes.Union]:
    cls = getattr(pynvml, f"c_{name}", None) or getattr(pynvml, name)
    assert isinstance(cls, type)
    return cls


def test_layouts_match_real_header_and_pynvml(fake_nvml: FakeNvml, fake_nvml_cache: Path) -> None:  # noqa: F811
    header = find_real_nvml_header()
    assert header is not None, "nvml.h not found: install the dev extra (nvidia-nvml-dev)"
    real = real_nvml_layout(header, fake_nvml_cache)
    assert fake_nvml.layout() == real
    assert (real["nvmlMemory_v2_t"], real["nvmlFieldValue_t"], real["nvmlEventData_t"]) == (40, 40, 32)
    for name, value in real.items():
        struct_name, _, field = name.partition(".")
        cls = pynvml_struct(struct_name)
        got = getattr(cls, field).offset if field else ctypes.sizeof(cls)
        assert got == value, f"pynvml {name}: {got} != nvml.h {value}"


def test_pynvml_resolves_the_soname_to_the_fake(nvml: FakeNvml) -> None:
    assert pynvml.nvmlLib._handle == nvml.lib._handle
    assert nvml.init_count() >= 1


def test_a_second_library_in_one_process_is_refused(fake_nvml: FakeNvml, fake_nvml_cache: Path) -> None:  # noqa: F811
    variant = build_fake_nvml(fake_nvml_cache, omit=["nvmlDeviceGetSerial"])
    with pytest.raises(RuntimeError, match="subprocess"):
        load_fake_nvml(variant)


def test_default_tray_is_the_capture(nvml: FakeNvml) -> None:
    assert pynvml.nvmlDeviceGetCount() == 4
    assert pynvml.nvmlSystemGetDriverVersion() == "580.173.02"
    pci = pynvml.nvmlDeviceGetPciInfo(handle(3))
    assert (pci.busId, pci.busIdLegacy, pci.pciDeviceId) == ("00000019:06:00.0", "0019:06:00.0", 0x31C210DE)
    v1 = pynvml.nvmlDeviceGetMemoryInfo(handle(0))
    assert v1.used == 947 * 2**20  # v1 counts the driver's reserve as used; v2 does not
    assert pynvml.nvmlDeviceGetMemoryInfo(handle(0), version=pynvml.nvmlMemory_v2).used == 0
    assert pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle(0)) == pynvml.nvmlClocksEventReasonGpuIdle
    assert pynvml.nvmlDeviceGetMigMode(handle(0)) == [0, 0]
    assert pynvml.nvmlDeviceGetEccMode(handle(0)) == [1, 1]


def test_power_limit_is_validated_and_read_back(nvml: FakeNvml) -> None:
    h = handle(0)
    pynvml.nvmlDeviceSetPowerManagementLimit(h, 700_000)
    assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 700_000
    assert pynvml.nvmlDeviceGetEnforcedPowerLimit(h) == 700_000
    for out_of_range in (199_999, 1_400_001):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            pynvml.nvmlDeviceSetPowerManagementLimit(h, out_of_range)
    assert pynvml.nvmlDeviceGetPowerManagementLimit(h) == 700_000
    nvml.set(0, external_limit_mw=500_000)  # a limit set out of band wins
    assert pynvml.nvmlDeviceGetEnforcedPowerLimit(h) == 500_000


def test_processes_use_the_two_call_protocol(nvml: FakeNvml) -> None:
    for pid in (101, 102, 103):
        nvml.add_process(1, pid, used_mib=pid)
    procs = pynvml.nvmlDeviceGetComputeRunningProcesses_v3(handle(1))
    assert [(p.pid, p.usedGpuMemory) for p in procs] == [(pid, pid * 2**20) for pid in (101, 102, 103)]
    nvml.remove_process(1, 102)
    assert sorted(p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses_v3(handle(1))) == [101, 103]
    assert pynvml.nvmlDeviceGetComputeRunningProcesses_v3(handle(0)) == []


def test_events_reach_registered_sets_only(nvml: FakeNvml) -> None:
    event_set = pynvml.nvmlEventSetCreate()
    try:
        pynvml.nvmlDeviceRegisterEvents(handle(2), EVENT_XID, event_set)
        assert nvml.inject_event(2, EVENT_DOUBLE_BIT_ECC) == 0  # not registered for DBE
        assert nvml.inject_xid(3, 79) == 0  # not registered on GPU 3
        assert nvml.inject_xid(2, 79) == 1
        data = pynvml.nvmlEventSetWait_v2(event_set, 1000)
        assert (data.eventType, data.eventData, data.gpuInstanceId) == (EVENT_XID, 79, 0xFFFFFFFF)
        device = ctypes.cast(data.device, ctypes.c_void_p).value
        assert device == ctypes.cast(handle(2), ctypes.c_void_p).value
        with pytest.raises(pynvml.NVMLError_Timeout):
            pynvml.nvmlEventSetWait_v2(event_set, 1)
    finally:
        pynvml.nvmlEventSetFree(event_set)


def test_registering_an_unsupported_event_type_fails(nvml: FakeNvml) -> None:
    nvml.set(0, supported_events=EVENT_XID)
    event_set = pynvml.nvmlEventSetCreate()
    try:
        with pytest.raises(pynvml.NVMLError_NotSupported):
            pynvml.nvmlDeviceRegisterEvents(handle(0), EVENT_XID | EVENT_DOUBLE_BIT_ECC, event_set)
        assert pynvml.nvmlDeviceGetSupportedEventTypes(handle(0)) == EVENT_XID
    finally:
        pynvml.nvmlEventSetFree(event_set)


def test_forced_returns_hit_one_gpu_or_all(nvml: FakeNvml) -> None:
    nvml.fail("nvmlDeviceGetPowerUsage", gpu=1)
    assert pynvml.nvmlDeviceGetPowerUsage(handle(0)) == 180_360
    with pytest.raises(pynvml.NVMLError_NotSupported):
        pynvml.nvmlDeviceGetPowerUsage(handle(1))
    nvml.fail("nvmlSystemGetDriverVersion", pynvml.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(pynvml.NVMLError_NoPermission):
        pynvml.nvmlSystemGetDriverVersion()
    nvml.heal("nvmlDeviceGetPowerUsage", gpu=1)
    assert pynvml.nvmlDeviceGetPowerUsage(handle(1)) == 176_260


def test_field_entries_carry_their_own_return(nvml: FakeNvml) -> None:
    nvml.fail_field(0, 185)
    values = pynvml.nvmlDeviceGetFieldValues(handle(0), [(185, 0), (186, 1), (82, 0), (9999, 0), (165, 17)])
    assert [v.nvmlReturn for v in values] == [3, 0, 0, 3, 0]
    assert (values[1].value.uiVal, values[2].value.uiVal, values[4].value.uiVal) == (487_680, 38, 1)


def test_lost_gpu_answers_gpu_is_lost_and_may_leave_the_count(nvml: FakeNvml) -> None:
    lost = handle(2)
    nvml.lose_gpu(2)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        pynvml.nvmlDeviceGetUUID(lost)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        handle(2)
    nvml.lose_gpu(2, drop=True)
    assert pynvml.nvmlDeviceGetCount() == 3
    assert pynvml.nvmlDeviceGetUUID(handle(2)) == "GPU-00000003-0000-0000-0000-000000000003"
    nvml.restore_gpu(2)
    assert pynvml.nvmlDeviceGetCount() == 4
    assert pynvml.nvmlDeviceGetUUID(handle(2)) == "GPU-00000002-0000-0000-0000-000000000002"


def test_every_value_name_can_be_set(nvml: FakeNvml) -> None:
    for name in nvml.value_names():
        nvml.set(3, **{name: 7})
        assert nvml.get(3, name) == 7
    with pytest.raises(KeyError):
        nvml.set(0, no_such_value=1)


def test_omitted_symbol_is_function_not_found(fake_nvml_cache: Path) -> None:  # noqa: F811
    variant = build_fake_nvml(fake_nvml_cache, omit=["nvmlDeviceGetTemperatureV"])
    code = f"""
import pynvml
from fakes.nvml.control import load_fake_nvml
from pathlib import Path
from typing import Any
load_fake_nvml(Path({str(variant)!r}))
pynvml.nvmlInit()
h = pynvml.nvmlDeviceGetHandleByIndex(0)
print(pynvml.nvmlDeviceGetTemperature(h, 0))
try:
    pynvml.nvmlDeviceGetTemperatureV(h, 0)
except pynvml.NVMLError_FunctionNotFound:
    print("function not found")
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=TESTS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["38", "function not found"]


def test_build_without_a_compiler_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FakeNvmlBuildError, match="no C compiler"):
        build_fake_nvml(tmp_path)
