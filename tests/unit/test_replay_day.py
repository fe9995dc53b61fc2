"""The day replay (bench/replay_day.py) on slices small enough for a unit test.

Only facts that must hold for any correct scheduler run are asserted: no GPU held by two
workloads at once, never over the site cap, every workload accounted for (ran, running, or
pending with a reason), preemption rights and grace honoured, and the reserved tenant's work
within its reservation getting GPUs at once (one pass, or the victims' grace when they must be
preempted first). No timings, no figures of the day.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchmods
import pytest

ROOT = Path(__file__).resolve().parents[2]


rd = benchmods.load("replay_day")

RACKS = 4
SLICE_S = 2 * 3600.0
UNTIL_S = 3 * 3600.0


def small_site(cap_mw: float | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = rd.scaled_site(rd.load_site(), RACKS)
    if cap_mw is not None:
        spec["grid_capacity_mw"] = cap_mw
    return spec


def reservation(spec: dict[str, Any]) -> dict[str, int]:
    """acme-ai's 1,024 of 4,608 GPUs, scaled to the small fleet."""
    gpus = spec["racks"]["count"] * spec["racks"]["nodes_per_rack"] * spec["racks"]["gpus_per_node"]
    return {"acme-ai": 1024 * gpus // 4608}


@pytest.fixture(scope="module")
def day_slice() -> list[dict[str, Any]]:
    if not rd.WORKLOADS.exists():
        pytest.fail(f"{rd.WORKLOADS} is missing: the package ships the scenario files (controlplane/scenarios)")
    return [w for w in rd.load_workloads() if w["submit_s"] < SLICE_S]


@pytest.fixture(scope="module", params=["core", "first_fit"])
def run(request: pytest.FixtureRequest, day_slice: list[dict[str, Any]]) -> Any:
    """The first two hours of the day on a 4-rack fleet (16x overloaded: queues and preemption)."""
    spec = small_site()
    return rd.replay(spec, day_slice, scheduler=request.param, reservations=reservation(spec), until_s=UNTIL_S)


@pytest.fixture(scope="module")
def core_run(day_slice: list[dict[str, Any]]) -> Any:
    spec = small_site()
    return rd.replay(spec, day_slice, scheduler="core", reservations=reservation(spec), until_s=UNTIL_S)


def gpu_intervals(result: Any) -> dict[str, list[tuple[float, float, str]]]:
    held: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    for job in result.jobs.values():
        if job.start_s is None:
            assert not job.placed
            continue
        end = job.end_s if job.end_s is not None else math.inf
        for _, gpu in job.placed:
            held[gpu].append((job.start_s, end, job.id))
    return held


def test_the_replay_reports_no_invariant_violation(run: Any) -> None:
    assert run.violations == []


def test_no_gpu_is_held_by_two_workloads_at_any_time(run: Any) -> None:
    held = gpu_intervals(run)
    assert held, "nothing ran"
    for gpu, spans in held.items():
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
            assert start >= end, f"{gpu}: {b} starts at {start} while {a} holds it until {end}"
    assert all(len({g for _, g in j.placed}) == len(j.placed) == j.gpus for j in run.jobs.values() if j.placed)


def test_never_over_the_site_cap(run: Any) -> None:
    assert run.power_trace
    for t, gpu_w, mining_w in run.power_trace:
        assert gpu_w + mining_w <= run.cap_w + 1e-3, f"t={t}: {gpu_w + mining_w} W planned over {run.cap_w} W"
        assert mining_w >= 0.0


def test_every_workload_ran_or_is_pending_with_a_reason(run: Any, day_slice: list[dict[str, Any]]) -> None:
    assert {w["id"] for w in day_slice} <= set(run.jobs)
    for job in run.jobs.values():
        assert job.state in {"completed", "running", "pending", "preempted"}
        if job.state == "pending":
            assert job.reason, f"{job.id} pending with no reason"
        if job.state == "completed":
            assert job.start_s is not None and job.end_s is not None
            assert job.end_s - job.start_s == pytest.approx(job.duration_s)
        if job.state == "preempted":
            # The tenant resubmits what was left: the chain goes on under the next attempt's id.
            assert f"{job.base}.r{job.attempt + 1}" in run.jobs, f"{job.id} cut and not resubmitted"
    # Every original workload ends its chain completed, running, or pending.
    last: dict[str, Any] = {}
    for job in run.jobs.values():
        if job.base not in last or job.attempt > last[job.base].attempt:
            last[job.base] = job
    assert all(j.state in {"completed", "running", "pending"} for j in last.values())


def test_preemption_rights_and_grace(run: Any) -> None:
    rank = {"reserved": 0, "on_demand": 1, "spot": 2, "mining": 3}
    victims = set()
    for p in run.preemptions:
        assert p.victim_class != "reserved"
        assert rank[p.preemptor_class] < rank[p.victim_class]
        if p.victim_class == "on_demand":
            assert p.preemptor_class == "reserved"
        assert p.released_s - p.t <= run.stop_grace_s + 1e-9
        assert run.jobs[p.victim].end_s == pytest.approx(p.released_s)
        assert p.victim not in victims, f"{p.victim} preempted twice"
        victims.add(p.victim)
    if run.scheduler == "first_fit":
        assert not run.preemptions


def test_reserved_work_within_its_reservation_gets_gpus_at_once(core_run: Any) -> None:
    """Within the reservation, and the shape fits in GPUs that are free or held by preemptible
    work: placed at the first pass, or when its victims release (grace + one pass)."""
    bound = rd.guarantee_bound_s(core_run)
    eligible = [j for j in core_run.jobs.values() if j.eligible_s is not None]
    assert eligible, "the slice never had reserved work within the reservation"
    late = [
        (j.id, j.gpus, j.eligible_s, j.start_s, j.reasons_while_eligible[:2])
        for j in rd.reservation_violations(core_run)
        if j.capacity_by_preemption
    ]
    assert late == [], f"reserved work within the reservation waited more than {bound} s"


def test_metrics_are_consistent(run: Any) -> None:
    m = rd.metrics(run)
    u = m["utilisation"]
    assert 0.0 <= u["useful_share"] <= u["allocated_share"] <= 1.0
    assert sum(u["hourly_allocated_share"]) / len(u["hourly_allocated_share"]) == pytest.approx(
        u["allocated_share"], abs=1e-3
    )
    p = m["preemptions"]
    assert sum(p["by_victim_class"].values()) == sum(p["by_preemptor_class"].values()) == p["total"]
    assert m["energy"]["never_over_cap"]
    assert m["energy"]["peak_site_planned_mw"] <= m["energy"]["cap_mw"] + 1e-9


# -- synthetic days: the cap and the reservation where they must bind -----------------------------


def workload(wid: str, at: float, gpus: int, priority: str, *, tenant: str = "t", nvlink: str = "required",
             duration_s: float = 3600.0) -> dict[str, Any]:  # fmt: skip
    return {
        "id": wid,
        "submit_s": at,
        "tenant": tenant,
        "priority": priority,
        "gpus": gpus,
        "nvlink": nvlink if gpus > 1 else "none",
        "duration_s": duration_s,
        "mean_gpu_util": 0.8,
        "price_usd_per_gpu_hour": 2.0,
    }


def test_a_cap_below_the_gpus_full_draw_holds_work_in_the_core_and_is_caught_in_first_fit() -> None:
    """4 racks at their limit plan ~0.62 MW: under a 0.45 MW cap (no mining left to shed) the core
    must hold work for site power; the power-blind first fit goes over, and the replay says so."""
    spec = small_site(cap_mw=0.45)
    day = [workload(f"w{i}", float(i), 72, "on_demand") for i in range(RACKS)]
    core = rd.replay(spec, day, scheduler="core", reservations={}, until_s=60.0)
    assert core.violations == []
    assert all(gpu_w + mining_w <= core.cap_w + 1e-3 for _, gpu_w, mining_w in core.power_trace)
    held = [j for j in core.jobs.values() if j.state == "pending"]
    assert held and all("site power" in j.reason for j in held)
    base = rd.replay(spec, day, scheduler="first_fit", reservations={}, until_s=60.0)
    assert any("over the cap" in v for v in base.violations)


def test_reserved_work_preempts_spot_and_starts_within_the_grace() -> None:
    spec = small_site()
    day = [workload(f"s{i}", 0.0, 72, "spot", tenant="spotty") for i in range(RACKS)]
    day += [
        workload("r1", 100.0, 72, "reserved", tenant="acme-ai"),
        workload("r2", 101.0, 8, "reserved", tenant="acme-ai"),
        workload("r3", 102.0, 4, "reserved", tenant="acme-ai", nvlink="none"),
    ]
    res = rd.replay(spec, day, scheduler="core", reservations={"acme-ai": 100}, until_s=600.0)
    assert res.violations == []
    for wid in ("r1", "r2", "r3"):
        job = res.jobs[wid]
        assert job.eligible_s is not None and job.start_s is not None
        assert job.start_s - job.eligible_s <= rd.guarantee_bound_s(res)
    assert {p.victim_class for p in res.preemptions} == {"spot"}
    assert all(res.jobs[p.victim].state == "preempted" for p in res.preemptions)
    assert rd.reservation_violations(res) == []


def test_a_reserved_gang_of_two_domains_preempts_spot() -> None:
    spec = small_site()
    day = [workload(f"s{i}", 0.0, 72, "spot", tenant="spotty") for i in range(RACKS)]
    day.append(workload("r144", 100.0, 144, "reserved", tenant="acme-ai"))
    res = rd.replay(spec, day, scheduler="core", reservations={"acme-ai": 144}, until_s=600.0)
    assert res.jobs["r144"].start_s is not None
    assert rd.reservation_violations(res) == []


def test_the_replay_is_deterministic(day_slice: list[dict[str, Any]]) -> None:
    spec = small_site()
    first, second = (
        rd.replay(spec, day_slice, scheduler="core", reservations=reservation(spec), until_s=SLICE_S / 2)
        for _ in range(2)
    )
    assert [(j.id, j.start_s, j.placed, j.end_s) for j in first.jobs.values()] == [
        (j.id, j.start_s, j.placed, j.end_s) for j in second.jobs.values()
    ]
    assert first.preemptions == second.preemptions
    assert first.power_trace == second.power_trace
