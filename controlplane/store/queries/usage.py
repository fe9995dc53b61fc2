"""A tenant's metered usage from the ledger, summed by workload or by UTC day: one statement."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from controlplane.store.models import UsageRecord

US_PER_DAY = 86_400_000_000


@dataclass(frozen=True, slots=True)
class UsageSum:
    group: str  # a workload id, or a UTC day's index since the epoch (as text)
    gpu_us: int
    it_mj: int
    facility_mj: int
    rows: int
    estimated_rows: int


def usage_sums(
    session: Session, *, tenant_id: str, start_us: int, end_us: int, by: Literal["workload", "day"]
) -> list[UsageSum]:
    """Ledger rows of the tenant whose interval starts in [start_us, end_us), summed per group."""
    u = UsageRecord
    group = u.workload_id if by == "workload" else (u.start_us // US_PER_DAY)
    rows = session.execute(
        select(
            group,
            func.sum(u.gpu_us),
            func.sum(u.it_mj),
            func.sum(u.facility_mj),
            func.count(),
            func.sum(case((u.estimated, 1), else_=0)),
        )
        .where(u.tenant_id == tenant_id, u.start_us >= start_us, u.start_us < end_us)
        .group_by(group)
        .order_by(group)
    ).all()
    return [UsageSum(str(g), int(gu), int(it), int(fa), int(n), int(est or 0)) for g, gu, it, fa, n, est in rows]
