"""The node agent process: register, report, watch desired state, run what it says.

Four threads share one ``Agent``: reports (telemetry + assignment statuses every few seconds),
the desired-state long poll, a one-second housekeeping tick (reconcile, simulator load) and the
log shipper. The main thread only waits for SIGTERM/SIGINT, then stops the workloads' process
groups, sends a last report and exits 0. Every loop survives a failed call to the control
plane: the agent's job is to keep the GPUs and the workloads in order while the control plane
is away, and its counters are cumulative, so nothing is lost by a missed report.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.client import AgentClient, ControlPlaneError, RejectedError, TransientError
from agents.config import AgentConfig, ConfigError, load_config
from agents.exporter import AgentCollector, MetricsServer, build_exporter
from agents.gpu.base import GpuBackend, LoadDriver
from agents.gpu.sim import SimBackend
from agents.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    AssignmentPhase,
    AssignmentStatus,
    DesiredState,
    LogChunk,
    LogUpload,
    NodeInventory,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    log_key,
)
from agents.runtime.processes import TERMINAL_PHASES, AssignmentKey, ProcessRunner, assignment_key

log = logging.getLogger("agents.daemon")

SEQ_BLOCK = 1000  # seqs reserved per disk write; a restart skips the unused rest of a block
LOG_CHUNK_BYTES = 256 * 1024
LOG_UPLOAD_BYTES = 2 * 1024 * 1024  # per request: well under the 64 chunks x 1.5 MB the wire allows
LOG_SETTLE_TIMEOUT_S = 120.0  # give up waiting for a log ack and forget the assignment anyway
SIM_MEMORY_SHARE = 0.85  # simulated workloads fill this share of usable memory x their utilisation


class FatalError(Exception):
    """The agent cannot go on (refused registration, unreadable state); the message says why."""


# -- reconcile: a pure function of plain data -----------------------------------------------------


@dataclass(frozen=True)
class ReconcilePlan:
    start: tuple[Assignment, ...] = ()
    reject: tuple[tuple[Assignment, str], ...] = ()
    stop: tuple[AssignmentKey, ...] = ()
    forget: tuple[AssignmentKey, ...] = ()


def plan_reconcile(
    desired: Sequence[Assignment],
    known: Sequence[AssignmentStatus],
    *,
    max_epoch_seen: int,
    node_gpus: Collection[str],
    admitted: Collection[AssignmentKey] = frozenset(),
    busy_gpus: Collection[str] = frozenset(),
    settled: Collection[AssignmentKey] = frozenset(),
) -> ReconcilePlan:
    """Decide what to start, refuse, stop and forget to move ``known`` towards ``desired``.

    Fencing: an assignment new to this agent whose epoch is lower than the highest epoch of an
    *earlier* desired state comes from a deposed scheduler and is refused ("stale epoch").
    Epochs are the scheduler's leadership epoch, so assignments of different epochs live side
    by side in one desired state; comparing only against earlier states (and never against an
    assignment already ``admitted``) keeps legitimate older placements running.

    A terminal status is kept (and reported) until the assignment has left the desired state
    and the control plane has received that status (``settled``); an assignment that ended is
    never restarted while it is still desired. A start waits while any of its GPUs is still
    held by a process being stopped, so a GPU never has two owners at once.
    """
    known_keys = {assignment_key(status) for status in known}
    desired_keys = {assignment_key(a) for a in desired}
    busy = set(busy_gpus)
    claimed: dict[str, AssignmentKey] = {}
    start: list[Assignment] = []
    reject: list[tuple[Assignment, str]] = []
    for a in sorted(desired, key=lambda a: (-a.epoch, a.workload_id, a.rank)):
        key = assignment_key(a)
        if key in known_keys:
            continue
        unknown = [uuid for uuid in a.gpu_uuids if uuid not in node_gpus]
        conflict = next((claimed[uuid] for uuid in a.gpu_uuids if uuid in claimed), None)
        if key not in admitted and a.epoch < max_epoch_seen:
            reject.append((a, f"stale epoch: {a.epoch} is older than epoch {max_epoch_seen} seen before"))
        elif unknown:
            reject.append((a, f"unknown GPU(s) on this node: {', '.join(unknown)}"))
        elif len(set(a.gpu_uuids)) != len(a.gpu_uuids):
            reject.append((a, "the same GPU is listed twice"))
        elif conflict is not None:
            reject.append((a, f"GPU conflict with workload {conflict[0]} epoch {conflict[2]} in one desired state"))
        else:
            claimed.update(dict.fromkeys(a.gpu_uuids, key))
            if not busy.intersection(a.gpu_uuids):
                start.append(a)
    stop: list[AssignmentKey] = []
    forget: list[AssignmentKey] = []
    for status in known:
        key = assignment_key(status)
        if key in desired_keys:
            continue
        if status.phase not in TERMINAL_PHASES:
            stop.append(key)
        elif key in settled:
            forget.append(key)
    return ReconcilePlan(start=tuple(start), reject=tuple(reject), stop=tuple(stop), forget=tuple(forget))


# -- state kept across restarts ------------------------------------------------------------------


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
    dir_fd = os.open(path.parent, os.O_RDONLY)
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
    the desired state would run that job a second time (and forget a fencing refusal).
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
        self._saved = set(self.restored)

    def save(self, known: Sequence[AssignmentStatus]) -> None:
        finished = [status for status in known if status.phase in self._PHASES]
        keys = {assignment_key(status) for status in finished}
        if keys != self._saved:
            body = json.dumps([status.model_dump(mode="json") for status in finished]).encode()
            write_private_file(self._path, body)
            self._saved = keys


def load_credential(path: Path) -> RegisterResponse | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return RegisterResponse.model_validate_json(text)
    except ValueError as exc:
        raise FatalError(f"{path} is corrupt ({exc}); re-provision the node") from None


class Backoff:
    """Capped exponential backoff with jitter, so a restarted control plane is not stampeded."""

    def __init__(self, initial_s: float = 0.5, cap_s: float = 30.0) -> None:
        self._initial = initial_s
        self._cap = cap_s
        self._next = initial_s

    def delay(self) -> float:
        delay = self._next * random.uniform(0.5, 1.0)
        self._next = min(self._cap, self._next * 2)
        return delay

    def reset(self) -> None:
        self._next = self._initial


def register(
    cfg: AgentConfig, backend: GpuBackend, client: AgentClient, stop: threading.Event
) -> RegisterResponse | None:
    """Exchange the bootstrap token for a node credential; retry while the control plane is away."""
    path = cfg.state_dir / "credential.json"
    saved = load_credential(path)
    if saved is not None:
        return saved
    if cfg.bootstrap_token is None:
        raise FatalError(f"no credential in {path} and no bootstrap token: pass --bootstrap-token")
    request = RegisterRequest(
        protocol_version=PROTOCOL_VERSION,
        bootstrap_token=cfg.bootstrap_token,
        inventory=NodeInventory(
            hostname=cfg.hostname,
            address=cfg.advertise_addr,
            backend=backend.name,
            driver_version=backend.driver_version(),
            gpus=backend.inventory(),
        ),
    )
    backoff = Backoff()
    while not stop.is_set():
        try:
            response = client.register(request)
        except RejectedError as exc:
            raise FatalError(f"registration refused by {cfg.server}: {exc.detail} (HTTP {exc.status_code})") from None
        except TransientError as exc:
            delay = backoff.delay()
            log.warning("control plane unreachable for registration (%s); retrying in %.1fs", exc, delay)
            stop.wait(delay)
            continue
        write_private_file(path, response.model_dump_json().encode())
        return response
    return None


# -- the running agent ---------------------------------------------------------------------------


class Agent:
    """Owns the loops; every mutable field below is guarded by ``_lock``."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        registration: RegisterResponse,
        backend: GpuBackend,
        runner: ProcessRunner,
        client: AgentClient,
        collector: AgentCollector,
        seqs: SeqAllocator,
        finished: FinishedLedger,
        stop: threading.Event,
    ) -> None:
        self._cfg = cfg
        self._node_id = registration.node_id
        self._report_interval_s = cfg.report_interval_s or registration.report_interval_s
        self._watch_timeout_s = registration.watch_timeout_s
        self._backend = backend
        self._runner = runner
        self._client = client
        self._collector = collector
        self._seqs = seqs
        self._finished = finished
        self._stop = stop
        self._wake_watch = threading.Event()
        self._lock = threading.RLock()
        inventory = backend.inventory()
        self._node_gpus = {gpu.uuid for gpu in inventory}
        reserved = backend.memory_reserved_mib()
        self._usable_mib = {gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) for gpu in inventory}
        self._desired: DesiredState | None = None
        self._epoch_floor = 0
        self._applied_generation = 0
        self._admitted: set[AssignmentKey] = set()
        self._reported_terminal: dict[AssignmentKey, float] = {}  # key -> when first reported
        self._log_acked: dict[str, int] = {}
        self._threads: list[threading.Thread] = []

    @property
    def generation(self) -> int:
        with self._lock:
            return self._desired.generation if self._desired is not None else 0

    def start(self) -> None:
        for name, target in (
            ("report", self._report_loop),
            ("watch", self._watch_loop),
            ("housekeeping", self._housekeeping_loop),
            ("logs", self._log_loop),
        ):
            thread = threading.Thread(target=target, name=f"agent-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def shutdown(self) -> None:
        """Stop the workloads first (they hold the GPUs), then tell the control plane, then exit."""
        with self._lock:  # a reconcile in flight finishes first, and none starts after
            self._stop.set()
            self._runner.stop_all(self._cfg.stop_grace_s, reason="agent shutting down")
        self._wake_watch.set()
        if not self._runner.wait_idle(self._cfg.stop_grace_s + 5.0):
            log.error("some workload processes outlived SIGKILL; they may still hold GPUs")
        with self._lock:
            self._finished.save(self.known_statuses())
        self.report_once()
        self.ship_logs()
        deadline = time.monotonic() + 2.0
        for thread in self._threads:
            if thread.name != "agent-watch":  # may sit in a long poll; it is a daemon thread
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- report -------------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            self._survive(self.report_once)
            self._stop.wait(self._report_interval_s * random.uniform(0.9, 1.1))

    def report_once(self) -> None:
        samples = self._backend.sample()
        self._collector.set_gpus(samples)
        with self._lock:
            statuses = self.known_statuses()
            applied = self._applied()
        seq = self._seqs.next()
        request = ReportRequest(
            protocol_version=PROTOCOL_VERSION,
            seq=seq,
            sent_at=time.time(),
            gpus=samples,
            assignments=statuses,
            applied_generation=applied,
        )
        try:
            response = self._client.report(self._node_id, request)
        except ControlPlaneError as exc:
            self._collector.record_report(seq, ok=False, at=time.time())
            log.warning("report %d failed: %s", seq, exc)
            return
        now = time.time()
        self._collector.record_report(seq, ok=True, at=now)
        if not response.accepted:
            log.warning("report %d not accepted by the control plane (duplicate=%s)", seq, response.duplicate)
        with self._lock:
            for status in statuses:
                if status.phase in TERMINAL_PHASES:
                    self._reported_terminal.setdefault(assignment_key(status), now)
        if response.generation > self.generation and not self._stop.is_set():
            # The long poll may be parked on a replica that missed the wake-up: fetch now.
            self._wake_watch.set()
            try:
                self._fetch_desired(wait_s=0.0)
            except ControlPlaneError as exc:
                log.warning("fetching desired generation %d failed: %s", response.generation, exc)

    # -- desired state ------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                before, began = self.generation, time.monotonic()
                self._fetch_desired(wait_s=self._watch_timeout_s)
                backoff.reset()
                if self.generation == before and time.monotonic() - began < 0.5:
                    self._stop.wait(1.0)  # a server that does not hold the poll must not make us spin
            except ControlPlaneError as exc:
                if self._stop.is_set():
                    return
                delay = backoff.delay()
                log.warning("watching desired state failed: %s; retrying in %.1fs", exc, delay)
                self._wake_watch.wait(delay)
                self._wake_watch.clear()
            except Exception:
                log.exception("watch loop error; continuing")
                self._stop.wait(1.0)

    def _fetch_desired(self, *, wait_s: float) -> None:
        state = self._client.desired(self._node_id, after=self.generation, wait_s=wait_s)
        self.apply_desired(state)

    def apply_desired(self, state: DesiredState) -> None:
        with self._lock:
            current = self._desired
            if current is not None and state.generation <= current.generation:
                return  # an older answer (slow replica, racing fetch) must not undo a newer one
            log.info("desired state generation %d: %d assignment(s)", state.generation, len(state.assignments))
            self._desired = state
            self.reconcile()

    def reconcile(self) -> None:
        with self._lock:
            if self._stop.is_set():
                return  # shutting down: nothing may start after stop_all
            desired = self._desired.assignments if self._desired is not None else []
            busy = {uuid for a in self._runner.active_assignments() for uuid in a.gpu_uuids}
            known = self.known_statuses()
            plan = plan_reconcile(
                desired,
                known,
                max_epoch_seen=self._epoch_floor,
                node_gpus=self._node_gpus,
                admitted=self._admitted,
                busy_gpus=busy,
                settled=self._settled_keys(),
            )
            for assignment, message in plan.reject:
                self._runner.reject(assignment, message)
            for wid, rank, epoch in plan.stop:
                log.info("stopping %s rank %d epoch %d: no longer desired", wid, rank, epoch)
                self._runner.stop(wid, self._cfg.stop_grace_s, rank=rank, epoch=epoch, reason="no longer desired")
            for assignment in plan.start:
                self._runner.start(assignment, node_address=self._cfg.advertise_addr)
            for key in plan.forget:
                self._runner.forget(key)
                self._finished.restored.pop(key, None)
                self._reported_terminal.pop(key, None)
            self._finished.save(self.known_statuses())
            rejected = {assignment_key(a) for a, _ in plan.reject}
            self._admitted = {assignment_key(a) for a in desired} - rejected
            self._epoch_floor = max([self._epoch_floor, *(a.epoch for a in desired)])
        self._apply_load()

    def _applied(self) -> int:
        """The newest desired generation none of whose dropped assignments still has a process.

        The control plane frees a dropped assignment's GPUs only once this reaches the generation
        that dropped it, so it must never run ahead of a process that is still being stopped
        (call under _lock).
        """
        if self._desired is not None:
            wanted = {assignment_key(a) for a in self._desired.assignments}
            if all(assignment_key(a) in wanted for a in self._runner.active_assignments()):
                self._applied_generation = self._desired.generation
        return self._applied_generation

    def known_statuses(self) -> list[AssignmentStatus]:
        """The runner's statuses plus finished ones restored from before a restart (call under _lock)."""
        live = self._runner.poll()
        keys = {assignment_key(status) for status in live}
        return live + [status for key, status in self._finished.restored.items() if key not in keys]

    def _settled_keys(self) -> set[AssignmentKey]:
        """Terminal statuses the control plane has, whose logs are shipped (or waited on long enough)."""
        now = time.time()
        logs = {(wid, rank): path for wid, rank, path in self._runner.log_files()}
        settled = set()
        for key, reported_at in self._reported_terminal.items():
            path = logs.get((key[0], key[1]))
            shipped = path is None or _size(path) <= self._log_acked.get(log_key(key[0], key[1]), 0)
            if shipped or now - reported_at > LOG_SETTLE_TIMEOUT_S:
                settled.add(key)
        return settled

    # -- housekeeping: deferred starts, forgetting, simulator load ----------------------------

    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._survive(self.reconcile)

    def _apply_load(self) -> None:
        active = self._runner.active_assignments()
        owners = {uuid: a.workload_id for a in active for uuid in a.gpu_uuids}
        self._collector.set_assignments(len(active), owners)
        if not isinstance(self._backend, LoadDriver):
            return
        loads = {uuid: a.sim_utilization for a in active for uuid in a.gpu_uuids}
        for uuid in self._node_gpus:
            if uuid in loads:
                memory = loads[uuid] * SIM_MEMORY_SHARE * self._usable_mib[uuid]
                self._backend.set_load(uuid, loads[uuid], memory)
            else:
                self._backend.clear_load(uuid)

    # -- logs ---------------------------------------------------------------------------------

    def _log_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._survive(self.ship_logs)

    def ship_logs(self, max_rounds: int = 8) -> None:
        """Send each rank's log bytes beyond what the control plane acknowledged."""
        for _ in range(max_rounds):
            chunks = self._next_chunks()
            if not chunks:
                return
            try:
                response = self._client.upload_logs(
                    self._node_id, LogUpload(protocol_version=PROTOCOL_VERSION, chunks=chunks)
                )
            except ControlPlaneError as exc:
                log.warning("log upload failed: %s", exc)
                return
            with self._lock:
                self._log_acked.update(response.acked)

    def _next_chunks(self) -> list[LogChunk]:
        chunks: list[LogChunk] = []
        budget = LOG_UPLOAD_BYTES
        for wid, rank, path in self._runner.log_files():
            with self._lock:
                offset = self._log_acked.get(log_key(wid, rank), 0)
            try:
                with open(path, "rb") as f:
                    f.seek(offset)
                    while budget > 0 and len(chunks) < 64:
                        data = f.read(min(LOG_CHUNK_BYTES, budget))
                        if not data:
                            break
                        chunks.append(
                            LogChunk(
                                workload_id=wid,
                                rank=rank,
                                offset=offset,
                                data_b64=base64.b64encode(data).decode(),
                            )
                        )
                        offset += len(data)
                        budget -= len(data)
            except FileNotFoundError:
                continue
        return chunks

    def _survive(self, step: Callable[[], None]) -> None:
        """Run one loop iteration; a bug in it is logged with its traceback, the agent carries on."""
        try:
            step()
        except Exception:
            log.exception("agent loop step %s failed; continuing", getattr(step, "__name__", step))


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# -- process entry point ---------------------------------------------------------------------------


def build_backend(cfg: AgentConfig) -> GpuBackend:
    return SimBackend(
        cfg.sim_gpus,
        seed=cfg.sim_seed,
        node_index=cfg.sim_node_index,
        cluster_uuid=cfg.sim_cluster_uuid,
        clique_id=cfg.sim_clique_id,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    except ConfigError as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    if cfg.log_level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per report would drown the log
    if cfg.backend == "nvml":
        print("switchyard-agent: the NVML backend is not built yet; use --backend sim", file=sys.stderr)
        return 2
    stop = threading.Event()
    _install_signal_handlers(stop)
    try:
        return _run(cfg, stop)
    except FatalError as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 1


def _run(cfg: AgentConfig, stop: threading.Event) -> int:
    backend = build_backend(cfg)
    registry, collector = build_exporter(cfg.hostname)
    collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise FatalError(f"cannot use state dir {cfg.state_dir}: {exc.strerror}") from None
    try:
        metrics = MetricsServer(registry, host=cfg.metrics_addr, port=cfg.metrics_port).start()
    except OSError as exc:
        raise FatalError(f"cannot serve metrics on {cfg.metrics_addr}:{cfg.metrics_port}: {exc.strerror}") from None
    print(f"switchyard-agent metrics_url={metrics.url}", flush=True)
    log.info("serving metrics at %s", metrics.url)
    client = AgentClient(cfg.server)
    try:
        seqs = SeqAllocator(cfg.state_dir / "seq.json")
        finished = FinishedLedger(cfg.state_dir / "finished.json")
        registration = register(cfg, backend, client, stop)
        if registration is None:
            return 0  # stopped while waiting for the control plane
        client.set_credential(registration.credential)
        print(f"switchyard-agent node_id={registration.node_id}", flush=True)
        log.info("node %s: reporting every %.1fs", registration.node_id, registration.report_interval_s)
        runner = ProcessRunner(cfg.state_dir / "logs", work_dir=cfg.state_dir / "work", base_env=cfg.child_env)
        agent = Agent(
            cfg,
            registration=registration,
            backend=backend,
            runner=runner,
            client=client,
            collector=collector,
            seqs=seqs,
            finished=finished,
            stop=stop,
        )
        agent.start()
        while not stop.wait(1.0):
            pass
        log.info("stopping: terminating workloads")
        agent.shutdown()
        return 0
    finally:
        metrics.close()
        client.close()
        backend.close()


def _install_signal_handlers(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # embedded (tests): the caller owns signals and sets ``stop`` itself

    def handle(signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


if __name__ == "__main__":
    sys.exit(main())
