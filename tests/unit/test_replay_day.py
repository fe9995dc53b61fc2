"""The day replay (bench/replay_day.py) on slices small enough for a unit test.

Only facts that must hold for any correct scheduler run are asserted: no GPU held by two
workloads at once, never over the site cap, every workload accounted for (ran, running, or
pending with a reason), preemption rights and grace honoured, and the reserved tenant's work
within its reservation getting GPUs at once (one pass, or the victims' grace when they must be
preempted first). No timings, no figures of the day.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
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


@pytest.fixture(scope="module", params=["core", "legacy", "first_fit"])
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
    # Every GPU-second held is either work that counted or work lost to a preemption.
    g = rd.goodput(run)
    held = sum(j.gpus * ((j.end_s if j.end_s is not None else run.end_s) - j.start_s) for j in run.jobs.values()
               if j.start_s is not None)  # fmt: skip
    assert g["gpu_s"] + g["lost_gpu_s"] == pytest.approx(held)
    assert g["window_gpu_s"] + g["lost_window_gpu_s"] == pytest.approx(run.acc["alloc_gpu_s"])
    assert u["goodput_share"] <= u["allocated_share"]
    assert (g["lost_gpu_s"] > 0) == any(j.lost_s > 0 for j in run.jobs.values())
    if run.scheduler == "first_fit":
        assert g["lost_gpu_s"] == 0.0
    # A workload's total wait covers every one of its submissions.
    chains = rd.workload_chains(run)
    for base, total in rd.total_waits(chains).items():
        assert total == pytest.approx(sum(j.start_s - j.submit_s for j in chains[base]))
        assert total >= chains[base][0].start_s - chains[base][0].submit_s
    assert p["per_workload"]["max"] == max(
        Counter(run.jobs[x.victim].base for x in run.preemptions).values(), default=0
    )
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


# -- declared limits, checkpoints, goodput, requeued waits, churn: crafted days, answers by hand ----


def test_the_work_kept_is_up_to_the_last_checkpoint() -> None:
    assert rd.kept_work_s(25 * 60.0, 3 * 3600.0, 10 * 60.0) == 20 * 60.0
    assert rd.kept_work_s(25 * 60.0, 3 * 3600.0, None) == 0.0
    assert rd.kept_work_s(20 * 60.0, 3 * 3600.0, 10 * 60.0) == 20 * 60.0  # a checkpoint right at the stop
    assert rd.kept_work_s(3 * 3600.0, 3 * 3600.0, None) == 3 * 3600.0  # done: all of it
    assert rd.kept_work_s(1000.0, 1100.0, 900.0) == 900.0


def declared_workload(wid: str, at: float, gpus: int, priority: str, *, duration_s: float, max_s: float,
                      checkpoint_s: float | None, tenant: str = "t") -> dict[str, Any]:  # fmt: skip
    w = workload(wid, at, gpus, priority, tenant=tenant, duration_s=duration_s)
    w["max_duration_s"] = max_s
    w["checkpoint_interval_s"] = checkpoint_s
    return w


def one_rack_day(checkpoint_s: float | None) -> list[dict[str, Any]]:
    """One spot gang filling the one rack; two reserved gangs cut it, at 1,470 s and 3,000 s."""
    return [
        declared_workload(
            "s1", 0.0, 72, "spot", duration_s=3600.0, max_s=7200.0, checkpoint_s=checkpoint_s, tenant="spotty"
        ),  # fmt: skip
        declared_workload(
            "r1", 1470.0, 72, "reserved", duration_s=600.0, max_s=900.0, checkpoint_s=None, tenant="acme-ai"
        ),  # fmt: skip
        declared_workload(
            "r2", 3000.0, 72, "reserved", duration_s=600.0, max_s=900.0, checkpoint_s=None, tenant="acme-ai"
        ),  # fmt: skip
    ]


@pytest.mark.parametrize("scheduler", ["core", "legacy"])
def test_a_preempted_gang_resumes_from_its_last_checkpoint_and_waits_add_up(scheduler: str) -> None:
    """By hand: s1 runs [0, 1500) (notice 1470 + 30 s grace), keeps 1200 s (two 600 s checkpoints),
    loses 300 s; r1 runs [1500, 2100); s1.r1 (2400 s left) runs from 2100, is cut by r2 at 3000
    (released 3030, ran 930 s, keeps 600 s, loses 330 s); r2 runs [3030, 3630); s1.r2 (1800 s left)
    runs [3630, 5430). s1 waited 0 + 600 + 600 s over its three submissions."""
    spec = small_site()
    spec = rd.scaled_site(rd.load_site(), 1)
    res = rd.replay(spec, one_rack_day(600.0), scheduler=scheduler, reservations={"acme-ai": 72})
    assert res.violations == []
    j = res.jobs
    assert (j["s1"].start_s, j["s1"].end_s, j["s1"].kept_s, j["s1"].lost_s) == (0.0, 1500.0, 1200.0, 300.0)
    assert (j["r1"].start_s, j["r1"].end_s) == (1500.0, 2100.0)
    assert (j["s1.r1"].submit_s, j["s1.r1"].duration_s, j["s1.r1"].start_s) == (1500.0, 2400.0, 2100.0)
    assert (j["s1.r1"].end_s, j["s1.r1"].kept_s, j["s1.r1"].lost_s) == (3030.0, 600.0, 330.0)
    assert (j["s1.r2"].duration_s, j["s1.r2"].start_s, j["s1.r2"].end_s) == (1800.0, 3630.0, 5430.0)
    assert j["s1.r2"].completed
    # The resubmissions declare what is left of the tenant's 7,200 s limit, in whole quarter hours.
    assert j["s1.r1"].max_duration_s == 6300.0  # 7200 - 1200 = 6000, rounded up
    assert j["s1.r2"].max_duration_s == 6300.0  # 6300 - 600 = 5700, rounded up
    m = rd.metrics(res)
    assert m["goodput"]["whole_run_gpu_hours"] == pytest.approx(72 * (1200 + 600 + 600 + 600 + 1800) / 3600, abs=0.05)
    assert m["goodput"]["lost_whole_run_gpu_hours"] == pytest.approx(72 * (300 + 330) / 3600, abs=0.05)
    assert m["utilisation"]["allocated_gpu_hours"] == pytest.approx(72 * 5430 / 3600, abs=0.05)
    assert m["utilisation"]["goodput_share"] == pytest.approx(72 * 4800 / (72 * 86400), abs=1e-4)
    assert m["goodput"]["cut_attempts"] == 2 == m["goodput"]["cut_attempts_with_checkpoints"]
    spot = m["waits_s"]["spot"]
    assert spot["total"]["n"] == 1 and spot["total"]["max"] == 1200.0
    assert spot["total_by_gang_size"]["33-72"]["max"] == 1200.0
    assert spot["first_submission"]["max"] == 0.0
    assert m["waits_s"]["reserved"]["total"]["max"] == 30.0
    pre = m["preemptions"]
    assert pre["per_preempted_workload"]["max"] == 2.0 and pre["workloads_preempted"] == 1
    assert pre["per_workload"]["max"] == 2.0 and pre["per_workload"]["p50"] == 0.0
    assert pre["workloads_preempted_more_than_twice"] == 0
    assert pre["most_notices_to_one_workload_in_an_hour"] == 2  # 1470 and 3000: within the hour
    assert pre["workloads_over_the_notice_cap"] == 0  # the cap is 2 an hour
    # s1.r1 had run 900 s of the 600 s minimum when r2 noticed it; s1 1470 s.
    assert pre["notices_before_min_run"] == 0
    done_h, lost_h = round(5430 / 3600, 2), round(630 / 3600, 2)
    assert pre["most_preempted"] == [
        {"id": "s1", "class": "spot", "gpus": 72, "notices": 2, "work_h": 1.0, "submitted_to_done_h": done_h,
         "lost_h": lost_h}
    ]  # fmt: skip
    assert pre["notices_per_preemptor_max"] == 1 and pre["preemptors_noticing_more_than_one_pass"] == 0


def test_without_checkpoints_a_preemption_loses_the_whole_attempt() -> None:
    spec = rd.scaled_site(rd.load_site(), 1)
    res = rd.replay(spec, one_rack_day(None), scheduler="core", reservations={"acme-ai": 72})
    j = res.jobs
    assert (j["s1"].kept_s, j["s1"].lost_s) == (0.0, 1500.0)
    assert j["s1.r1"].duration_s == 3600.0  # resumes with nothing done
    assert j["s1.r1"].lost_s == 930.0 and j["s1.r2"].duration_s == 3600.0
    m = rd.metrics(res)
    assert m["goodput"]["lost_whole_run_gpu_hours"] == pytest.approx(72 * (1500 + 930) / 3600, abs=0.05)
    assert m["goodput"]["cut_attempts_with_checkpoints"] == 0


def test_the_core_sees_run_bounds_claims_and_the_preemption_history() -> None:
    spec = rd.scaled_site(rd.load_site(), 1)
    during_grace = rd.Replay(spec, one_rack_day(600.0), scheduler="core", reservations={"acme-ai": 72}, until_s=1480.0)
    during_grace.run()
    v = during_grace.run_views["s1"]
    assert v.preempting and v.claimed_for == "r1"
    assert (v.ends_by, v.checkpoint_interval_s, v.preemptions, v.noticed_at) == (7200.0, 600.0, 1, (1470.0,))
    assert str(v.price_usd_per_gpu_hour) == "2.0"
    later = rd.Replay(spec, one_rack_day(600.0), scheduler="core", reservations={"acme-ai": 72}, until_s=2200.0)
    later.run()
    again = later.run_views["s1.r1"]  # the resubmission keeps the original's history
    assert not again.preempting and again.claimed_for == ""
    assert (again.started_at, again.ends_by, again.preemptions, again.noticed_at) == (2100.0, 8400.0, 1, (1470.0,))
    assert later.jobs["s1.r1"].request.max_duration_s == 6300.0
    # A resubmission starts without a plan: any it carries was made for it, at or after its resubmission.
    plan = later.jobs["s1.r1"].request.plan
    assert plan is None or plan.planned_at is None or plan.planned_at >= 1500.0


def test_a_day_without_declared_limits_gets_them_by_the_rule(day_slice: list[dict[str, Any]]) -> None:
    from controlplane.scenarios.limits import declared

    replay = rd.Replay(small_site(), day_slice[:50])
    for w in day_slice[:50]:
        job, rule = replay.jobs[w["id"]], declared(w["id"], float(w["duration_s"]))
        assert (job.max_duration_s, job.checkpoint_s) == (rule.max_duration_s, rule.checkpoint_interval_s)
        assert job.request.max_duration_s == rule.max_duration_s > job.duration_s
    bad = declared_workload("x", 0.0, 1, "spot", duration_s=3600.0, max_s=1800.0, checkpoint_s=None)
    with pytest.raises(ValueError, match="under its duration"):
        rd.Replay(small_site(), [bad])


def test_a_plan_is_carried_into_the_next_request_and_the_first_one_is_kept() -> None:
    from controlplane.scheduling.snapshot import PlannedStart

    replay = rd.Replay(small_site(), [workload("g", 0.0, 144, "on_demand")])
    job = replay.jobs["g"]
    replay._carry_plan(job, PlannedStart(start_at=5000.0, domains=("fabric-r000.0", "fabric-r001.0")))
    assert job.first_plan_s == 5000.0
    assert job.request.plan == PlannedStart(5000.0, ("fabric-r000.0", "fabric-r001.0"), first_start_at=5000.0)
    replay._carry_plan(job, PlannedStart(start_at=6000.0, domains=("fabric-r000.0", "fabric-r001.0")))
    assert job.request.plan is not None and job.request.plan.first_start_at == 5000.0
    assert job.first_plan_s == 5000.0 and job.plan_changes == 1
    replay._carry_plan(job, None)  # the core dropped it: so does the next request
    assert job.request.plan is None and job.first_plan_s == 5000.0
    # A pass falls due at each planned start and one grace before it, while that plan holds.
    wakes = sorted((t, token) for t, _, kind, wid, token in replay.events if kind == rd.WAKE and wid == "g")
    assert wakes == [(4970.0, 0), (5000.0, 0), (5970.0, 1), (6000.0, 1)]


def test_the_planned_start_error_by_hand() -> None:
    """Four submissions, all started at t=0, given plans: g0 starts 10 s early, g1 1 s late (inside
    the tick), g2 600 s late but reserved work arrived after it was planned (excused: higher-class
    work), the reserved r 300 s late with nothing above it (not excused); g3 never planned.
    Errors -10, 1, 300, 600: p50 150.5, max 600; on time 2 of 4; late 2, 1 not excused."""
    from controlplane.scheduling.snapshot import PlannedStart

    day = [workload(f"g{i}", 0.0, 72 if i < 3 else 8, "on_demand") for i in range(4)]
    day.append(workload("r", 0.0, 8, "reserved", tenant="acme-ai"))
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    assert all(j.start_s == 0.0 for j in res.jobs.values())
    for wid, plan_at, planned_at in (
        ("g0", 10.0, -20.0),
        ("g1", -1.0, -20.0),
        ("g2", -600.0, -700.0),
        ("r", -300.0, -400.0),
    ):
        replay._carry_plan(res.jobs[wid], PlannedStart(start_at=plan_at))
        res.jobs[wid].first_planned_at_s = planned_at
    ps = rd.planned_start_error(res)
    assert (ps["planned"], ps["started"], ps["never_started"]) == (4, 4, 0)
    assert (ps["error_s"]["p50"], ps["error_s"]["max"]) == (150.5, 600.0)
    assert ps["started_by_planned_start"] == 2 and ps["share_started_by_planned_start"] == 0.5
    assert ps["late"] == 2 and ps["late_by_class"] == {"on_demand": 1, "reserved": 1}
    assert ps["late_with_no_higher_class_arrival"] == 1
    assert ps["late_with_no_higher_class_arrival_by_class"] == {"reserved": 1}
    assert ps["late_with_no_higher_class_arrival_error_s"]["max"] == 300.0


def test_reserved_work_within_its_reservation_excuses_a_late_reserved_plan_beyond_one() -> None:
    """The core decides reserved work within its reservation before the rest of the class: its
    arrival after a reserved plan beyond any reservation was made excuses that plan's late start
    (and its own turn excuses nothing of its own plan)."""
    from controlplane.scheduling.snapshot import PlannedStart

    day = [workload("beyond", 0.0, 8, "reserved", tenant="other"), workload("a", 0.0, 8, "reserved", tenant="acme-ai")]
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    assert res.jobs["a"].eligible_s == 0.0 and res.jobs["beyond"].eligible_s is None
    for wid in ("beyond", "a"):
        replay._carry_plan(res.jobs[wid], PlannedStart(start_at=-600.0))
        res.jobs[wid].first_planned_at_s = -700.0
    ps = rd.planned_start_error(res)
    assert ps["late"] == 2 and ps["late_with_no_higher_class_arrival_by_class"] == {"reserved": 1}
    assert ps["late_with_no_higher_class_arrival"] == 1  # "a", not "beyond"


def test_reserved_work_beyond_any_reservation_excuses_no_late_on_demand_plan() -> None:
    """Reserved work beyond its tenant's reservation competes with on_demand work in the core's
    order (``queue.competing_rank``): its arrival is no higher-class arrival for an on_demand
    plan, while reserved work within a reservation still is."""
    from controlplane.scheduling.snapshot import PlannedStart

    day = [workload("od", 0.0, 8, "on_demand"), workload("beyond", 0.0, 8, "reserved", tenant="other")]
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    replay._carry_plan(res.jobs["od"], PlannedStart(start_at=-600.0))
    res.jobs["od"].first_planned_at_s = -700.0
    ps = rd.planned_start_error(res)
    assert ps["late"] == 1 and ps["late_with_no_higher_class_arrival"] == 1
    day.append(workload("within", 0.0, 8, "reserved", tenant="acme-ai"))
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    replay._carry_plan(res.jobs["od"], PlannedStart(start_at=-600.0))
    res.jobs["od"].first_planned_at_s = -700.0
    assert rd.planned_start_error(res)["late_with_no_higher_class_arrival"] == 0


def test_a_plan_moved_behind_a_larger_gang_of_its_class_is_excused_by_rank_not_by_class() -> None:
    """The core decides a planned gang larger than ``rules.large_gang_gpus`` before the smaller
    plans of its class and says so in each plan it moves (``PlannedStart.gave_way``, README
    "Large gangs first"): the replay records it, and such a late plan is excused by rank, not by
    class. A late plan that never gave way stays unexcused."""
    from controlplane.scheduling.snapshot import PlannedStart

    day = [workload("moved", 0.0, 8, "on_demand"), workload("not", 0.0, 8, "on_demand")]
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    for wid in ("moved", "not"):
        replay._carry_plan(res.jobs[wid], PlannedStart(start_at=-600.0))
        res.jobs[wid].first_planned_at_s = -700.0
    ps = rd.planned_start_error(res)
    assert ps["late"] == 2 and ps["late_with_no_higher_class_arrival"] == 2
    assert ps["late_with_no_higher_rank_work"] == 2
    res.jobs["moved"].gave_way = True
    ps = rd.planned_start_error(res)
    assert ps["late_with_no_higher_class_arrival"] == 2 and ps["late_with_no_higher_rank_work"] == 1
    assert ps["late_with_no_higher_rank_work_error_s"]["n"] == 1


def test_the_replay_records_a_plan_the_core_moved_behind_a_larger_gang() -> None:
    """The small site's four domains run four 72-GPU gangs until t=3600 (declared up to 8,100-9,900
    s). A 72-GPU gang arriving at t=10 is planned first; a 288-GPU gang at t=20 is planned behind
    it, then decides first among the class's plans and takes every domain when they free: the
    72-GPU plan gives way, the core's plan says so, and the replay records it."""
    day = [workload(f"f{i}", 0.0, 72, "on_demand") for i in range(4)]
    day += [workload("small", 10.0, 72, "on_demand"), workload("big", 20.0, 288, "on_demand")]
    replay = rd.Replay(small_site(), day)
    res = replay.run()
    small, big = res.jobs["small"], res.jobs["big"]
    assert small.first_planned_at_s == 10.0 and big.first_planned_at_s == 20.0
    assert big.first_plan_s is not None and small.first_plan_s is not None and big.first_plan_s > small.first_plan_s
    assert big.start_s == 3600.0 and small.start_s is not None and small.start_s >= 3600.0 + 3600.0
    assert small.gave_way and not big.gave_way


def test_first_fit_without_repeated_failed_shapes_decides_as_first_fit(day_slice: list[dict[str, Any]]) -> None:
    from controlplane.scheduling.baseline import first_fit

    replay = rd.Replay(small_site(), day_slice)
    queue = [j.request for j in replay.jobs.values()]
    gpus = sorted(replay.fleet.gpu_node)
    for taken in (0, 100, 200, 250):
        fleet = rd.Fleet(small_site())
        fleet.take("x", [(fleet.node_ids[fleet.gpu_node[g]], g) for g in gpus[:taken:3]])
        fleet.take("y", [(fleet.node_ids[fleet.gpu_node[g]], g) for g in gpus[1:taken:3]])
        snap = rd.FleetSnapshot(nodes=fleet.nodes())
        assert rd.first_fit_pass(snap, queue) == first_fit(snap, queue)


def test_the_report_has_every_column_and_size_bucket(tmp_path: Path, day_slice: list[dict[str, Any]]) -> None:
    import json

    path = tmp_path / "slice.jsonl"
    path.write_text("".join(json.dumps(w) + "\n" for w in day_slice[:40]))
    kwargs = {"pass_interval_s": 2.0, "stop_grace_s": 30.0, "until_s": None, "resubmit": True}
    out = rd.run_day(path, site=rd.SITE, columns=rd.COLUMNS, jobs=1, kwargs=kwargs)
    assert [c for c in rd.COLUMNS if c in out] == list(rd.COLUMNS)
    md = rd.markdown(out)
    assert "| | first fit | today's core | new core |" in md
    checks = [what for what, _ in rd.targets(out)]
    assert [c.split(" (")[0] for c in checks[:2]] == [
        "allocation not below today's core",
        "goodput not below today's core",
    ]
    assert all(what in md for what in checks) and "Targets of issue 10" in md
    assert rd.targets({k: v for k, v in out.items() if k != "legacy"}) == []
    sizes = {w["gpus"] for w in day_slice[:40]}
    for label, lo, hi in rd.size_buckets(sizes):
        if any(lo <= s <= hi for s in sizes):
            assert f"gangs of {label}:" in md
    assert json.loads(json.dumps(out, default=rd._json_default))["core"]["violation_count"] == 0
    # Two days in two processes: the same figures as one by one.
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(w) + "\n" for w in day_slice[40:60]))
    both = rd.run_days([path, other], site=rd.SITE, columns=("first_fit", "core"), jobs=2, kwargs=kwargs)
    alone = rd.run_day(other, site=rd.SITE, columns=("first_fit", "core"), jobs=1, kwargs=kwargs)
    for c in ("first_fit", "core"):
        assert both[0][c]["waits_s"] == out[c]["waits_s"] and both[0][c]["utilisation"] == out[c]["utilisation"]
        assert both[1][c]["waits_s"] == alone[c]["waits_s"] and both[1][c]["preemptions"] == alone[c]["preemptions"]
    assert rd.size_buckets([1, 6, 72])[1][0] == "5-32" and rd.size_buckets([1, 8, 72])[1][0] == "8-32"


def test_churn_figures_against_the_planning_rules_by_hand() -> None:
    """Today's core (no churn limits): three short reserved gangs at 100, 400 and 700 s each cut the
    spot gang filling the one rack, 100, 210 and 210 s after its (re)starts: three notices to one
    workload within the hour (over the cap of 2), all three before the 600 s minimum run."""
    spec = rd.scaled_site(rd.load_site(), 1)
    day = [
        declared_workload("s1", 0.0, 72, "spot", duration_s=7200.0, max_s=9000.0, checkpoint_s=None, tenant="spotty")
    ]
    day += [
        declared_workload(
            f"r{i}", at, 72, "reserved", duration_s=60.0, max_s=900.0, checkpoint_s=None, tenant="acme-ai"
        )
        for i, at in enumerate((100.0, 400.0, 700.0), start=1)
    ]
    res = rd.replay(spec, day, scheduler="legacy", reservations={"acme-ai": 72})
    assert res.violations == []
    assert [(p.t, p.victim, p.preemptor) for p in res.preemptions] == [
        (100.0, "s1", "r1"),
        (400.0, "s1.r1", "r2"),
        (700.0, "s1.r2", "r3"),
    ]
    pre = rd.metrics(res)["preemptions"]
    assert pre["most_notices_to_one_workload_in_an_hour"] == 3
    assert (pre["workloads_over_the_notice_cap"], pre["notices_per_hour_cap"]) == (1, 2)
    assert (pre["notices_before_min_run"], pre["notices_before_min_run_for_reserved"]) == (3, 3)
    assert pre["workloads_preempted_more_than_twice"] == 1
    assert pre["per_workload"]["max"] == 3.0
