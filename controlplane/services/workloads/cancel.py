"""Cancel: the workload ends now; its GPUs free once its agents confirm the processes gone."""

from __future__ import annotations

from sqlalchemy.orm import Session

from controlplane.domain.enums import WorkloadState
from controlplane.domain.errors import Conflict
from controlplane.domain.workload import is_terminal
from controlplane.services.workloads import lifecycle
from controlplane.services.workloads.read import get
from controlplane.store.models import Workload


def cancel(session: Session, *, tenant_id: str | None, workload_id: str, reason: str) -> Workload:
    wl = get(session, tenant_id=tenant_id, workload_id=workload_id, lock=True)
    if is_terminal(WorkloadState(wl.state)):
        raise Conflict(f"workload {wl.id} is already {wl.state}")
    lifecycle.finish(session, wl, WorkloadState.CANCELLED, reason)
    return wl
