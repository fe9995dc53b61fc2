"""XID and ECC events: nvmlEventSetWait_v2 on the backend's thread -> drain_events() and the
XID counters in every sample."""

from __future__ import annotations

import threading

from fakes.nvml.control import EVENT_RECOVERY_ACTION, EVENT_XID, NOT_SUPPORTED, FakeNvml
from fakes.nvml.fixtures import (  # noqa: F401
    WALL_CLOCK,
    ManualClock,
    fake_nvml,
    fake_nvml_cache,
    fake_nvml_path,
    make_backend,
    manual_clock,
    nvml_backend,
    wait_for_events,
)

from agents.gpu.nvml import XID_DOUBLE_BIT_ECC, NvmlBackend
from agents.protocol import XidEvent

GPU1 = "GPU-00000001-0000-0000-0000-000000000001"


def test_xid_reaches_drain_events_and_counters(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    assert nvml_backend.drain_events() == []
    for xid in (79, 13, 79):
        assert fake_nvml.inject_xid(1, xid) == 1  # the backend's event set took it
    events = wait_for_events(nvml_backend, 3)
    assert events == [XidEvent(uuid=GPU1, xid=xid, at=WALL_CLOCK) for xid in (79, 13, 79)]
    assert nvml_backend.drain_events() == []
    gpu = nvml_backend.sample()[1]
    assert (gpu.xid_last, gpu.xid_count, gpu.xid_counts) == (79, 3, {79: 2, 13: 1})
    assert nvml_backend.sample()[0].xid_count == 0


def test_double_bit_ecc_is_an_event_and_refreshes_ecc_at_once(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
) -> None:
    assert nvml_backend.sample()[1].ecc_volatile_dbe == 0
    assert fake_nvml.inject_double_bit_ecc(1) == 1
    [event] = wait_for_events(nvml_backend, 1)
    assert (event.uuid, event.xid) == (GPU1, XID_DOUBLE_BIT_ECC)
    assert event.detail is not None and "double-bit ECC" in event.detail
    gpu = nvml_backend.sample()[1]  # no slow interval passed: the event made it due
    assert (gpu.ecc_volatile_dbe, gpu.ecc_aggregate_dbe) == (1, 1)
    assert (gpu.xid_count, gpu.xid_counts) == (0, {})  # an ECC event is not an XID


def test_recovery_action_event_refreshes_field_230(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    nvml_backend.sample()
    fake_nvml.set(2, recovery_action=3)  # drain P2P
    assert fake_nvml.inject_event(2, EVENT_RECOVERY_ACTION) == 1
    assert fake_nvml.inject_xid(2, 154) == 1  # events are handled in order: once 154 is out, so is the first
    assert [e.xid for e in wait_for_events(nvml_backend, 1)] == [154]
    assert nvml_backend.sample()[2].recovery_action == 3  # no slow interval passed


def test_registers_only_supported_event_types(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.set(0, supported_events=EVENT_XID)
    fake_nvml.set(1, supported_events=0)
    fake_nvml.fail("nvmlDeviceGetSupportedEventTypes", NOT_SUPPORTED, gpu=2)
    fake_nvml.set(2, supported_events=0)  # and registering everything is refused
    backend = make_backend(manual_clock)
    try:
        assert fake_nvml.inject_xid(0, 31) == 1
        assert fake_nvml.inject_xid(1, 31) == 0
        assert fake_nvml.inject_xid(2, 31) == 0
        assert fake_nvml.inject_xid(3, 31) == 1
        assert [e.uuid[-1] for e in wait_for_events(backend, 2)] == ["0", "3"]
        assert len(backend.sample()) == 4
    finally:
        backend.close()


def test_no_event_set_means_no_thread(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    fake_nvml.fail("nvmlEventSetCreate", NOT_SUPPORTED)
    backend = make_backend(manual_clock)
    try:
        assert fake_nvml.inject_xid(0, 31) == 0
        assert fake_nvml.calls("nvmlEventSetWait_v2") == 0
        assert len(backend.sample()) == 4
        assert backend.drain_events() == []
    finally:
        backend.close()


def test_close_stops_the_event_thread(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    backend = make_backend(manual_clock)
    assert fake_nvml.inject_xid(0, 31) == 1
    assert len(wait_for_events(backend, 1)) == 1
    backend.close()
    assert fake_nvml.inject_xid(0, 31) == 0  # the event set is freed
    assert [t for t in threading.enumerate() if t.name == "nvml-events"] == []


def test_watch_events_off(fake_nvml: FakeNvml, manual_clock: ManualClock) -> None:  # noqa: F811
    backend = make_backend(manual_clock, watch_events=False)
    try:
        assert fake_nvml.inject_xid(0, 31) == 0
        assert fake_nvml.calls("nvmlEventSetCreate") == 0
    finally:
        backend.close()
