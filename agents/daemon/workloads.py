"""The node's workloads against the desired state: reconcile, fencing, what reports say of them.

``Workloads`` holds the desired state the agent applied, the fencing floor, and which terminal
statuses the control plane already has; the planner itself is pure (``agents.reconcile``).
Every mutable field is guarded by ``lock``, which the agent's shutdown also takes so that no
reconcile starts anything after the workloads were stopped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from agents.config import AgentConfig
from agents.daemon.clock import Clock
from agents.daemon.simload import apply_load
from agents.exporter import AgentCollector
from agents.gpu.base import GpuBackend
from agents.logship import LogShipper
from agents.protocol import Assignment, AssignmentStatus, DesiredState, GpuInventory
from agents.reconcile import plan_reconcile
from agents.runtime.processes import TERMINAL_PHASES, AssignmentKey, ProcessRunner, assignment_key
from agents.state import FinishedLedger

log = logging.getLogger(__name__)

LOG_SETTLE_TIMEOUT_S = 120.0  # give up waiting for a log ack and forget the assignment anyway


class Workloads:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        backend: GpuBackend,
        runner: ProcessRunner,
        finished: FinishedLedger,
        collector: AgentCollector,
        logs: LogShipper,
        stop: threading.Event,
        clock: Clock,
    ) -> None:
        self._cfg = cfg
        self._backend = backend
        self._runner = runner
        self._finished = finished
        self._collector = collector
        self._logs = logs
        self._stop = stop
        self._clock = clock
        self.lock = threading.RLock()
        inventory = backend.inventory()
        self._node_gpus = {gpu.uuid for gpu in inventory}
        reserved = backend.memory_reserved_mib()
        self._usable_mib = {gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) for gpu in inventory}
        self._desired: DesiredState | None = None
        self._epoch_floor = 0
        self._applied_generation = 0
        self._admitted: set[AssignmentKey] = set()
        self._reported_terminal: dict[AssignmentKey, float] = {}  # key -> when first reported

    @property
    def generation(self) -> int:
        with self.lock:
            return self._desired.generation if self._desired is not None else 0

    def apply_desired(self, state: DesiredState) -> None:
        with self.lock:
            current = self._desired
            if current is not None and state.generation <= current.generation:
                return  # an older answer (slow replica, racing fetch) must not undo a newer one
            log.info("desired state generation %d: %d assignment(s)", state.generation, len(state.assignments))
            self._desired = state
            self.reconcile()

    def reconcile(self) -> None:
        with self.lock:
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
            usable_mib = self._usable_mib  # replaced, never changed in place, when the inventory changes
        apply_load(self._backend, self._runner, self._collector, usable_mib)

    def stop_all(self) -> None:
        """At shutdown: stop every workload's process group; nothing starts after this."""
        with self.lock:  # a reconcile in flight finishes first, and none starts after
            self._stop.set()
            self._runner.stop_all(self._cfg.stop_grace_s, reason="agent shutting down")

    def save_finished(self) -> None:
        with self.lock:
            self._finished.save(self.known_statuses())

    # -- what reports say, and hear back (agents.daemon.reporting.ReportedState) --------------

    def report_state(self) -> tuple[list[AssignmentStatus], int]:
        with self.lock:
            return self.known_statuses(), self._applied()

    def set_inventory(self, gpus: list[GpuInventory], reserved: dict[str, float]) -> None:
        with self.lock:
            self._node_gpus = {gpu.uuid for gpu in gpus}
            self._usable_mib = {gpu.uuid: gpu.memory_total_mib - reserved.get(gpu.uuid, 0.0) for gpu in gpus}

    def reported(self, statuses: Sequence[AssignmentStatus], *, at: float) -> None:
        with self.lock:
            for status in statuses:
                if status.phase in TERMINAL_PHASES:
                    self._reported_terminal.setdefault(assignment_key(status), at)

    # -- internals (call under lock) ------------------------------------------------------------

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
        that dropped it, so it must never run ahead of a process that is still being stopped.
        """
        if self._desired is not None:
            wanted = {assignment_key(a) for a in self._desired.assignments}
            if all(assignment_key(a) in wanted for a in self._runner.active_assignments()):
                self._applied_generation = self._desired.generation
        return self._applied_generation

    def known_statuses(self) -> list[AssignmentStatus]:
        """The runner's statuses plus finished ones restored from before a restart."""
        with self.lock:
            live = self._runner.poll()
            keys = {assignment_key(status) for status in live}
            return live + [status for key, status in self._finished.restored.items() if key not in keys]

    def _settled_keys(self) -> set[AssignmentKey]:
        """Terminal statuses the control plane has, whose logs are shipped (or waited on long enough)."""
        now = self._clock.time()
        logs = {(wid, rank): path for wid, rank, path in self._runner.log_files()}
        settled = set()
        for key, reported_at in self._reported_terminal.items():
            path = logs.get((key[0], key[1]))
            shipped = path is None or self._logs.shipped(key[0], key[1], path)
            if shipped or now - reported_at > LOG_SETTLE_TIMEOUT_S:
                settled.add(key)
        return settled
