"""Symbols missing from the library (an older driver): pynvml raises FunctionNotFound and the
backend reports the field as absent. A process holds one libnvidia-ml.so.1, so each variant runs
in its own process (fakes/nvml/probe.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fakes.nvml.build import build_fake_nvml
from fakes.nvml.fixtures import fake_nvml_cache  # noqa: F401

TESTS = Path(__file__).resolve().parents[1]


def probe(library: Path | str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "fakes.nvml.probe", str(library)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def test_missing_symbols_degrade_to_absent(fake_nvml_cache: Path) -> None:  # noqa: F811
    omit = [
        "nvmlDeviceGetTemperatureV",
        "nvmlDeviceGetTemperature",
        "nvmlDeviceGetFieldValues",
        "nvmlDeviceGetGpuFabricInfoV",
        "nvmlDeviceGetPlatformInfo",
        "nvmlDeviceGetModuleId",
        "nvmlDeviceGetMemoryInfo_v2",
        "nvmlDeviceGetComputeRunningProcesses_v3",
        "nvmlDeviceGetCurrentClocksEventReasons",
        "nvmlDeviceGetRemappedRows",
        "nvmlDeviceGetMigMode",
        "nvmlSystemGetNVMLVersion",
        "nvmlEventSetWait_v2",
    ]
    seen = probe(build_fake_nvml(fake_nvml_cache, omit=omit))
    assert seen["second_count"] == 4
    gpu, inventory = seen["samples"][0], seen["inventory"][0]
    absent = [
        "temperature_gpu_c",
        "temperature_memory_c",
        "module_power_w",
        "nvlink_tx_kib",
        "recovery_action",
        "fabric_state",
        "memory_reserved_mib",
        "processes",
        "clock_event_reasons",
        "remapped_rows_correctable",
    ]
    assert {name: gpu[name] for name in absent} == dict.fromkeys(absent)
    assert gpu["power_w"] == 180.36  # GetPowerUsage stands in for field 185
    assert (gpu["nvlink_links_up"], gpu["nvlink_links_total"]) == (18, 18)  # nvmlDeviceGetNvLinkState
    assert gpu["memory_used_mib"] == 947.0  # Memory v1: used includes the reserve
    assert (gpu["energy_mj"], gpu["ecc_volatile_sbe"], gpu["pcie_replay_count"]) == (123456789, 0, 0)
    absent_inventory = ["fabric_cluster_uuid", "module_id", "chassis_serial", "module_power_limit_w", "mig_mode"]
    assert {name: inventory[name] for name in absent_inventory} == dict.fromkeys(absent_inventory)
    assert (inventory["uuid"], inventory["pci_bus_id"]) == (
        "GPU-00000000-0000-0000-0000-000000000000",
        "00000008:06:00.0",
    )


def test_old_driver_without_temperature_v(fake_nvml_cache: Path) -> None:  # noqa: F811
    seen = probe(build_fake_nvml(fake_nvml_cache, omit=["nvmlDeviceGetTemperatureV"]))
    assert [gpu["temperature_gpu_c"] for gpu in seen["samples"]] == [38.0, 39.0, 39.0, 39.0]


def test_no_library_is_a_clear_error() -> None:
    seen = probe("none")  # this machine has no NVIDIA driver: nothing named libnvidia-ml.so.1
    assert seen["error"] == "NvmlUnavailableError"
    assert "libnvidia-ml.so.1 was not found" in seen["message"]
    assert "--backend sim" in seen["message"]
