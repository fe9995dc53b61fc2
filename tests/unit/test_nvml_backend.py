"""NvmlBackend against the fake libnvidia-ml through the real pynvml: inventory, fast and slow
samples, power limits and lost GPUs."""

from __future__ import annotations

import pytest
from fakes.nvml.control import GPU_IS_LOST, NO_PERMISSION, FakeNvml
from fakes.nvml.fixtures import (  # noqa: F401
    ManualClock,
    fake_nvml,
    fake_nvml_cache,
    fake_nvml_path,
    make_backend,
    manual_clock,
    nvml_backend,
)

from agents.gpu import gb300
from agents.gpu.base import GpuBackend, InventoryWatcher, LibraryVersions, PowerLimitControl, XidEventSource
from agents.gpu.nvml import NvmlBackend, NvmlUnavailableError, PowerLimitError
from agents.protocol import GpuInventory, GpuProcess, GpuTelemetry, MigDevice

MIB = 2**20
IDLE_W = (180.36, 176.26, 175.92, 180.05)  # capture l.241, l.821, l.1401, l.1981
MODULE_W = (488.29, 486.30, 496.85, 494.32)
TEMP_GPU = (38.0, 39.0, 39.0, 39.0)
TEMP_MEMORY = (38.0, 38.0, 39.0, 39.0)


def uuid_of(index: int) -> str:
    return f"GPU-{index:08x}-0000-0000-0000-{index:012x}"


def expected_inventory(index: int) -> GpuInventory:
    return GpuInventory(
        index=index,
        uuid=uuid_of(index),
        name=gb300.PRODUCT_NAME,
        serial=str(1650000000001 + index // 2),
        pci_bus_id=gb300.pci_bus_id(index),
        memory_total_mib=gb300.MEMORY_TOTAL_MIB,
        power_limit_default_w=gb300.POWER_LIMIT_DEFAULT_W,
        power_limit_min_w=gb300.POWER_LIMIT_MIN_W,
        power_limit_max_w=gb300.POWER_LIMIT_MAX_W,
        fabric_cluster_uuid=gb300.FABRIC_CLUSTER_UUID,
        fabric_clique_id=gb300.FABRIC_CLIQUE_ID,
        fabric_state=gb300.FABRIC_STATE,
        module_id=gb300.module_id(index),
        pci_device_id="0x31C210DE",
        memory_reserved_mib=float(gb300.MEMORY_RESERVED_MIB),
        module_power_limit_w=gb300.MODULE_POWER_LIMIT_W,
        max_sm_clock_mhz=gb300.SM_CLOCK_MAX_MHZ,
        max_mem_clock_mhz=gb300.MEM_CLOCK_MHZ,
        chassis_serial="1820000000001",
        slot_number=25,
        tray_index=15,
        host_id=1,
        mig_mode=False,
        mig_devices=[],
    )


def expected_idle(index: int) -> GpuTelemetry:
    return GpuTelemetry(
        uuid=uuid_of(index),
        index=index,
        utilization_gpu_pct=0.0,
        utilization_memory_pct=0.0,
        memory_used_mib=0.0,
        memory_total_mib=float(gb300.MEMORY_TOTAL_MIB),
        power_w=IDLE_W[index],
        power_limit_w=gb300.POWER_LIMIT_DEFAULT_W,
        energy_mj=123456789 + index,
        temperature_gpu_c=TEMP_GPU[index],
        temperature_memory_c=TEMP_MEMORY[index],
        sm_clock_mhz=gb300.SM_CLOCK_IDLE_MHZ,
        mem_clock_mhz=gb300.MEM_CLOCK_MHZ,
        xid_last=None,
        xid_count=0,
        module_power_w=MODULE_W[index],
        memory_reserved_mib=float(gb300.MEMORY_RESERVED_MIB),
        clock_event_reasons=0x1,  # GPU idle (capture l.110)
        processes=[],
        nvlink_tx_kib=0,
        nvlink_rx_kib=0,
        ecc_volatile_sbe=0,
        ecc_volatile_dbe=0,
        ecc_aggregate_sbe=0,
        ecc_aggregate_dbe=0,
        remapped_rows_correctable=0,
        remapped_rows_uncorrectable=0,
        remapped_rows_pending=False,
        remapped_rows_failure=False,
        recovery_action=0,
        nvlink_links_up=18,
        nvlink_links_total=18,
        nvlink_errors=0,
        pcie_replay_count=0,
        fabric_state="completed",
        fabric_healthy=True,
        xid_counts={},
    )


def test_meets_the_backend_protocols(nvml_backend: NvmlBackend) -> None:  # noqa: F811
    backend: GpuBackend = nvml_backend
    assert backend.name == "nvml"
    for protocol in (PowerLimitControl, XidEventSource, InventoryWatcher, LibraryVersions):
        assert isinstance(nvml_backend, protocol)


def test_inventory_is_the_capture(nvml_backend: NvmlBackend) -> None:  # noqa: F811
    assert nvml_backend.inventory() == [expected_inventory(i) for i in range(4)]
    assert nvml_backend.memory_reserved_mib() == {uuid_of(i): 947.0 for i in range(4)}
    assert nvml_backend.driver_version() == gb300.DRIVER_VERSION
    assert nvml_backend.nvml_version() == "13.580.173.02"
    assert nvml_backend.cuda_driver_version() == 13000
    assert nvml_backend.inventory_changed() is False


def test_idle_sample_is_the_capture(nvml_backend: NvmlBackend) -> None:  # noqa: F811
    assert nvml_backend.sample() == [expected_idle(i) for i in range(4)]


def test_fast_fields_follow_the_fake(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    nvml_backend.sample()
    fake_nvml.set(
        2,
        util_gpu=97,
        util_mem=61,
        mem_used=200_000 * MIB,
        power_mw=1_234_567,
        module_power_mw=2_700_000,
        energy_mj=987_654_321,
        temp_gpu=71,
        temp_mem=66,
        clock_sm=1_980,
        clock_mem=3_996,
        clock_event_reasons=0x4,
        nvlink_tx_kib=5_000_000,
        nvlink_rx_kib=4_000_000,
        limit_mw=1_300_000,
    )
    fake_nvml.add_process(2, 4242, used_mib=190_000)
    gpu = nvml_backend.sample()[2]
    assert (gpu.utilization_gpu_pct, gpu.utilization_memory_pct) == (97.0, 61.0)
    assert (gpu.memory_used_mib, gpu.memory_total_mib, gpu.memory_reserved_mib) == (200_000.0, 284_208.0, 947.0)
    assert (gpu.power_w, gpu.module_power_w, gpu.power_limit_w) == (1234.567, 2700.0, 1300.0)
    assert gpu.energy_mj == 987_654_321
    assert (gpu.temperature_gpu_c, gpu.temperature_memory_c) == (71.0, 66.0)
    assert (gpu.sm_clock_mhz, gpu.mem_clock_mhz, gpu.clock_event_reasons) == (1980.0, 3996.0, 0x4)
    assert gpu.processes == [GpuProcess(pid=4242, used_memory_mib=190_000.0)]
    assert (gpu.nvlink_tx_kib, gpu.nvlink_rx_kib) == (5_000_000, 4_000_000)


def test_energy_counter_moves_only_when_set(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    before = nvml_backend.sample()[0].energy_mj
    assert before is not None and nvml_backend.sample()[0].energy_mj == before
    fake_nvml.set(0, energy_mj=before + 180_360)  # 1 s at idle
    assert nvml_backend.sample()[0].energy_mj == before + 180_360


def set_health(fake: FakeNvml, gpu: int) -> None:
    fake.set(
        gpu,
        ecc_sbe_volatile=11,
        ecc_dbe_volatile=1,
        ecc_sbe_aggregate=111,
        ecc_dbe_aggregate=2,
        remapped_cor=3,
        remapped_unc=1,
        remapped_pending=1,
        remapped_failure=0,
        recovery_action=3,
        nvlink_crc_flit_errors=5,
        nvlink_crc_data_errors=6,
        nvlink_replay_errors=7,
        nvlink_recovery_errors=8,
        pcie_replay=9,
        fabric_state=2,
        fabric_health_summary=2,
    )
    fake.set_nvlink_state(gpu, 4, 0)
    fake.set_nvlink_state(gpu, 5, 3)  # active but traffic disabled: not up


def test_slow_fields_refresh_on_the_slow_interval(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    nvml_backend.sample()
    set_health(fake_nvml, 1)
    manual_clock.advance(29.0)
    assert nvml_backend.sample()[1].ecc_volatile_sbe == 0  # the last slow values, repeated
    manual_clock.advance(1.0)
    gpu = nvml_backend.sample()[1]
    assert (gpu.ecc_volatile_sbe, gpu.ecc_volatile_dbe, gpu.ecc_aggregate_sbe, gpu.ecc_aggregate_dbe) == (11, 1, 111, 2)
    assert (gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable) == (3, 1)
    assert (gpu.remapped_rows_pending, gpu.remapped_rows_failure) == (True, False)
    assert gpu.recovery_action == 3
    assert (gpu.nvlink_links_up, gpu.nvlink_links_total, gpu.nvlink_errors) == (16, 18, 26)
    assert gpu.pcie_replay_count == 9
    assert (gpu.fabric_state, gpu.fabric_healthy) == ("in_progress", False)
    assert nvml_backend.sample()[1] == gpu  # and repeated until the next slow round


def test_fabric_health_from_the_mask_when_there_is_no_summary(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
) -> None:
    fake_nvml.set(0, fabric_health_summary=0, fabric_health_mask=0x19A)  # 0x1AA with route unhealthy = TRUE
    fake_nvml.set(1, fabric_health_summary=0)
    fake_nvml.set(2, fabric_health_summary=0, fabric_health_mask=0)
    fake_nvml.set(3, fabric_status=NO_PERMISSION)  # probe error on a completed fabric
    assert [gpu.fabric_healthy for gpu in nvml_backend.sample()] == [False, True, None, False]


def test_mig_devices_are_listed(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.set_mig(1, enabled=True, count=2)
    fake_nvml.set_mig(2, enabled=False, pending=True)
    backend = make_backend(manual_clock)
    try:
        inventory = backend.inventory()
    finally:
        backend.close()
    assert inventory[1].mig_mode is True
    assert inventory[1].mig_devices == [
        MigDevice(
            uuid=f"MIG-00000001-{k:04x}-0000-0000-{k:012x}",
            gpu_instance_id=k + 1,
            compute_instance_id=0,
            memory_total_mib=35 * 1024.0,
        )
        for k in range(2)
    ]
    assert (inventory[2].mig_mode, inventory[2].mig_devices) == (False, [])


def test_gpu_without_fabric_has_no_fabric_identity(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.set(0, fabric_state=0)  # NVML_GPU_FABRIC_STATE_NOT_SUPPORTED: the call fails
    fake_nvml.set(1, fabric_state=1)  # not started: no cluster yet
    backend = make_backend(manual_clock)
    try:
        inventory, sample = backend.inventory(), backend.sample()
    finally:
        backend.close()
    assert (inventory[0].fabric_cluster_uuid, inventory[0].fabric_clique_id, inventory[0].fabric_state) == (None,) * 3
    assert (inventory[1].fabric_cluster_uuid, inventory[1].fabric_clique_id) == (None, None)
    assert inventory[1].fabric_state == "not_started"
    assert (sample[0].fabric_state, sample[0].fabric_healthy) == (None, None)


def test_power_limit_is_set_and_read_back(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    uuid = uuid_of(0)
    assert nvml_backend.set_power_limit(uuid, 700.0) == 700.0
    assert fake_nvml.get(0, "limit_mw") == 700_000
    assert nvml_backend.sample()[0].power_limit_w == 700.0
    fake_nvml.set(0, external_limit_mw=600_000)  # enforced elsewhere: the read-back says so
    assert nvml_backend.set_power_limit(uuid, 800.0) == 600.0


def test_power_limit_is_clamped_to_the_constraints(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    assert nvml_backend.set_power_limit(uuid_of(1), 5000.0) == 1400.0
    assert nvml_backend.set_power_limit(uuid_of(1), 50.0) == 200.0
    assert fake_nvml.get(1, "limit_mw") == 200_000


def test_refused_power_limit_raises(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceSetPowerManagementLimit", NO_PERMISSION)
    with pytest.raises(PowerLimitError, match="Insufficient Permissions"):
        nvml_backend.set_power_limit(uuid_of(0), 700.0)
    assert fake_nvml.get(0, "limit_mw") == 1_400_000
    with pytest.raises(KeyError):
        nvml_backend.set_power_limit("GPU-nope", 700.0)


def test_lost_gpu_leaves_reports_and_comes_back(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    nvml_backend.sample()
    fake_nvml.lose_gpu(2)
    assert [gpu.index for gpu in nvml_backend.sample()] == [0, 1, 3]
    assert [gpu.index for gpu in nvml_backend.inventory()] == [0, 1, 3]
    assert uuid_of(2) not in nvml_backend.memory_reserved_mib()
    assert nvml_backend.inventory_changed() is True
    assert nvml_backend.inventory_changed() is False  # reported once
    manual_clock.advance(30.0)
    assert len(nvml_backend.sample()) == 3  # still lost at the next rescan
    assert nvml_backend.inventory_changed() is False
    fake_nvml.restore_gpu(2)
    manual_clock.advance(30.0)
    assert [gpu.index for gpu in nvml_backend.sample()] == [0, 1, 2, 3]
    assert nvml_backend.inventory_changed() is True
    assert nvml_backend.inventory() == [expected_inventory(i) for i in range(4)]


def test_dropped_gpu_shifts_the_indices(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    nvml_backend.sample()
    fake_nvml.lose_gpu(1, drop=True)
    manual_clock.advance(30.0)
    sample = nvml_backend.sample()
    assert [(gpu.index, gpu.uuid) for gpu in sample] == [(0, uuid_of(0)), (1, uuid_of(2)), (2, uuid_of(3))]
    assert [(gpu.index, gpu.uuid) for gpu in nvml_backend.inventory()] == [(g.index, g.uuid) for g in sample]
    assert nvml_backend.inventory_changed() is True


def test_gpu_lost_before_start_is_left_out(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.lose_gpu(0)
    backend = make_backend(manual_clock)
    try:
        assert [gpu.uuid for gpu in backend.inventory()] == [uuid_of(i) for i in (1, 2, 3)]
        assert len(backend.sample()) == 3
    finally:
        backend.close()


def test_gpu_lost_while_setting_power(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlDeviceSetPowerManagementLimit", GPU_IS_LOST, gpu=3)
    with pytest.raises(PowerLimitError):
        nvml_backend.set_power_limit(uuid_of(3), 700.0)
    assert nvml_backend.inventory_changed() is True
    assert len(nvml_backend.inventory()) == 3


def test_driver_not_loaded_is_explained(fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.fail("nvmlInitWithFlags", 9)  # NVML_ERROR_DRIVER_NOT_LOADED
    with pytest.raises(NvmlUnavailableError, match="kernel driver is not loaded"):
        NvmlBackend()


def test_close_shuts_nvml_down(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    before = fake_nvml.init_count()
    backend = make_backend(manual_clock)
    assert fake_nvml.init_count() == before + 1
    backend.close()
    backend.close()  # idempotent
    assert fake_nvml.init_count() == before
