"""What the agent keeps on disk across restarts: credential, report seqs, finished and live work.

Every file is written 0600 and atomically. A corrupt file is fatal with a message saying what
to do: guessing would mean a second run of a finished job or a GPU with two owners. The one
exception is the GPUs' health (``HealthLedger``): without it the agent judges afresh, as it did
before it kept one, so a corrupt file is logged and ignored.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path

from agents.health import GpuHealthTracker, restore_trackers, trackers_snapshot
from agents.protocol import AssignmentPhase, AssignmentStatus, RegisterResponse
from agents.runtime.orphans import LiveProcess
from agents.runtime.processes import AssignmentKey, assignment_key

log = logging.getLogger(__name__)

SEQ_BLOCK = 1000  # seqs reserved per disk write; a restart skips the unused rest of a block


class FatalError(Exception):
    """The agent cannot go on (refused registration, unreadable state); the message says why."""


def write_private_file(path: Path, data: bytes) -> None:
    """Write 0600 and atomically: a crash leaves the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a file's creation, rename or removal in ``directory`` survive a power cut."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SeqAllocator:
    """Report sequence numbers that strictly increase across restarts without an fsync per report.

    The file holds a bound above every seq handed out: blocks of ``SEQ_BLOCK`` are reserved on
    disk before use, and a restarted agent starts at the bound.
    """

    def __init__(self, path: Path, block: int = SEQ_BLOCK) -> None:
        self._path = path
        self._block = block
        self._lock = threading.Lock()
        try:
            self._next = int(json.loads(path.read_text())["next"])
        except FileNotFoundError:
            self._next = 1
        except (ValueError, KeyError, TypeError) as exc:
            raise FatalError(f"{path} is corrupt ({exc}); restore it or remove the node's state") from None
        self._limit = self._next

    def next(self) -> int:
        with self._lock:
            if self._next >= self._limit:
                self._limit = self._next + self._block
                write_private_file(self._path, json.dumps({"next": self._limit}).encode())
            seq = self._next
            self._next += 1
            return seq


class FinishedLedger:
    """Assignments that ended on their own or were refused, remembered across agent restarts.

    Without it, an agent restarted before the control plane dropped a finished assignment from
    the desired state would run that job a second time (and forget a fencing refusal). Statuses
    given to ``record`` (orphans a previous agent left, stopped at start-up) are kept whatever
    their phase, until the agent forgets them (pops them from ``restored``).
    """

    _PHASES = frozenset({AssignmentPhase.EXITED, AssignmentPhase.REJECTED})

    def __init__(self, path: Path) -> None:
        self._path = path
        try:
            raw = json.loads(path.read_text())
            restored = [AssignmentStatus.model_validate(item) for item in raw]
        except FileNotFoundError:
            restored = []
        except ValueError as exc:
            raise FatalError(f"{path} is corrupt ({exc}); remove it to forget finished assignments") from None
        self.restored = {assignment_key(status): status for status in restored}
        self._on_disk = dict(self.restored)

    def save(self, known: Sequence[AssignmentStatus]) -> None:
        finished = [
            status for status in known if status.phase in self._PHASES or assignment_key(status) in self.restored
        ]
        if {assignment_key(status) for status in finished} != set(self._on_disk):
            self._write({assignment_key(status): status for status in finished})

    def record(self, statuses: Iterable[AssignmentStatus]) -> None:
        """Remember ``statuses`` now (on disk before this returns); a key already known keeps its status."""
        for status in statuses:
            self.restored.setdefault(assignment_key(status), status)
        self._write({**self._on_disk, **self.restored})

    def _write(self, statuses: dict[AssignmentKey, AssignmentStatus]) -> None:
        body = json.dumps([status.model_dump(mode="json") for status in statuses.values()]).encode()
        write_private_file(self._path, body)
        self._on_disk = statuses


def load_credential(path: Path) -> RegisterResponse | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return RegisterResponse.model_validate_json(text)
    except ValueError as exc:
        raise FatalError(f"{path} is corrupt ({exc}); re-provision the node") from None


class ProcessLedger:
    """The workload process groups alive right now, so a restarted agent can find its orphans.

    The runner rewrites it after every start and exit (``save`` is its ``record_live``). An
    agent killed without stopping its workloads leaves the list here; start-up recovery reads
    it with ``load`` and clears it once the orphans are dealt with.
    """

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> list[LiveProcess]:
        try:
            raw = json.loads(self._path.read_text())
            return [_live_process(item) for item in raw]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as exc:
            raise FatalError(
                f"{self._path} is corrupt ({exc!r}); stop any workload processes left on this node, then remove it"
            ) from None

    def save(self, live: Sequence[LiveProcess]) -> None:
        write_private_file(self._path, json.dumps([asdict(entry) for entry in live]).encode())


def _live_process(item: dict[str, object]) -> LiveProcess:
    ticks, started = item["start_ticks"], item.get("started_at")
    return LiveProcess(
        workload_id=str(item["workload_id"]),
        rank=_int(item["rank"]),
        epoch=_int(item["epoch"]),
        pid=_int(item["pid"]),
        start_ticks=None if ticks is None else _int(ticks),
        started_at=None if started is None else _float(started),
    )


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _float(value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


class HealthLedger:
    """Each GPU's health tracker, kept across agent restarts (``<state dir>/health.json``).

    Written atomically when a condition changes, and otherwise at most every
    ``counters_every_s`` (the last energy and ECC readings, which tell a reset while the agent
    was down); a corrupt or unreadable file is logged and ignored at start.
    """

    def __init__(self, path: Path, *, counters_every_s: float = 60.0) -> None:
        self._path = path
        self._every = counters_every_s
        self._written_conditions: object = None
        self._written_at: float | None = None

    def load(self) -> dict[str, GpuHealthTracker]:
        try:
            raw = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the GPUs' health state %s (%s); judging health afresh", self._path, exc)
            return {}
        try:
            trackers = restore_trackers(json.loads(raw))
        except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
            log.warning("the GPUs' health state %s is corrupt (%s); ignoring it", self._path, exc)
            return {}
        self._written_conditions = _conditions(trackers_snapshot(trackers))
        if trackers:
            log.info("restored the health of %d GPU(s) from %s", len(trackers), self._path)
        return trackers

    def save(self, trackers: dict[str, GpuHealthTracker], *, now: float, force: bool = False) -> None:
        """On disk when a condition changed, when the counters are due, or when ``force``."""
        snapshot = trackers_snapshot(trackers)
        conditions = _conditions(snapshot)
        due = self._written_at is None or now - self._written_at >= self._every
        if not force and not due and conditions == self._written_conditions:
            return
        try:
            write_private_file(self._path, json.dumps(snapshot, separators=(",", ":")).encode())
        except OSError as exc:
            log.warning("cannot write the GPUs' health state %s: %s", self._path, exc)
            return
        self._written_conditions = conditions
        self._written_at = now


def _conditions(snapshot: dict[str, object]) -> object:
    gpus = snapshot["gpus"]
    assert isinstance(gpus, dict)
    return {uuid: state["conditions"] for uuid, state in gpus.items()}
