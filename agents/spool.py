"""Reports the control plane has not acknowledged yet, kept on disk until it answers again.

Format. ``<state dir>/spool/NNNNNN.jsonl`` segment files, numbered in write order; each line is
one ``ReportRequest`` as compact JSON, so the files read oldest first are the queue. Lines are
appended (O_APPEND) and fsync'd one at a time: the agent spools only while the control plane is
unreachable, one report every few seconds, so an fsync per report is cheap and a power cut loses
at most the line being written. That line is then a truncated trailing line, which loading skips
with a warning (a line that does not parse anywhere else is skipped the same way) and clears by
rewriting the segment. A segment takes appends until it holds ``segment_bytes``; a new agent
process always starts a new one.

Acknowledgement. A report leaves the queue only when the control plane answered it (accepted or
duplicate), or refused it for good (``remove(..., rejected=True)``). A segment file is deleted
once none of its reports is left. Acknowledgements are not written down one by one: after a
restart the already-acknowledged reports of a partly sent segment are sent again, and the
control plane, which dedups by (node, seq), answers ``duplicate`` - an acknowledgement too.

Bound. ``max_bytes`` counts the bytes of the reports in the queue. When an append goes past it,
the spool sheds *intermediate samples* until it is back under ``SHED_TO`` of the bound (so a full
spool is not rewritten on every append). One at a time it drops the droppable report whose
removal leaves the smallest gap in sequence numbers between its neighbours (the oldest on a
tie), so the samples left stay evenly spread over the whole outage. Never dropped: the oldest
and the newest report, and any report that carries something a later report does not repeat -
a change of assignment phases or of the applied generation since the report before it, XID
events, or an inventory. Counters in a report are cumulative (energy, ECC, XID counts), so a
dropped sample loses resolution, not energy. If only undroppable reports are left the spool goes
over its bound and says so. Every shed is counted (``stats().dropped``) and logged.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import logging
import os
import re
import threading
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

from agents.protocol import MIN_PROTOCOL_VERSION, ReportRequest, for_version
from agents.state import fsync_dir, write_private_file

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
SEGMENT_BYTES = 1024 * 1024
SHED_TO = 0.9  # after shedding, the queue holds at most this share of the bound

_SEGMENT_NAME = re.compile(r"^(\d{6,})\.jsonl$")

# What a report says about the assignments: a report that repeats its predecessor's is droppable.
AssignmentsSignature = tuple[int, frozenset[tuple[str, int, int, str]]]


def assignments_signature(report: ReportRequest) -> AssignmentsSignature:
    phases = frozenset((a.workload_id, a.rank, a.epoch, a.phase.value) for a in report.assignments)
    return report.applied_generation, phases


def must_keep(report: ReportRequest, previous: AssignmentsSignature | None) -> bool:
    """Whether dropping ``report`` would lose something no later report repeats."""
    return (
        previous is None
        or bool(report.xid_events)
        or report.inventory is not None
        or assignments_signature(report) != previous
    )


def encode(report: ReportRequest) -> bytes:
    """One spool line: the report in the oldest protocol this agent speaks (see ``Spool.append``)."""
    return json.dumps(for_version(report, MIN_PROTOCOL_VERSION), separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class SpoolStats:
    spooled: int  # reports waiting
    spooled_bytes: int
    dropped: int  # intermediate samples shed to stay under the bound, since the agent started
    rejected: int  # spooled reports the control plane refused for good, since the agent started
    max_bytes: int


@dataclass
class _Entry:
    seq: int
    segment: int
    offset: int
    size: int
    keep: bool


class Spool:
    """An on-disk FIFO of ``ReportRequest``; thread-safe."""

    def __init__(
        self, directory: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, segment_bytes: int = SEGMENT_BYTES
    ) -> None:
        self._dir = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._entries: deque[_Entry] = deque()
        self._live: Counter[int] = Counter()  # segment -> reports of it still queued
        self._file_sizes: dict[int, int] = {}  # segment -> bytes on disk
        self._bytes = 0
        self._dropped = 0
        self._rejected = 0
        self._over_bound = False
        self._last_signature: AssignmentsSignature | None = None
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._load()
        self._active = max(self._file_sizes, default=0) + 1

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(len(self._entries), self._bytes, self._dropped, self._rejected, self._max_bytes)

    def append(self, report: ReportRequest) -> None:
        """Queue ``report`` behind every report already queued; on disk when this returns.

        Written in the oldest protocol this agent speaks, so an agent rolled back to it on this
        node still reads (and replays) every queued report; the newer fields it drops (the
        agent's version) say nothing about usage, and the next live report carries them again."""
        line = encode(report)
        with self._lock:
            if self._entries and report.seq <= self._entries[-1].seq:
                raise ValueError(f"report {report.seq} would go ahead of queued report {self._entries[-1].seq}")
            if self._file_sizes.get(self._active, 0) >= self._segment_bytes:
                self._active += 1
            segment = self._active
            offset = self._file_sizes.get(segment, 0)
            self._append_line(segment, offset, line)
            keep = must_keep(report, self._last_signature)
            self._last_signature = assignments_signature(report)
            self._entries.append(_Entry(report.seq, segment, offset, len(line), keep))
            self._live[segment] += 1
            self._file_sizes[segment] = offset + len(line)
            self._bytes += len(line)
            if self._bytes > self._max_bytes:
                self._shed()

    def head(self) -> ReportRequest | None:
        """The oldest queued report (it stays queued until ``remove``)."""
        with self._lock:
            while self._entries:
                entry = self._entries[0]
                try:
                    return ReportRequest.model_validate_json(self._read(entry))
                except (FileNotFoundError, ValueError) as exc:
                    # Removed or garbled under us (an operator, a bad disk): skip it, do not wedge the queue.
                    # Other OSErrors propagate: a disk that fails now may read again on the next try.
                    log.warning("spooled report %d is unreadable (%s); skipping it", entry.seq, exc)
                    self._forget(entry)
            return None

    def peek(self, count: int, *, max_bytes: int) -> list[ReportRequest]:
        """Up to ``count`` of the oldest queued reports, oldest first, whose lines hold at most
        ``max_bytes`` together (the first one always comes): a batch to replay. They stay queued
        until ``remove``. An unreadable one is skipped as ``head`` does."""
        batch: list[ReportRequest] = []
        size = 0
        with self._lock:
            index = 0
            while index < len(self._entries) and len(batch) < count:
                entry = self._entries[index]
                if batch and size + entry.size > max_bytes:
                    break
                try:
                    report = ReportRequest.model_validate_json(self._read(entry))
                except (FileNotFoundError, ValueError) as exc:
                    log.warning("spooled report %d is unreadable (%s); skipping it", entry.seq, exc)
                    self._forget(entry)
                    continue
                batch.append(report)
                size += entry.size
                index += 1
        return batch

    def remove(self, seq: int, *, rejected: bool = False) -> None:
        """Take report ``seq`` off the queue: acknowledged, or (``rejected``) refused for good."""
        with self._lock:
            entry = next((e for e in self._entries if e.seq == seq), None)
            if entry is None:
                return
            self._forget(entry)
            if rejected:
                self._rejected += 1

    # -- internals (call under _lock) ---------------------------------------------------------

    def _path(self, segment: int) -> Path:
        return self._dir / f"{segment:06d}.jsonl"

    def _append_line(self, segment: int, offset: int, line: bytes) -> None:
        path = self._path(segment)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, offset)  # leave no half line for the next append to extend
                raise
        finally:
            os.close(fd)
        if offset == 0:
            fsync_dir(self._dir)

    def _read(self, entry: _Entry) -> bytes:
        with open(self._path(entry.segment), "rb") as f:
            f.seek(entry.offset)
            data = f.read(entry.size)
        if len(data) != entry.size or not data.endswith(b"\n"):
            raise ValueError("short read")
        return data

    def _forget(self, entry: _Entry) -> None:
        self._entries.remove(entry)
        self._bytes -= entry.size
        self._live[entry.segment] -= 1
        if self._live[entry.segment] <= 0:
            self._delete_segment(entry.segment)
        if not self._entries:
            # A later outage starts afresh: its first report is compared with nothing, so kept.
            self._last_signature = None
        if self._bytes <= self._max_bytes:
            self._over_bound = False

    def _delete_segment(self, segment: int) -> None:
        del self._live[segment]
        self._file_sizes.pop(segment, None)
        self._path(segment).unlink(missing_ok=True)
        fsync_dir(self._dir)

    def _shed(self) -> None:
        """Drop droppable reports, smallest resulting gap first, until the queue is under SHED_TO."""
        target = int(self._max_bytes * SHED_TO)
        entries = list(self._entries)
        last = len(entries) - 1
        before = list(range(-1, last))  # a linked list over entries, so a drop updates two neighbours
        after = list(range(1, last + 2))

        def gap(i: int) -> int:  # the hole dropping entry i would leave; the ends are never dropped
            return entries[after[i]].seq - entries[before[i]].seq

        def droppable(i: int) -> bool:
            return 0 < i < last and not entries[i].keep

        heap = [(gap(i), entries[i].seq, i) for i in range(len(entries)) if droppable(i)]
        heapq.heapify(heap)
        dropped: set[int] = set()
        remaining = self._bytes
        while remaining > target and heap:
            hole, _, i = heapq.heappop(heap)
            if i in dropped or hole != gap(i):
                continue  # stale: a neighbour went since this was pushed (gaps only grow); a fresh one is queued
            dropped.add(i)
            remaining -= entries[i].size
            b, a = before[i], after[i]
            after[b], before[a] = a, b
            for j in (b, a):
                if droppable(j):
                    heapq.heappush(heap, (gap(j), entries[j].seq, j))
        if dropped:
            gone = [entries[i] for i in sorted(dropped)]
            self._rewrite_without(gone)
            self._dropped += len(gone)
            log.warning(
                "report spool over %d bytes: dropped %d intermediate sample(s), seqs %d to %d; %d left, %d bytes",
                self._max_bytes,
                len(gone),
                gone[0].seq,
                gone[-1].seq,
                len(self._entries),
                self._bytes,
            )
        if self._bytes > self._max_bytes and not self._over_bound:
            self._over_bound = True
            log.warning(
                "report spool holds %d bytes, over its bound of %d: the %d report(s) left all carry assignment "
                "changes, XID events or an inventory, which are never dropped",
                self._bytes,
                self._max_bytes,
                len(self._entries),
            )

    def _rewrite_without(self, gone: list[_Entry]) -> None:
        """Rewrite each segment that held a dropped report, atomically, with the reports it keeps."""
        gone_ids = {id(e) for e in gone}
        for segment in sorted({e.segment for e in gone}):
            path = self._path(segment)
            old = path.read_bytes()
            kept = [e for e in self._entries if e.segment == segment and id(e) not in gone_ids]
            if not kept:
                self._delete_segment(segment)
                continue
            body = bytearray()
            for e in kept:
                line = old[e.offset : e.offset + e.size]
                e.offset = len(body)
                body += line
            write_private_file(path, bytes(body))
            self._file_sizes[segment] = len(body)
            self._live[segment] = len(kept)
        self._entries = deque(e for e in self._entries if id(e) not in gone_ids)
        self._bytes -= sum(e.size for e in gone)

    def _load(self) -> None:
        for leftover in self._dir.glob(".*.tmp"):  # a rewrite that a crash interrupted; the segment is intact
            leftover.unlink(missing_ok=True)
        segments = sorted(int(m.group(1)) for p in self._dir.iterdir() if (m := _SEGMENT_NAME.match(p.name)))
        for segment in segments:
            self._load_segment(segment)
        if self._entries:
            log.info(
                "report spool holds %d report(s), %d bytes, from before this start: replaying them first",
                len(self._entries),
                self._bytes,
            )
        if self._bytes > self._max_bytes:
            self._shed()  # the bound may have been lowered since they were written

    def _load_segment(self, segment: int) -> None:
        path = self._path(segment)
        data = path.read_bytes()
        lines = data.split(b"\n")  # the last piece is b"" if the file ends with a newline
        kept: list[tuple[ReportRequest, bytes]] = []
        skipped = 0
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                report = ReportRequest.model_validate_json(raw)
            except ValueError as exc:
                trailing = number == len(lines)
                what = "truncated trailing line (a crash mid-write?)" if trailing else "unreadable line"
                log.warning("report spool %s line %d: %s skipped: %s", path.name, number, what, _first_line(exc))
                skipped += 1
                continue
            last = kept[-1][0].seq if kept else (self._entries[-1].seq if self._entries else None)
            if last is not None and report.seq <= last:
                log.warning("report spool %s line %d: seq %d out of order; skipped", path.name, number, report.seq)
                skipped += 1
                continue
            kept.append((report, raw + b"\n"))
        body = b"".join(line for _, line in kept)
        if not kept:
            path.unlink()
            fsync_dir(self._dir)
            return
        if body != data:
            write_private_file(path, body)  # drop the bad lines once, not at every start
        offset = 0
        for report, line in kept:
            keep = must_keep(report, self._last_signature)
            self._last_signature = assignments_signature(report)
            self._entries.append(_Entry(report.seq, segment, offset, len(line), keep))
            offset += len(line)
        self._live[segment] = len(kept)
        self._file_sizes[segment] = offset
        self._bytes += offset
        if skipped:
            log.warning("report spool %s: skipped %d line(s), kept %d report(s)", path.name, skipped, len(kept))


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
