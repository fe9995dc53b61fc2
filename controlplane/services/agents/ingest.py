"""An agent's report, from the wire to SQL: the one entry point the API route and the tests use.

Everything is checked before anything is written: the wire model bounds every field (422), an
inventory change is checked against the site's node shape (a read), and Redis refuses a
duplicate seq, a seq too far ahead (409) or an energy total out of bounds (422) before its first
write (``LiveState.begin_report``, one round trip, which also renews the lease).

A report whose fingerprint matches the last one folded into SQL (same assignments, applied
generation, GPU health) is recorded by that same round trip and stops there: SQL sees state
changes only. Any other report is folded into SQL first (``reports.apply_report``, one
transaction) and only then recorded in Redis - seq marked seen, samples, energy, fingerprint -
by a second round trip (``LiveState.commit_report``). So no report is acknowledged, nor its seq
marked seen, before what it carries is durable: if the SQL step fails, the agent's retry of
the same seq lands. If the SQL step committed but Redis did not record it, the retry folds the
report again, which changes nothing (the fold is idempotent), and records it.

Round trips per report: one for a report with nothing new for SQL or a duplicate, two for one
that reaches SQL.

A batch (``ingest_batch``, protocol 3: a spool replay) is its reports taken one after the other
through ``ingest_report``, in the batch's order, each with its own dedup, checks and durability:
a report the rules refuse (409, 422) is refused alone, as it would have been sent alone, and the
next one is taken. Any other failure (Redis or the database away) ends the batch with that error
and acknowledges nothing: the reports folded before it are durable, and the agent's retry of the
batch finds them duplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from agents.protocol import SEQ_JUMP_ALLOWANCE, SEQ_JUMP_PER_S, BatchedResult, ReportBatch, ReportRequest
from controlplane.domain.errors import Conflict, InvalidRequest
from controlplane.live.nodes import MAX_ENERGY_TOTAL_MJ, Begun, LiveState
from controlplane.services.agents import desired, gpu_health, reports
from controlplane.services.metering import record
from controlplane.services.uow import UnitOfWork

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ingested:
    accepted: bool
    duplicate: bool
    generation: int  # the node's desired-state generation: an agent that has seen less polls at once
    folded: bool  # the report reached SQL


def ingest_report(
    *,
    live: LiveState,
    uow: UnitOfWork,
    read: sessionmaker[Session],
    node_id: str,
    report: ReportRequest,
    now: float,
    lease_ttl_s: float,
    checkpoints: record.Checkpoints | None = None,
) -> Ingested:
    if report.inventory is not None:  # rare (a GPU lost or found): refused before any write
        with read() as session:
            gpu_health.check_inventory(session, node_id=node_id, inventory=report.inventory)
    fingerprint = reports.report_fingerprint(report)
    gpus = list(report.gpus)
    # The meter's source, durable before anything acknowledges the report (insert-or-ignore per
    # GPU and sample time: a duplicate, a retry or a spool replay adds nothing), at each
    # checkpoint; a report folded into SQL carries its readings in that fold.
    stored = False
    if gpus and (checkpoints is None or checkpoints.due(node_id, report.sent_at)):
        with uow() as session:
            record.store_report_readings(session, node_id=node_id, gpus=gpus, sent_at=report.sent_at)
        stored = True
        if checkpoints is not None:
            checkpoints.mark(node_id, report.sent_at)
    begun = live.begin_report(
        node_id=node_id,
        seq=report.seq,
        gpus=gpus,
        fingerprint=fingerprint,
        now=now,
        lease_ttl_s=lease_ttl_s,
        sent_at=report.sent_at,
    )
    if begun.outcome is Begun.DUPLICATE:
        generation = begun.generation
        if generation is None:
            with read() as session:
                generation = desired.current_generation(session, node_id)
        return Ingested(accepted=False, duplicate=True, generation=generation, folded=False)
    if begun.outcome is Begun.TOO_FAR:
        raise Conflict(
            f"report seq {report.seq} is too far ahead of this node's last report (seq {begun.detail}): "
            f"a seq may jump {SEQ_JUMP_ALLOWANCE} plus {SEQ_JUMP_PER_S:g} per second since that report"
        )
    if begun.outcome is Begun.ENERGY:
        raise InvalidRequest(
            f"GPU {begun.detail}: this energy counter would take its total past {MAX_ENERGY_TOTAL_MJ} mJ, "
            "which no GPU can have used"
        )
    if begun.outcome is Begun.RECORDED:
        _dropped(node_id, report, begun.dropped)
        assert begun.generation is not None
        return Ingested(accepted=True, duplicate=False, generation=begun.generation, folded=False)
    with uow() as session:
        folded = reports.apply_report(session, node_id=node_id, report=report)
        if gpus and not stored:
            record.store_report_readings(session, node_id=node_id, gpus=gpus, sent_at=report.sent_at)
    dropped = live.commit_report(
        node_id=node_id,
        seq=report.seq,
        gpus=gpus,
        fingerprint=fingerprint,
        generation=folded.generation,
        node_gpus=folded.gpu_uuids,
        now=now,
        lease_ttl_s=lease_ttl_s,
        sent_at=report.sent_at,
    )
    _dropped(node_id, report, dropped or 0)
    return Ingested(accepted=True, duplicate=False, generation=folded.generation, folded=True)


@dataclass(frozen=True)
class BatchIngested:
    results: list[BatchedResult]
    generation: int


def ingest_batch(
    *,
    live: LiveState,
    uow: UnitOfWork,
    read: sessionmaker[Session],
    node_id: str,
    batch: ReportBatch,
    now: float,
    lease_ttl_s: float,
    checkpoints: record.Checkpoints | None = None,
) -> BatchIngested:
    """Fold a batch's reports in order, exactly as if each had been sent alone."""
    results: list[BatchedResult] = []
    generation: int | None = None
    for report in batch.reports:
        try:
            one = ingest_report(
                live=live,
                uow=uow,
                read=read,
                node_id=node_id,
                report=report,
                now=now,
                lease_ttl_s=lease_ttl_s,
                checkpoints=checkpoints,
            )
        except (Conflict, InvalidRequest) as exc:
            results.append(
                BatchedResult(seq=report.seq, accepted=False, refused_status=exc.status, refused_detail=exc.detail)
            )
            continue
        results.append(BatchedResult(seq=report.seq, accepted=one.accepted, duplicate=one.duplicate))
        generation = one.generation
    if generation is None:  # every report refused
        with read() as session:
            generation = desired.current_generation(session, node_id)
    return BatchIngested(results=results, generation=generation)


def _dropped(node_id: str, report: ReportRequest, count: int) -> None:
    if count:
        log.warning(
            "node %s report %d: %d sample(s) of GPUs that are not the node's own were dropped",
            node_id,
            report.seq,
            count,
        )
