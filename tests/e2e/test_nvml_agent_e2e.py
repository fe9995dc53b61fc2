"""The real agent process on the NVML backend: the real pynvml, the fake libnvidia-ml.so.1.

The agent finds the fake the way it would find NVIDIA's library, through the dynamic loader
(LD_LIBRARY_PATH), registers its four GB300 GPUs with the control plane (API on SQLite), and
serves /metrics, which promtool parses and which carries dcgm-exporter's names and labels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from fakes.nvml.build import build_fake_nvml
from harness import Site, free_port, process_env, registered_nodes, wait_for
from testenv import PEPPER, REDIS_URL

DCGM_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION")


def test_nvml_agent_registers_reports_and_exports(tmp_path: Path, redis_prefix: str) -> None:
    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    fake = build_fake_nvml(tmp_path / "fake-nvml")
    db_url = f"sqlite:///{tmp_path / 'cp.db'}"
    upgrade(db_url)
    settings = Settings(data_dir=tmp_path, database_url=db_url, pepper=PEPPER)
    engine = make_engine(db_url)
    with transaction(make_session_factory(engine)) as session:
        from factories import demo_spec

        admin.create_site(session, name="demo-rack", spec=demo_spec())
        pepper = settings.pepper_bytes()
        ops_key = admin.issue_api_key(session, pepper=pepper, scope=KeyScope.OPERATOR).secret
        _, token = admin.issue_bootstrap_token(session, pepper=pepper, site_name="demo-rack", rack=None, ttl_s=600)
    engine.dispose()
    port = free_port()
    env = process_env(tmp_path, db_url=db_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, pepper=PEPPER, port=port)
    site = Site(workdir=tmp_path, env=env, url=f"http://127.0.0.1:{port}")
    ops = {"Authorization": f"Bearer {ops_key}"}
    try:
        site.start("api", "api")
        wait_for(
            lambda: httpx.get(f"{site.url}/healthz", timeout=1).status_code == 200,
            timeout=30,
            site=site,
            what="the API",
        )
        site.start(
            "agent",
            "agent",
            "--server",
            site.url,
            "--state-dir",
            str(tmp_path / "agent"),
            "--backend",
            "nvml",
            "--hostname",
            "gb300-tray15",
            extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": token, "LD_LIBRARY_PATH": str(fake.parent)},
        )
        http = httpx.Client(base_url=site.url, timeout=10)
        [node] = registered_nodes(http, ops, 1, site)
        assert node["backend"] == "nvml" and node["driver_version"] == "580.173.02"
        # The fabric ids of the capture make the rack's NVLink domain, found from the fabric.
        assert node["nvlink_domain"] == "00000001-0000-0000-0000-000000000001.32766"
        uuids = sorted(g["uuid"] for g in node["gpus"])
        assert uuids[0] == "GPU-00000000-0000-0000-0000-000000000000" and len(uuids) == 4
        assert {g["model"] for g in node["gpus"]} == {"NVIDIA GB300"}

        def reported() -> list[dict[str, Any]] | None:
            gpus = http.get(f"/v1/operator/nodes/{node['id']}", headers=ops).json()["gpus"]
            return gpus if all(g["telemetry"] and "power_w" in g["telemetry"] for g in gpus) else None

        gpus = wait_for(reported, timeout=30, site=site, what="NVML telemetry to reach the control plane")
        t = gpus[0]["telemetry"]
        assert 150 < t["power_w"] < 250 and t["memory_total_mib"] == 284208 and t["health"] == "healthy"

        url = re.search(r"metrics_url=(\S+)", site.log("agent"))
        assert url, site.log("agent")
        text = httpx.get(url.group(1), timeout=5).text
    finally:
        site.stop_all()

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required (Debian package 'prometheus'); this test is not skipped")
    done = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert done.returncode in (0, 3), done.stdout + done.stderr  # 3: lint findings only, no parse error
    findings = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    # The only findings are the ones dcgm-exporter's own names carry (camelCase modelName, counters
    # without "_total"): copying them is the point, dashboards select on them.
    assert all(line.startswith("DCGM_") for line in findings), findings
    power = [line for line in text.splitlines() if line.startswith("DCGM_FI_DEV_POWER_USAGE{")]
    assert len(power) == 4
    labels = re.findall(r'(\w+)="', power[0])
    assert (
        tuple(labels) == DCGM_LABELS
        and 'Hostname="gb300-tray15"' in power[0]
        and 'modelName="NVIDIA GB300"' in power[0]
    )
    for name in (
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "DCGM_FI_DEV_SM_CLOCK",
        "switchyard_gpu_health",
    ):
        assert f"\n{name}{{" in text, name
