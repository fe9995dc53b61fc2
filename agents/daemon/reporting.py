"""Reports: sample, fold health, build, deliver; spool what did not arrive.

One report at a time, from build to delivery (``Reporter``'s lock), so seqs reach the wire in
order. Each report carries the XID events the backend saw since the previous one, each GPU's
health as ``agents.health`` judges it from those events and the sample (``judge_health``; the
trackers persist in the state dir, ``agents.state.HealthLedger``), the inventory when it
changed, and the agent's metrics URL. A report that could not be delivered goes to the on-disk
``Spool`` and is sent (``replay``), in sequence order and before any newer report, once the
control plane answers again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from agents.client import AgentClient, ControlPlaneError, RejectedError, TransientError, agent_version
from agents.config import AgentConfig
from agents.daemon.clock import Clock
from agents.daemon.registration import node_inventory
from agents.daemon.replay import Delivery, drain_spool
from agents.exporter import AgentCollector
from agents.gpu.base import GpuBackend, InventoryWatcher, XidEventSource
from agents.health import GpuHealthTracker, Reading
from agents.protocol import (
    PROTOCOL_VERSION,
    AssignmentStatus,
    GpuInventory,
    GpuTelemetry,
    NodeInventory,
    ReportRequest,
    XidEvent,
)
from agents.spool import Spool
from agents.state import HealthLedger, SeqAllocator

log = logging.getLogger(__name__)

XID_EVENTS_PER_REPORT = 1024  # the wire's limit; more wait for the next report
MAX_UNSENT_XID_EVENTS = 16 * 1024  # an XID storm beyond this loses its oldest events (xid_counts keep counting)
MAX_HEALTH_REASONS = 16  # the wire's limit
FINAL_DRAIN_S = 5.0  # at shutdown, spooled reports are sent for this long; the rest wait for the next start
# A refused credential is not the report's fault: keep the report spooled rather than drop it.
CREDENTIAL_REFUSED = frozenset({401, 403})


class ReportedState(Protocol):
    """What the reports say about the workloads, and hear back (``workloads.Workloads``)."""

    def report_state(self) -> tuple[list[AssignmentStatus], int]:
        """The assignments' statuses and the applied generation."""
        ...

    def set_inventory(self, gpus: list[GpuInventory], reserved: dict[str, float]) -> None:
        """The node's GPUs changed."""
        ...

    def reported(self, statuses: Sequence[AssignmentStatus], *, at: float) -> None:
        """The control plane has these statuses."""
        ...


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


class Reporter:
    """Builds and delivers the node's reports; every field below is guarded by ``_lock``."""

    def __init__(
        self,
        cfg: AgentConfig,
        *,
        node_id: str,
        backend: GpuBackend,
        client: AgentClient,
        collector: AgentCollector,
        seqs: SeqAllocator,
        spool: Spool,
        workloads: ReportedState,
        stop: threading.Event,
        clock: Clock,
        metrics_url: str | None = None,
    ) -> None:
        self._cfg = cfg
        self._node_id = node_id
        self._backend = backend
        self._client = client
        self._collector = collector
        self._seqs = seqs
        self._spool = spool
        self._workloads = workloads
        self._stop = stop
        self._clock = clock
        self._metrics_url = metrics_url
        self._events = backend if isinstance(backend, XidEventSource) else None
        self._inventory_watcher = backend if isinstance(backend, InventoryWatcher) else None
        self._lock = threading.Lock()
        # Kept across restarts: a GPU that fell off the bus is not healthy because the agent restarted.
        self._health_ledger = HealthLedger(cfg.state_dir / "health.json")
        self._health: dict[str, GpuHealthTracker] = self._health_ledger.load()
        self._unsent_events: list[XidEvent] = []
        # The first report after a start carries the inventory: GPUs may have come or gone while down.
        self._inventory_due = True
        self._newest_generation = 0  # the highest generation a report response named

    @property
    def spool(self) -> Spool:
        return self._spool

    def report_once(self, *, final: bool = False) -> int:
        """Sample and report; behind any spooled reports, which are sent first, oldest first.

        A report the control plane does not answer is spooled and sent again later, never
        ahead of an older one. ``final`` (at shutdown) sends spooled reports for at most
        FINAL_DRAIN_S even though the agent is stopping; the rest wait on disk for the next start.
        Returns the newest desired generation a response named.
        """
        with self._lock:
            request = self._build_report()
            if len(self._spool) == 0:
                if self._deliver(request) is Delivery.RETRY:
                    self._spool_report(request)  # the next report tries again: no second attempt now
            else:
                self._spool_report(request)
                drain_spool(
                    self._spool,
                    deliver=lambda r: self._deliver(r, spooled=True),
                    deliver_batch=self._deliver_batch,
                    stop=self._stop,
                    deadline=self._clock.monotonic() + FINAL_DRAIN_S if final else None,
                    clock=self._clock,
                )
            return self._newest_generation

    def save_health(self) -> None:
        """The GPUs' health on disk now (at shutdown)."""
        with self._lock:
            self._health_ledger.save(self._health, now=self._clock.time(), force=True)

    def _build_report(self) -> ReportRequest:
        """The next report: sample, events since the last one, health, inventory if it changed (under _lock)."""
        samples = self._backend.sample()
        events = self._events.drain_events() if self._events is not None else []
        now = self._clock.time()
        samples = judge_health(self._health, samples, events, now=now)
        self._health_ledger.save(self._health, now=now)
        self._collector.set_gpus(samples)
        inventory = self._inventory_update()
        statuses, applied = self._workloads.report_state()
        seq = self._seqs.next()
        return ReportRequest(
            protocol_version=PROTOCOL_VERSION,  # the client sends it in the version it negotiated
            agent_version=agent_version(),
            metrics_url=self._metrics_url,
            seq=seq,
            sent_at=self._clock.time(),
            gpus=samples,
            assignments=statuses,
            applied_generation=applied,
            xid_events=self._next_events(events),
            inventory=inventory,
        )

    def _next_events(self, new: list[XidEvent]) -> list[XidEvent]:
        """The oldest unsent events, up to the wire's limit per report (under _lock)."""
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
        self._workloads.set_inventory(gpus, reserved)
        self._collector.set_inventory(gpus, reserved)
        self._inventory_due = False
        return node_inventory(self._cfg, self._backend, gpus)

    def _deliver(self, request: ReportRequest, *, spooled: bool = False) -> Delivery:
        try:
            response = self._client.report(self._node_id, request)
        except RejectedError as exc:
            self._collector.record_report(request.seq, ok=False, at=self._clock.time())
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
            self._collector.record_report(request.seq, ok=False, at=self._clock.time())
            waiting = f" ({len(self._spool)} report(s) spooled)" if spooled else ""
            log.warning("report %d not delivered%s: %s", request.seq, waiting, exc)
            return Delivery.RETRY
        self._acked(request, accepted=response.accepted, duplicate=response.duplicate, spooled=spooled)
        self._newest_generation = max(self._newest_generation, response.generation)
        return Delivery.ACKED

    def _acked(self, request: ReportRequest, *, accepted: bool, duplicate: bool, spooled: bool) -> None:
        now = self._clock.time()
        self._collector.record_report(request.seq, ok=True, at=now)
        if not accepted and not (spooled and duplicate):
            log.warning("report %d not accepted by the control plane (duplicate=%s)", request.seq, duplicate)
        self._workloads.reported(request.assignments, at=now)

    def _deliver_batch(self, batch: list[ReportRequest]) -> list[Delivery] | None:
        """Send spooled reports in one request; one outcome per report, or None: send them alone.

        A failure of the whole request (unreachable, credential refused) is RETRY for every
        report; the control plane acknowledged none of them.
        """
        try:
            answer = self._client.report_batch(self._node_id, batch)
        except ControlPlaneError as exc:
            self._collector.record_report(batch[-1].seq, ok=False, at=self._clock.time())
            log.warning("%d spooled report(s) not delivered (%d spooled): %s", len(batch), len(self._spool), exc)
            return [Delivery.RETRY] * len(batch)
        if answer is None:
            return None
        outcomes = []
        for request, result in zip(batch, answer.results, strict=True):
            if result.refused_status is not None:
                self._collector.record_report(request.seq, ok=False, at=self._clock.time())
                log.error(
                    "the control plane refused report %d (HTTP %d): %s; dropping it (spooled)",
                    request.seq,
                    result.refused_status,
                    result.refused_detail,
                )
                outcomes.append(Delivery.REFUSED)
                continue
            self._acked(request, accepted=result.accepted, duplicate=result.duplicate, spooled=True)
            outcomes.append(Delivery.ACKED)
        self._newest_generation = max(self._newest_generation, answer.generation)
        return outcomes

    def _spool_report(self, request: ReportRequest) -> None:
        try:
            self._spool.append(request)
        except OSError as exc:
            log.error("cannot spool report %d (%s): it is lost; later reports repeat its counters", request.seq, exc)
            # What only this report carried goes into the next one instead.
            self._unsent_events[:0] = request.xid_events
            self._inventory_due = self._inventory_due or request.inventory is not None
