"""An agent's report, from the wire to SQL: the one entry point the API route and the tests use.

Redis first (outside any transaction): the report renews the node's lease and its telemetry
sample, and is refused as a duplicate if its sequence number was already seen (agent retries,
spool replays). A fresh report whose fingerprint matches the last one folded into SQL (same
assignments, applied generation, GPU health) stops there: SQL sees state changes only. Only
the rest opens a unit of work and folds the report (``reports.apply_report``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from agents.protocol import ReportRequest
from controlplane.live.nodes import LiveState
from controlplane.services.agents import desired, reports
from controlplane.services.uow import UnitOfWork


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
) -> Ingested:
    fresh = live.record_report(
        node_id=node_id,
        seq=report.seq,
        gpus=list(report.gpus),
        now=now,
        lease_ttl_s=lease_ttl_s,
        sent_at=report.sent_at,
    )
    fingerprint = reports.report_fingerprint(report)
    known = None if fingerprint is None else live.unchanged_report(node_id, fingerprint)
    if not fresh:
        if known is None:
            with read() as session:
                known = desired.current_generation(session, node_id)
        return Ingested(accepted=False, duplicate=True, generation=known, folded=False)
    if known is not None:
        return Ingested(accepted=True, duplicate=False, generation=known, folded=False)
    with uow() as session:
        generation = reports.apply_report(session, node_id=node_id, report=report)
    if fingerprint is not None:
        live.remember_report(node_id, fingerprint, generation)
    return Ingested(accepted=True, duplicate=False, generation=generation, folded=True)
