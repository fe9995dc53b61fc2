"""Injected faults in the simulated GB300, and the recovery the health policy must see.

All time comes from an injected clock; nothing sleeps.
"""

from __future__ import annotations

import pytest

from agents.gpu.sim import MAX_QUEUED_EVENTS, SimBackend
from agents.health import GpuHealthTracker, Reading
from agents.protocol import GpuHealthState, GpuTelemetry, HealthAction


class FakeClock:
    def __init__(self, start: float = 1_760_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def tick(backend: SimBackend, clock: FakeClock, seconds: float = 1.0) -> dict[str, GpuTelemetry]:
    clock.advance(seconds)
    return {g.uuid: g for g in backend.sample()}


def reading(gpu: GpuTelemetry) -> Reading:
    return Reading(
        energy_mj=gpu.energy_mj,
        recovery_action=gpu.recovery_action,
        remapped_rows_pending=gpu.remapped_rows_pending,
        remapped_rows_failure=gpu.remapped_rows_failure,
        ecc_volatile_dbe=gpu.ecc_volatile_dbe,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend(clock: FakeClock) -> SimBackend:
    return SimBackend(clock=clock, seed=11)


def test_injected_xids_are_queued_as_events_and_counted(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[1].uuid
    backend.inject_xid(uuid, 13, "illegal address")
    clock.advance(2.5)
    backend.inject_xid(uuid, 13)
    backend.inject_xid(uuid, 31)
    events = backend.drain_events()
    assert [(e.uuid, e.xid, e.detail) for e in events] == [
        (uuid, 13, "illegal address"),
        (uuid, 13, None),
        (uuid, 31, None),
    ]
    assert events[1].at - events[0].at == 2.5
    assert backend.drain_events() == []
    gpu = tick(backend, clock)[uuid]
    assert (gpu.xid_last, gpu.xid_count, gpu.xid_counts) == (31, 3, {13: 2, 31: 1})


def test_the_event_queue_is_bounded_but_counts_are_not(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[0].uuid
    for _ in range(MAX_QUEUED_EVENTS + 10):
        backend.inject_xid(uuid, 92)
    assert len(backend.drain_events()) == MAX_QUEUED_EVENTS
    assert tick(backend, clock)[uuid].xid_counts == {92: MAX_QUEUED_EVENTS + 10}


def test_single_bit_errors_are_counted_only(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[0].uuid
    backend.inject_single_bit_error(uuid)
    backend.inject_single_bit_error(uuid)
    gpu = tick(backend, clock)[uuid]
    assert (gpu.ecc_volatile_sbe, gpu.ecc_aggregate_sbe, gpu.ecc_volatile_dbe) == (2, 2, 0)
    assert gpu.remapped_rows_pending is False
    assert backend.drain_events() == []


def test_a_double_bit_error_leaves_a_remap_pending_until_a_reset_and_the_policy_sees_recovery(
    backend: SimBackend, clock: FakeClock
) -> None:
    uuid = backend.inventory()[2].uuid
    tracker = GpuHealthTracker()
    gpu = tick(backend, clock)[uuid]
    assert tracker.observe(now=clock(), reading=reading(gpu)).health is GpuHealthState.HEALTHY

    backend.inject_double_bit_error(uuid)
    events = backend.drain_events()
    assert [(e.uuid, e.xid) for e in events] == [(uuid, 48)]
    for _ in range(3):  # the condition holds, sample after sample
        gpu = tick(backend, clock)[uuid]
        assert (gpu.ecc_volatile_dbe, gpu.ecc_aggregate_dbe, gpu.remapped_rows_uncorrectable) == (1, 1, 1)
        assert gpu.remapped_rows_pending is True
        verdict = tracker.observe(now=clock(), events=events, reading=reading(gpu))
        events = []
        assert verdict.health is GpuHealthState.UNHEALTHY and verdict.action is HealthAction.RESET_GPU
    energy_before = gpu.energy_mj or 0

    backend.reset_gpu(uuid)
    gpu = tick(backend, clock)[uuid]
    assert (gpu.energy_mj or 0) < energy_before  # the counter restarted: the policy's reset signal
    assert (gpu.ecc_volatile_dbe, gpu.ecc_aggregate_dbe, gpu.remapped_rows_uncorrectable) == (0, 1, 1)
    assert gpu.remapped_rows_pending is False
    assert tracker.observe(now=clock(), reading=reading(gpu)).health is GpuHealthState.HEALTHY


def test_a_recovery_action_comes_with_xid_154_and_clears_on_reset(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[3].uuid
    tracker = GpuHealthTracker()
    backend.set_recovery_action(uuid, 1)
    events = backend.drain_events()
    assert [(e.xid, e.detail) for e in events] == [(154, "GPU recovery action 1")]
    gpu = tick(backend, clock)[uuid]
    assert gpu.recovery_action == 1
    verdict = tracker.observe(now=clock(), events=events, reading=reading(gpu))
    assert (verdict.health, verdict.action) == (GpuHealthState.UNHEALTHY, HealthAction.RESET_GPU)
    backend.reset_gpu(uuid)
    gpu = tick(backend, clock)[uuid]
    assert gpu.recovery_action == 0
    verdict = tracker.observe(now=clock(), reading=reading(gpu))
    # Field 230 reads 0 after the reset: both it and XID 154 ("read field 230") are settled.
    assert (verdict.health, verdict.action, verdict.reasons) == (GpuHealthState.HEALTHY, HealthAction.NONE, ())
    with pytest.raises(ValueError):
        backend.set_recovery_action(uuid, 8)
    backend.set_recovery_action(uuid, 0)
    assert backend.drain_events() == []  # clearing raises nothing


def test_a_failed_row_remap_survives_a_reset(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[0].uuid
    backend.fail_row_remap(uuid)
    assert [e.xid for e in backend.drain_events()] == [64]
    backend.reset_gpu(uuid)
    assert tick(backend, clock)[uuid].remapped_rows_failure is True


def test_degraded_nvlink_is_unhealthy_fabric_until_a_reset(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[1].uuid
    backend.set_nvlink_links_up(uuid, 16)
    gpu = tick(backend, clock)[uuid]
    assert (gpu.nvlink_links_up, gpu.nvlink_links_total, gpu.nvlink_errors, gpu.fabric_healthy) == (16, 18, 2, False)
    backend.reset_gpu(uuid)
    gpu = tick(backend, clock)[uuid]
    assert (gpu.nvlink_links_up, gpu.nvlink_errors, gpu.fabric_healthy) == (18, 0, True)
    with pytest.raises(ValueError):
        backend.set_nvlink_links_up(uuid, 19)


def test_a_lost_gpu_leaves_inventory_and_samples_and_comes_back_with_fresh_counters(
    backend: SimBackend, clock: FakeClock
) -> None:
    uuids = [g.uuid for g in backend.inventory()]
    assert backend.inventory_changed() is False
    before = tick(backend, clock, 10.0)[uuids[2]].energy_mj or 0
    backend.lose_gpu(uuids[2])
    assert [(e.uuid, e.xid) for e in backend.drain_events()] == [(uuids[2], 79)]
    assert backend.inventory_changed() is True
    assert backend.inventory_changed() is False  # once
    assert [g.uuid for g in backend.inventory()] == [uuids[0], uuids[1], uuids[3]]
    assert list(tick(backend, clock)) == [uuids[0], uuids[1], uuids[3]]
    assert uuids[2] not in backend.memory_reserved_mib()
    assert [g.index for g in backend.inventory()] == [0, 1, 3]  # the others keep their index
    backend.set_load(uuids[2], 0.5, 10.0)  # the daemon's housekeeping must not fail on it
    backend.lose_gpu(uuids[2])  # idempotent: no second event or change
    assert backend.drain_events() == [] and backend.inventory_changed() is False

    backend.restore_gpu(uuids[2])
    assert backend.inventory_changed() is True and backend.inventory_changed() is False
    assert [g.uuid for g in backend.inventory()] == uuids
    gpu = tick(backend, clock, 1.0)[uuids[2]]
    assert 0 < (gpu.energy_mj or 0) < before
    assert gpu.utilization_gpu_pct == 50.0  # the load set while it was away applies now


def test_reset_zeroes_energy_and_the_counter_stays_the_exact_integral(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[0].uuid
    backend.set_load(uuid, 0.7, 0.0)
    tick(backend, clock, 5.0)
    held_mw = round((tick(backend, clock, 1.0)[uuid].power_w or 0.0) * 1000)
    clock.advance(0.5)
    backend.reset_gpu(uuid)
    gpu = tick(backend, clock, 2.0)[uuid]
    assert gpu.energy_mj == int(held_mw * 2.0)  # only what was drawn after the reset


def test_reset_restores_the_default_power_limit_and_keeps_xid_counts(backend: SimBackend, clock: FakeClock) -> None:
    uuid = backend.inventory()[0].uuid
    backend.set_power_limit(uuid, 500.0)
    backend.inject_xid(uuid, 13)
    backend.reset_gpu(uuid)
    gpu = tick(backend, clock)[uuid]
    assert gpu.power_limit_w == 1400.0
    assert (gpu.xid_count, gpu.xid_counts) == (1, {13: 1})


def test_a_driver_reload_resets_every_gpu_on_the_bus_and_a_lost_one_stays_lost(
    backend: SimBackend, clock: FakeClock
) -> None:
    uuids = [g.uuid for g in backend.inventory()]
    for uuid in uuids:
        backend.inject_double_bit_error(uuid)
    backend.set_recovery_action(uuids[1], 2)
    before = tick(backend, clock, 30.0)
    backend.lose_gpu(uuids[3])
    backend.inventory_changed()
    backend.reload_driver()
    after = tick(backend, clock, 1.0)
    assert list(after) == uuids[:3]
    assert backend.inventory_changed() is False
    for uuid in uuids[:3]:
        assert (after[uuid].energy_mj or 0) < (before[uuid].energy_mj or 0)
        assert (after[uuid].ecc_volatile_dbe, after[uuid].ecc_aggregate_dbe) == (0, 1)
        assert after[uuid].remapped_rows_pending is False
        assert after[uuid].recovery_action == 0


def test_the_same_seed_and_script_give_the_same_samples_and_events() -> None:
    def script(seed: int) -> tuple[list[dict[str, object]], list[tuple[str, int, float]]]:
        clock = FakeClock()
        backend = SimBackend(clock=clock, seed=seed)
        uuids = [g.uuid for g in backend.inventory()]
        out: list[dict[str, object]] = []
        for step in range(40):
            if step == 5:
                backend.set_load(uuids[0], 0.8, 1000.0)
            if step == 10:
                backend.inject_double_bit_error(uuids[1])
            if step == 20:
                backend.lose_gpu(uuids[2])
            if step == 30:
                backend.reset_gpu(uuids[1])
                backend.restore_gpu(uuids[2])
            out.extend(g.model_dump() for g in tick(backend, clock).values())
        return out, [(e.uuid, e.xid, e.at) for e in backend.drain_events()]

    assert script(5) == script(5)
    assert script(5)[0] != script(6)[0]
