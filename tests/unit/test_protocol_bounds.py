"""Every field of the agent protocol is bounded (issue 8, finding 4): what the agent decides is
refused out of bounds, a hardware reading out of its physical range reads as absent, free text
keeps its words but loses control, bidi and zero-width characters."""

from __future__ import annotations

import math
import sys
import unicodedata
from typing import Any

import pytest
from pydantic import ValidationError

from agents.protocol import (
    INT64_MAX,
    MAX_ENERGY_MJ,
    MAX_SEQ,
    SEQ_JUMP_ALLOWANCE,
    SEQ_JUMP_PER_S,
    GpuInventory,
    GpuTelemetry,
    LogUpload,
    NodeInventory,
    RegisterRequest,
    ReportRequest,
    safe_text,
)
from agents.state import SEQ_BLOCK


def _report(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "protocol_version": 2,
        "seq": 1,
        "sent_at": 1_760_000_000.0,
        "gpus": [{"uuid": "GPU-3c4d5e6f-0000-0000-0000-000000000001", "index": 0, "energy_mj": 1000}],
        "assignments": [{"workload_id": "wl_01HV", "epoch": 1, "rank": 0, "phase": "running"}],
        "xid_events": [{"uuid": "GPU-3c4d5e6f-0000-0000-0000-000000000001", "xid": 13, "at": 1_760_000_000.0}],
    }
    body.update(overrides)
    return body


def _with(path: str, value: object) -> dict[str, Any]:
    """The valid report with one field, at a dotted path ("gpus.0.index"), set to ``value``."""
    body = _report()
    parts = path.split(".")
    target: Any = body
    for part in parts[:-1]:
        target = target[int(part)] if isinstance(target, list) else target[part]
    target[parts[-1]] = value
    return body


def test_the_valid_report_is_valid() -> None:
    report = ReportRequest.model_validate(_report())
    assert report.gpus[0].energy_mj == 1000 and report.seq == 1


REFUSED = [
    ("seq", 10**30),
    ("seq", MAX_SEQ + 1),
    ("seq", -1),
    ("sent_at", math.nan),
    ("sent_at", math.inf),
    ("sent_at", 1e20),
    ("sent_at", -1.0),
    ("protocol_version", 2**40),
    ("applied_generation", INT64_MAX + 1),
    ("applied_generation", -1),
    ("agent_version", "0.1\x00"),
    ("agent_version", "v" * 65),
    ("xid_events.0.at", 1e20),
    ("xid_events.0.at", math.nan),
    ("xid_events.0.xid", 2**31),
    ("xid_events.0.xid", -1),
    ("xid_events.0.uuid", "GPU-\x00"),
    ("xid_events.0.detail", "d" * 501),
    ("assignments.0.workload_id", "wl_\x00"),
    ("assignments.0.workload_id", "wl_" + "x" * 62),
    ("assignments.0.workload_id", "wl x"),
    ("assignments.0.epoch", 2**63),
    ("assignments.0.epoch", -1),
    ("assignments.0.rank", 2**31),
    ("assignments.0.pid", 2**31),
    ("assignments.0.exit_code", 2**40),
    ("assignments.0.started_at", math.inf),
    ("assignments.0.finished_at", 1e20),
    ("assignments.0.message", "m" * 2001),
    ("gpus.0.uuid", ""),
    ("gpus.0.uuid", "GPU\u202e1"),
    ("gpus.0.uuid", "G" * 97),
    ("gpus.0.index", 1024),
    ("gpus.0.xid_count", 2**53),
    ("gpus.0.xid_counts", {str(2**31): 1}),
    ("gpus.0.xid_counts", {"13": 2**53}),
    ("gpus.0.xid_counts", {str(code): 1 for code in range(257)}),
    ("gpus.0.health_reasons", ["r"] * 17),
    ("gpus.0.health_reasons", ["r" * 501]),
    ("gpus.0.processes", [{"pid": 1}] * 257),
    ("gpus.0.processes", [{"pid": 2**32}]),
    ("gpus.0.fabric_state", "completed\n"),
    ("gpus", [{"uuid": "GPU-1", "index": 0}] * 65),
    ("gpus", [{"uuid": "GPU-1", "index": 0}, {"uuid": "GPU-1", "index": 1}]),
    ("assignments", [{"workload_id": "wl_1", "epoch": 1, "rank": 0, "phase": "running"}] * 257),
    ("xid_events", [{"uuid": "GPU-1", "xid": 13, "at": 1.0}] * 1025),
]


@pytest.mark.parametrize(("path", "value"), REFUSED, ids=[f"{p}={str(v)[:20]!r}" for p, v in REFUSED])
def test_what_the_agent_decides_is_refused_out_of_bounds(path: str, value: object) -> None:
    with pytest.raises(ValidationError):
        ReportRequest.model_validate(_with(path, value))


ABSENT = [
    ("energy_mj", -10_000_000),
    ("energy_mj", 10**30),
    ("energy_mj", MAX_ENERGY_MJ + 1),
    ("energy_mj", 1e30),
    ("power_w", math.nan),
    ("power_w", -1.0),
    ("power_w", 4_294_967.295),  # 0xFFFFFFFF mW: a driver's error sentinel
    ("module_power_w", math.inf),
    ("temperature_gpu_c", 65535.0),
    ("temperature_memory_c", -math.inf),
    ("utilization_gpu_pct", 101.0),
    ("memory_used_mib", 1e300),
    ("sm_clock_mhz", -5.0),
    ("clock_event_reasons", 2**64),
    ("nvlink_tx_kib", -1),
    ("ecc_aggregate_dbe", 2**63),
    ("xid_last", 2**31),
    ("recovery_action", -1),
]


@pytest.mark.parametrize(("field", "value"), ABSENT, ids=[f"{f}={v!r}" for f, v in ABSENT])
def test_a_reading_out_of_its_physical_range_reads_as_absent(field: str, value: object) -> None:
    report = ReportRequest.model_validate(_with(f"gpus.0.{field}", value))
    assert getattr(report.gpus[0], field) is None
    # The same on the agent's side: a glitching sensor never stops it building a report.
    assert getattr(GpuTelemetry(uuid="GPU-1", index=0, **{field: value}), field) is None


def test_readings_within_range_are_kept() -> None:
    sample = GpuTelemetry(
        uuid="GPU-1", index=0, energy_mj=MAX_ENERGY_MJ, power_w=1400.0, temperature_gpu_c=-10.0, clock_event_reasons=7
    )
    assert (sample.energy_mj, sample.power_w, sample.temperature_gpu_c) == (MAX_ENERGY_MJ, 1400.0, -10.0)
    assert sample.clock_event_reasons == 7


def _inventory(**gpu: Any) -> dict[str, Any]:
    one = {"index": 0, "uuid": "GPU-1", "name": "NVIDIA GB300", "memory_total_mib": 284208, **gpu}
    return {"hostname": "tray01", "address": "10.0.0.1", "backend": "nvml", "gpus": [one]}


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("hostname", "tray\x0001"),
        ("hostname", "tray 01"),
        ("hostname", ""),
        ("address", "10.0.0.1; rm -rf /"),
        ("backend", "NVML\x00"),
        ("driver_version", "580\u200b.1"),
        ("gpu.name", "NVIDIA\x00GB300"),
        ("gpu.name", "NVIDIA GB300\u202e"),
        ("gpu.serial", "s" * 65),
        ("gpu.memory_total_mib", 2**31),
        ("gpu.memory_total_mib", -1),
        ("gpu.index", -1),
        ("gpus", "twice"),
    ],
)
def test_an_inventory_out_of_bounds_is_refused(where: str, value: object) -> None:
    body = _inventory()
    if where == "gpus":
        body["gpus"] = [body["gpus"][0], {**body["gpus"][0], "index": 1}]
    elif where.startswith("gpu."):
        body["gpus"][0][where.removeprefix("gpu.")] = value
    else:
        body[where] = value
    with pytest.raises(ValidationError):
        NodeInventory.model_validate(body)
    with pytest.raises(ValidationError):
        RegisterRequest.model_validate(
            {"protocol_version": 2, "bootstrap_token": "sy_boot_" + "A" * 40, "inventory": body}
        )


def test_optional_inventory_readings_out_of_range_read_as_absent() -> None:
    gpu = GpuInventory.model_validate(
        _inventory(fabric_clique_id=2**32 - 1, power_limit_max_w=math.nan, module_id=-1)["gpus"][0]
    )
    assert (gpu.fabric_clique_id, gpu.power_limit_max_w, gpu.module_id) == (None, None, None)
    assert GpuInventory.model_validate(_inventory(fabric_clique_id=32766)["gpus"][0]).fabric_clique_id == 32766


def test_real_uuids_hostnames_and_addresses_are_accepted() -> None:
    for uuid in ("GPU-3c4d5e6f-0000-0000-0000-00000000abcd", "MIG-GPU-b8ea3855-276c-c9cb-b366-c6fa655957c5/1/0"):
        assert GpuTelemetry(uuid=uuid, index=0).uuid == uuid
    for address in ("10.0.0.1", "fe80::1%eth0", "[2001:db8::1]", "tray01.rack-001.example"):
        assert NodeInventory.model_validate({**_inventory(), "address": address}).address == address


def test_log_uploads_are_bounded() -> None:
    chunk = {"workload_id": "wl_1", "rank": 0, "offset": 0, "data_b64": ""}
    LogUpload.model_validate({"protocol_version": 2, "chunks": [chunk]})
    for bad in ({"workload_id": "wl\x00"}, {"rank": 2**31}, {"offset": 2**53}, {"offset": -1}):
        with pytest.raises(ValidationError):
            LogUpload.model_validate({"protocol_version": 2, "chunks": [{**chunk, **bad}]})


def test_free_text_keeps_its_words_and_loses_every_unsafe_character() -> None:
    unsafe = [
        chr(c)
        for c in range(sys.maxunicode + 1)
        if unicodedata.category(chr(c)) in {"Cc", "Cf", "Cs", "Zl", "Zp"} and chr(c) not in "\t\n"
    ]
    assert safe_text("".join(unsafe)) == "\ufffd" * len(unsafe)
    assert safe_text("XID 79: GPU has fallen off the bus\n\tat 12:00 (état: perdu, 温度)") == (
        "XID 79: GPU has fallen off the bus\n\tat 12:00 (état: perdu, 温度)"
    )
    report = ReportRequest.model_validate(
        _with("assignments.0.message", "cannot start 'evil\x00\u202ecmd': no such file\r\n")
    )
    assert report.assignments[0].message == "cannot start 'evil\ufffd\ufffdcmd': no such file\ufffd\n"


def test_the_seq_jump_allowance_covers_what_a_live_agent_skips() -> None:
    # A restart skips at most one reserved block; ten restarts without a report delivered in between pass.
    assert SEQ_JUMP_ALLOWANCE >= 10 * SEQ_BLOCK
    # The allowance grows faster than an agent reporting every second uses seqs, so it catches up.
    assert SEQ_JUMP_PER_S > 1
