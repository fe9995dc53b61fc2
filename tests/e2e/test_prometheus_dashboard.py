"""A real Prometheus scraping real agents, and every query of dcgm-exporter's dashboard 12239.

Two agent processes register with a control plane (API on SQLite, the shared Redis): one on the
NVML backend (the real pynvml on the fake libnvidia-ml.so.1, found through LD_LIBRARY_PATH as
the driver's would be) and one on the simulator with a workload's load. ``/usr/bin/prometheus``
(Debian package ``prometheus``, installed by .ci/services.sh) scrapes both every second from a
generated config on a free loopback port; once each has been scraped with its profiling
series, every panel query of the dashboard (``tests/dashboard_12239.py``), with the template
variables substituted as Grafana does for "All", runs through the HTTP API and must return data
for both agents' GPUs. Never skipped: a missing prometheus fails the test.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from dashboard_12239 import PANELS, VARIABLES
from fakes.nvml.build import build_fake_nvml
from harness import Site, free_port, process_env, registered_nodes, wait_for
from testenv import PEPPER, REDIS_URL


def test_every_dashboard_12239_query_returns_data(tmp_path: Path, redis_prefix: str) -> None:
    from controlplane.config import Settings
    from controlplane.domain.enums import KeyScope
    from controlplane.services import admin
    from controlplane.store.db import make_engine, make_session_factory, transaction
    from controlplane.store.migrate import upgrade

    prometheus = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(prometheus).exists():
        pytest.fail("prometheus is required (Debian package 'prometheus', see .ci/services.sh); not skipped")
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
        tokens = [
            admin.issue_bootstrap_token(session, pepper=pepper, site_name="demo-rack", rack=None, ttl_s=600)[1]
            for _ in range(2)
        ]
    engine.dispose()
    port = free_port()
    env = process_env(tmp_path, db_url=db_url, redis_url=REDIS_URL, redis_prefix=redis_prefix, pepper=PEPPER, port=port)
    site = Site(workdir=tmp_path, env=env, url=f"http://127.0.0.1:{port}")
    ops = {"Authorization": f"Bearer {ops_key}"}
    nvml_port, sim_port, prom_port = free_port(), free_port(), free_port()
    targets = {"nvml": f"127.0.0.1:{nvml_port}", "sim": f"127.0.0.1:{sim_port}"}
    prom: subprocess.Popen[bytes] | None = None
    try:
        site.start("api", "api")
        wait_for(lambda: httpx.get(f"{site.url}/healthz", timeout=1).status_code == 200, timeout=30, site=site)
        common = ["--server", site.url, "--metrics-addr", "127.0.0.1"]
        site.start(
            "agent-nvml",
            "agent",
            *common,
            "--metrics-port",
            str(nvml_port),
            "--state-dir",
            str(tmp_path / "agent-nvml"),
            "--backend",
            "nvml",
            "--hostname",
            "gb300-tray15",
            extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": tokens[0], "LD_LIBRARY_PATH": str(fake.parent)},
        )
        site.start(
            "agent-sim",
            "agent",
            *common,
            "--metrics-port",
            str(sim_port),
            "--state-dir",
            str(tmp_path / "agent-sim"),
            "--backend",
            "sim",
            "--sim-node-index",
            "1",
            "--hostname",
            "tray01",
            extra_env={"SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": tokens[1]},
        )
        http = httpx.Client(base_url=site.url, timeout=10)
        registered_nodes(http, ops, 2, site)

        # Both agents serve the tensor-core series (a GPM interval needs two samples).
        def serves_tensor(target: str) -> bool:
            return "\nDCGM_FI_PROF_PIPE_TENSOR_ACTIVE{" in httpx.get(f"http://{target}/metrics", timeout=2).text

        for name, target in targets.items():
            wait_for(
                functools.partial(serves_tensor, target),
                timeout=30,
                site=site,
                what=f"the {name} agent's profiling series",
            )

        config = tmp_path / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            + "".join(
                f"  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n"
                for name, target in targets.items()
            )
        )
        prom_log = open(tmp_path / "prometheus.log", "wb")  # noqa: SIM115 - owned by the child
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--web.enable-lifecycle",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        prom_log.close()
        api = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=10)

        def query(expr: str, **params: Any) -> list[dict[str, Any]]:
            path = "/api/v1/query_range" if "step" in params else "/api/v1/query"
            body = api.get(path, params={"query": expr, **params}).json()
            assert body["status"] == "success", (expr, body)
            result: list[dict[str, Any]] = body["data"]["result"]
            return result

        def scraped_twice() -> bool:
            if prom is not None and prom.poll() is not None:
                raise AssertionError((tmp_path / "prometheus.log").read_text(errors="replace")[-3000:])
            try:
                # Each target up and its tensor series seen in two scrapes (so a range has points).
                up = query("up == 1")
                counts = query("count_over_time(DCGM_FI_PROF_PIPE_TENSOR_ACTIVE[1m]) >= 2")
            except httpx.HTTPError:
                return False
            return len(up) == 2 and {s["metric"]["job"] for s in counts} == set(targets)

        wait_for(scraped_twice, timeout=30, site=site, what="Prometheus to scrape both agents twice")

        # Template variables as Grafana fills them: label_values(metric, label), then "All" on a
        # multi-value variable becomes a regex alternation of every value.
        values: dict[str, list[str]] = {}
        for variable, (metric, label) in VARIABLES.items():
            found = api.get(f"/api/v1/label/{label}/values", params={"match[]": metric}).json()["data"]
            values[variable] = sorted(found)
        assert values["instance"] == sorted(targets.values())
        assert values["gpu"] == ["0", "1", "2", "3"]

        def substitute(expr: str) -> str:
            for variable, options in values.items():
                # Grafana's regex escape, written inside a PromQL string (so "\\." for a dot).
                alternation = "(" + "|".join(re.escape(v).replace("\\", "\\\\") for v in options) + ")"
                expr = expr.replace(f"${variable}", alternation)
            return expr

        end = time.time()
        for panel in PANELS:
            expr = substitute(panel.expr)
            assert "$" not in expr, expr
            # A gauge panel asks for one value; a time series panel for the last 30 s at 1 s.
            result = query(expr, time=end) if panel.instant else query(expr, start=end - 30, end=end, step="1")
            assert result, f"panel {panel.title!r}: no data for {expr}"
            if "(" not in panel.expr.split("{")[0]:  # per-GPU panels (not avg/sum): every GPU of both agents
                seen = {(s["metric"]["instance"], s["metric"]["gpu"]) for s in result}
                assert seen == {(i, g) for i in targets.values() for g in values["gpu"]}, (panel.title, seen)
        tensor = query(substitute(PANELS[-1].expr), time=end)
        by_host = {(s["metric"]["Hostname"], s["metric"]["gpu"]): float(s["value"][1]) for s in tensor}
        assert all(0.0 <= v <= 1.0 for v in by_host.values()), by_host  # DCGM's ratio
        assert {s["metric"]["DCGM_FI_DRIVER_VERSION"] for s in tensor} == {"580.173.02"}
    finally:
        if prom is not None:
            prom.terminate()
            try:
                prom.wait(15)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        site.stop_all()
