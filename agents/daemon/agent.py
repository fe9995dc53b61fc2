"""The running agent: four threads over one node's reports, desired state, workloads and logs.

Reports (``reporting``: telemetry + assignment statuses every few seconds, spooled and replayed
in batches while the control plane is away), the desired-state long poll (``watch``), a
one-second housekeeping tick (reconcile, simulator load: ``workloads``, ``simload``) and the log
shipper (``agents.logship``). Every loop survives a failed call to the control plane: the
agent's job is to keep the GPUs and the workloads in order while the control plane is away.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable

from agents.client import AgentClient, ControlPlaneError
from agents.config import AgentConfig
from agents.daemon.clock import SYSTEM_CLOCK, Clock
from agents.daemon.reporting import Reporter
from agents.daemon.watch import watch_loop
from agents.daemon.workloads import Workloads
from agents.exporter import AgentCollector
from agents.gpu.base import GpuBackend
from agents.logship import LogShipper
from agents.protocol import AssignmentStatus, DesiredState, RegisterResponse
from agents.runtime.processes import ProcessRunner
from agents.spool import Spool
from agents.state import FinishedLedger, SeqAllocator

log = logging.getLogger(__name__)

SHUTDOWN_JOIN_S = 2.0  # how long shutdown waits for the loops (the watch thread may sit in a long poll)


class Agent:
    """Owns the loops and the parts they share."""

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
        metrics_url: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._cfg = cfg
        self._node_id = registration.node_id
        self._report_interval_s = cfg.report_interval_s or registration.report_interval_s
        self._watch_timeout_s = registration.watch_timeout_s
        self._runner = runner
        self._client = client
        self._stop = stop
        self._clock = clock
        self._wake_watch = threading.Event()
        self._threads: list[threading.Thread] = []
        self._logs = LogShipper(client, self._node_id, runner.log_files)
        self._workloads = Workloads(
            cfg,
            backend=backend,
            runner=runner,
            finished=finished,
            collector=collector,
            logs=self._logs,
            stop=stop,
            clock=clock,
        )
        self._reporter = Reporter(
            cfg,
            node_id=self._node_id,
            backend=backend,
            client=client,
            collector=collector,
            seqs=seqs,
            spool=spool,
            workloads=self._workloads,
            stop=stop,
            clock=clock,
            metrics_url=metrics_url,
        )

    @property
    def generation(self) -> int:
        return self._workloads.generation

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
        self._workloads.stop_all()
        self._wake_watch.set()
        if not self._runner.wait_idle(self._cfg.stop_grace_s + 5.0):
            log.error("some workload processes outlived SIGKILL; they may still hold GPUs")
        self._workloads.save_finished()
        self.report_once(final=True)
        self._reporter.save_health()
        self._logs.ship()
        deadline = self._clock.monotonic() + SHUTDOWN_JOIN_S
        for thread in self._threads:
            if thread.name != "agent-watch":  # may sit in a long poll; it is a daemon thread
                thread.join(timeout=max(0.0, deadline - self._clock.monotonic()))

    # -- report -------------------------------------------------------------------------------

    def _report_loop(self) -> None:
        while not self._stop.is_set():
            self._survive(self.report_once)
            self._stop.wait(self._report_interval_s * random.uniform(0.9, 1.1))

    def report_once(self, *, final: bool = False) -> None:
        """One report (behind any spooled ones); fetch the desired state if a response says it moved."""
        newest = self._reporter.report_once(final=final)
        if newest > self.generation and not self._stop.is_set():
            # The long poll may be parked on a replica that missed the wake-up: fetch now.
            self._wake_watch.set()
            try:
                self._fetch_desired(wait_s=0.0)
            except ControlPlaneError as exc:
                log.warning("fetching desired generation %d failed: %s", newest, exc)

    # -- desired state ------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        watch_loop(
            fetch=lambda wait_s: self._fetch_desired(wait_s=wait_s),
            generation=lambda: self.generation,
            timeout_s=self._watch_timeout_s,
            stop=self._stop,
            wake=self._wake_watch,
            clock=self._clock,
        )

    def _fetch_desired(self, *, wait_s: float) -> None:
        state = self._client.desired(self._node_id, after=self.generation, wait_s=wait_s)
        self.apply_desired(state)

    def apply_desired(self, state: DesiredState) -> None:
        self._workloads.apply_desired(state)

    def reconcile(self) -> None:
        self._workloads.reconcile()

    def known_statuses(self) -> list[AssignmentStatus]:
        return self._workloads.known_statuses()

    # -- housekeeping and logs ----------------------------------------------------------------

    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(1.0):
            self._survive(self.reconcile)

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
