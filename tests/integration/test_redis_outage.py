"""Redis away: 503 problem+json with Retry-After where a route needs it, success for what
committed (its wake-ups sent once Redis is back), and a scheduler loop that survives and leads
again. Each test runs its own redis-server (the shared one is never stopped nor flushed)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import (
    bootstrap_token,
    inventory,
    make_operator_key,
    make_site,
    make_tenant,
    register_node,
    workload_body,
)
from fastapi.testclient import TestClient
from private_redis import PrivateRedis

from agents.protocol import PROTOCOL_VERSION
from controlplane.api.app import create_app
from controlplane.config import Settings
from controlplane.domain.epoch import PlacementEpoch
from controlplane.live.bus import Wakeups
from controlplane.live.lease import SCHEDULER
from controlplane.runtime import Runtime, build_runtime
from controlplane.services.scheduler.run import run_pass
from controlplane.services.singleton import fence_epoch
from controlplane.store.models import Node, Workload


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis", persistent=False)
    yield server
    server.stop()


@pytest.fixture
def own_settings(settings: Settings, private_redis: PrivateRedis) -> Settings:
    return settings.model_copy(
        update={"redis_url": private_redis.url, "scheduler_interval_s": 0.2, "scheduler_lease_s": 2.0}
    )


@pytest.fixture
def rt(own_settings: Settings) -> Iterator[Runtime]:
    runtime = build_runtime(own_settings)
    yield runtime
    runtime.close()


@pytest.fixture
def api(own_settings: Settings, rt: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(own_settings, runtime=rt), raise_server_exceptions=False) as c:
        yield c


def _unavailable(r: Any) -> None:
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert int(r.headers["retry-after"]) > 0
    body = r.json()
    assert body["status"] == 503 and "Redis" in body["detail"]


def _report_body(node_index: int, seq: int) -> dict[str, Any]:
    gpus = [{"uuid": g.uuid, "index": g.index, "power_w": 180.0} for g in inventory(node_index).gpus]
    return {"protocol_version": PROTOCOL_VERSION, "seq": seq, "sent_at": time.time(), "gpus": gpus}


def test_routes_that_need_redis_answer_503_with_retry_after(
    api: TestClient, rt: Runtime, private_redis: PrivateRedis
) -> None:
    make_site(rt)
    node = register_node(rt, 1)
    ops = make_operator_key(rt)
    tenant = make_tenant(rt, "acme")
    assert api.get("/v1/operator/nodes", headers=ops).status_code == 200
    private_redis.stop()

    _unavailable(api.get("/v1/operator/nodes", headers=ops))
    _unavailable(api.get("/v1/operator/gpus", headers=ops))
    _unavailable(api.post(f"/v1/agent/nodes/{node.node_id}/reports", json=_report_body(1, 1), headers=node.headers))
    # What needs only the database still answers.
    assert api.get("/v1/workloads", headers=tenant.headers).status_code == 200
    assert api.get("/healthz").status_code == 200

    private_redis.start()
    assert api.get("/v1/operator/nodes", headers=ops).status_code == 200
    r = api.post(f"/v1/agent/nodes/{node.node_id}/reports", json=_report_body(1, 2), headers=node.headers)
    assert r.status_code == 200 and r.json()["accepted"], r.text


def test_what_committed_succeeds_and_its_wakeups_are_sent_once_redis_is_back(
    api: TestClient, rt: Runtime, private_redis: PrivateRedis
) -> None:
    make_site(rt)
    node = register_node(rt, 1)
    tenant = make_tenant(rt, "acme")
    r = api.post("/v1/workloads", json=workload_body(4, nvlink="none"), headers=tenant.headers)
    assert r.status_code == 201, r.text
    placed = r.json()["id"]
    assert run_pass(rt, PlacementEpoch.of(1, 1)).placed == 1
    rt.bus.retry_s = 3600.0  # this test sends the held wake-ups with its next publish, not the timer
    token = bootstrap_token(rt)
    private_redis.stop()

    # Each commits, then its wake-up publish fails: the answer is still the success.
    r = api.post("/v1/workloads", json=workload_body(1, nvlink="none"), headers=tenant.headers)
    assert r.status_code == 201, r.text
    submitted = r.json()["id"]
    r = api.post(f"/v1/workloads/{placed}/cancel", json={"reason": "test"}, headers=tenant.headers)
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    body = {"protocol_version": PROTOCOL_VERSION, "bootstrap_token": token, "inventory": inventory(2).model_dump()}
    r = api.post("/v1/agent/register", json=body)
    assert r.status_code == 201, r.text  # the token is spent: an error now would strand the agent
    with rt.read() as s:
        assert s.get(Workload, submitted) is not None
        assert s.get(Node, r.json()["node_id"]) is not None
        generation = s.get(Node, node.node_id).generation  # type: ignore[union-attr]
    assert rt.bus.unsent

    private_redis.start()
    listener = private_redis.client().pubsub(ignore_subscribe_messages=True)
    listener.subscribe(rt.keys.scheduler_wake_channel, rt.keys.node_wake_channel)
    assert rt.bus.publish(Wakeups())  # the next publish (of nothing new) sends what was held
    heard: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(heard) < 2:
        message = listener.get_message(timeout=0.5)
        if message is not None:
            heard.add((message["channel"], message["data"]))
    listener.close()
    assert heard == {(rt.keys.scheduler_wake_channel, "1"), (rt.keys.node_wake_channel, node.node_id)}
    stored = rt.redis.hget(rt.keys.node_report(node.node_id), "generation")
    assert stored is not None and int(stored) == generation
    assert not rt.bus.unsent


def test_held_wakeups_are_retried_without_another_publish(rt: Runtime, private_redis: PrivateRedis) -> None:
    make_site(rt)
    register_node(rt, 1)
    tenant = make_tenant(rt, "acme")
    rt.bus.retry_s = 0.2
    private_redis.stop()
    from controlplane.domain.enums import NvlinkPolicy, PriorityClass
    from controlplane.domain.specs import WorkloadSpec
    from controlplane.services.workloads import submit

    spec = WorkloadSpec(
        gpu_count=1,
        gpu_model="NVIDIA GB300",
        nvlink=NvlinkPolicy.NONE,
        priority=PriorityClass.ON_DEMAND,
        command=("x",),
    )
    with rt.uow() as s:  # commits; the publish after it fails and is kept
        submit.submit(s, tenant_id=tenant.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60)
    assert rt.bus.unsent
    time.sleep(0.6)  # retries while Redis is still away keep the wake-ups
    assert rt.bus.unsent
    private_redis.start()
    deadline = time.monotonic() + 5
    while rt.bus.unsent and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not rt.bus.unsent


def _leader_epoch(private_redis: PrivateRedis, rt: Runtime) -> int | None:
    try:
        with private_redis.client() as c:
            value = c.get(rt.keys.leader(SCHEDULER))
    except Exception:
        return None
    tail = (value or "").rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_the_scheduler_loop_survives_redis_going_away_and_losing_its_keys(
    rt: Runtime, private_redis: PrivateRedis
) -> None:
    from controlplane.processes.scheduler import SchedulerLoop

    make_site(rt)
    register_node(rt, 1)
    tenant = make_tenant(rt, "acme")
    stop = threading.Event()
    loop = SchedulerLoop(rt, stop=stop)
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run()
        except BaseException as exc:
            crashed.append(exc)
            raise

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        first = _wait(lambda: _leader_epoch(private_redis, rt), 5, "the loop to lead")
        lease_s = rt.settings.scheduler_lease_s

        def submit_one() -> str:
            from controlplane.domain.enums import NvlinkPolicy, PriorityClass
            from controlplane.domain.specs import WorkloadSpec
            from controlplane.services.workloads import submit

            spec = WorkloadSpec(
                gpu_count=1,
                gpu_model="NVIDIA GB300",
                nvlink=NvlinkPolicy.NONE,
                priority=PriorityClass.ON_DEMAND,
                command=("x",),
            )
            with rt.uow() as s:
                return submit.submit(
                    s, tenant_id=tenant.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60
                ).workload.id

        def placed(wl_id: str) -> bool:
            with rt.read() as s:
                wl = s.get(Workload, wl_id)
                return wl is not None and wl.state != "pending"

        # Away for longer than the lease; back empty (no persistence): the lease is gone.
        private_redis.stop()
        time.sleep(lease_s * 1.5)
        assert thread.is_alive(), crashed
        private_redis.start()
        back = time.monotonic()
        second = _wait(lambda: _leader_epoch(private_redis, rt), lease_s, "the loop to lead again")
        lead_after_restart = time.monotonic() - back
        assert second > first
        wl = submit_one()
        _wait(lambda: placed(wl), 5, "a placement after the restart")

        # Every key lost while it leads (FLUSHALL of this test's own server).
        flushed = time.monotonic()
        private_redis.flushall()
        third = _wait(
            lambda: (e := _leader_epoch(private_redis, rt)) is not None and e > second and e,
            lease_s,
            "the loop to lead after the flush",
        )
        lead_after_flush = time.monotonic() - flushed
        wl = submit_one()
        _wait(lambda: placed(wl), 5, "a placement after the flush")
        assert thread.is_alive(), crashed
        assert fence_epoch(rt.read, SCHEDULER) == third
        assert lead_after_restart < lease_s and lead_after_flush < lease_s, (lead_after_restart, lead_after_flush)
    finally:
        stop.set()
        thread.join(10)
    assert not crashed, crashed
