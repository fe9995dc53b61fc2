"""Whatever a GPU or driver cannot answer becomes None ("absent"), never a crash; calls that fail
for good are not retried. Failures are injected at run time here; symbols missing from the
library are in test_nvml_backend_variants.py."""

from __future__ import annotations

import pytest
from fakes.nvml.control import NO_PERMISSION, NOT_SUPPORTED, UNKNOWN, FakeNvml
from fakes.nvml.fixtures import (  # noqa: F401
    ManualClock,
    fake_nvml,
    fake_nvml_cache,
    fake_nvml_path,
    make_backend,
    manual_clock,
    nvml_backend,
)

from agents.gpu.nvml import NvmlBackend

ECC = ["ecc_volatile_sbe", "ecc_volatile_dbe", "ecc_aggregate_sbe", "ecc_aggregate_dbe"]
ROWS = ["remapped_rows_correctable", "remapped_rows_uncorrectable", "remapped_rows_pending", "remapped_rows_failure"]
FIELDS = ["module_power_w", "temperature_memory_c", "nvlink_tx_kib", "nvlink_rx_kib", "recovery_action"]
LINKS = ["nvlink_links_up", "nvlink_links_total", "nvlink_errors"]

SAMPLE_CALLS = [
    ("nvmlDeviceGetUtilizationRates", ["utilization_gpu_pct", "utilization_memory_pct"]),
    ("nvmlDeviceGetEnforcedPowerLimit", ["power_limit_w"]),
    ("nvmlDeviceGetTotalEnergyConsumption", ["energy_mj"]),
    ("nvmlDeviceGetClockInfo", ["sm_clock_mhz", "mem_clock_mhz"]),
    ("nvmlDeviceGetCurrentClocksEventReasons", ["clock_event_reasons"]),
    ("nvmlDeviceGetComputeRunningProcesses_v3", ["processes"]),
    ("nvmlDeviceGetTotalEccErrors", ECC),
    ("nvmlDeviceGetRemappedRows", ROWS),
    ("nvmlDeviceGetPcieReplayCounter", ["pcie_replay_count"]),
    ("nvmlDeviceGetGpuFabricInfoV", ["fabric_state", "fabric_healthy"]),
    # The link count and states then come from nvmlDeviceGetNvLinkState, one link at a time.
    ("nvmlDeviceGetFieldValues", [*FIELDS, "nvlink_errors"]),
]


@pytest.mark.parametrize("code", [NOT_SUPPORTED, NO_PERMISSION])
@pytest.mark.parametrize(("function", "absent"), SAMPLE_CALLS, ids=[c[0] for c in SAMPLE_CALLS])
def test_unsupported_call_is_absent_and_not_retried(
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
    function: str,
    absent: list[str],
    code: int,
) -> None:
    fake_nvml.fail(function, code, gpu=1)
    backend = make_backend(manual_clock)
    try:
        first = backend.sample()
        calls = fake_nvml.calls(function)
        manual_clock.advance(30.0)  # a slow round too
        second = backend.sample()
    finally:
        backend.close()
    for sample in (first, second):
        assert [name for name in absent if getattr(sample[1], name) is not None] == []
        assert all(getattr(sample[0], name) is not None for name in absent)  # other GPUs unaffected
    assert fake_nvml.calls(function) - calls == _calls_for_healthy_gpus(function)


def _calls_for_healthy_gpus(function: str) -> int:
    """Calls the second round makes for GPUs 0, 2 and 3 only: GPU 1 is never asked again."""
    per_gpu = {
        "nvmlDeviceGetClockInfo": 2,
        "nvmlDeviceGetTotalEccErrors": 4,
        "nvmlDeviceGetFieldValues": 3,  # fast fields, link count, link fields
    }
    return 3 * per_gpu.get(function, 1)


def test_transient_failure_is_absent_and_retried(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceGetUtilizationRates", UNKNOWN, gpu=0)
    assert nvml_backend.sample()[0].utilization_gpu_pct is None
    fake_nvml.heal("nvmlDeviceGetUtilizationRates", gpu=0)
    fake_nvml.set(0, util_gpu=55)
    assert nvml_backend.sample()[0].utilization_gpu_pct == 55.0


def test_power_falls_back_to_get_power_usage(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail_field(0, 185)
    fake_nvml.set(0, power_mw=300_000, module_power_instant_mw=600_000)
    gpu = nvml_backend.sample()[0]
    assert (gpu.power_w, gpu.module_power_w) == (300.0, 600.0)  # module: the instant reading
    fake_nvml.fail("nvmlDeviceGetPowerUsage", gpu=0)
    fake_nvml.fail_field(0, 186)
    gpu = nvml_backend.sample()[0]
    assert (gpu.power_w, gpu.module_power_w) == (None, None)


def test_field_entries_degrade_one_by_one(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail_field(2, 82)
    fake_nvml.fail_field(2, 138)  # data counters missing: the raw ones stand in
    fake_nvml.fail_field(2, 230)
    fake_nvml.set(2, nvlink_raw_tx_kib=123, nvlink_rx_kib=45)
    gpu = nvml_backend.sample()[2]
    assert (gpu.temperature_memory_c, gpu.recovery_action) == (None, None)
    assert (gpu.nvlink_tx_kib, gpu.nvlink_rx_kib, gpu.temperature_gpu_c) == (123, 45, 39.0)


def test_link_states_unreadable(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail_field(0, 165)
    fake_nvml.fail_field(1, 91)
    sample = nvml_backend.sample()
    assert (sample[0].nvlink_links_up, sample[0].nvlink_links_total) == (None, 18)
    # No field 91: the links nvmlDeviceGetNvLinkState answers for (up to NVML_NVLINK_MAX_LINKS).
    assert (sample[1].nvlink_links_up, sample[1].nvlink_links_total) == (18, 18)
    assert sample[1].nvlink_errors == 0


def test_gpu_temperature_falls_back_to_the_old_call(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceGetTemperatureV", gpu=0)
    assert nvml_backend.sample()[0].temperature_gpu_c == 38.0
    fake_nvml.fail("nvmlDeviceGetTemperature", gpu=0)
    assert nvml_backend.sample()[0].temperature_gpu_c is None


def test_memory_v1_when_v2_is_missing(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceGetMemoryInfo_v2", gpu=0)
    gpu = nvml_backend.sample()[0]
    # v1 counts the driver's reserve as used; there is no reserve figure to take off.
    assert (gpu.memory_used_mib, gpu.memory_total_mib, gpu.memory_reserved_mib) == (947.0, 284208.0, None)
    fake_nvml.fail("nvmlDeviceGetMemoryInfo", gpu=0)
    gpu = nvml_backend.sample()[0]
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (None, None)


INVENTORY_CALLS = [
    ("nvmlDeviceGetSerial", ["serial"]),
    ("nvmlDeviceGetPciInfo_v3", ["pci_bus_id", "pci_device_id"]),
    ("nvmlDeviceGetPowerManagementLimitConstraints", ["power_limit_min_w", "power_limit_max_w"]),
    ("nvmlDeviceGetPowerManagementDefaultLimit", ["power_limit_default_w"]),
    ("nvmlDeviceGetMaxClockInfo", ["max_sm_clock_mhz", "max_mem_clock_mhz"]),
    ("nvmlDeviceGetPlatformInfo", ["chassis_serial", "slot_number", "tray_index", "host_id"]),
    ("nvmlDeviceGetGpuFabricInfoV", ["fabric_cluster_uuid", "fabric_clique_id", "fabric_state"]),
    ("nvmlDeviceGetMigMode", ["mig_mode"]),
    ("nvmlDeviceGetFieldValues", ["module_power_limit_w"]),
]


@pytest.mark.parametrize(("function", "absent"), INVENTORY_CALLS, ids=[c[0] for c in INVENTORY_CALLS])
def test_inventory_fields_degrade(
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
    function: str,
    absent: list[str],
) -> None:
    fake_nvml.fail(function, gpu=3)
    backend = make_backend(manual_clock)
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    assert [name for name in absent if getattr(inventory[3], name) is not None] == []
    assert all(getattr(inventory[0], name) is not None for name in absent)


def test_module_id_falls_back_without_platform_info(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceGetPlatformInfo")
    backend = make_backend(manual_clock)
    try:
        assert [gpu.module_id for gpu in backend.inventory()] == [2, 1, 4, 3]
    finally:
        backend.close()


def test_system_versions_degrade(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    for function in ("nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion", "nvmlSystemGetCudaDriverVersion"):
        fake_nvml.fail(function)
    backend = make_backend(manual_clock)
    try:
        assert (backend.driver_version(), backend.nvml_version(), backend.cuda_driver_version()) == (None,) * 3
        assert len(backend.sample()) == 4
    finally:
        backend.close()
