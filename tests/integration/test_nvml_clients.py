"""NVML clients nobody here wrote, run against the fake libnvidia-ml: gpustat (``--json``, as a
command) and nvitop (its Python API in this process, and ``nvitop --once`` as a command). Each
must show the capture's values (docs/reference/nvidia-smi-q-gb300.xml): name, memory, power draw
and limit, persistence mode, P-state, compute mode, and a process added through the fake's
control functions, whose memory counts in ``used``.

The commands find the fake as ``libnvidia-ml.so.1`` on LD_LIBRARY_PATH and get their tray through
FAKE_NVML_SETUP (``FakeNvml.command_env``). The GPU process is a real child (``sleep``): both
clients look the PID up with psutil and drop one that does not exist.
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fakes.nvml.control import NOT_SUPPORTED, FakeNvml
from fakes.nvml.fixtures import fake_nvml, fake_nvml_cache, fake_nvml_path  # noqa: F401

BIN = Path(sys.executable).parent
MIB = 1024 * 1024
TOTAL_MIB = 284208  # fb_memory_usage/total
RESERVED_MIB = 947
POWER_MW = (180360, 176260, 175920, 180050)  # gpu_power_readings/average_power_draw
LIMIT_W = 1400  # current_power_limit
PROCESS_GPU, PROCESS_MIB = 1, 2048


@pytest.fixture
def gpu_process() -> Iterator[int]:
    """A real process for the fake to list on a GPU."""
    child = subprocess.Popen(["sleep", "300"])
    try:
        yield child.pid
    finally:
        child.kill()
        child.wait()


def run_client(fake_path: Path, pid: int, *argv: str) -> str:
    env = FakeNvml.command_env(fake_path, processes=[(PROCESS_GPU, pid, PROCESS_MIB)])
    env["COLUMNS"] = "100"
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{argv} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_gpustat_json_shows_the_capture(fake_nvml_path: Path, gpu_process: int) -> None:  # noqa: F811
    out = json.loads(run_client(fake_nvml_path, gpu_process, str(BIN / "gpustat"), "--json"))
    assert out["driver_version"] == "580.173.02"
    gpus = out["gpus"]
    assert [g["index"] for g in gpus] == [0, 1, 2, 3]
    for g in gpus:
        assert g["name"] == "NVIDIA GB300"
        assert g["memory.total"] == TOTAL_MIB
        assert g["power.draw"] == POWER_MW[g["index"]] // 1000
        assert g["enforced.power.limit"] == LIMIT_W
        assert g["fan.speed"] is None  # fan_speed N/A: NOT_SUPPORTED, as on a GB300
        assert (g["utilization.gpu"], g["utilization.enc"], g["utilization.dec"]) == (0, 0, 0)
    assert [g["temperature.gpu"] for g in gpus] == [38, 39, 39, 39]
    assert [g["memory.used"] for g in gpus] == [0, PROCESS_MIB, 0, 0]  # the process's memory is used
    assert [g["processes"] for g in gpus if g["index"] != PROCESS_GPU] == [[], [], []]
    (proc,) = gpus[PROCESS_GPU]["processes"]
    assert (proc["pid"], proc["gpu_memory_usage"], proc["command"]) == (gpu_process, PROCESS_MIB, "sleep")


# One GPU's two rows of the `nvitop --once` table:
#   │   0  GB300                 On │ 00000008:06:00.0 Off │ Disabled           0 │ ...
#   │ N/A   38C   P0   180W / 1400W │        0B / 277.5GiB │      0%      Default │ ...
ROWS = re.compile(
    r"│\s+(?P<index>\d)\s+(?P<name>\S+)\s+(?P<persistence>\S+) │ (?P<bus>\S+)\s+(?P<disp>\S+) │"
    r"\s+(?P<mig>\S+)\s+(?P<ecc>\S+) │.*\n"
    r"│\s+(?P<fan>\S+)\s+(?P<temp>\d+)C\s+(?P<perf>\S+)\s+(?P<power>\d+)W / (?P<limit>\d+)W │"
    r"\s+(?P<used>\S+) / (?P<total>\S+) │\s+(?P<util>\S+)\s+(?P<compute>\S+) │"
)


def test_nvitop_once_shows_the_capture(fake_nvml_path: Path, gpu_process: int) -> None:  # noqa: F811
    out = run_client(fake_nvml_path, gpu_process, str(BIN / "nvitop"), "--once")
    assert "Driver Version: 580.173.02" in out and "CUDA Driver Version: 13.0" in out
    rows = [m.groupdict() for m in ROWS.finditer(out)]
    assert [r["index"] for r in rows] == ["0", "1", "2", "3"], out
    for r in rows:
        i = int(r["index"])
        assert r["name"] == "GB300"
        assert (r["persistence"], r["perf"], r["compute"]) == ("On", "P0", "Default"), out
        assert (r["disp"], r["mig"], r["ecc"], r["fan"]) == ("Off", "Disabled", "0", "N/A")
        assert int(r["power"]) == round(POWER_MW[i] / 1000) and int(r["limit"]) == LIMIT_W
        assert r["total"] == "277.5GiB"  # 284208 MiB
        assert r["used"] == (f"{PROCESS_MIB}MiB" if i == PROCESS_GPU else "0B")
    assert [r["bus"] for r in rows] == ["00000008:06:00.0", "00000009:06:00.0", "00000018:06:00.0", "00000019:06:00.0"]
    (line,) = [line for line in out.splitlines() if re.search(rf"\s{gpu_process}\s", line)]
    assert re.search(rf"│\s+{PROCESS_GPU}\s+{gpu_process} C\s+\S+\s+{PROCESS_MIB}MiB\s.*sleep 300", line), line


def test_nvitop_api_shows_the_capture(fake_nvml: FakeNvml, gpu_process: int) -> None:  # noqa: F811
    import nvitop

    fake_nvml.add_process(PROCESS_GPU, gpu_process, PROCESS_MIB)
    devices = nvitop.Device.all()
    assert [d.index for d in devices] == [0, 1, 2, 3]
    for d in devices:
        assert d.name() == "NVIDIA GB300"
        assert d.memory_total() == TOTAL_MIB * MIB
        assert d.memory_used() == (PROCESS_MIB * MIB if d.index == PROCESS_GPU else 0)
        assert d.power_usage() == POWER_MW[d.index]  # mW
        assert d.power_limit() == LIMIT_W * 1000
        assert (d.persistence_mode(), d.performance_state(), d.compute_mode()) == ("Enabled", "P0", "Default")
        assert (d.display_active(), d.fan_speed(), d.cuda_compute_capability()) == ("Disabled", nvitop.NA, (10, 3))
    procs = devices[PROCESS_GPU].processes()
    assert list(procs) == [gpu_process]
    proc = procs[gpu_process]
    assert (proc.gpu_memory(), proc.type, proc.name()) == (PROCESS_MIB * MIB, "C", "sleep")
    assert all(d.processes() == {} for d in devices if d.index != PROCESS_GPU)


@pytest.fixture
def nvml(fake_nvml: FakeNvml) -> Iterator[FakeNvml]:  # noqa: F811
    pynvml.nvmlInit()
    yield fake_nvml
    pynvml.nvmlShutdown()


def call(name: str, *args: Any) -> int:
    """A C function of the fake by its exact symbol, as an old binary would call it."""
    fn = pynvml._nvmlGetFunctionPointer(name)
    return int(fn(*args))


def test_the_older_aliases_a_driver_keeps_agree(nvml: FakeNvml) -> None:
    nvml.add_process(0, 4242, used_mib=100)
    nvml.add_process(0, 4343, used_mib=200)
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    count = ctypes.c_uint(0)
    assert call("nvmlDeviceGetCount", ctypes.byref(count)) == 0 and count.value == 4
    legacy = ctypes.c_void_p()
    assert call("nvmlDeviceGetHandleByIndex", ctypes.c_uint(0), ctypes.byref(legacy)) == 0
    assert legacy.value == ctypes.cast(h, ctypes.c_void_p).value

    class V1(ctypes.Structure):
        _fields_ = [("pid", ctypes.c_uint), ("usedGpuMemory", ctypes.c_ulonglong)]

    versions: list[tuple[str, type[ctypes.Structure]]] = [
        ("nvmlDeviceGetComputeRunningProcesses", V1),
        ("nvmlDeviceGetComputeRunningProcesses_v2", pynvml.c_nvmlProcessInfo_v2_t),
    ]
    for name, cls in versions:
        n = ctypes.c_uint(0)
        assert call(name, h, ctypes.byref(n), None) == pynvml.NVML_ERROR_INSUFFICIENT_SIZE and n.value == 2
        buf = (cls * 2)()
        assert call(name, h, ctypes.byref(n), buf) == 0
        assert [(p.pid, p.usedGpuMemory) for p in buf] == [(4242, 100 * MIB), (4343, 200 * MIB)]
    assert [p.pid for p in pynvml.nvmlDeviceGetGraphicsRunningProcesses_v3(h)] == []
    assert [p.pid for p in pynvml.nvmlDeviceGetMPSComputeRunningProcesses_v3(h)] == []
    detail = pynvml.nvmlDeviceGetRunningProcessDetailList(h, pynvml.nvmlProcessDetailList_v1, 0)
    assert [(p.pid, p.usedGpuMemory) for p in detail] == [(4242, 100 * MIB), (4343, 200 * MIB)]
    assert pynvml.nvmlDeviceGetPciInfo(h).busId == pynvml.nvmlDeviceGetPciInfo_v3(h).busId
    by_bus = pynvml.nvmlDeviceGetHandleByPciBusId("00000008:06:00.0")
    by_uuid = pynvml.nvmlDeviceGetHandleByUUID(pynvml.nvmlDeviceGetUUID(h))
    assert ctypes.cast(by_bus, ctypes.c_void_p).value == ctypes.cast(h, ctypes.c_void_p).value
    assert ctypes.cast(by_uuid, ctypes.c_void_p).value == ctypes.cast(h, ctypes.c_void_p).value
    # memory: v2 used is the processes' 300 MiB, v1 adds the reserved 947 MiB
    v2 = pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2)
    assert (v2.used, v2.reserved, v2.free) == (300 * MIB, RESERVED_MIB * MIB, (TOTAL_MIB - RESERVED_MIB - 300) * MIB)
    assert pynvml.nvmlDeviceGetMemoryInfo(h).used == (300 + RESERVED_MIB) * MIB
    nvml.set(0, mem_used=1000 * MIB)  # memory used beyond the listed processes
    assert pynvml.nvmlDeviceGetMemoryInfo(h, version=pynvml.nvmlMemory_v2).used == 1000 * MIB


def test_what_a_gb300_does_not_support_answers_as_the_driver(nvml: FakeNvml) -> None:
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    for query in (pynvml.nvmlDeviceGetFanSpeed, pynvml.nvmlDeviceGetDriverModel_v2):
        with pytest.raises(pynvml.NVMLError) as err:
            query(h)
        assert err.value.value == NOT_SUPPORTED
    with pytest.raises(pynvml.NVMLError) as err:
        pynvml.nvmlDeviceGetDisplayMode(h)
    assert err.value.value == pynvml.NVML_ERROR_DEPRECATED
    assert str(err.value) == "Requested functionality has been deprecated"  # as nvidia-smi -q prints it
    bar1 = pynvml.nvmlDeviceGetBAR1MemoryInfo(h)
    assert (bar1.bar1Total, bar1.bar1Used) == (524288 * MIB, 0)
    assert pynvml.nvmlDeviceGetCurrPcieLinkGeneration(h) == 6 and pynvml.nvmlDeviceGetCurrPcieLinkWidth(h) == 16
    with pytest.raises(pynvml.NVMLError_NotFound):  # an idle GPU has no process samples
        pynvml.nvmlDeviceGetProcessUtilization(h, 0)


def test_mig_handles_answer_like_mig_devices(nvml: FakeNvml) -> None:
    nvml.set_mig(2, enabled=True, count=2)
    parent = pynvml.nvmlDeviceGetHandleByIndex(2)
    mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(parent, 1)
    back = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(mig)
    assert ctypes.cast(back, ctypes.c_void_p).value == ctypes.cast(parent, ctypes.c_void_p).value
    assert pynvml.nvmlDeviceGetHandleByUUID(pynvml.nvmlDeviceGetUUID(mig)) is not None
    assert pynvml.nvmlDeviceGetMemoryInfo(mig, version=pynvml.nvmlMemory_v2).total == 35 * 1024 * MIB
    assert pynvml.nvmlDeviceGetPersistenceMode(mig) == 1  # the parent's
    physical: list[Any] = [  # the physical GPU's, not an instance's
        pynvml.nvmlDeviceGetPerformanceState,
        pynvml.nvmlDeviceGetPowerUsage,
        pynvml.nvmlDeviceGetEnforcedPowerLimit,
        pynvml.nvmlDeviceGetUtilizationRates,
        pynvml.nvmlDeviceGetTotalEnergyConsumption,
        lambda h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
        lambda h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
    ]
    for query in physical:
        with pytest.raises(pynvml.NVMLError) as err:
            query(mig)
        assert err.value.value == NOT_SUPPORTED
    assert pynvml.nvmlDeviceGetPowerUsage(parent) == POWER_MW[2]


def test_a_bad_setup_for_a_command_fails_its_init(fake_nvml_path: Path) -> None:  # noqa: F811
    env = FakeNvml.command_env(fake_nvml_path, values=[(0, "no_such_value", 1)])
    code = "import pynvml\ntry:\n    pynvml.nvmlInit()\nexcept pynvml.NVMLError as e:\n    print(e.value)\n"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == str(pynvml.NVML_ERROR_INVALID_ARGUMENT), result.stderr
