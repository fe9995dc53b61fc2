"""Redis goes away and comes back, then loses every key, while a site runs tenant work.

The site (API, scheduler, worker + beat, six agents) runs on a redis-server of the test's own.
Long workloads run across both events and short ones are submitted throughout; a prober calls
routes that need Redis and routes that do not. Redis is stopped for longer than a node lease and
the scheduler's lease (then restarted with its data), and later flushed (FLUSHALL: the lease is
gone while the scheduler leads). Shown: no 500 (only 503 with Retry-After, and only while Redis is down), no
process exits, every workload succeeds, the scheduler leads again within one lease TTL with an
epoch above every epoch used before (each time), and the worker's sweeps still run afterwards.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from harness import NODES, Site, registered_nodes, wait_for
from private_redis import PrivateRedis

LEASE_S = 10.0  # the scheduler's lease TTL (the default)
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def site_redis_url(private_redis: PrivateRedis) -> str:
    return private_redis.url


@dataclass
class Prober:
    """Calls the API every ~0.2 s and submits a short 1-GPU workload every ~2 s, from a thread."""

    site: Site
    tenant: dict[str, str]
    ops: dict[str, str]
    answers: list[tuple[float, str, int, str, str | None]] = field(default_factory=list)
    submitted: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        http = httpx.Client(base_url=self.site.url, timeout=10)
        routes = [
            ("/v1/workloads", self.tenant),
            ("/v1/operator/nodes", self.ops),
            ("/v1/operator/gpus", self.ops),
            ("/v1/offerings", self.tenant),
        ]
        count, last_submit = 0, 0.0
        try:
            while not self.stop.wait(0.2):
                path, headers = routes[count % len(routes)]
                self._record(f"GET {path}", http.get(path, headers=headers))
                if time.monotonic() - last_submit >= 2.0:
                    last_submit = time.monotonic()
                    key = f"short-{count}"
                    body = {"name": key, "gpus": 1, "command": [sys.executable, "-c", "import time; time.sleep(2)"]}
                    r = http.post("/v1/workloads", json=body, headers={**self.tenant, "Idempotency-Key": key})
                    self._record("POST /v1/workloads", r)
                    if r.status_code in (200, 201):
                        self.submitted.append(str(r.json()["id"]))
                count += 1
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.errors.append(exc)
        finally:
            http.close()

    def _record(self, what: str, r: httpx.Response) -> None:
        kind, retry_after = r.headers.get("content-type", ""), r.headers.get("retry-after")
        self.answers.append((time.monotonic(), what, r.status_code, kind, retry_after))


def _leader(private_redis: PrivateRedis, prefix: str) -> int | None:
    """The epoch in the scheduler's lease, or None while nobody holds it (or Redis is down)."""
    try:
        with private_redis.client() as c:
            value = c.get(f"{prefix}:scheduler:leader")
    except Exception:
        return None
    if not value or ":" not in value:
        return None
    epoch = value.rsplit(":", 1)[1]
    return int(epoch) if epoch.isdigit() else None


def _epochs_led(site: Site) -> list[int]:
    return [int(e) for e in re.findall(r"leading the scheduler with fencing epoch (\d+)", site.log("scheduler"))]


def test_redis_restart_and_flush_fail_no_request_no_process_no_workload(
    site: Site, private_redis: PrivateRedis
) -> None:
    tenant = {"Authorization": f"Bearer {site.env['TENANT_KEY']}"}
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    prefix = site.env["SWITCHYARD_REDIS_PREFIX"]
    http = httpx.Client(base_url=site.url, timeout=10)
    nodes = registered_nodes(http, ops, NODES, site)

    def submit(name: str, gpus: int, seconds: float) -> str:
        body = {"name": name, "gpus": gpus, "command": [sys.executable, "-c", f"import time; time.sleep({seconds})"]}
        r = http.post("/v1/workloads", json=body, headers={**tenant, "Idempotency-Key": name})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def state(wl: str) -> dict[str, Any]:
        got: dict[str, Any] = http.get(f"/v1/workloads/{wl}", headers=tenant).json()
        return got

    long_ones = [submit("long-4", 4, 55), submit("long-8", 8, 55)]
    for wl in long_ones:
        wait_for(partial(lambda w: state(w)["state"] == "running", wl), timeout=60, site=site, what=f"{wl} to run")
    first_epoch = wait_for(lambda: _leader(private_redis, prefix), timeout=10, site=site, what="a scheduler lease")

    prober = Prober(site, tenant, ops)
    thread = threading.Thread(target=prober.run, daemon=True)
    thread.start()
    time.sleep(2)

    # 1. An outage longer than a node lease (5 s) and the scheduler's (10 s): Redis stops, then
    # comes back with its data, in which the scheduler's lease has expired.
    down_at = time.monotonic()
    private_redis.stop()
    time.sleep(LEASE_S + 1)
    private_redis.start()
    up_at = time.monotonic()
    after_restart = submit("after-restart", 4, 3)
    wait_for(
        lambda: (e := _leader(private_redis, prefix)) is not None and e > first_epoch,
        timeout=LEASE_S + 5,
        site=site,
        what="a new leader after the restart",
    )
    restart_lead_s = time.monotonic() - up_at
    wait_for(lambda: state(after_restart)["state"] != "pending", timeout=LEASE_S + 5, site=site, what="a placement")
    placed_after_restart_s = time.monotonic() - up_at

    # 2. Redis loses every key: the lease and the epoch counter too.
    time.sleep(3)
    before_flush = max(_epochs_led(site))
    flushed_at = time.monotonic()
    private_redis.flushall()
    after_flush = submit("after-flush", 4, 3)
    new_epoch = wait_for(
        lambda: (e := _leader(private_redis, prefix)) is not None and e > before_flush and e,
        timeout=LEASE_S + 5,
        site=site,
        what="a new leader after the flush",
    )
    flush_lead_s = time.monotonic() - flushed_at
    wait_for(lambda: state(after_flush)["state"] != "pending", timeout=LEASE_S + 5, site=site, what="a placement")
    placed_after_flush_s = time.monotonic() - flushed_at
    time.sleep(3)
    prober.stop.set()
    thread.join(30)
    assert not prober.errors, prober.errors

    everything = [*long_ones, after_restart, after_flush, *prober.submitted]
    done = wait_for(
        lambda: (got := [state(w) for w in everything]) and all(g["state"] in TERMINAL for g in got) and got,
        timeout=120,
        site=site,
        what="every workload to end",
    )
    failed = [(g["id"], g["state"], [h["reason"] for h in g["history"]]) for g in done if g["state"] != "succeeded"]
    assert not failed, failed
    assert len(prober.submitted) >= 8

    # Never a 500; while Redis was down only 503 problem+json with Retry-After; none once it was back.
    bad = [a for a in prober.answers if a[2] not in (200, 201, 503)]
    assert not bad, bad
    unavailable = [a for a in prober.answers if a[2] == 503]
    assert unavailable, "no route needed Redis while it was down"
    assert all(a[3] == "application/problem+json" and a[4] for a in unavailable), unavailable
    assert all(down_at <= a[0] <= up_at + 1.0 for a in unavailable), (down_at, up_at, unavailable)
    submissions_down = [a for a in prober.answers if a[1].startswith("POST") and down_at < a[0] < up_at]
    assert submissions_down and all(a[2] == 201 for a in submissions_down), submissions_down

    # The scheduler led again within one lease TTL each time, each epoch above the ones before.
    epochs = _epochs_led(site)
    assert epochs == sorted(set(epochs)) and len(epochs) == 3, epochs
    assert epochs[0] == first_epoch and epochs[-1] == new_epoch, epochs
    assert restart_lead_s < LEASE_S and flush_lead_s < LEASE_S, (restart_lead_s, flush_lead_s)
    print(
        f"\nscheduler leading again: {restart_lead_s:.2f} s after the restart, {flush_lead_s:.2f} s after the flush;"
        f" a submission placed {placed_after_restart_s:.2f} s / {placed_after_flush_s:.2f} s after them;"
        f" epochs led: {epochs}; 503s while down: {len(unavailable)} of {len(prober.answers)} answers"
    )

    # The worker and beat still sweep: an agent killed now makes its node unreachable.
    idle = next(n for n in nodes if n["hostname"] == "tray06")
    site.stop("agent-6", sig=signal.SIGKILL)
    wait_for(
        lambda: any(
            n["id"] == idle["id"] and n["status"] == "unreachable"
            for n in http.get("/v1/operator/nodes", headers=ops).json()
        ),
        timeout=30,
        site=site,
        what="the sweep to mark the killed agent's node unreachable",
    )
    site.check_alive()
