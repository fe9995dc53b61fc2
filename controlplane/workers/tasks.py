"""Celery tasks: thin adapters over the liveness, deadline and metering services (ids in, a service call,
idempotent: a sweep run twice changes nothing the second time)."""

from __future__ import annotations

import logging
import time
from functools import lru_cache

from celery import shared_task

from controlplane.config import get_settings
from controlplane.runtime import Runtime, build_runtime
from controlplane.services.agents import liveness
from controlplane.services.metering import record
from controlplane.services.workloads import deadlines
from controlplane.store.types import utcnow

log = logging.getLogger("switchyard.workers")


@lru_cache(maxsize=1)
def _runtime() -> Runtime:
    return build_runtime(get_settings())


def sweep(runtime: Runtime, *, now_s: float | None = None) -> liveness.SweepResult:
    settings = runtime.settings
    result = liveness.sweep(
        live=runtime.live,
        uow=runtime.uow,
        now_s=time.time() if now_s is None else now_s,
        grace_s=settings.unreachable_grace_s,
        policy=settings.unreachable_policy,
    )
    if result.marked_unreachable or result.requeued or result.failed:
        log.info(
            "liveness: %d unreachable, %d requeued, %d failed",
            len(result.marked_unreachable),
            len(result.requeued),
            len(result.failed),
        )
    return result


@shared_task(name="switchyard.sweep_liveness")  # type: ignore[untyped-decorator]
def sweep_liveness() -> None:
    sweep(_runtime())


@shared_task(name="switchyard.enforce_max_duration")  # type: ignore[untyped-decorator]
def enforce_max_duration() -> None:
    runtime = _runtime()
    with runtime.uow() as session:
        ended = deadlines.enforce_max_duration(session, now=utcnow())
    if ended:
        log.info("ended %d workloads past their max duration", len(ended))


@shared_task(name="switchyard.meter_usage")  # type: ignore[untyped-decorator]
def meter_usage() -> None:
    """The usage ledger's rows for every interval completed since the last run."""
    runtime = _runtime()
    with runtime.uow() as session:
        written = record.meter_sites(session, now=utcnow())
    if any(written.values()):
        log.info("metering: %d usage rows written", sum(written.values()))
