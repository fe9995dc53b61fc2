"""The node agent process: register, report, watch desired state, run what it says.

Four threads share one ``Agent``: reports (telemetry + assignment statuses every few seconds),
the desired-state long poll, a one-second housekeeping tick (reconcile, simulator load) and the
log shipper. The main thread only waits for SIGTERM/SIGINT, then stops the workloads' process
groups, sends a last report and exits 0. Every loop survives a failed call to the control
plane: the agent's job is to keep the GPUs and the workloads in order while the control plane
is away. A report that could not be delivered goes to the on-disk ``Spool`` and is sent, in
sequence order and before any newer report, once the control plane answers again.

Each report also carries the XID events the backend saw since the previous one, and each GPU's
health as ``agents.health`` judges it from those events and the sample (``judge_health``).

Before it registers, the agent stops the workload process groups a killed or crashed
predecessor left running (``recover_orphans``), so no assignment ever runs twice on its GPUs.
The planner lives in ``reconcile``, the files kept across restarts in ``state``, the log
upload in ``logship``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from importlib import import_module

from agents.client import AgentClient, ControlPlaneError, RejectedError, TransientError, agent_version
from agents.config import AgentConfig, ConfigError, load_config
from agents.exporter import AgentCollector, MetricsServer, SpoolStats, build_exporter
from agents.gpu.base import GpuBackend, InventoryWatcher, LibraryVersions, LoadDriver, XidEventSource
from agents.gpu.sim import SimBackend
from agents.health import GpuHealthTracker, Reading
from agents.logship import LogShipper
from agents.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    Assignment,
    AssignmentStatus,
    DesiredState,
    GpuInventory,
    GpuTelemetry,
    NodeInventory,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    XidEvent,
    for_version,
)
from agents.reconcile import plan_reconcile
from agents.runtime.orphans import stop_orphans
from agents.runtime.processes import TERMINAL_PHASES, AssignmentKey, ProcessRunner, assignment_key
from agents.runtime.sandbox import Sandbox, default_policy, nvidia_minors
from agents.spool import Spool
from agents.state import (
    FatalError,
    FinishedLedger,
    ProcessLedger,
    SeqAllocator,
    load_credential,
    write_private_file,
)

log = logging.getLogger("agents.daemon")

LOG_SETTLE_TIMEOUT_S = 120.0  # give up waiting for a log ack and forget the assignment anyway
SIM_MEMORY_SHARE = 0.85  # simulated workloads fill this share of usable memory x their utilisation
XID_EVENTS_PER_REPORT = 1024  # the wire's limit; more wait for the next report
MAX_UNSENT_XID_EVENTS = 16 * 1024  # an XID storm beyond this loses its oldest events (xid_counts keep counting)
MAX_HEALTH_REASONS = 16  # the wire's limit
FINAL_DRAIN_S = 5.0  # at shutdown, spooled reports are sent for this long; the rest wait for the next start
# A refused credential is not the report's fault: keep the report spooled rather than drop it.
CREDENTIAL_REFUSED = frozenset({401, 403})


class BackendUnavailable(Exception):
    """The configured GPU backend cannot start (module missing, NVML failed); the message says why."""


class Delivery(Enum):
    ACKED = "acked"  # accepted or duplicate: the control plane has it
    REFUSED = "refused"  # a 4xx about this report: sending it again will not help
    RETRY = "retry"  # unreachable, overloaded, or our credential refused: try again later


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


def judge_health(
    trackers: dict[str, GpuHealthTracker],
    samples: Sequence[GpuTelemetry],
    events: Sequence[XidEvent],
    *,
    now: float,
) -> list[GpuTelemetry]:
    """Fold the events since the previous report and each GPU's readings into its health verdict.

    ``trackers`` holds one ``GpuHealthTracker`` per GPU UUID across reports (missing ones are
    added). Events for a GPU absent from ``samples`` (fallen off the bus) still reach its
    tracker, so what happened to it is known if it comes back.
    """
    by_uuid: dict[str, list[XidEvent]] = {}
    for event in events:
        by_uuid.setdefault(event.uuid, []).append(event)
    sampled = {gpu.uuid for gpu in samples}
    for uuid, unsampled in by_uuid.items():
        if uuid not in sampled:
            trackers.setdefault(uuid, GpuHealthTracker()).observe(now=now, events=unsampled)
    judged = []
    for gpu in samples:
        reading = Reading(
            energy_mj=gpu.energy_mj,
            recovery_action=gpu.recovery_action,
            remapped_rows_pending=gpu.remapped_rows_pending,
            remapped_rows_failure=gpu.remapped_rows_failure,
            ecc_volatile_dbe=gpu.ecc_volatile_dbe,
        )
        tracker = trackers.setdefault(gpu.uuid, GpuHealthTracker())
        verdict = tracker.observe(now=now, events=by_uuid.get(gpu.uuid, ()), reading=reading)
        reasons = list(verdict.reasons)
        if len(reasons) > MAX_HEALTH_REASONS:  # model_copy does not validate: keep it within the wire's limit
            keep = MAX_HEALTH_REASONS - 1
            reasons = [*reasons[:keep], f"... and {len(reasons) - keep} more"]
        update = {"health": verdict.health, "health_action": verdict.action, "health_reasons": reasons}
        judged.append(gpu.model_copy(update=update))
    return judged


def node_inventory(cfg: AgentConfig, backend: GpuBackend, gpus: list[GpuInventory] | None = None) -> NodeInventory:
    versions = backend if isinstance(backend, LibraryVersions) else None
    return NodeInventory(
        hostname=cfg.hostname,
        address=cfg.advertise_addr,
        backend=backend.name,
        driver_version=backend.driver_version(),
        nvml_version=versions.nvml_version() if versions is not None else None,
        cuda_driver_version=versions.cuda_driver_version() if versions is not None else None,
        gpus=backend.inventory() if gpus is None else gpus,
    )


def register(
    cfg: AgentConfig, backend: GpuBackend, client: AgentClient, stop: threading.Event
) -> RegisterResponse | None:
    """Exchange the bootstrap token for a node credential; retry while the control plane is away.

    The client negotiates the protocol version (a refused version leaves the token unspent). A
    saved credential says nothing about the control plane's version today: the client finds it
    out again on its first request.
    """
    path = cfg.state_dir / "credential.json"
    saved = load_credential(path)
    if saved is not None:
        return saved
    if cfg.bootstrap_token is None:
        raise FatalError(f"no credential in {path} and no bootstrap token: pass --bootstrap-token")
    request = RegisterRequest(
        protocol_version=PROTOCOL_VERSION,
        bootstrap_token=cfg.bootstrap_token,
        inventory=node_inventory(cfg, backend),
        agent_version=agent_version(),
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
        # In the oldest version's fields, so an agent rolled back to it can still read its credential.
        write_private_file(path, json.dumps(for_version(response, MIN_PROTOCOL_VERSION)).encode())
        return response
    return None


def recover_orphans(processes: ProcessLedger, finished: FinishedLedger, *, grace_s: float) -> list[AssignmentStatus]:
    """Stop the workload processes a killed or crashed agent left running; record why they ended.

    Runs before the first reconcile: the statuses go into ``finished``, so they are reported
    (the control plane fails those workloads with the message) and the planner never starts
    the same (workload, rank, epoch) a second time on GPUs an orphan may still hold.
    """
    entries = processes.load()
    if not entries:
        return []
    log.warning("the previous agent left %d workload process(es) in its ledger", len(entries))
    statuses = stop_orphans(entries, grace_s=grace_s)
    finished.record(statuses)
    processes.save([])
    return statuses


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
        spool: Spool,
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
        self._spool = spool
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
        self._logs = LogShipper(client, self._node_id, runner.log_files)
        self._threads: list[threading.Thread] = []
        # One report at a time, from build to delivery, so seqs reach the wire in order.
        self._report_lock = threading.Lock()
        self._events = backend if isinstance(backend, XidEventSource) else None
        self._inventory_watcher = backend if isinstance(backend, InventoryWatcher) else None
        # Guarded by _report_lock:
        self._health: dict[str, GpuHealthTracker] = {}
        self._unsent_events: list[XidEvent] = []
        # The first report after a start carries the inventory: GPUs may have come or gone while down.
        self._inventory_due = True
        self._newest_generation = 0  # the highest generation a report response named

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
        self.report_once(final=True)
        self._logs.ship()
        deadline = time.monotonic() + 2.0
        for thread in self._threads:
            if thread.name != "agent-watch":  # may sit in a long poll; it is a daemon thread
                thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # -- report -------------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            self._survive(self.report_once)
            self._stop.wait(self._report_interval_s * random.uniform(0.9, 1.1))

    def report_once(self, *, final: bool = False) -> None:
        """Sample and report; behind any spooled reports, which are sent first, oldest first.

        A report the control plane does not answer is spooled and sent again later, never
        ahead of an older one. ``final`` (at shutdown) sends spooled reports for at most
        FINAL_DRAIN_S even though the agent is stopping; the rest wait on disk for the next start.
        """
        with self._report_lock:
            request = self._build_report()
            if len(self._spool) == 0:
                if self._deliver(request) is Delivery.RETRY:
                    self._spool_report(request)  # the next report tries again: no second attempt now
            else:
                self._spool_report(request)
                self._drain_spool(deadline=time.monotonic() + FINAL_DRAIN_S if final else None)
            newest = self._newest_generation
        if newest > self.generation and not self._stop.is_set():
            # The long poll may be parked on a replica that missed the wake-up: fetch now.
            self._wake_watch.set()
            try:
                self._fetch_desired(wait_s=0.0)
            except ControlPlaneError as exc:
                log.warning("fetching desired generation %d failed: %s", newest, exc)

    def _build_report(self) -> ReportRequest:
        """The next report: sample, events since the last one, health, inventory if it changed (under _report_lock)."""
        samples = self._backend.sample()
        events = self._events.drain_events() if self._events is not None else []
        samples = judge_health(self._health, samples, events, now=time.time())
        self._collector.set_gpus(samples)
        inventory = self._inventory_update()
        with self._lock:
            statuses = self.known_statuses()
            applied = self._applied()
        seq = self._seqs.next()
        return ReportRequest(
            protocol_version=PROTOCOL_VERSION,  # the client sends it in the version it negotiated
            agent_version=agent_version(),
            seq=seq,
            sent_at=time.time(),
            gpus=samples,
            assignments=statuses,
            applied_generation=applied,
            xid_events=self._next_events(events),
            inventory=inventory,
        )

    def _next_events(self, new: list[XidEvent]) -> list[XidEvent]:
        """The oldest unsent events, up to the wire's limit per report (under _report_lock)."""
        self._unsent_events.extend(new)
        excess = len(self._unsent_events) - MAX_UNSENT_XID_EVENTS
        if excess > 0:
            del self._unsent_events[:excess]
            log.warning("XID event storm: the %d oldest unsent event(s) will not be reported one by one", excess)
        batch = self._unsent_events[:XID_EVENTS_PER_REPORT]
        del self._unsent_events[:XID_EVENTS_PER_REPORT]
        return batch

    def _inventory_update(self) -> NodeInventory | None:
        """The current inventory if it changed since the last report (or this is the first one)."""
        changed = self._inventory_due
        if self._inventory_watcher is not None and self._inventory_watcher.inventory_changed():
            changed = True
            log.warning("the backend reports a change in this node's GPUs")
        if not changed:
            return None
        gpus = self._backend.inventory()
        reserved = self._backend.memory_reserved_mib()
        with self._lock:
            self._node_gpus = {gpu.uuid for gpu in gpus}
            self._usable_mib = {gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) for gpu in gpus}
        self._collector.set_inventory(gpus, reserved)
        self._inventory_due = False
        return node_inventory(self._cfg, self._backend, gpus)

    def _deliver(self, request: ReportRequest, *, spooled: bool = False) -> Delivery:
        try:
            response = self._client.report(self._node_id, request)
        except RejectedError as exc:
            self._collector.record_report(request.seq, ok=False, at=time.time())
            if exc.status_code in CREDENTIAL_REFUSED:
                log.error("report %d: the control plane refuses this node's credential: %s", request.seq, exc)
                return Delivery.RETRY
            log.error(
                "the control plane refused report %d (HTTP %d): %s; dropping it",
                request.seq,
                exc.status_code,
                exc.detail,
            )
            return Delivery.REFUSED
        except TransientError as exc:
            self._collector.record_report(request.seq, ok=False, at=time.time())
            waiting = f" ({len(self._spool)} report(s) spooled)" if spooled else ""
            log.warning("report %d not delivered%s: %s", request.seq, waiting, exc)
            return Delivery.RETRY
        now = time.time()
        self._collector.record_report(request.seq, ok=True, at=now)
        if not response.accepted and not (spooled and response.duplicate):
            log.warning("report %d not accepted by the control plane (duplicate=%s)", request.seq, response.duplicate)
        with self._lock:
            for status in request.assignments:
                if status.phase in TERMINAL_PHASES:
                    self._reported_terminal.setdefault(assignment_key(status), now)
        self._newest_generation = max(self._newest_generation, response.generation)
        return Delivery.ACKED

    def _spool_report(self, request: ReportRequest) -> None:
        try:
            self._spool.append(request)
        except OSError as exc:
            log.error("cannot spool report %d (%s): it is lost; later reports repeat its counters", request.seq, exc)
            # What only this report carried goes into the next one instead.
            self._unsent_events[:0] = request.xid_events
            self._inventory_due = self._inventory_due or request.inventory is not None

    def _drain_spool(self, *, deadline: float | None) -> None:
        """Send spooled reports oldest first until the spool is empty or the control plane fails."""
        sent = 0
        while True:
            if deadline is None and self._stop.is_set():
                return  # shutting down: the final report drains, with a deadline
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("%d spooled report(s) left for the next start", len(self._spool))
                return
            head = self._spool.head()
            if head is None:
                if sent:
                    log.info("sent %d spooled report(s); the spool is empty", sent)
                return
            outcome = self._deliver(head, spooled=True)
            if outcome is Delivery.RETRY:
                return
            self._spool.remove(head.seq, rejected=outcome is Delivery.REFUSED)
            sent += 1

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
                grace = next(
                    (
                        a.stop_grace_s
                        for a in self._runner.active_assignments()
                        if (a.workload_id, a.rank, a.epoch) == (wid, rank, epoch) and a.stop_grace_s is not None
                    ),
                    self._cfg.stop_grace_s,
                )
                self._runner.stop(wid, grace, rank=rank, epoch=epoch, reason="no longer desired")
            for assignment in plan.start:
                self._start(assignment)
            for key in plan.forget:
                self._runner.forget(key)
                self._finished.restored.pop(key, None)
                self._reported_terminal.pop(key, None)
            self._finished.save(self.known_statuses())
            rejected = {assignment_key(a) for a, _ in plan.reject}
            self._admitted = {assignment_key(a) for a in desired} - rejected
            self._epoch_floor = max([self._epoch_floor, *(a.epoch for a in desired)])
        self._apply_load()

    def _start(self, assignment: Assignment) -> None:
        """Start one assignment; whatever goes wrong stays with it (REJECTED with the reason)."""
        try:
            self._runner.start(assignment, node_address=self._cfg.advertise_addr)
        except Exception as exc:
            log.exception("starting %s rank %d epoch %d failed", *assignment_key(assignment))
            self._runner.reject(assignment, f"the agent could not start it: {type(exc).__name__}: {exc}")

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
            shipped = path is None or self._logs.shipped(key[0], key[1], path)
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
        with self._lock:
            usable_mib = self._usable_mib  # replaced, never changed in place, when the inventory changes
        loads = {uuid: a.sim_utilization for a in active for uuid in a.gpu_uuids}
        pids: dict[str, list[int]] = {}
        for proc in self._runner.live_processes():
            for assignment in active:
                if (assignment.workload_id, assignment.rank, assignment.epoch) == (
                    proc.workload_id,
                    proc.rank,
                    proc.epoch,
                ):
                    for uuid in assignment.gpu_uuids:
                        pids.setdefault(uuid, []).append(proc.pid)
        for uuid in usable_mib:
            if uuid in loads:
                memory = loads[uuid] * SIM_MEMORY_SHARE * usable_mib[uuid]
                self._backend.set_load(uuid, loads[uuid], memory)
            else:
                self._backend.clear_load(uuid)
            self._backend.set_processes(uuid, pids.get(uuid, []))

    # -- logs ---------------------------------------------------------------------------------

    def _log_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._survive(self.ship_logs)

    def ship_logs(self) -> None:
        self._logs.ship()

    def _survive(self, step: Callable[[], None]) -> None:
        """Run one loop iteration; a bug in it is logged with its traceback, the agent carries on."""
        try:
            step()
        except Exception:
            log.exception("agent loop step %s failed; continuing", getattr(step, "__name__", step))


# -- process entry point ---------------------------------------------------------------------------


def build_backend(cfg: AgentConfig) -> GpuBackend:
    """The configured backend; raises BackendUnavailable with a one-line reason if it cannot start."""
    if cfg.backend == "nvml":
        return _build_nvml_backend()
    return SimBackend(
        cfg.sim_gpus,
        seed=cfg.sim_seed,
        node_index=cfg.sim_node_index,
        cluster_uuid=cfg.sim_cluster_uuid,
        clique_id=cfg.sim_clique_id,
    )


def _build_nvml_backend() -> GpuBackend:
    # Imported here: a simulator-only host needs neither the module nor pynvml.
    try:
        module = import_module("agents.gpu.nvml")
    except ImportError as exc:
        raise BackendUnavailable(f"--backend nvml: cannot load the NVML backend: {exc}") from None
    try:
        backend: GpuBackend = module.NvmlBackend()
    except Exception as exc:  # pynvml.NVMLError_*, OSError from the loader: the class varies with the library
        log.debug("NVML backend failed to start", exc_info=True)
        raise BackendUnavailable(f"--backend nvml: {str(exc) or type(exc).__name__}") from None
    return backend


def build_sandbox(cfg: AgentConfig, backend: GpuBackend) -> Sandbox | None:
    """The workloads' sandbox, checked by a real sandboxed start; None only when the operator said so.

    Raises FatalError when workloads cannot be sandboxed here: the agent then refuses to run
    any tenant work at all (it does not even register) rather than run it unconfined.
    """
    if cfg.insecure_no_sandbox:
        log.warning(
            "INSECURE: --insecure-no-sandbox: workloads run as this agent's user (uid %d) with no sandbox; "
            "they can read its credential and each other's files (development only)",
            os.geteuid(),
        )
        return None

    def minors() -> dict[str, int]:
        return nvidia_minors({gpu.uuid: gpu.pci_bus_id for gpu in backend.inventory()})

    policy = default_policy(
        cfg.state_dir,
        home=cfg.child_env.get("HOME"),
        hide=cfg.sandbox_hide,
        uids=cfg.workload_uids,
        gpu_minors=minors,
    )
    sandbox = Sandbox(policy)
    reason = sandbox.check(cfg.state_dir / "work" / ".sandbox-check")
    if reason is not None:
        raise FatalError(
            f"cannot sandbox tenant workloads: {reason}; refusing to run them. Run the agent as root, "
            "or pass --insecure-no-sandbox to run them as this agent's user (development only)"
        )
    log.info(
        "workloads run sandboxed: one uid per workload from %s, own PID and mount namespaces", sandbox.describe_uids()
    )
    return sandbox


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
    try:
        backend = build_backend(cfg)
    except BackendUnavailable as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    _install_signal_handlers(stop)
    try:
        return _run(cfg, backend, stop)
    except FatalError as exc:
        print(f"switchyard-agent: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


def _run(cfg: AgentConfig, backend: GpuBackend, stop: threading.Event) -> int:
    registry, collector = build_exporter(cfg.hostname)
    collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
    collector.attach_backend(backend)  # driver version label, profiling metrics (GPM)
    try:
        cfg.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        spool = Spool(cfg.state_dir / "spool", max_bytes=cfg.spool_max_bytes)
    except OSError as exc:
        raise FatalError(f"cannot use state dir {cfg.state_dir}: {exc}") from None
    collector.set_spool_stats_provider(lambda: _exported(spool))
    sandbox = build_sandbox(cfg, backend)  # before anything that could start tenant work
    print(f"switchyard-agent sandbox={'on' if sandbox is not None else 'off-insecure'}", flush=True)
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
        processes = ProcessLedger(cfg.state_dir / "processes.json")
        recover_orphans(processes, finished, grace_s=cfg.stop_grace_s)  # before registering: they hold GPUs
        registration = register(cfg, backend, client, stop)
        if registration is None:
            return 0  # stopped while waiting for the control plane
        client.set_credential(registration.credential)
        print(f"switchyard-agent node_id={registration.node_id}", flush=True)
        log.info("node %s: reporting every %.1fs", registration.node_id, registration.report_interval_s)
        runner = ProcessRunner(
            cfg.state_dir / "logs",
            work_dir=cfg.state_dir / "work",
            base_env=cfg.child_env,
            record_live=processes.save,
            sandbox=sandbox,
        )
        agent = Agent(
            cfg,
            registration=registration,
            backend=backend,
            runner=runner,
            client=client,
            collector=collector,
            seqs=seqs,
            finished=finished,
            spool=spool,
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


def _exported(spool: Spool) -> SpoolStats:
    stats = spool.stats()
    return SpoolStats(depth=stats.spooled, dropped=stats.dropped)


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
