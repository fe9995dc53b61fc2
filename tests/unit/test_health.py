"""The XID/ECC health policy with plain objects and an explicit clock."""

from __future__ import annotations

import pytest

from agents.health import XID_POLICY, GpuHealthTracker, Reading
from agents.protocol import GpuHealthState, HealthAction, XidEvent

H, A = GpuHealthState, HealthAction


def xid(code: int, at: float) -> XidEvent:
    return XidEvent(uuid="GPU-0", xid=code, at=at)


@pytest.mark.parametrize(
    "code, health, action",
    [
        (13, H.HEALTHY, A.NOTIFY_TENANT),
        (31, H.HEALTHY, A.NOTIFY_TENANT),
        (43, H.HEALTHY, A.NONE),
        (48, H.UNHEALTHY, A.RESET_GPU),
        (64, H.UNHEALTHY, A.RESET_GPU),
        (74, H.UNHEALTHY, A.RESET_GPU),
        (79, H.UNHEALTHY, A.REBOOT_NODE),
        (95, H.UNHEALTHY, A.RESET_GPU),
        (145, H.UNHEALTHY, A.RESET_GPU),
        (158, H.UNHEALTHY, A.RESET_GPU),
        (999, H.DEGRADED, A.NONE),
    ],
)
def test_catalog_actions(code: int, health: GpuHealthState, action: HealthAction) -> None:
    verdict = GpuHealthTracker().observe(now=10, events=[xid(code, 10)])
    assert (verdict.health, verdict.action) == (health, action)
    assert verdict.reasons == () or str(code) in verdict.reasons[0]


def test_every_catalog_entry_of_facts_is_in_the_table() -> None:
    listed = {13, 31, 94, 43, 63, 48, 64, 74, 79, 92, 121, 95, 109, 119, 120, 136, 140, 143, 155, 156, 158, 154}
    listed |= set(range(144, 151))
    assert listed <= set(XID_POLICY)


def test_application_xid_clears_after_a_quiet_window() -> None:
    t = GpuHealthTracker(quiet_window_s=60)
    assert t.observe(now=0, events=[xid(13, 0)]).action is A.NOTIFY_TENANT
    assert t.observe(now=59).action is A.NOTIFY_TENANT
    assert t.observe(now=60).action is A.NONE


def test_repeated_xid_degrades_only_when_repeated() -> None:
    t = GpuHealthTracker(quiet_window_s=600)
    for i in range(4):
        assert t.observe(now=i, events=[xid(92, i)]).health is H.HEALTHY
    verdict = t.observe(now=5, events=[xid(92, 5)])
    assert verdict.health is H.DEGRADED and "x5" in verdict.reasons[0]


def test_reset_required_stays_until_a_reset_is_observed_then_recovers() -> None:
    t = GpuHealthTracker(quiet_window_s=60)
    t.observe(now=0, reading=Reading(energy_mj=5_000_000))
    assert t.observe(now=1, events=[xid(95, 1)], reading=Reading(energy_mj=5_100_000)).health is H.UNHEALTHY
    # Time alone does not clear it: the GPU really needs the reset.
    assert t.observe(now=10_000, reading=Reading(energy_mj=9_000_000)).health is H.UNHEALTHY
    # The reset zeroes the energy counter: the GPU is healthy again, with no agent restart.
    assert t.observe(now=10_001, reading=Reading(energy_mj=1_000)).health is H.HEALTHY


def test_field_230_drives_recovery_and_clears_when_it_returns_to_zero() -> None:
    t = GpuHealthTracker()
    t.observe(now=0, events=[xid(154, 0)])
    verdict = t.observe(now=1, reading=Reading(recovery_action=3))
    assert verdict.health is H.UNHEALTHY and verdict.action is A.DRAIN_NVLINK_PEERS
    assert t.observe(now=2, reading=Reading(recovery_action=2)).action is A.REBOOT_NODE
    assert t.observe(now=3, reading=Reading(recovery_action=0)).health is not H.UNHEALTHY


def test_double_bit_ecc_from_the_counters_and_row_remapping() -> None:
    t = GpuHealthTracker()
    t.observe(now=0, reading=Reading(ecc_volatile_dbe=0, energy_mj=100))
    verdict = t.observe(now=1, reading=Reading(ecc_volatile_dbe=1, remapped_rows_pending=True, energy_mj=200))
    assert verdict.health is H.UNHEALTHY and any("XID 48" in r for r in verdict.reasons)
    assert any("pending" in r for r in verdict.reasons)
    # After the reset the remap is done and the counter restarted.
    assert (
        t.observe(now=2, reading=Reading(ecc_volatile_dbe=0, remapped_rows_pending=False, energy_mj=5)).health
        is H.HEALTHY
    )
    # A failed remap needs service, and says so while it lasts.
    failed = t.observe(now=3, reading=Reading(remapped_rows_failure=True))
    assert failed.health is H.UNHEALTHY and failed.action is A.DRAIN_NODE


def test_unreadable_fields_keep_the_last_knowledge() -> None:
    t = GpuHealthTracker()
    t.observe(now=0, reading=Reading(remapped_rows_pending=True))
    assert t.observe(now=1, reading=Reading()).health is H.UNHEALTHY


def test_ecc_event_and_its_xid_make_one_condition() -> None:
    from agents.protocol import EventKind

    t = GpuHealthTracker()
    dbe = XidEvent(uuid="GPU-0", xid=48, kind=EventKind.ECC_DBE, at=1)
    verdict = t.observe(now=1, events=[dbe, xid(48, 1)])
    assert verdict.health is H.UNHEALTHY and len(verdict.reasons) == 1
    sbe = XidEvent(uuid="GPU-0", xid=0, kind=EventKind.ECC_SBE, at=2)
    assert GpuHealthTracker().observe(now=2, events=[sbe]).health is H.HEALTHY


def test_xid_154_clears_once_field_230_reads_zero() -> None:
    t = GpuHealthTracker(quiet_window_s=600)
    assert t.observe(now=0, events=[xid(154, 0)], reading=Reading(recovery_action=1)).action is A.RESET_GPU
    assert t.observe(now=5, reading=Reading(recovery_action=0)).health is H.HEALTHY


def test_one_double_bit_error_seen_three_ways_counts_once() -> None:
    from agents.protocol import EventKind

    t = GpuHealthTracker()
    t.observe(now=0, reading=Reading(ecc_volatile_dbe=0))
    dbe = XidEvent(uuid="GPU-0", xid=48, kind=EventKind.ECC_DBE, at=1)
    verdict = t.observe(now=1, events=[xid(48, 1), dbe], reading=Reading(ecc_volatile_dbe=1))
    assert verdict.reasons == ("XID 48: double-bit ECC error: reset to remap the row",)
