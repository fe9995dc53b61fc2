"""The control plane goes away for several report intervals and comes back.

The agent spools its reports on disk and replays them in order; the control plane accepts
every one of them (none arrives out of order, so none is refused as a duplicate), and the
energy it counts for the outage equals the simulator's exact integral: the difference of the
cumulative counter between the last report before and the last report after.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import redis
from harness import NODES, Site, registered_nodes, wait_for
from testenv import REDIS_URL

from controlplane.live.keys import Keys
from controlplane.live.nodes import LiveState


def agent_metric(site: Site, agent: str, name: str) -> float | None:
    found = re.search(r"metrics_url=(\S+)", site.log(agent))
    assert found, site.log(agent)[-2000:]
    text = httpx.get(found.group(1), timeout=5).text
    match = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def test_outage_loses_no_report_and_no_energy(site: Site) -> None:
    ops = {"Authorization": f"Bearer {site.env['OPS_KEY']}"}
    http = httpx.Client(base_url=site.url, timeout=10)
    node_id = next(n["id"] for n in registered_nodes(http, ops, NODES, site) if n["hostname"] == "tray01")

    live = LiveState(redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(site.env["SWITCHYARD_REDIS_PREFIX"]))

    def snapshot() -> dict[str, Any]:
        """Read straight from Redis while no report can land (so counter and total agree)."""
        energy = live.energy([node_id])[node_id]
        accepted, duplicate, seq = live.report_counts(node_id)
        return {
            "counter": {u: e.last_counter_mj for u, e in energy.items()},
            "total": {u: e.total_mj for u, e in energy.items()},
            "accepted": accepted,
            "duplicate": duplicate,
            "seq": seq,
        }

    wait_for(lambda: live.report_counts(node_id)[0] >= 3, timeout=30, site=site, what="reports")
    site.stop("api")
    before = snapshot()
    time.sleep(6)  # six report intervals with nobody listening
    spooled = agent_metric(site, "agent-1", "switchyard_agent_spool_depth")
    assert spooled is not None and spooled >= 4, spooled
    site.start("api", "api")
    wait_for(
        lambda: httpx.get(f"{site.url}/healthz", timeout=1).status_code == 200,
        timeout=30,
        site=site,
        what="the API to come back",
    )
    wait_for(
        lambda: agent_metric(site, "agent-1", "switchyard_agent_spool_depth") == 0,
        timeout=30,
        site=site,
        what="the spool to drain",
    )
    assert site.stop("agent-1") == 0  # a graceful stop sends one last report
    after = snapshot()
    assert after["seq"] > before["seq"]

    assert after["duplicate"] == before["duplicate"], "a report arrived out of order or twice"
    assert after["accepted"] - before["accepted"] >= spooled + 1
    for uuid, counter in after["counter"].items():
        delta_seen = after["total"][uuid] - before["total"][uuid]
        assert delta_seen == counter - before["counter"][uuid] > 0, uuid
