"""The on-disk report spool, with real files: order, acknowledgement, restarts, the bound, crashes."""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import pytest

from agents.protocol import (
    PROTOCOL_VERSION,
    AssignmentPhase,
    AssignmentStatus,
    GpuInventory,
    GpuTelemetry,
    NodeInventory,
    ReportRequest,
    XidEvent,
)
from agents.spool import Spool, encode, must_keep

RUNNING = AssignmentPhase.RUNNING


def report(
    seq: int,
    *,
    phase: AssignmentPhase = RUNNING,
    xid: bool = False,
    inventory: bool = False,
    applied: int = 1,
) -> ReportRequest:
    gpu = GpuTelemetry(uuid="GPU-0", index=0, energy_mj=1000 * seq, power_w=700.0, xid_counts={48: 1})
    return ReportRequest(
        protocol_version=PROTOCOL_VERSION,
        seq=seq,
        sent_at=1000.0 + seq,
        gpus=[gpu],
        assignments=[AssignmentStatus(workload_id="w1", epoch=1, rank=0, phase=phase)],
        applied_generation=applied,
        xid_events=[XidEvent(uuid="GPU-0", xid=79, at=1000.0 + seq)] if xid else [],
        inventory=NodeInventory(
            hostname="tray01",
            address="10.0.0.1",
            backend="sim",
            gpus=[GpuInventory(index=0, uuid="GPU-0", name="NVIDIA GB300", memory_total_mib=1)],
        )
        if inventory
        else None,
    )


def drain(spool: Spool) -> list[int]:
    """Acknowledge everything, oldest first, as the daemon does; return the seqs in send order."""
    sent = []
    while (head := spool.head()) is not None:
        sent.append(head.seq)
        spool.remove(head.seq)
    return sent


def segment_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_reports_come_out_oldest_first_and_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    sent = [report(seq) for seq in (3, 4, 7, 9)]
    for r in sent:
        spool.append(r)
    assert len(spool) == 4
    assert spool.head() == sent[0]  # every field survives the disk, int-keyed xid_counts included
    assert spool.head() == sent[0]  # head does not take it off the queue
    assert drain(spool) == [3, 4, 7, 9]
    assert spool.head() is None and len(spool) == 0


def test_a_report_cannot_go_ahead_of_a_queued_one(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(report(5))
    with pytest.raises(ValueError, match="ahead"):
        spool.append(report(5))
    with pytest.raises(ValueError, match="ahead"):
        spool.append(report(4))


def test_segments_are_private_and_deleted_once_acknowledged(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    line = len(encode(report(1)))
    spool = Spool(directory, segment_bytes=2 * line)  # two reports per segment
    for seq in range(1, 6):
        spool.append(report(seq))
    assert segment_files(directory) == ["000001.jsonl", "000002.jsonl", "000003.jsonl"]
    assert all(stat.S_IMODE((directory / name).stat().st_mode) == 0o600 for name in segment_files(directory))
    spool.remove(1)
    assert segment_files(directory)[0] == "000001.jsonl"  # seq 2 still needs it
    spool.remove(2)
    assert segment_files(directory) == ["000002.jsonl", "000003.jsonl"]
    assert drain(spool) == [3, 4, 5]
    assert segment_files(directory) == []
    assert spool.stats().spooled_bytes == 0


def test_a_restart_replays_what_was_not_acknowledged_and_appends_behind_it(tmp_path: Path) -> None:
    directory = tmp_path / "spool"
    line = len(encode(report(1)))
    spool = Spool(directory, segment_bytes=line)  # one report per segment
    for seq in range(1, 6):
        spool.append(report(seq))
    spool.remove(1)
    spool.remove(2)
    restarted = Spool(directory, segment_bytes=line)  # the agent was killed here
    assert len(restarted) == 3
    restarted.append(report(1001))  # a new process: seqs restart above every spooled one
    assert drain(restarted) == [3, 4, 5, 1001]


def test_a_restart_resends_acknowledged_reports_of_a_half_sent_segment(tmp_path: Path) -> None:
    # Acks are not written down one by one; the control plane dedups by (node, seq) and answers
    # "duplicate", which acknowledges them again.
    directory = tmp_path / "spool"
    spool = Spool(directory)
    for seq in range(1, 4):
        spool.append(report(seq))
    spool.remove(1)
    assert drain(Spool(directory)) == [1, 2, 3]


def test_a_truncated_trailing_line_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "spool"
    spool = Spool(directory)
    for seq in (1, 2, 3):
        spool.append(report(seq))
    segment = directory / "000001.jsonl"
    whole = segment.read_bytes()
    with segment.open("ab") as f:  # the agent died in the middle of writing report 4
        f.write(report(4).model_dump_json().encode()[:57])
    with caplog.at_level(logging.WARNING, logger="agents.spool"):
        restarted = Spool(directory)
    assert "truncated trailing line" in caplog.text
    assert segment.read_bytes() == whole  # cleaned once, so the next start does not warn again
    restarted.append(report(5))
    assert drain(restarted) == [1, 2, 3, 5]


def test_an_unreadable_line_in_the_middle_is_skipped_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    directory.mkdir()
    lines = [report(1).model_dump_json(), '{"seq": "garbage"', report(3).model_dump_json(), ""]
    (directory / "000007.jsonl").write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="agents.spool"):
        spool = Spool(directory)
    assert "line 2: unreadable line skipped" in caplog.text
    spool.append(report(4))
    assert segment_files(directory) == ["000007.jsonl", "000008.jsonl"]  # new appends go to a new segment
    assert drain(spool) == [1, 3, 4]


def test_a_full_spool_drops_only_intermediate_samples(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "spool"
    line = len(encode(report(1)))
    max_bytes = 20 * line
    spool = Spool(directory, max_bytes=max_bytes, segment_bytes=4 * line)
    precious = {
        10: report(10, xid=True),  # carries XID events
        20: report(20, inventory=True),  # carries an inventory
        30: report(30, phase=AssignmentPhase.EXITED),  # the assignment's phase changed...
        31: report(31, phase=AssignmentPhase.EXITED),  # (...and merely repeats it: droppable)
        40: report(40, phase=AssignmentPhase.EXITED, applied=2),  # the applied generation moved
    }
    with caplog.at_level(logging.WARNING, logger="agents.spool"):
        for seq in range(1, 61):
            spool.append(
                precious.get(seq)
                or report(seq, phase=RUNNING if seq < 30 else AssignmentPhase.EXITED, applied=1 if seq < 40 else 2)
            )
            assert spool.stats().spooled_bytes <= max_bytes + 5 * line  # only the undroppable ones may exceed
    stats = spool.stats()
    assert stats.dropped > 0 and stats.spooled + stats.dropped == 60
    assert stats.spooled_bytes <= max_bytes
    assert "dropped" in caplog.text and "intermediate sample" in caplog.text
    kept = drain(Spool(directory, max_bytes=max_bytes))  # and the choice survives a restart
    assert kept == sorted(kept)
    assert {1, 10, 20, 30, 40, 60} <= set(kept)  # oldest, XID, inventory, phase change, generation, newest
    assert 31 not in kept or 32 not in kept  # repeats were thinned
    assert any(seq < 30 for seq in kept if seq not in {1, 10, 20}) and any(41 < seq < 60 for seq in kept)


def test_thinning_keeps_samples_spread_over_the_outage(tmp_path: Path) -> None:
    line = len(encode(report(1)))
    spool = Spool(tmp_path / "spool", max_bytes=10 * line)
    for seq in range(1, 101):
        spool.append(report(seq))
    kept = drain(spool)
    assert kept[0] == 1 and kept[-1] == 100
    gaps = [b - a for a, b in zip(kept, kept[1:], strict=False)]
    assert max(gaps) < 50  # not "the first and the last 8": the middle of the outage keeps samples too


def test_a_spool_of_undroppable_reports_goes_over_its_bound_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    line = len(encode(report(1, xid=True)))
    spool = Spool(tmp_path / "spool", max_bytes=3 * line)
    with caplog.at_level(logging.WARNING, logger="agents.spool"):
        for seq in range(1, 7):
            spool.append(report(seq, xid=True))
    assert spool.stats().dropped == 0 and len(spool) == 6
    assert caplog.text.count("over its bound") == 1  # once per crossing, not once per append
    assert drain(spool) == [1, 2, 3, 4, 5, 6]


def test_rejected_reports_are_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    spool.append(report(1))
    spool.append(report(2))
    spool.remove(1, rejected=True)
    spool.remove(99)  # unknown: nothing happens
    assert (spool.stats().rejected, spool.stats().spooled) == (1, 1)


def test_what_must_be_kept() -> None:
    base = report(1)
    from agents.spool import assignments_signature

    previous = assignments_signature(base)
    assert must_keep(report(2), None)  # the first of an outage
    assert not must_keep(report(2), previous)
    assert must_keep(report(2, xid=True), previous)
    assert must_keep(report(2, inventory=True), previous)
    assert must_keep(report(2, phase=AssignmentPhase.STOPPED), previous)
    assert must_keep(report(2, applied=2), previous)


def test_a_segment_removed_under_the_spool_is_skipped_not_wedged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "spool"
    line = len(encode(report(1)))
    spool = Spool(directory, segment_bytes=line)
    for seq in (1, 2, 3):
        spool.append(report(seq))
    (directory / "000001.jsonl").unlink()  # an operator cleaning up
    (directory / ".000002.jsonl.123.tmp").write_text("half a rewrite")
    with caplog.at_level(logging.WARNING, logger="agents.spool"):
        assert drain(spool) == [2, 3]
    assert "spooled report 1 is unreadable" in caplog.text
    Spool(directory)
    assert segment_files(directory) == []  # the interrupted rewrite's leftover is cleaned at start


def test_an_agent_rolled_back_to_protocol_1_reads_every_spooled_report(tmp_path: Path) -> None:
    """Regression: the spool kept v2 reports whole, and a v1 agent (which refuses unknown fields)
    skipped them as unreadable after a rollback, losing their XID events."""
    from protocol_v1 import v1_model

    from agents.protocol import ReportRequest

    spool = Spool(tmp_path / "spool")
    spool.append(report(1, xid=True).model_copy(update={"agent_version": "0.2.0"}))
    lines = (tmp_path / "spool" / "000001.jsonl").read_bytes().splitlines()
    old = v1_model("ReportRequest").model_validate_json(lines[0])  # would raise on a v2 field
    assert old.model_dump()["xid_events"], "the XID events survive the rollback"
    assert ReportRequest.model_validate_json(lines[0]).seq == 1
