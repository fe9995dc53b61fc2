"""Celery app: periodic sweeps run by beat, executed by workers.

Tasks are adapters: they build nothing but the call into a service, are idempotent (a sweep run
twice changes nothing the second time) and never wait on other tasks. Heartbeats and telemetry
never go through Celery.
"""

from __future__ import annotations

from celery import Celery

from controlplane.config import Settings


def create_celery(settings: Settings) -> Celery:
    app = Celery("switchyard", broker=settings.redis_url, include=["controlplane.workers.tasks"])
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # A Redis outage of any length is waited out (the default gives up after 100 retries
        # and the worker exits); beat logs each tick it cannot send and sends the next one.
        broker_connection_max_retries=None,
        timezone="UTC",
        beat_schedule={
            "sweep-liveness": {
                "task": "switchyard.sweep_liveness",
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s * 2},
            },
            "meter-usage": {
                "task": "switchyard.meter_usage",
                "schedule": 60.0,
                "options": {"expires": 120.0},
            },
            "enforce-max-duration": {
                "task": "switchyard.enforce_max_duration",
                "schedule": 10.0,
                "options": {"expires": 20.0},
            },
        },
        broker_transport_options={"global_keyprefix": f"{settings.redis_prefix}:celery:"},
    )
    return app
