"""Celery tasks: thin adapters over the liveness and deadline services."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from functools import lru_cache

from celery import shared_task

from controlplane.config import get_settings
from controlplane.runtime import Runtime, build_runtime
from controlplane.services import liveness
from controlplane.store.types import utcnow

log = logging.getLogger("switchyard.workers")


@lru_cache(maxsize=1)
def _runtime() -> Runtime:
    return build_runtime(get_settings())


def sweep(runtime: Runtime, *, now_s: float | None = None) -> liveness.SweepResult:
    """Mark nodes with expired leases unreachable; handle workloads of long-lost nodes."""
    settings = runtime.settings
    now_s = time.time() if now_s is None else now_s
    expired = runtime.live.expired_leases(now=now_s)  # Redis first, outside the transaction
    now = datetime.fromtimestamp(now_s, tz=UTC)
    with runtime.uow() as session:
        marked = liveness.mark_unreachable(session, expired_node_ids=expired, now=now)
    with runtime.uow() as session:
        requeued, failed = liveness.handle_lost_nodes(
            session, now=now, grace_s=settings.unreachable_grace_s, policy=settings.unreachable_policy
        )
    if marked or requeued or failed:
        log.info("liveness: %d unreachable, %d requeued, %d failed", len(marked), len(requeued), len(failed))
    return liveness.SweepResult(marked_unreachable=marked, requeued=requeued, failed=failed)


@shared_task(name="switchyard.sweep_liveness")  # type: ignore[untyped-decorator]
def sweep_liveness() -> None:
    sweep(_runtime())


@shared_task(name="switchyard.enforce_max_duration")  # type: ignore[untyped-decorator]
def enforce_max_duration() -> None:
    runtime = _runtime()
    with runtime.uow() as session:
        ended = liveness.enforce_max_duration(session, now=utcnow())
    if ended:
        log.info("ended %d workloads past their max duration", len(ended))
