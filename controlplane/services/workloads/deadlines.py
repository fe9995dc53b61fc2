"""Workloads past their maximum duration end as failed (run periodically by the workers)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.services.workloads import lifecycle
from controlplane.store.models import Workload


def enforce_max_duration(session: Session, *, now: datetime) -> list[str]:
    active = session.scalars(
        select(Workload).where(
            Workload.state.in_(
                [WorkloadState.SCHEDULED.value, WorkloadState.STARTING.value, WorkloadState.RUNNING.value]
            ),
            Workload.scheduled_at.is_not(None),
        )
    ).all()
    ended = []
    for wl in active:
        assert wl.scheduled_at is not None
        if wl.scheduled_at + timedelta(seconds=wl.max_duration_s) <= now:
            lifecycle.finish(
                session,
                wl,
                WorkloadState.FAILED,
                f"exceeded its max duration of {wl.max_duration_s} s",
                now=now,
            )
            ended.append(wl.id)
    return ended
