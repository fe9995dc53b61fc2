"""The simulated GB300: capture values, power/thermal physics and an exact energy counter.

All time comes from an injected clock, so nothing here sleeps.
"""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from agents.gpu import gb300
from agents.gpu.base import GpuBackend, LoadDriver, PowerLimitControl
from agents.gpu.sim import THERMAL_TIME_CONSTANT_S, SimBackend
from agents.protocol import GpuTelemetry


class FakeClock:
    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(clock: FakeClock, **kwargs: Any) -> SimBackend:
    return SimBackend(clock=clock, **kwargs)


def run(backend: SimBackend, clock: FakeClock, seconds: int, step: float = 1.0) -> list[list[GpuTelemetry]]:
    out = []
    for _ in range(int(seconds / step)):
        clock.advance(step)
        out.append(backend.sample())
    return out


def test_is_a_gpu_backend_with_load_and_power_control() -> None:
    backend: GpuBackend = SimBackend()
    assert backend.name == "sim"
    assert isinstance(backend, LoadDriver)
    assert isinstance(backend, PowerLimitControl)


def test_inventory_matches_the_capture() -> None:
    backend = SimBackend()
    inv = backend.inventory()
    assert backend.driver_version() == "580.173.02"
    assert [g.index for g in inv] == [0, 1, 2, 3]
    assert {g.name for g in inv} == {"NVIDIA GB300"}
    assert {g.memory_total_mib for g in inv} == {284208}
    assert set(backend.memory_reserved_mib().values()) == {947.0}
    assert {(g.power_limit_default_w, g.power_limit_min_w, g.power_limit_max_w) for g in inv} == {
        (1400.0, 200.0, 1400.0)
    }
    assert [g.pci_bus_id for g in inv] == [
        "00000008:06:00.0",
        "00000009:06:00.0",
        "00000018:06:00.0",
        "00000019:06:00.0",
    ]
    assert [g.module_id for g in inv] == [2, 1, 4, 3]
    assert {(g.fabric_state, g.fabric_clique_id, g.fabric_cluster_uuid) for g in inv} == {
        ("completed", 32766, "00000001-0000-0000-0000-000000000001")
    }
    serials = [g.serial for g in inv]
    assert serials[0] == serials[1] != serials[2] == serials[3]  # one board serial per superchip
    assert all(s is not None and len(s) == 13 for s in serials)


def test_idle_sample_matches_the_capture() -> None:
    clock = FakeClock()
    backend = make(clock)
    for gpus in run(backend, clock, 30):
        for gpu in gpus:
            assert gpu.power_w is not None and 175.0 <= gpu.power_w <= 185.0
            assert gpu.temperature_gpu_c in (38.0, 39.0)
            assert gpu.temperature_memory_c in (38.0, 39.0)
            assert gpu.sm_clock_mhz == 120.0
            assert gpu.mem_clock_mhz == 3996.0
            assert gpu.utilization_gpu_pct == 0.0
            assert gpu.memory_used_mib == 0.0
            assert gpu.memory_total_mib == 284208.0
            assert gpu.power_limit_w == 1400.0
            assert gpu.xid_last == 0 and gpu.xid_count == 0


def test_identities_are_unique_across_a_rack_and_across_racks_and_stable() -> None:
    racks = ["rack-a-cluster-uuid", "rack-b-cluster-uuid"]
    uuids = [
        g.uuid
        for cluster in racks
        for node in range(18)
        for g in SimBackend(node_index=node, cluster_uuid=cluster).inventory()
    ]
    assert len(uuids) == len(set(uuids)) == 2 * 18 * 4
    assert all(u.startswith("GPU-") for u in uuids)
    again = SimBackend(node_index=5, cluster_uuid="rack-b-cluster-uuid").inventory()
    assert [g.uuid for g in again] == uuids[(18 + 5) * 4 : (18 + 6) * 4]


def test_load_drives_power_towards_the_limit_and_never_above() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[0].uuid
    backend.set_load(uuid, 1.0, 200_000)
    powers = [gpus[0].power_w for gpus in run(backend, clock, 300)]
    assert all(p is not None and p <= 1400.0 for p in powers)
    assert statistics.mean(p for p in powers if p is not None) > 1380.0
    last = backend.sample()[0]
    assert last.utilization_gpu_pct == 100.0
    assert last.memory_used_mib == 200_000.0
    assert last.sm_clock_mhz is not None and 1800.0 <= last.sm_clock_mhz <= 2070.0


def test_power_rises_with_load() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[0].uuid
    means = []
    for load in (0.0, 0.25, 0.5, 0.75, 0.95):
        backend.set_load(uuid, load, 0.0)
        means.append(statistics.mean(g[0].power_w or 0.0 for g in run(backend, clock, 50)))
    assert means == sorted(means)
    assert means[0] < 190.0 and means[-1] > 1300.0


def test_lowered_power_limit_caps_power_and_clocks() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[1].uuid
    assert backend.set_power_limit(uuid, 700.0) == 700.0
    backend.set_load(uuid, 1.0, 0.0)
    samples = [g[1] for g in run(backend, clock, 100)]
    assert all(s.power_w is not None and s.power_w <= 700.0 for s in samples)
    assert samples[-1].power_w is not None and samples[-1].power_w > 690.0
    assert samples[-1].power_limit_w == 700.0
    assert samples[-1].sm_clock_mhz is not None and samples[-1].sm_clock_mhz < 1100.0
    # The hardware clamps to its constraints and the read-back says so.
    assert backend.set_power_limit(uuid, 50.0) == 200.0
    assert backend.set_power_limit(uuid, 5000.0) == 1400.0


def test_energy_counter_is_the_exact_integral_of_reported_power() -> None:
    clock = FakeClock()
    backend = make(clock, seed=7)
    uuid = backend.inventory()[0].uuid
    first = backend.sample()
    prev_power_mw = [round((g.power_w or 0.0) * 1000) for g in first]
    start = [g.energy_mj or 0 for g in first]
    expected = [0.0] * 4
    # Dyadic steps are exact in binary floating point, so the comparison is exact to the mJ.
    steps = [1.0, 0.5, 2.0, 0.25, 3.0, 0.125, 1.0] * 60
    for i, dt in enumerate(steps):
        if i == 100:
            backend.set_load(uuid, 0.8, 1000.0)
        if i == 250:
            backend.set_power_limit(uuid, 400.0)
        clock.advance(dt)
        gpus = backend.sample()
        for j, gpu in enumerate(gpus):
            expected[j] += prev_power_mw[j] * dt
            assert gpu.energy_mj == start[j] + int(expected[j])  # floor: never ahead, never drifts
            prev_power_mw[j] = round((gpu.power_w or 0.0) * 1000)


def test_energy_counter_never_goes_backwards_and_ignores_a_standing_clock() -> None:
    clock = FakeClock()
    backend = make(clock)
    clock.advance(10)
    a = backend.sample()[0].energy_mj
    b = backend.sample()[0].energy_mj  # same instant: nothing to integrate
    clock.advance(-5)  # a clock stepping back must not subtract energy
    c = backend.sample()[0].energy_mj
    assert a is not None and a == b == c
    assert 10 * 175_000 <= a <= 10 * 186_000


def test_temperature_lags_power_and_falls_back() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[2].uuid
    idle = backend.sample()[2].temperature_gpu_c
    assert idle is not None
    backend.set_load(uuid, 1.0, 0.0)
    heating = [g[2].temperature_gpu_c or 0.0 for g in run(backend, clock, 600)]
    assert heating == sorted(heating)  # monotone rise
    steady = heating[-1]
    assert steady > idle + 25.0
    at_tau = heating[int(THERMAL_TIME_CONSTANT_S) - 1]
    # First order: about 63% of the way after one time constant.
    assert 0.5 < (at_tau - idle) / (steady - idle) < 0.75
    assert heating[4] < idle + 0.2 * (steady - idle)  # no jump: it lags
    backend.clear_load(uuid)
    cooling = [g[2].temperature_gpu_c or 0.0 for g in run(backend, clock, 600)]
    falling = [t for t in cooling if t > idle + 1.0]  # near idle, power noise may flip a rounding
    assert falling == sorted(falling, reverse=True)
    assert cooling[-1] <= idle + 1.0


def test_same_seed_same_samples_different_seed_different_noise() -> None:
    def trace(seed: int) -> list[float | None]:
        clock = FakeClock()
        backend = make(clock, seed=seed)
        return [g[0].power_w for g in run(backend, clock, 20)]

    assert trace(1) == trace(1)
    assert trace(1) != trace(2)


def test_injected_xid_is_reported_and_counted() -> None:
    backend = SimBackend()
    uuid = backend.inventory()[3].uuid
    backend.inject_xid(uuid, 79)
    backend.inject_xid(uuid, 48)
    gpu = backend.sample()[3]
    assert (gpu.xid_last, gpu.xid_count) == (48, 2)


def test_unknown_gpu_is_a_key_error_and_bad_counts_are_refused() -> None:
    backend = SimBackend()
    with pytest.raises(KeyError):
        backend.set_load("GPU-nope", 0.5, 0.0)
    with pytest.raises(ValueError):
        SimBackend(0)


def test_gb300_patterns_generalise_beyond_four_gpus() -> None:
    assert gb300.pci_bus_id(4) == "00000028:06:00.0"
    assert [gb300.module_id(i) for i in range(6)] == [2, 1, 4, 3, 6, 5]


def test_inventory_has_every_field_the_nvml_backend_fills() -> None:
    inv = SimBackend().inventory()
    for gpu in inv:
        assert [k for k, v in gpu.model_dump().items() if v is None] == []
        assert gpu.pci_device_id == "0x31C210DE"
        assert gpu.memory_reserved_mib == 947.0
        assert gpu.module_power_limit_w == 2900.0
        assert (gpu.max_sm_clock_mhz, gpu.max_mem_clock_mhz) == (2070.0, 3996.0)
        assert gpu.host_id == 1
        assert gpu.mig_mode is False and gpu.mig_devices == []
    chassis = {g.chassis_serial for g in inv}
    assert len(chassis) == 1 and all(c is not None and len(c) == 13 and c.startswith("18") for c in chassis)


def test_platform_info_places_trays_in_a_rack_like_the_capture() -> None:
    def platform(node: int, cluster: str = "rack-a") -> tuple[str | None, int | None, int | None]:
        gpu = SimBackend(node_index=node, cluster_uuid=cluster).inventory()[0]
        return gpu.chassis_serial, gpu.slot_number, gpu.tray_index

    serial, slot, tray = platform(15)
    assert (slot, tray) == (25, 15)  # the capture's tray (l.42-l.43)
    assert platform(0)[1:] == (1, 0)
    assert platform(9)[1:] == (10, 9)
    assert platform(10)[1:] == (20, 10)  # below the nine NVSwitch trays
    assert platform(0)[0] == serial  # one chassis serial per rack of 18 trays
    assert platform(18)[0] != serial and platform(18)[1:] == (1, 0)
    assert platform(15, "rack-b")[0] != serial


def test_idle_telemetry_has_every_field_with_the_capture_values() -> None:
    clock = FakeClock()
    backend = make(clock)
    clock.advance(1)
    for gpu in backend.sample():
        assert [k for k, v in gpu.model_dump().items() if v is None] == []
        assert gpu.module_power_w is not None and 480.0 <= gpu.module_power_w <= 505.0  # capture: 486-497 W
        assert gpu.memory_reserved_mib == 947.0
        assert gpu.clock_event_reasons == 0x1  # GpuIdle
        assert gpu.processes == []
        assert (gpu.nvlink_tx_kib, gpu.nvlink_rx_kib) == (0, 0)
        ecc = (gpu.ecc_volatile_sbe, gpu.ecc_volatile_dbe, gpu.ecc_aggregate_sbe, gpu.ecc_aggregate_dbe)
        assert ecc == (0, 0, 0, 0)
        assert (gpu.remapped_rows_correctable, gpu.remapped_rows_uncorrectable) == (0, 0)
        assert gpu.remapped_rows_pending is False and gpu.remapped_rows_failure is False
        assert gpu.recovery_action == 0
        assert (gpu.nvlink_links_up, gpu.nvlink_links_total, gpu.nvlink_errors) == (18, 18, 0)
        assert gpu.pcie_replay_count == 0
        assert (gpu.fabric_state, gpu.fabric_healthy) == ("completed", True)
        assert gpu.xid_counts == {}


def test_clock_event_reasons_follow_load_and_the_cap() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[0].uuid
    backend.set_load(uuid, 0.5, 0.0)
    assert run(backend, clock, 3)[-1][0].clock_event_reasons == 0x0  # busy, under the limit
    backend.set_load(uuid, 1.0, 0.0)
    assert run(backend, clock, 3)[-1][0].clock_event_reasons == 0x4  # SwPowerCap
    backend.set_power_limit(uuid, 600.0)
    backend.set_load(uuid, 0.5, 0.0)
    assert run(backend, clock, 3)[-1][0].clock_event_reasons == 0x4
    backend.clear_load(uuid)
    assert run(backend, clock, 3)[-1][0].clock_event_reasons == 0x1


def test_module_power_is_gpu_power_plus_the_grace_share_and_stays_under_the_module_limit() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[0].uuid
    backend.set_load(uuid, 1.0, 0.0)
    for gpus in run(backend, clock, 30):
        gpu = gpus[0]
        assert gpu.module_power_w is not None and gpu.power_w is not None
        assert 300.0 < gpu.module_power_w - gpu.power_w < 400.0
        assert gpu.module_power_w <= 2900.0


def test_nvlink_counters_grow_with_load_as_the_integral_of_the_held_rate() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[1].uuid
    idle = run(backend, clock, 10)[-1][1]
    assert (idle.nvlink_tx_kib, idle.nvlink_rx_kib) == (0, 0)
    backend.set_load(uuid, 0.5, 0.0)
    samples = [g[1] for g in run(backend, clock, 20)]
    tx = [s.nvlink_tx_kib or 0 for s in samples]
    assert tx == sorted(tx) and tx[-1] > 0
    assert samples[-1].nvlink_rx_kib == samples[-1].nvlink_tx_kib
    # 19 one-second steps at the held rate: 900 GB/s x 25% x 50% per direction.
    rate = 900e9 / 1024 * 0.25 * 0.5
    assert tx[-1] - tx[0] == pytest.approx(19 * rate, rel=1e-9, abs=1)
    backend.set_load(uuid, 1.0, 0.0)
    busy = [g[1].nvlink_tx_kib or 0 for g in run(backend, clock, 5)]
    assert busy[-1] - busy[-2] > rate  # more load, more traffic


def test_processes_are_what_the_daemon_says_runs_on_the_gpu() -> None:
    clock = FakeClock()
    backend = make(clock)
    uuid = backend.inventory()[2].uuid
    backend.set_load(uuid, 0.9, 90_000.0)
    backend.set_processes(uuid, [101, 202, 101])
    gpu = backend.sample()[2]
    assert [(p.pid, p.used_memory_mib) for p in gpu.processes or []] == [(101, 45_000.0), (202, 45_000.0)]
    backend.set_processes(uuid, [303], used_mib=1234.0)
    assert [(p.pid, p.used_memory_mib) for p in backend.sample()[2].processes or []] == [(303, 1234.0)]
    backend.set_processes(uuid, [])
    assert backend.sample()[2].processes == []
    assert backend.sample()[0].processes == []
