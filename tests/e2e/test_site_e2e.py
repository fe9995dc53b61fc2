"""A converted site end to end with real processes on PostgreSQL and Redis.

API, scheduler, worker, beat and six agent processes (24 simulated GB300 GPUs in one NVLink
domain). A tenant submits a 4-GPU and a 16-GPU NVLink workload; both run on the GPUs of one
node / one domain with the rendezvous environment torchrun expects, finish, their logs are
readable, and the operator API shows every GPU free again.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import httpx
from harness import NODES, Site, registered_nodes, wait_all_gpus_free, wait_for

CHECK_ENV = r"""
import os, sys, time
gpus = os.environ["CUDA_VISIBLE_DEVICES"].split(",")
assert gpus == os.environ["NVIDIA_VISIBLE_DEVICES"].split(","), "visible devices disagree"
assert len(gpus) == int(os.environ["LOCAL_WORLD_SIZE"]) == 4, gpus
assert all(g.startswith("GPU-") for g in gpus), gpus
world = int(os.environ["WORLD_SIZE"]); rank = int(os.environ["RANK"])
assert os.environ["NNODES"] == os.environ["PET_NNODES"] == str(world)
assert os.environ["NODE_RANK"] == os.environ["PET_NODE_RANK"] == str(rank)
assert len(os.environ["SWITCHYARD_PEERS"].split(",")) == world
print(f"rank={rank} world={world} master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
      f"job={os.environ['JOB']} gpus={','.join(gpus)}", flush=True)
time.sleep(float(sys.argv[1]))
print("done", flush=True)
"""


def test_tenant_workloads_run_on_one_node_and_one_domain(site: Site) -> None:
    tenant = {"Authorization": f"Bearer {site.env['TENANT_KEY']}"}
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    http = httpx.Client(base_url=site.url, timeout=10)
    nodes = registered_nodes(http, ops, NODES, site)
    assert {n["nvlink_domain"] for n in nodes} != {None} and len({n["nvlink_domain"] for n in nodes}) == 1

    def submit(gpus: int, job: str) -> str:
        body = {
            "name": job,
            "gpus": gpus,
            "nvlink": "required",
            "env": {"JOB": job},
            "command": [sys.executable, "-c", CHECK_ENV, "3"],
        }
        r = http.post("/v1/workloads", json=body, headers={**tenant, "Idempotency-Key": job})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    small, large = submit(4, "small"), submit(16, "large")

    def finished() -> list[dict[str, Any]] | None:
        got = [http.get(f"/v1/workloads/{w}", headers=tenant).json() for w in (small, large)]
        return got if all(g["state"] in ("succeeded", "failed", "cancelled") for g in got) else None

    done = wait_for(finished, timeout=90, site=site, what="both workloads to finish")
    for wl in done:
        assert wl["state"] == "succeeded", wl
        states = [h["to_state"] for h in wl["history"]]
        assert states[:2] == ["pending", "scheduled"] and states[-1] == "succeeded" and "running" in states
    small_wl, large_wl = done
    assert len(small_wl["allocation"]["ranks"]) == 1 and len(small_wl["allocation"]["ranks"][0]["gpu_uuids"]) == 4
    ranks = large_wl["allocation"]["ranks"]
    assert len(ranks) == 4 and sum(len(r["gpu_uuids"]) for r in ranks) == 16
    domain_of = {n["id"]: n["nvlink_domain"] for n in nodes}
    assert len({domain_of[r["node_id"]] for r in ranks}) == 1
    assert len({r["node_id"] for r in ranks}) == 4

    # Each rank's output reached the control plane, in order, with its own rank and GPUs.
    def rank_log(rank: int) -> str | None:
        text = http.get(f"/v1/workloads/{large}/logs", params={"rank": rank}, headers=tenant).text
        return text if "done" in text else None

    for r in ranks:
        text = wait_for(
            partial(rank_log, r["rank"]),
            timeout=20,
            site=site,
            what=f"logs of rank {r['rank']}",
        )
        assert f"rank={r['rank']} world=4" in text and ",".join(r["gpu_uuids"]) in text and "job=large" in text

    # The GPUs are free again, and live telemetry is flowing.
    gpus = wait_all_gpus_free(http, ops, site)
    assert len(gpus) == NODES * 4
    assert all(g["telemetry"] and g["telemetry"]["power_w"] > 100 for g in gpus)


def test_killed_agent_makes_its_node_unreachable(site: Site) -> None:
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    http = httpx.Client(base_url=site.url, timeout=10)
    registered_nodes(http, ops, NODES, site)
    import signal

    site.stop("agent-3", sig=signal.SIGKILL)
    node = wait_for(
        lambda: [
            n
            for n in http.get("/v1/operator/nodes", headers=ops).json()
            if n["hostname"] == "tray03" and n["status"] == "unreachable"
        ],
        timeout=30,
        site=site,
        what="tray03 to become unreachable",
    )[0]
    assert node["lease_alive"] is False and {g["state"] for g in node["gpus"]} == {"unreachable"}


def test_cancel_stops_the_processes_and_frees_the_gpus(site: Site) -> None:
    tenant = {"Authorization": f"Bearer {site.env['TENANT_KEY']}"}
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    http = httpx.Client(base_url=site.url, timeout=10)
    registered_nodes(http, ops, NODES, site)
    body = {"name": "long", "gpus": 8, "env": {"JOB": "long"}, "command": [sys.executable, "-c", CHECK_ENV, "600"]}
    wl = http.post("/v1/workloads", json=body, headers=tenant).json()["id"]
    wait_for(
        lambda: http.get(f"/v1/workloads/{wl}", headers=tenant).json()["state"] == "running",
        timeout=30,
        site=site,
        what="the workload to run",
    )
    r = http.post(f"/v1/workloads/{wl}/cancel", json={"reason": "done early"}, headers=tenant)
    assert r.status_code == 200 and r.json()["state"] == "cancelled"

    wait_all_gpus_free(http, ops, site)
    got = http.get(f"/v1/workloads/{wl}", headers=tenant).json()
    assert got["state"] == "cancelled" and got["allocation"]["released"] is True
    assert {r["phase"] for r in got["allocation"]["ranks"]} == {"stopped"}


def test_agent_killed_and_restarted_never_runs_a_rank_twice(site: Site) -> None:
    import signal

    tenant = {"Authorization": f"Bearer {site.env['TENANT_KEY']}"}
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    http = httpx.Client(base_url=site.url, timeout=10)
    nodes = registered_nodes(http, ops, NODES, site)
    body = {"name": "victim", "gpus": 4, "env": {"JOB": "victim"}, "command": [sys.executable, "-c", CHECK_ENV, "600"]}
    wl = http.post("/v1/workloads", json=body, headers=tenant).json()["id"]
    got = wait_for(
        lambda: (w := http.get(f"/v1/workloads/{wl}", headers=tenant).json())["state"] == "running" and w,
        timeout=30,
        site=site,
        what="the workload to run",
    )
    hostname = {n["id"]: n["hostname"] for n in nodes}[got["allocation"]["ranks"][0]["node_id"]]
    agent = f"agent-{int(hostname.removeprefix('tray'))}"
    args = site.processes[agent].args
    assert isinstance(args, list)
    argv = args[3:]  # the same command line, without the interpreter prefix
    site.stop(agent, sig=signal.SIGKILL)  # its workload process keeps running, orphaned
    site.start(agent, *argv)  # the saved credential is reused; no bootstrap token needed

    def ended() -> dict[str, Any] | None:
        w = http.get(f"/v1/workloads/{wl}", headers=tenant).json()
        return w if w["state"] in ("failed", "succeeded", "cancelled") else None

    done = wait_for(ended, timeout=60, site=site, what="the orphaned rank to be reported")
    assert done["state"] == "failed" and "agent restarted" in done["reason"], done

    wait_all_gpus_free(http, ops, site)
    # The restarted agent did not start the rank again: the log has exactly one start line.
    text = http.get(f"/v1/workloads/{wl}/logs", headers=tenant).text
    assert text.count("job=victim") == 1, text
