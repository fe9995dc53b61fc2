"""The files the agent keeps across restarts: 0600, atomic, and fatal when corrupt."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agents.protocol import AssignmentPhase, AssignmentStatus, RegisterResponse
from agents.runtime.orphans import LiveProcess
from agents.state import FatalError, FinishedLedger, ProcessLedger, SeqAllocator, load_credential, write_private_file


def test_sequence_numbers_strictly_increase_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    first = SeqAllocator(path, block=10)
    a = [first.next() for _ in range(25)]
    assert a == list(range(1, 26))
    second = SeqAllocator(path, block=10)  # a restart (or a crash) after seq 25
    b = [second.next() for _ in range(3)]
    assert b[0] > a[-1] and b == sorted(b)
    assert json.loads(path.read_text())["next"] >= b[-1]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_corrupt_sequence_file_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "seq.json"
    path.write_text("{not json")
    with pytest.raises(FatalError, match="corrupt"):
        SeqAllocator(path)


def test_credential_file_is_private_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "state" / "credential.json"
    response = RegisterResponse(
        node_id="node-1",
        credential="sy_node_secret",
        report_interval_s=5.0,
        watch_timeout_s=25.0,
        lease_ttl_s=30.0,
    )
    assert load_credential(path) is None
    write_private_file(path, response.model_dump_json().encode())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_credential(path) == response
    assert [p.name for p in path.parent.iterdir()] == ["credential.json"]  # no temp file left


def test_recorded_stopped_statuses_survive_restarts_until_forgotten(tmp_path: Path) -> None:
    path = tmp_path / "finished.json"
    ledger = FinishedLedger(path)
    exited = AssignmentStatus(workload_id="a", epoch=1, rank=0, phase=AssignmentPhase.EXITED, exit_code=0)
    ledger.save([exited, AssignmentStatus(workload_id="r", epoch=1, rank=0, phase=AssignmentPhase.RUNNING)])
    orphan = AssignmentStatus(workload_id="o", epoch=2, rank=1, phase=AssignmentPhase.STOPPED, message="first")
    ledger.record([orphan, orphan.model_copy(update={"message": "second"})])
    restarted = FinishedLedger(path)
    assert set(restarted.restored) == {("a", 0, 1), ("o", 1, 2)}
    assert restarted.restored[("o", 1, 2)].message == "first"  # a key already known keeps its status
    # An ordinary STOPPED status (agent shutdown) is still not kept; a recorded one is, until forgotten.
    shutdown = AssignmentStatus(workload_id="s", epoch=1, rank=0, phase=AssignmentPhase.STOPPED)
    restarted.save([*restarted.restored.values(), shutdown])
    assert set(FinishedLedger(path).restored) == {("a", 0, 1), ("o", 1, 2)}
    restarted.restored.pop(("o", 1, 2))
    restarted.save(list(restarted.restored.values()))
    assert set(FinishedLedger(path).restored) == {("a", 0, 1)}


def test_process_ledger_round_trips_and_a_corrupt_one_is_fatal(tmp_path: Path) -> None:
    path = tmp_path / "processes.json"
    ledger = ProcessLedger(path)
    assert ledger.load() == []
    live = [
        LiveProcess(workload_id="w", rank=0, epoch=3, pid=1234, start_ticks=98765, started_at=1.5),
        LiveProcess(workload_id="w", rank=1, epoch=3, pid=1235, start_ticks=None),
    ]
    ledger.save(live)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ProcessLedger(path).load() == live
    for bad in ("{not json", "[1]", '[{"workload_id": "w"}]', json.dumps([{**vars(live[0]), "pid": "1234"}])):
        path.write_text(bad)
        with pytest.raises(FatalError, match="corrupt"):
            ledger.load()
