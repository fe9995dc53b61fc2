"""Workload logs shipped by agents: appended in order, capped per rank."""

from __future__ import annotations

import base64

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from agents.protocol import (
    LogUpload,
    log_key,
)
from controlplane.domain.errors import (
    Forbidden,
    InvalidRequest,
)
from controlplane.services.agents.registration import check_protocol
from controlplane.store.models import (
    Allocation,
    WorkloadLog,
)

LOG_CAP_BYTES = 16 * 1024 * 1024


def append_logs(session: Session, *, node_id: str, upload: LogUpload) -> dict[str, int]:
    """Append log bytes in order; answer the offset held per rank so the agent resumes there."""
    check_protocol(upload.protocol_version)
    acked: dict[str, int] = {}
    for chunk in upload.chunks:
        owner = session.scalar(
            select(func.count())
            .select_from(Allocation)
            .where(
                Allocation.workload_id == chunk.workload_id,
                Allocation.rank == chunk.rank,
                Allocation.node_id == node_id,
            )
        )
        if not owner:
            raise Forbidden(f"workload {chunk.workload_id} rank {chunk.rank} never ran on this node")
        data = decode_chunk(chunk.data_b64)
        end = _log_end(session, chunk.workload_id, chunk.rank)
        if chunk.offset <= end < chunk.offset + len(data) and end < LOG_CAP_BYTES:
            piece = data[end - chunk.offset :][: LOG_CAP_BYTES - end]
            session.add(WorkloadLog(workload_id=chunk.workload_id, rank=chunk.rank, offset=end, data=piece))
            end += len(piece)
            if end >= LOG_CAP_BYTES:
                end = chunk.offset + len(data)  # capped: acknowledge and drop the rest
        elif end >= LOG_CAP_BYTES:
            end = max(end, chunk.offset + len(data))
        acked[log_key(chunk.workload_id, chunk.rank)] = end
        session.flush()
    return acked


def _log_end(session: Session, workload_id: str, rank: int) -> int:
    end = session.scalar(
        select(func.max(WorkloadLog.offset + func.length(WorkloadLog.data))).where(
            WorkloadLog.workload_id == workload_id, WorkloadLog.rank == rank
        )
    )
    return int(end or 0)


def decode_chunk(data_b64: str) -> bytes:
    try:
        return base64.b64decode(data_b64, validate=True)
    except ValueError as exc:
        raise InvalidRequest(f"log chunk is not valid base64: {exc}") from exc
