"""NVML behaviour a GB300 tray shows that the first fake hid (issue 9, findings 1-8): per-link
NVLink counters, MIG switched at run time, state-dependent NOT_SUPPORTED, a lost GPU seen by the
event wait, field batches refused whole, event registration that must not cost the XIDs, XIDs
with no device, and the oldest nvidia-ml-py the project declares."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pynvml
import pytest
from fakes.nvml.control import EVENT_DOUBLE_BIT_ECC, EVENT_SINGLE_BIT_ECC, EVENT_XID, NOT_SUPPORTED, FakeNvml
from fakes.nvml.fixtures import (  # noqa: F401
    ManualClock,
    fake_nvml,
    fake_nvml_cache,
    fake_nvml_path,
    make_backend,
    manual_clock,
    nvml_backend,
    wait_for_events,
)

from agents.gpu.nvml import NvmlBackend

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
LEGACY_LINK_ERRORS = (38, 45, 52, 59)
OLDEST_PYNVML = "12.535.77"  # the oldest release pyproject's nvidia-ml-py>=12.535 admits


# -- 1. NVLink error counters of every link -------------------------------------------------------


def test_nvlink_errors_are_summed_over_every_link(nvml_backend: NvmlBackend, fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.set_link_counter(0, 17, 38, 5)  # the last of 18 links
    fake_nvml.set_link_counter(0, 3, 59, 2)
    fake_nvml.set_link_counter(1, 9, 52, 1)
    sample = nvml_backend.sample()
    assert [gpu.nvlink_errors for gpu in sample] == [7, 1, 0, 0]


def test_nvlink_count_fields_where_the_legacy_ones_are_unsupported(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    for field_id in LEGACY_LINK_ERRORS:
        fake_nvml.fail_field(2, field_id)  # NVLink5: the legacy counters are gone
    fake_nvml.set_link_counter(2, 5, 208, 4)  # NVLINK_COUNT_RCV_ERRORS on link 5
    fake_nvml.set_link_counter(2, 17, 215, 1)  # NVLINK_COUNT_LINK_RECOVERY_EVENTS on link 17
    assert nvml_backend.sample()[2].nvlink_errors == 5
    fake_nvml.set_link_counter(2, 0, 211, 10)
    manual_clock.advance(30.0)
    assert nvml_backend.sample()[2].nvlink_errors == 15


def test_fake_honours_the_link_in_scope_id(fake_nvml: FakeNvml) -> None:  # noqa: F811
    fake_nvml.set_link_counter(0, 17, 45, 9)
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        values = pynvml.nvmlDeviceGetFieldValues(handle, [(45, 0), (45, 17), (45, 18)])
        assert [int(v.nvmlReturn) for v in values] == [0, 0, pynvml.NVML_ERROR_INVALID_ARGUMENT]
        assert [int(v.value.ullVal) for v in values[:2]] == [0, 9]
    finally:
        pynvml.nvmlShutdown()


def test_fake_field_timestamps_are_microseconds_since_the_epoch(fake_nvml: FakeNvml) -> None:  # noqa: F811
    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        before = time.time()
        first = pynvml.nvmlDeviceGetFieldValues(handle, [(138, 0xFFFFFFFF)])[0].timestamp
        second = pynvml.nvmlDeviceGetFieldValues(handle, [(138, 0xFFFFFFFF)])[0].timestamp
        after = time.time()
    finally:
        pynvml.nvmlShutdown()
    assert before * 1e6 - 1 <= first < second <= after * 1e6 + 2


# -- 3, 4. MIG switched at run time; what MIG made unsupported is asked again -----------------


def test_mig_enabled_after_start_reaches_the_inventory(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    nvml_backend.sample()
    assert nvml_backend.inventory()[1].mig_mode is False
    fake_nvml.set_mig(1, enabled=True, count=3)
    manual_clock.advance(30.0)
    nvml_backend.sample()
    assert nvml_backend.inventory_changed()
    gpu = nvml_backend.inventory()[1]
    assert (gpu.mig_mode, [mig.gpu_instance_id for mig in gpu.mig_devices]) == (True, [1, 2, 3])
    fake_nvml.set_mig(1, enabled=False)
    manual_clock.advance(30.0)
    nvml_backend.sample()
    assert nvml_backend.inventory_changed()
    assert (nvml_backend.inventory()[1].mig_mode, nvml_backend.inventory()[1].mig_devices) == (False, [])


def test_unsupported_under_mig_is_read_again_once_mig_is_off(
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    fake_nvml.set_mig(0, enabled=True, count=2)
    fake_nvml.fail("nvmlDeviceGetUtilizationRates", NOT_SUPPORTED, gpu=0)  # nvml.h: so under MIG
    backend = make_backend(manual_clock)
    try:
        assert backend.sample()[0].utilization_gpu_pct is None
        fake_nvml.set_mig(0, enabled=False)
        fake_nvml.heal("nvmlDeviceGetUtilizationRates", gpu=0)
        fake_nvml.set(0, util_gpu=64)
        manual_clock.advance(30.0)
        assert backend.sample()[0].utilization_gpu_pct == 64.0
    finally:
        backend.close()


# -- 5. GPU_IS_LOST from the event wait -------------------------------------------------------


def test_gpu_lost_in_the_event_wait_takes_the_gpu_out_and_warns_once(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agents.gpu.nvml")
    nvml_backend.sample()
    fake_nvml.lose_gpu(1)
    calls = fake_nvml.calls("nvmlEventSetWait_v2")
    deadline = time.monotonic() + 10.0  # only stops a broken test from hanging
    while not nvml_backend.inventory_changed() and time.monotonic() < deadline:
        time.sleep(0.01)  # no sample(): the event thread alone must notice
    assert [gpu.index for gpu in nvml_backend.inventory()] == [0, 2, 3]
    while fake_nvml.calls("nvmlEventSetWait_v2") < calls + 10 and time.monotonic() < deadline:
        time.sleep(0.01)  # the wait keeps answering GPU_IS_LOST meanwhile
    assert fake_nvml.inject_xid(0, 31) == 1  # the other GPUs' XIDs still arrive
    assert [(event.uuid, event.xid) for event in wait_for_events(nvml_backend, 1)] == [
        ("GPU-00000000-0000-0000-0000-000000000000", 31)
    ]
    waits = [r for r in caplog.records if "event wait failed" in r.getMessage()]
    assert len(waits) == 1, [r.getMessage() for r in waits]
    fake_nvml.restore_gpu(1)
    manual_clock.advance(30.0)
    assert [gpu.index for gpu in nvml_backend.sample()] == [0, 1, 2, 3]


# -- 6. a field batch refused whole -----------------------------------------------------------


def test_a_batch_refused_whole_switches_off_only_its_field(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    fake_nvml.fail_field_batch(0, 186)  # module instant power: refused, and the batch with it
    for _ in range(2):
        gpu = nvml_backend.sample()[0]
        assert (gpu.temperature_memory_c, gpu.module_power_w, gpu.recovery_action) == (38.0, 488.29, 0)
        assert (gpu.nvlink_errors, gpu.nvlink_links_up, gpu.nvlink_tx_kib) == (0, 18, 0)
        manual_clock.advance(30.0)


def test_module_limit_refused_whole_at_start_leaves_the_other_fields(
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    fake_nvml.fail_field_batch(3, 190)  # e.g. module power on an x86 board
    backend = make_backend(manual_clock)
    try:
        assert backend.inventory()[3].module_power_limit_w is None
        gpu = backend.sample()[3]
        assert (gpu.temperature_memory_c, gpu.module_power_w, gpu.nvlink_links_total) == (39.0, 494.32, 18)
    finally:
        backend.close()


# -- 7, 8. event registration and XIDs with no device -----------------------------------------


def test_xid_registered_when_another_type_is_refused(
    fake_nvml: FakeNvml,  # noqa: F811
    manual_clock: ManualClock,  # noqa: F811
) -> None:
    fake_nvml.fail("nvmlDeviceGetSupportedEventTypes")
    for gpu in range(4):  # no recovery-action events on this driver
        fake_nvml.set(gpu, supported_events=EVENT_SINGLE_BIT_ECC | EVENT_DOUBLE_BIT_ECC | EVENT_XID)
    backend = make_backend(manual_clock)
    try:
        assert fake_nvml.inject_xid(2, 79) == 1
        assert fake_nvml.inject_double_bit_ecc(2) == 1
        events = wait_for_events(backend, 2)
        assert [(event.xid, event.kind.value) for event in events] == [(79, "xid"), (48, "ecc_dbe")]
    finally:
        backend.close()


def test_xid_with_no_device_counts_on_every_gpu(
    nvml_backend: NvmlBackend,  # noqa: F811
    fake_nvml: FakeNvml,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="agents.gpu.nvml")
    assert fake_nvml.inject_xid(-1, 119) == 1
    events = wait_for_events(nvml_backend, 4)
    assert sorted(event.uuid for event in events) == [gpu.uuid for gpu in nvml_backend.inventory()]
    assert {event.xid for event in events} == {119}
    assert [gpu.xid_counts for gpu in nvml_backend.sample()] == [{119: 1}] * 4
    assert any("no known device" in r.getMessage() for r in caplog.records)


# -- 2. the oldest nvidia-ml-py declared ------------------------------------------------------


def _oldest_pynvml() -> Path:
    """nvidia-ml-py OLDEST_PYNVML installed once per machine into a directory of its own."""
    target = Path(tempfile.gettempdir()) / f"switchyard-nvidia-ml-py-{OLDEST_PYNVML}-{os.getuid()}"
    if (target / "pynvml.py").exists():
        return target
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(partial)]
        + ["--disable-pip-version-check", f"nvidia-ml-py=={OLDEST_PYNVML}"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    if result.returncode != 0:
        # make test installs from PyPI too: an unreachable index fails here as it fails there.
        pytest.fail(f"cannot install nvidia-ml-py {OLDEST_PYNVML} (package index unreachable?): {result.stderr[-500:]}")
    if target.exists():  # another session won the race
        return target
    partial.rename(target)
    return target


def test_backend_runs_on_the_oldest_declared_nvidia_ml_py(fake_nvml_path: Path) -> None:  # noqa: F811
    site = _oldest_pynvml()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS), str(ROOT)])}
    code = "import pynvml, sys; sys.stdout.write(pynvml.__file__)"
    found = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert Path(found).parent == site  # the probe below really runs on the old bindings
    result = subprocess.run(
        [sys.executable, "-m", "fakes.nvml.probe", str(fake_nvml_path)],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen: dict[str, Any] = json.loads(result.stdout)
    assert (seen["second_count"], len(seen["inventory"])) == (4, 4)
    gpu, inventory = seen["samples"][0], seen["inventory"][0]
    assert (gpu["power_w"], gpu["temperature_gpu_c"], gpu["nvlink_links_up"]) == (180.36, 38.0, 18)
    assert (inventory["name"], inventory["module_id"], inventory["mig_mode"]) == ("NVIDIA GB300", 2, False)
    # What these bindings cannot ask is absent, not a crash.
    assert (inventory["chassis_serial"], inventory["fabric_clique_id"], gpu["fabric_state"]) == (None, None, None)
