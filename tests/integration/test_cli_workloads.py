"""The tenant's CLI (`switchyard workloads submit|list|show`) against the API served by uvicorn
on a loopback port, on PostgreSQL and SQLite: a checkpoint interval submitted and refused, a
planned start committed by the scheduler shown as the workload's expected start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from factories import make_site, make_tenant, register_node
from harness import free_port

from controlplane.api.app import create_app
from controlplane.config import Settings
from controlplane.domain.epoch import PlacementEpoch
from controlplane.domain.reasons import PendingCode
from controlplane.runtime import Runtime
from controlplane.scheduling.snapshot import PlannedStart, Unplaced
from controlplane.services.scheduler.commit import commit

T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


@pytest.fixture
def base_url(settings: Settings, runtime: Runtime) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(create_app(settings, runtime=runtime), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def cli(base_url: str, key: str | None, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHYARD_")}
    env |= {"SWITCHYARD_SERVER": base_url, "SWITCHYARD_DATA_DIR": str(tmp_path)}
    if key is not None:
        env["SWITCHYARD_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", "workloads", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_submit_with_a_checkpoint_interval_and_see_the_planned_start(
    base_url: str, runtime: Runtime, tmp_path: Path
) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    submitted = cli(
        base_url,
        acme.key,
        tmp_path,
        "submit",
        "--gpus",
        "4",
        "--nvlink",
        "none",
        "--max-duration-s",
        "3600",
        "--checkpoint-interval-s",
        "600",
        "--json",
        "--",
        "python3",
        "-c",
        "print(1)",
    )
    assert submitted.returncode == 0, submitted.stderr
    wl = json.loads(submitted.stdout)
    assert wl["checkpoint_interval_s"] == 600 and wl["command"] == ["python3", "-c", "print(1)"]
    assert wl["expected_start_at"] is None

    reason = "planned start at 12:00 UTC: 4 GPUs of its shape are held for it"
    with runtime.uow() as s:
        plan = PlannedStart(T0.timestamp(), ("c.32766",))
        commit(s, decisions=[Unplaced(wl["id"], reason, PendingCode.PLANNED, plan)], epoch=PlacementEpoch(1, 1).value)

    shown = cli(base_url, acme.key, tmp_path, "show", wl["id"])
    assert shown.returncode == 0, shown.stderr
    lines = {line[:16].strip(): line[16:].strip() for line in shown.stdout.splitlines()}
    assert datetime.fromisoformat(lines["expected start"]) == T0, shown.stdout
    assert lines["pending code"] == "planned" and lines["pending reason"] == reason, shown.stdout
    assert lines["checkpoint s"] == "600"
    as_json = json.loads(cli(base_url, acme.key, tmp_path, "show", wl["id"], "--json").stdout)
    assert datetime.fromisoformat(as_json["expected_start_at"]) == T0

    listed = cli(base_url, acme.key, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert "EXPECTED START" in header and wl["id"] in row and "planned" in row
    assert lines["expected start"] in row


def test_the_cli_refuses_with_one_message_and_a_non_zero_exit(base_url: str, runtime: Runtime, tmp_path: Path) -> None:
    make_site(runtime)
    register_node(runtime, 1)
    acme = make_tenant(runtime, "acme")
    base = ("submit", "--gpus", "1", "--nvlink", "none")
    for argv, fragment in [
        ((*base, "--checkpoint-interval-s", "30", "--", "true"), "checkpoint_interval_s"),
        (
            (*base, "--max-duration-s", "600", "--checkpoint-interval-s", "900", "--", "true"),
            "above the workload's max duration (600 s)",
        ),
        (("show", "wl_nope"), "no workload 'wl_nope'"),
    ]:
        r = cli(base_url, acme.key, tmp_path, *argv)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and fragment in lines[0].lower() and "(HTTP 4" in lines[0], r.stderr
    r = cli(base_url, None, tmp_path, "list")
    assert r.returncode == 2 and "SWITCHYARD_API_KEY" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli(base_url, "sy_tenant_wrong", tmp_path, "list")
    assert r.returncode == 2 and "(HTTP 401)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = cli(base_url, acme.key, tmp_path, "submit", "--gpus", "1", "--checkpoint-interval-s", "often", "--", "true")
    assert r.returncode == 2 and "--checkpoint-interval-s" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert json.loads(cli(base_url, acme.key, tmp_path, "list", "--json").stdout)["items"] == []
