"""Replay one day of tenant work on ``site-18mw`` through the scheduling core, in simulated time.

Side by side in the same run, three columns: the naive first fit
(``controlplane.scheduling.baseline.first_fit``: no preemption, no power awareness; the replay's
shell still gives mining only what the GPUs leave under the cap, as the control plane does after
every commit), today's core (``schedule(snapshot, queue, framework.LEGACY_PROFILE)``: age order
within class, no planned starts, no sticky claims, no churn limits) and the new core
(``schedule(snapshot, queue)``, the default profile: planned starts and backfill, claims, fair
shares, churn limits). All share priorities, preemption, reservations, site and rack power with
mining as the block shed first. Writes bench/results/replay_day.{json,md} for the scenario day and
bench/results/replay_overloaded.{json,md} for the overloaded day
(``controlplane/scenarios/day-workloads-overloaded.jsonl``, made by ``bench/gen_overloaded_day.py``).

    .venv/bin/python bench/replay_day.py [--day scenario|overloaded|both] [--workloads FILE]
        [--until-s S] [--pass-interval-s 2] [--stop-grace-s 30] [--jobs 2]

Rules of the replay (the choices the issue leaves open):

- Time is simulated: a heap of events, no sleeping and no wall clock in the logic (wall time is
  only reported). Events: submissions (``submit_s``), completions (start + the work left) and
  preemption releases (notice + grace: the snapshot's ``stop_grace_s``, 30 s, for spot and
  on_demand victims; mining would be 0 s, but mining here is the ASIC block, not GPU work).
- Scheduling passes run on a fixed 2 s tick, and only when something happened since the last
  one: every event at time t is applied at t, and a pass runs at the first tick at or after t
  (so events up to 2 s apart are batched, as a scheduler loop with a 2 s debounce would). A pass
  with nothing new would repeat the last one's decisions exactly (the core is a pure function of
  its snapshot), so it is skipped. Time moving on is news only at a planned start: a pass also
  runs at the tick at or after each pending workload's planned start, and one grace before it
  (when notices for it would have to go out), while that plan holds.
- The fleet starts empty at 00:00 (a cold start, no carry-over from the day before); the replay
  runs until every workload has finished, and the day's figures (utilisation, goodput, energy,
  fragmentation) are taken over [0, 24 h).
- Declared limits: every workload declares a ``max_duration_s`` (passed to the core as
  ``WorkloadRequest.max_duration_s``; a running workload's ``ends_by`` is its start + that) and
  may declare a ``checkpoint_interval_s``. A file that gives them (the overloaded day) is read as
  is; one that lacks them (the scenario day) gets them from ``controlplane.scenarios.limits``, the
  rule the generator used: max duration = duration x U(1.1, 3.0) rounded up to 15 min; 70% of
  the workloads longer than 30 min checkpoint every 15, 30 or 60 min, the rest none; each draw a
  hash of the workload id, so the same workload always declares the same.
- Preemption: a victim gets its notice at the pass, keeps its GPUs (and their planned power)
  through its grace, and frees them at notice + grace, unless it finishes on its own first (then
  it simply completes). Work counts up to its last checkpoint: the attempt checkpoints every
  ``checkpoint_interval_s`` of its run from its start, and at the release everything since the
  last checkpoint is lost (all of the attempt's run when it declares no interval; a checkpoint
  that falls within the grace counts). A cut victim is resubmitted by its tenant at the release
  with the work left after its last checkpoint: id ``<id>.r<n>``, same tenant, class, shape,
  price and checkpoint interval, max duration its last one minus the work kept (rounded up to
  15 min), and a fresh submission time (it queues behind older work of its class). The
  resubmission keeps the original workload's preemption history: the core sees every notice the
  workload had (``RunningWorkload.preemptions``, ``noticed_at``, the current notice included
  while it is under one), and its request carries the count (``WorkloadRequest.preemptions``).
  A victim under notice shows its preemptor (``claimed_for``).
- Planned starts: a pass's ``Unplaced.plan`` for a workload is carried into that workload's
  ``WorkloadRequest.plan`` at the next pass (a plan of None drops it). A placed workload needs
  none; a resubmission starts without one. When a carried plan lacks ``first_start_at`` the
  replay fills in the first planned start this submission was given, which is what the
  planned-start error is measured against (actual start - first planned start).
- Goodput: GPU-hours of work that counted (completed work, and a preempted attempt's run up to its
  last checkpoint), beside allocation; the rest of a cut attempt's run (grace included) is lost.
- Waits: a workload's wait is the sum over its attempts of start - (re)submission, every requeue
  counted; reported per class and per gang size (1-4, 8-32, 33-72, >72 GPUs; the second bucket
  is 5-32 when a day has sizes 5-7).
- Power: planned draw, as the core counts it: per rack the switch trays, every node's overhead,
  each allocated GPU at its 1,400 W limit and each other at 180 W idle; the site's = that x PUE
  1.25 + mining. Mining starts at the ASIC fleet's full draw (4,000 x 3,500 W = 14 MW; less only if
  the idle GPUs leave less under the cap) and after every pass is set like the control plane's
  ``rebalance_mining``: min(fleet max, cap - planned GPU draw). The core sheds mining inside a
  pass before a placement that needs it; the replay checks that the core's own figures (mining
  before the pass - its sheds + the GPUs' planned draw after the pass) never cross the cap, and
  that no rack plans more than its 142 kW.
- Invariants checked on every decision (listed as violations, never silently applied): a
  placement only of pending work, on GPUs no one holds, with the GPU count asked, an NVLink gang
  in one domain (or whole domains when larger); a preemption only of running work not already
  under notice, of a class the preemptor may displace.
- Tenants: ``acme-ai`` has ``reserved_gpus=1024``; every tenant of the day has a policy with
  ``share_weight`` 1.0 (the scenario names no contracts, so equal shares); no quotas or budgets.
- The reservation guarantee: a reserved request is "within" the reservation when the core's own
  queue sort says so (``queue.within_reservation``: the tenant's running reserved GPUs plus its
  older reserved requests, in age order, up to 1,024). From the first pass at which it is within,
  it must get GPUs at once: placed at that pass, or, when the GPUs must first be freed by
  preemption, at the pass when its victims release, i.e. within grace + one pass interval. A
  longer wait is a violation; each is listed with its reasons and whether the capacity existed
  by preemption (its shape fits in GPUs that are free or held by preemptible work).
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from controlplane.dispatch.budget import mining_target_w
from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.site import SiteSpec
from controlplane.power.model import PowerModel, Tally
from controlplane.scenarios import day_workloads_file, overloaded_day_workloads_file, sites_file
from controlplane.scenarios.limits import Declared, declared, round_up_quarter_hour
from controlplane.scheduling.baseline import FirstFit
from controlplane.scheduling.core import schedule
from controlplane.scheduling.fragmentation import fragmentation
from controlplane.scheduling.framework import LEGACY_PROFILE
from controlplane.scheduling.queue import competing_rank, queue_order, within_reservation
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    GpuSlot,
    MiningBlock,
    NodeView,
    Placement,
    PlannedStart,
    PlanningRules,
    Preempt,
    RunningWorkload,
    ShedMining,
    TenantPolicy,
    Unplaced,
    WorkloadRequest,
)

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = day_workloads_file()
OVERLOADED = overloaded_day_workloads_file()
DAYS = {"scenario": (WORKLOADS, "replay_day"), "overloaded": (OVERLOADED, "replay_overloaded")}
RESULTS = ROOT / "bench" / "results"
SITE = "site-18mw"
DAY_S = 86_400.0
PASS_INTERVAL_S = 2.0
SAMPLE_S = 300.0
RESERVATIONS = {"acme-ai": 1024}
CLASSES = (PriorityClass.RESERVED, PriorityClass.ON_DEMAND, PriorityClass.SPOT)
EPS_W = 1e-3
SIZE_BUCKETS = (("1-4", 1, 4), ("8-32", 5, 32), ("33-72", 33, 72), (">72", 73, 1 << 30))

Scheduler = Literal["core", "legacy", "first_fit"]
# The report's columns, in its order, and what each is called there.
COLUMNS: tuple[Scheduler, ...] = ("first_fit", "legacy", "core")
TITLES = {"first_fit": "first fit", "legacy": "today's core", "core": "new core"}


# -- inputs --------------------------------------------------------------------------------------


def load_site(name: str = SITE, path: Path | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((path or sites_file()).read_text())[name]
    return spec


def load_workloads(path: Path = WORKLOADS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def limits_of(w: dict[str, Any]) -> Declared:
    """The workload's declared max duration and checkpoint interval: as the file gives them, else
    by the rule (``controlplane.scenarios.limits``, hash-seeded from its id)."""
    duration = float(w["duration_s"])
    if w.get("max_duration_s") is None:
        return declared(str(w["id"]), duration)
    out = Declared(float(w["max_duration_s"]), _opt_float(w.get("checkpoint_interval_s")))
    if out.max_duration_s < duration:
        raise ValueError(f"{w['id']}: max_duration_s {out.max_duration_s} is under its duration {duration}")
    return out


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


def size_buckets(gpu_counts: Iterable[int]) -> tuple[tuple[str, int, int], ...]:
    """The gang-size buckets; the second is named 5-32 when sizes 5-7 occur, 8-32 when they do not."""
    small = any(5 <= c <= 7 for c in gpu_counts)
    return tuple(("5-32" if small and lo == 5 else label, lo, hi) for label, lo, hi in SIZE_BUCKETS)


def scaled_site(spec: dict[str, Any], racks: int) -> dict[str, Any]:
    """The same site with ``racks`` racks, its ASIC fleet and grid cap scaled in proportion (tests)."""
    share = racks / spec["racks"]["count"]
    out: dict[str, Any] = json.loads(json.dumps(spec))
    out["racks"]["count"] = racks
    out["grid_capacity_mw"] = spec["grid_capacity_mw"] * share
    if out.get("asics", {}).get("count"):
        out["asics"]["count"] = max(1, round(spec["asics"]["count"] * share))
    return out


def power_model(spec: dict[str, Any]) -> PowerModel:
    """The site's power model, racks keyed as the replay's fleet names them."""
    site = SiteSpec.parse(spec)
    return PowerModel.for_site(
        site, {f"r{r:03d}": site.racks.rack_power_capacity_kw * 1e3 for r in range(site.racks.count)}
    )


def mining_fleet_w(spec: dict[str, Any]) -> float:
    return SiteSpec.parse(spec).asics.full_w


# -- state ---------------------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class Job:
    """One submission: an original workload (attempt 0) or a resubmitted remainder (attempt n)."""

    id: str
    base: str
    attempt: int
    tenant: str
    priority: PriorityClass
    gpus: int
    nvlink: NvlinkPolicy
    duration_s: float  # work left at this submission
    submit_s: float
    util: float
    request: WorkloadRequest  # carries the plan the last pass gave it
    max_duration_s: float  # declared for this submission
    checkpoint_s: float | None  # declared checkpoint interval; None: a preemption loses the attempt
    price: Decimal
    start_s: float | None = None
    placed: tuple[tuple[str, str], ...] = ()
    end_s: float | None = None  # when its GPUs freed (completion or preemption release)
    notice_s: float | None = None
    preempted_by: str | None = None
    completed: bool = False
    reason: str = ""
    eligible_s: float | None = None  # first pass at which it was within its tenant's reservation
    reasons_while_eligible: list[str] = field(default_factory=list)
    capacity_by_preemption: bool | None = None  # at its first eligible pass
    token: int = 0  # guards stale release events
    kept_s: float = 0.0  # work that counted: all of it when completed, up to the last checkpoint when cut
    lost_s: float = 0.0  # run time lost to a preemption (since the last checkpoint, grace included)
    first_plan_s: float | None = None  # the first planned start this submission was given
    first_planned_at_s: float | None = None  # the pass that gave it
    plan_changes: int = 0  # passes whose plan moved its start
    gave_way: bool = False  # a pass moved its plan behind a larger gang of its class (PlannedStart.gave_way)

    @property
    def state(self) -> str:
        if self.end_s is not None:
            return "completed" if self.completed else "preempted"
        return "pending" if self.start_s is None else "running"


def make_job(
    w: dict[str, Any],
    *,
    job_id: str,
    attempt: int,
    duration_s: float,
    submit_s: float,
    model: str,
    max_duration_s: float | None = None,
) -> Job:
    """A submission of workload ``w``: the original (its declared limits) or a resubmission
    (``max_duration_s`` given: what is left of the tenant's limit)."""
    priority = PriorityClass(w["priority"])
    nvlink = NvlinkPolicy(w["nvlink"])
    limits = limits_of(w)
    max_s = limits.max_duration_s if max_duration_s is None else max_duration_s
    price = Decimal(str(w.get("price_usd_per_gpu_hour", 0)))
    request = WorkloadRequest(
        workload_id=job_id,
        gpu_count=int(w["gpus"]),
        gpu_model=model,
        nvlink=nvlink,
        priority=priority,
        submitted_at=submit_s,
        tenant_id=w["tenant"],
        max_duration_s=max_s,
        price_usd_per_gpu_hour=price,
    )
    return Job(
        id=job_id,
        base=w["id"],
        attempt=attempt,
        tenant=w["tenant"],
        priority=priority,
        gpus=int(w["gpus"]),
        nvlink=nvlink,
        duration_s=duration_s,
        submit_s=submit_s,
        util=float(w.get("mean_gpu_util", 1.0)),
        request=request,
        max_duration_s=max_s,
        checkpoint_s=limits.checkpoint_interval_s,
        price=price,
    )


def kept_work_s(run_s: float, work_s: float, checkpoint_s: float | None) -> float:
    """The work an attempt keeps when it is stopped after ``run_s`` of its ``work_s``: up to its
    last checkpoint (every ``checkpoint_s`` from its start), none without checkpoints."""
    if run_s >= work_s - 1e-9:
        return work_s
    if not checkpoint_s:
        return 0.0
    return min(work_s, math.floor(run_s / checkpoint_s + 1e-9) * checkpoint_s)


class Fleet:
    """Which GPU each job holds; the snapshot's node views, rebuilt only for nodes that changed."""

    def __init__(self, spec: dict[str, Any]) -> None:
        racks = spec["racks"]
        self.model = str(racks["gpu_model"])
        self.node_ids: list[str] = []
        self.node_rack: list[str] = []
        self.node_gpus: list[tuple[str, ...]] = []
        self.gpu_node: dict[str, int] = {}
        for r in range(racks["count"]):
            for t in range(racks["nodes_per_rack"]):
                n = len(self.node_ids)
                node_id = f"r{r:03d}-n{t:02d}"
                self.node_ids.append(node_id)
                self.node_rack.append(f"r{r:03d}")
                gpus = tuple(f"{node_id}-g{i}" for i in range(racks["gpus_per_node"]))
                self.node_gpus.append(gpus)
                for g in gpus:
                    self.gpu_node[g] = n
        self.racks = int(racks["count"])
        self.node_dom = [n // int(racks["nodes_per_rack"]) for n in range(len(self.node_ids))]
        self.domain_size = int(racks["nodes_per_rack"]) * int(racks["gpus_per_node"])
        self.gpus_total = len(self.gpu_node)
        self.owner: dict[str, str | None] = dict.fromkeys(self.gpu_node)
        self.allocated = 0
        self.rack_alloc: Counter[str] = Counter()
        self.views: list[NodeView] = [self._view(n) for n in range(len(self.node_ids))]
        self.dirty: set[int] = set()

    def domain(self, n: int) -> str:
        return f"fabric-{self.node_rack[n]}.0"  # one NVL72 rack is one NVLink domain (and one rack)

    def _view(self, n: int) -> NodeView:
        return NodeView(
            node_id=self.node_ids[n],
            domain=self.domain(n),
            unschedulable="",
            gpus=tuple(
                GpuSlot(g, i, self.model, True, self.owner[g] is not None) for i, g in enumerate(self.node_gpus[n])
            ),
            rack_id=self.node_rack[n],
        )

    def nodes(self) -> tuple[NodeView, ...]:
        for n in self.dirty:
            self.views[n] = self._view(n)
        self.dirty.clear()
        return tuple(self.views)

    def take(self, job_id: str, gpus: Iterable[tuple[str, str]]) -> None:
        for _, g in gpus:
            self.owner[g] = job_id
            n = self.gpu_node[g]
            self.dirty.add(n)
            self.rack_alloc[self.node_rack[n]] += 1
            self.allocated += 1

    def release(self, job_id: str, gpus: Iterable[tuple[str, str]]) -> None:
        for _, g in gpus:
            assert self.owner[g] == job_id, f"{g} is held by {self.owner[g]}, not {job_id}"
            self.owner[g] = None
            n = self.gpu_node[g]
            self.dirty.add(n)
            self.rack_alloc[self.node_rack[n]] -= 1
            self.allocated -= 1


def first_fit_pass(snapshot: FleetSnapshot, queue: Sequence[WorkloadRequest]) -> list[Decision]:
    """``baseline.first_fit``'s decisions, without asking again for a shape that already failed
    in this pass (free GPUs only fall during a pass, so it fails again with the same answer; on an
    overloaded day the baseline's node scan for thousands of blocked requests is most of the run).
    A unit test holds this equal to ``first_fit``."""
    state = FirstFit(snapshot)
    failed: dict[tuple[str, int, NvlinkPolicy], Unplaced] = {}
    out: list[Decision] = []
    for req in queue_order(queue):
        key = (req.gpu_model, req.gpu_count, req.nvlink)
        known = failed.get(key)
        if known is not None:
            out.append(replace(known, workload_id=req.workload_id))
            continue
        d = state.decide(req)
        if isinstance(d, Unplaced):
            failed[key] = d
        out.append(d)
    return out


# -- the replay ----------------------------------------------------------------------------------

SUBMIT, FREE, WAKE = 0, 1, 2


@dataclass(slots=True)
class Sample:
    t: float
    allocated: int
    free_gpus: int
    whole_free_nodes: int
    whole_free_domains: int
    outside_whole_nodes: float
    outside_whole_domains: float
    largest_free_block: int
    gpu_w: float
    mining_w: float


@dataclass(slots=True)
class PreemptionRecord:
    t: float
    victim: str
    victim_class: str
    victim_gpus: int
    preemptor: str
    preemptor_class: str
    grace_s: float
    released_s: float
    completed_in_grace: bool


@dataclass
class ReplayResult:
    scheduler: str
    site: str
    gpus: int
    cap_w: float
    pass_interval_s: float
    stop_grace_s: float
    window_s: float
    jobs: dict[str, Job]
    preemptions: list[PreemptionRecord]
    samples: list[Sample]
    power_trace: list[tuple[float, float, float]]  # (t, planned GPU draw x PUE, mining) after each change
    violations: list[str]
    passes: int
    decisions: int
    wall_s: float
    acc: dict[str, Any]
    reservations: dict[str, int]
    end_s: float = 0.0  # simulated time the replay stopped at
    rules: PlanningRules = field(default_factory=PlanningRules)


class Replay:
    def __init__(
        self,
        spec: dict[str, Any],
        workloads: Sequence[dict[str, Any]],
        *,
        scheduler: Scheduler = "core",
        reservations: dict[str, int] | None = None,
        pass_interval_s: float = PASS_INTERVAL_S,
        stop_grace_s: float = 30.0,
        until_s: float | None = None,
        day_s: float = DAY_S,
        sample_s: float = SAMPLE_S,
        resubmit: bool = True,
    ) -> None:
        self.spec = spec
        self.scheduler = scheduler
        self.fleet = Fleet(spec)
        self.power = power_model(spec)
        self.mining_max_w = mining_fleet_w(spec)
        self.mining_w = self.mining_max_w
        self.reservations = dict(RESERVATIONS if reservations is None else reservations)
        # Every tenant of the day at share weight 1.0 (no contracts are named), the reservations as given.
        names = sorted({str(w["tenant"]) for w in workloads} | set(self.reservations))
        self.tenants = {t: TenantPolicy(t, reserved_gpus=self.reservations.get(t, 0), share_weight=1.0) for t in names}
        self.interval = pass_interval_s
        self.grace = stop_grace_s
        self.rules = PlanningRules()  # the site's defaults; the churn figures are read against them
        self.until = until_s
        self.window = min(day_s, until_s) if until_s is not None else day_s
        self.sample_s = sample_s
        self.resubmit = resubmit
        self.workloads = {w["id"]: w for w in workloads}
        self.jobs: dict[str, Job] = {}
        self.pending: dict[str, Job] = {}
        self.running: dict[str, Job] = {}
        self.run_views: dict[str, RunningWorkload] = {}
        self.events: list[tuple[float, int, int, str, int]] = []
        self.seq = 0
        self.now = 0.0
        self.preemptions: list[PreemptionRecord] = []
        self.samples: list[Sample] = []
        self.next_sample = 0.0
        self.violations: list[str] = []
        self.power_trace: list[tuple[float, float, float]] = []
        self.passes = 0
        self.decisions = 0
        self.preempting_gpus = 0
        self.util_gpus = 0.0  # sum over running jobs of GPUs x mean utilisation
        self.reserved_running: Counter[str] = Counter()
        # Notice times of each original workload, across its resubmissions.
        self.notices: dict[str, list[float]] = {}
        self.acc: dict[str, Any] = {
            "alloc_gpu_s": 0.0,
            "useful_gpu_s": 0.0,
            "util_gpu_s": 0.0,
            "gpu_j": 0.0,
            "mining_j": 0.0,
            "hourly_alloc_gpu_s": [0.0] * math.ceil(self.window / 3600.0),
            "peak_site_w": 0.0,
            "peak_gpu_w": 0.0,
            "min_mining_w": self.mining_w,
            "peak_rack_w": 0.0,
            "below_reservation_s": 0.0,
            "below_reservation_episodes": [],
        }
        self._below_since: float | None = None
        # The ASIC fleet starts at its full draw, or what the idle GPUs leave under the cap if less.
        self.mining_w = self._mining_target()
        self.acc["min_mining_w"] = self.mining_w
        for w in workloads:
            job = make_job(
                w,
                job_id=w["id"],
                attempt=0,
                duration_s=float(w["duration_s"]),
                submit_s=float(w["submit_s"]),
                model=self.fleet.model,
            )
            self.jobs[job.id] = job
            self._push(job.submit_s, SUBMIT, job.id, 0)
        self._record_power()

    # -- events ----------------------------------------------------------------------------------

    def _push(self, t: float, kind: int, job_id: str, token: int) -> None:
        heapq.heappush(self.events, (t, self.seq, kind, job_id, token))
        self.seq += 1

    def run(self) -> ReplayResult:
        t0 = time.perf_counter()
        while self.events:
            te = self.events[0][0]
            if self.until is not None and te > self.until:
                break
            p = math.ceil(te / self.interval - 1e-9) * self.interval
            news = False
            while self.events and self.events[0][0] <= p:
                t, _, kind, job_id, token = heapq.heappop(self.events)
                if kind == WAKE:
                    # A planned start (or its notice time) falls due: a pass, if the plan still holds.
                    job = self.jobs[job_id]
                    news = news or (job_id in self.pending and token == job.plan_changes)
                    continue
                news = True
                self._advance(t)
                if kind == SUBMIT:
                    self.pending[job_id] = self.jobs[job_id]
                else:
                    self._free(self.jobs[job_id], token)
            if not news:
                continue
            self._advance(p)
            self._pass()
        end = max(self.now, self.window)
        self._advance(end)
        if self._below_since is not None:
            self._close_below(end)
        return ReplayResult(
            scheduler=self.scheduler,
            site=str(self.spec.get("description", "")),
            gpus=self.fleet.gpus_total,
            cap_w=self.power.site_cap_w,
            pass_interval_s=self.interval,
            stop_grace_s=self.grace,
            window_s=self.window,
            jobs=self.jobs,
            preemptions=self.preemptions,
            samples=self.samples,
            power_trace=self.power_trace,
            violations=self.violations,
            passes=self.passes,
            decisions=self.decisions,
            wall_s=time.perf_counter() - t0,
            acc=self.acc,
            reservations=self.reservations,
            end_s=end,
            rules=self.rules,
        )

    def _free(self, job: Job, token: int) -> None:
        if token != job.token or job.end_s is not None:
            return  # superseded (a preemption moved its release earlier)
        t = self.now
        self.fleet.release(job.id, job.placed)
        job.end_s = t
        del self.running[job.id]
        del self.run_views[job.id]
        self.util_gpus -= job.gpus * job.util
        if job.priority is PriorityClass.RESERVED:
            self.reserved_running[job.tenant] -= job.gpus
        assert job.start_s is not None
        if job.notice_s is not None:
            self.preempting_gpus -= job.gpus
        ran = t - job.start_s
        done = ran >= job.duration_s - 1e-9
        job.completed = done
        job.kept_s = kept_work_s(ran, job.duration_s, job.checkpoint_s)
        job.lost_s = 0.0 if done else ran - job.kept_s
        if not done and job.notice_s is not None and self.resubmit:
            left = job.duration_s - job.kept_s
            if left > 0:
                w = self.workloads[job.base]
                again = make_job(
                    w,
                    job_id=f"{job.base}.r{job.attempt + 1}",
                    attempt=job.attempt + 1,
                    duration_s=left,
                    submit_s=t,
                    model=self.fleet.model,
                    max_duration_s=max(left, round_up_quarter_hour(job.max_duration_s - job.kept_s)),
                )
                # Its history goes with it: the core knows it was preempted before.
                again.request = replace(again.request, preemptions=len(self.notices.get(job.base, ())))
                self.jobs[again.id] = again
                self.pending[again.id] = again
        self._record_power()

    # -- accounting ------------------------------------------------------------------------------

    def gpu_planned_w(self, allocated: int | None = None) -> float:
        """The planned GPU-side draw by the one formula (``power.model``), on the fleet's counts."""
        f = self.fleet
        a = f.allocated if allocated is None else allocated
        return self.power.grid_w(Tally(racks=f.racks, nodes=len(f.node_ids), gpus=f.gpus_total, allocated=a))

    def _record_power(self) -> None:
        gpu_w = self.gpu_planned_w()
        site = gpu_w + self.mining_w
        acc = self.acc
        acc["peak_site_w"] = max(acc["peak_site_w"], site)
        acc["peak_gpu_w"] = max(acc["peak_gpu_w"], gpu_w)
        acc["min_mining_w"] = min(acc["min_mining_w"], self.mining_w)
        f, pm = self.fleet, self.power
        busiest = max(f.rack_alloc.values(), default=0)
        rack_w = pm.it_w(Tally(racks=1, nodes=len(f.node_ids) // f.racks, gpus=f.domain_size, allocated=busiest))
        acc["peak_rack_w"] = max(acc["peak_rack_w"], rack_w)
        if rack_w > min(pm.rack_cap_w.values(), default=math.inf) + EPS_W:
            self.violations.append(f"t={self.now:.0f}: a rack plans {rack_w / 1e3:.1f} kW, over its cap")
        if site > self.power.site_cap_w + EPS_W:
            self.violations.append(f"t={self.now:.0f}: planned site draw {site / 1e6:.6f} MW over the cap")
        if not self.power_trace or self.power_trace[-1][1:] != (gpu_w, self.mining_w):
            self.power_trace.append((self.now, gpu_w, self.mining_w))

    def _advance(self, t: float) -> None:
        """Integrate the state held over [now, t) inside the day window and take due samples."""
        if t <= self.now:
            return
        while self.next_sample < t and self.next_sample < self.window:
            self._sample(self.next_sample)
            self.next_sample += self.sample_s
        lo, hi = max(self.now, 0.0), min(t, self.window)
        if hi > lo:
            acc = self.acc
            dt = hi - lo
            a = self.fleet.allocated
            acc["alloc_gpu_s"] += a * dt
            acc["useful_gpu_s"] += (a - self.preempting_gpus) * dt
            acc["util_gpu_s"] += self.util_gpus * dt
            acc["gpu_j"] += self.gpu_planned_w() * dt
            acc["mining_j"] += self.mining_w * dt
            hourly = acc["hourly_alloc_gpu_s"]
            x = lo
            while x < hi:
                h = int(x // 3600)
                y = min(hi, (h + 1) * 3600.0)
                if h < len(hourly):
                    hourly[h] += a * (y - x)
                x = y
        self.now = t

    def _sample(self, t: float) -> None:
        snap = FleetSnapshot(nodes=self.fleet.nodes(), now=t)
        fr = fragmentation(snap)
        self.samples.append(
            Sample(
                t=t,
                allocated=self.fleet.allocated,
                free_gpus=fr.free_gpus,
                whole_free_nodes=fr.whole_free_nodes,
                whole_free_domains=fr.whole_free_domains,
                outside_whole_nodes=fr.outside_whole_nodes,
                outside_whole_domains=fr.outside_whole_domains,
                largest_free_block=fr.largest_free_block,
                gpu_w=self.gpu_planned_w(),
                mining_w=self.mining_w,
            )
        )

    def _below_reservation(self) -> None:
        """Episodes with a reserved tenant's work pending while it holds fewer GPUs than reserved."""
        below = any(
            j.priority is PriorityClass.RESERVED
            and j.tenant in self.reservations
            and self.reserved_running[j.tenant] < self.reservations[j.tenant]
            for j in self.pending.values()
        )
        if below and self._below_since is None:
            self._below_since = self.now
        elif not below and self._below_since is not None:
            self._close_below(self.now)

    def _close_below(self, t: float) -> None:
        assert self._below_since is not None
        self.acc["below_reservation_episodes"].append((self._below_since, t))
        self._below_since = None

    # -- passes ----------------------------------------------------------------------------------

    def _pass(self) -> None:
        p = self.now
        snap = FleetSnapshot(
            nodes=self.fleet.nodes(),
            running=tuple(self.run_views.values()),
            tenants=self.tenants,
            power=self.power,
            mining=MiningBlock(power_w=self.mining_w),
            now=p,
            stop_grace_s=self.grace,
            rules=self.rules,
        )
        if self.pending:
            self.passes += 1
            queue = [j.request for j in self.pending.values()]
            within = within_reservation(queue, snap) if self.reservations else set()
            reserved_at_start = dict(self.reserved_running)
            decisions: Sequence[Decision]
            if self.scheduler == "core":
                decisions = schedule(snap, queue)
            elif self.scheduler == "legacy":
                decisions = schedule(snap, queue, LEGACY_PROFILE)
            else:
                decisions = first_fit_pass(snap, queue)
            self.decisions += len(decisions)
            for wid in within:
                job = self.jobs[wid]
                if job.eligible_s is None:
                    job.eligible_s = p
                    job.capacity_by_preemption = self._capacity_by_preemption(job)
            shed = 0.0
            mining_before = self.mining_w
            for d in decisions:
                if isinstance(d, ShedMining):
                    shed += d.watts
                elif isinstance(d, Placement):
                    self._place(d)
                elif isinstance(d, Preempt):
                    self._preempt(d, within, reserved_at_start)
                elif isinstance(d, Unplaced):
                    job = self.jobs[d.workload_id]
                    job.reason = d.reason
                    if d.plan is not None and d.plan.gave_way:
                        job.gave_way = True
                    self._carry_plan(job, d.plan)
                    if job.eligible_s is not None and len(job.reasons_while_eligible) < 8:
                        job.reasons_while_eligible.append(f"t={p:.0f}: {d.reason}")
            if self.scheduler != "first_fit":
                core_site = mining_before - shed + self.gpu_planned_w()
                if core_site > self.power.site_cap_w + EPS_W:
                    self.violations.append(
                        f"t={p:.0f}: the core's pass leaves {core_site / 1e6:.6f} MW planned "
                        f"(mining {mining_before / 1e6:.3f} MW - shed {shed / 1e6:.3f} MW + GPUs), over the cap"
                    )
        self.mining_w = self._mining_target()
        self._record_power()
        self._below_reservation()

    def _carry_plan(self, job: Job, plan: PlannedStart | None) -> None:
        """The pass's plan for ``job`` goes into its next request; the first one is remembered."""
        old = job.request.plan
        if plan is not None:
            if job.first_plan_s is None:
                job.first_plan_s = plan.first_start_at if plan.first_start_at is not None else plan.start_at
                job.first_planned_at_s = self.now
            if plan.first_start_at is None:
                plan = replace(plan, first_start_at=job.first_plan_s)
            if old is not None and old.start_at != plan.start_at:
                job.plan_changes += 1
            if old is None or old.start_at != plan.start_at:
                for t in (plan.start_at - self.grace, plan.start_at):
                    if t > self.now:
                        self._push(t, WAKE, job.id, job.plan_changes)
        if plan != old:
            job.request = replace(job.request, plan=plan)

    def _view(self, job: Job, *, claimed_for: str = "") -> RunningWorkload:
        """The core's view of running ``job``; under notice (for ``claimed_for``) when that is given."""
        assert job.start_s is not None
        notices = self.notices.get(job.base, ())
        return RunningWorkload(
            workload_id=job.id,
            tenant_id=job.tenant,
            priority=job.priority,
            gpus=job.placed,
            started_at=job.start_s,
            gpu_model=self.fleet.model,
            preempting=bool(claimed_for),
            claimed_for=claimed_for,
            ends_by=job.start_s + job.max_duration_s,
            preemptions=len(notices),
            noticed_at=tuple(notices),
            checkpoint_interval_s=job.checkpoint_s,
            price_usd_per_gpu_hour=job.price,
        )

    def _mining_target(self) -> float:
        """``rebalance_mining``'s rule (``dispatch.budget``): every watt the planned GPU draw leaves."""
        return mining_target_w(self.power, gpu_grid_w=self.gpu_planned_w(), fleet_full_w=self.mining_max_w)

    def _capacity_by_preemption(self, job: Job) -> bool:
        """Could the shape fit in GPUs that are free or held by work the core may preempt for it?
        (Everything but reserved work, which is never a victim; the fleet has no unhealthy GPUs.)"""
        f = self.fleet
        room = [f.domain_size] * f.racks
        for g, owner in f.owner.items():
            if owner is not None and self.jobs[owner].priority is PriorityClass.RESERVED:
                room[f.node_dom[f.gpu_node[g]]] -= 1
        c = job.gpus
        if job.nvlink is not NvlinkPolicy.REQUIRED or c == 1:
            return sum(room) >= c
        if c <= f.domain_size:
            return max(room) >= c
        whole, rest = divmod(c, f.domain_size)
        full = sum(1 for r in room if r == f.domain_size)
        if full < whole:
            return False
        return rest == 0 or full > whole or any(rest <= r < f.domain_size for r in room)

    def _place(self, d: Placement) -> None:
        job = self.jobs.get(d.workload_id)
        p = self.now
        if job is None or job.id not in self.pending:
            self.violations.append(f"t={p:.0f}: placement of {d.workload_id}, which is not pending")
            return
        gpus = tuple((r.node_id, g) for r in d.ranks for g in r.gpu_ids)
        ids = [g for _, g in gpus]
        problems = []
        if len(ids) != job.gpus:
            problems.append(f"{len(ids)} GPUs for a {job.gpus}-GPU request")
        if len(set(ids)) != len(ids):
            problems.append("the same GPU twice")
        taken = [g for g in ids if self.fleet.owner.get(g, "?") is not None]
        if taken:
            problems.append(f"GPUs already held: {', '.join(f'{g} by {self.fleet.owner.get(g)}' for g in taken[:4])}")
        wrong_node = [g for n, g in gpus if self.fleet.node_ids[self.fleet.gpu_node.get(g, 0)] != n]
        if wrong_node:
            problems.append(f"GPUs on another node than the rank says: {wrong_node[:4]}")
        if job.nvlink is NvlinkPolicy.REQUIRED and job.gpus > 1 and not taken:
            doms = {self.fleet.node_dom[self.fleet.gpu_node[g]] for g in ids}
            if len(doms) != math.ceil(job.gpus / self.fleet.domain_size):
                problems.append(f"NVLink gang of {job.gpus} over {len(doms)} domains")
        if problems:
            self.violations.append(f"t={p:.0f}: placement of {job.id} refused: {'; '.join(problems)}")
            return
        self.fleet.take(job.id, gpus)
        del self.pending[job.id]
        job.start_s = p
        job.placed = gpus
        job.reason = ""
        self.running[job.id] = job
        self.run_views[job.id] = self._view(job)
        self.util_gpus += job.gpus * job.util
        if job.priority is PriorityClass.RESERVED:
            self.reserved_running[job.tenant] += job.gpus
        job.token += 1
        self._push(p + job.duration_s, FREE, job.id, job.token)

    def _preempt(self, d: Preempt, within: set[str], reserved_at_start: dict[str, int]) -> None:
        p = self.now
        victim = self.running.get(d.victim_id)
        preemptor = self.jobs.get(d.for_workload_id)
        if victim is None or preemptor is None:
            self.violations.append(f"t={p:.0f}: preempt {d.victim_id} for {d.for_workload_id}: unknown or not running")
            return
        if victim.notice_s is not None:
            self.violations.append(f"t={p:.0f}: {victim.id} preempted a second time (for {preemptor.id})")
            return
        vc, pc = victim.priority, preemptor.priority
        res = self.reservations.get(preemptor.tenant, 0)
        within_now = pc is PriorityClass.RESERVED and (
            preemptor.id in within or reserved_at_start.get(preemptor.tenant, 0) + preemptor.gpus <= res
        )
        allowed = {
            PriorityClass.RESERVED: set(),
            PriorityClass.ON_DEMAND: {PriorityClass.RESERVED} if within_now else set(),
            PriorityClass.SPOT: {PriorityClass.RESERVED, PriorityClass.ON_DEMAND},
            PriorityClass.MINING: {PriorityClass.RESERVED, PriorityClass.ON_DEMAND, PriorityClass.SPOT},
        }[vc]
        if pc not in allowed:
            self.violations.append(f"t={p:.0f}: {pc.value} {preemptor.id} may not preempt {vc.value} {victim.id}")
            return
        assert victim.start_s is not None
        victim.notice_s = p
        victim.preempted_by = preemptor.id
        self.notices.setdefault(victim.base, []).append(p)
        self.preempting_gpus += victim.gpus
        natural = victim.start_s + victim.duration_s
        release = min(natural, p + d.grace_s)
        self.run_views[victim.id] = self._view(victim, claimed_for=preemptor.id)
        if release < natural:
            victim.token += 1
            self._push(release, FREE, victim.id, victim.token)
        self.preemptions.append(
            PreemptionRecord(
                t=p,
                victim=victim.id,
                victim_class=vc.value,
                victim_gpus=victim.gpus,
                preemptor=preemptor.id,
                preemptor_class=pc.value,
                grace_s=d.grace_s,
                released_s=release,
                completed_in_grace=release >= natural,
            )
        )


# -- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def dist(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "mean": round(sum(values) / len(values), 1) if values else None,
        **{f"p{q}": _r(percentile(values, q)) for q in (50, 95, 99)},
        "max": _r(max(values)) if values else None,
    }


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def guarantee_bound_s(result: ReplayResult) -> float:
    """Longest wait the guarantee allows from the first pass a request is within its reservation:
    the victims' grace plus one pass interval."""
    return result.stop_grace_s + result.pass_interval_s


def reservation_violations(result: ReplayResult) -> list[Job]:
    """Within-reservation requests that did not get GPUs at once (still waiting at the end counts)."""
    bound = guarantee_bound_s(result)
    end = max((j.end_s or j.start_s or 0.0) for j in result.jobs.values()) if result.jobs else 0.0
    out = []
    for j in result.jobs.values():
        if j.eligible_s is None:
            continue
        started = j.start_s if j.start_s is not None else max(end, j.eligible_s)
        if started - j.eligible_s > bound + 1e-9 or j.start_s is None and j.eligible_s + bound < end:
            out.append(j)
    return sorted(out, key=lambda j: (j.eligible_s or 0.0, j.id))


def metrics(result: ReplayResult) -> dict[str, Any]:
    jobs = list(result.jobs.values())
    acc = result.acc
    window_h = result.window_s / 3600.0
    available = result.gpus * window_h
    originals = [j for j in jobs if j.attempt == 0]
    offered = sum(j.gpus * j.duration_s for j in originals if j.submit_s < result.window_s) / 3600
    # What the window would hold had every workload started at its submission (the ceiling on allocation).
    no_wait = (
        sum(j.gpus * max(0.0, min(j.submit_s + j.duration_s, result.window_s) - j.submit_s) for j in originals) / 3600
    )
    hourly = [round(x / (result.gpus * 3600.0), 4) for x in acc["hourly_alloc_gpu_s"]]

    buckets = size_buckets(j.gpus for j in originals)
    chains = workload_chains(result)
    totals = total_waits(chains)
    waits: dict[str, Any] = {}
    for cls in CLASSES:
        first = [j.start_s - j.submit_s for j in jobs if j.attempt == 0 and j.priority is cls and j.start_s is not None]
        again = [j.start_s - j.submit_s for j in jobs if j.attempt > 0 and j.priority is cls and j.start_s is not None]
        never = sum(1 for j in jobs if j.priority is cls and j.start_s is None)
        of_cls = {b: w for b, w in totals.items() if chains[b][0].priority is cls}
        by_size: dict[str, Any] = {}
        total_by_size: dict[str, Any] = {}
        for label, lo, hi in buckets:
            xs = [
                j.start_s - j.submit_s
                for j in jobs
                if j.attempt == 0 and j.priority is cls and j.start_s is not None and lo <= j.gpus <= hi
            ]
            if xs:
                by_size[label] = dist(xs)
            ts = [w for b, w in of_cls.items() if lo <= chains[b][0].gpus <= hi]
            if ts:
                total_by_size[label] = dist(ts)
        waits[cls.value] = {
            # Every requeue counted: the sum over a workload's attempts of start - (re)submission.
            "total": dist(list(of_cls.values())),
            "total_by_gang_size": total_by_size,
            "still_waiting_at_end": sum(1 for b, c in chains.items() if c[0].priority is cls and b not in totals),
            "first_submission": dist(first),
            "resubmitted": dist(again),
            "never_started": never,
            "first_submission_by_gang_size": by_size,
        }
    all_by_size = {
        label: dist(ts)
        for label, lo, hi in buckets
        if (ts := [w for b, w in totals.items() if lo <= chains[b][0].gpus <= hi])
    }
    waits["all_classes_total_by_gang_size"] = all_by_size

    pre = result.preemptions
    by_pair = Counter(f"{p.preemptor_class}->{p.victim_class}" for p in pre)
    preemptions = {
        "total": len(pre),
        "by_victim_class": dict(Counter(p.victim_class for p in pre)),
        "by_preemptor_class": dict(Counter(p.preemptor_class for p in pre)),
        "by_preemptor_to_victim": dict(by_pair),
        "victim_gpus": sum(p.victim_gpus for p in pre),
        "completed_within_grace": sum(p.completed_in_grace for p in pre),
        "resubmitted": sum(1 for j in jobs if j.attempt > 0),
        "grace_gpu_hours": round(sum(p.victim_gpus * (p.released_s - p.t) for p in pre) / 3600, 1),
        # Did the preemptor end up on GPUs its victim freed? (Not when an older or higher-class request
        # took them first: the core re-decides who gets GPUs being freed at every pass, in queue order.)
        "victim_gpus_used_by_their_preemptor": sum(1 for p in pre if _used_by_preemptor(result, p)),
        "preemptors": len({p.preemptor for p in pre}),
        "preemptors_noticing_more_than_one_pass": sum(1 for ts in _passes_by_preemptor(pre).values() if len(ts) > 1),
        **preemption_churn(result),
    }

    day = [s for s in result.samples if s.t < result.window_s]
    with_free = [s for s in day if s.free_gpus > 0]
    frag = {
        "samples": len(day),
        "every_s": SAMPLE_S,
        "mean_free_gpus": _r(_mean([s.free_gpus for s in day])),
        "outside_whole_nodes": _frac_stats([s.outside_whole_nodes for s in with_free]),
        "outside_whole_domains": _frac_stats([s.outside_whole_domains for s in with_free]),
        "whole_free_domains": {
            "mean": _r(_mean([s.whole_free_domains for s in day]), 2),
            "min": min((s.whole_free_domains for s in day), default=None),
        },
        "largest_free_block": {
            "mean": _r(_mean([s.largest_free_block for s in day])),
            "p50": _r(percentile([s.largest_free_block for s in day], 50)),
            "min": min((s.largest_free_block for s in day), default=None),
        },
        # Stranded: enough GPUs free for a whole NVL72 domain, but no domain wholly free.
        "samples_72_free_but_no_whole_domain": sum(1 for s in day if s.free_gpus >= 72 and s.whole_free_domains == 0),
    }

    cap = result.cap_w
    energy = {
        "gpu_planned_mwh": round(acc["gpu_j"] / 3.6e9, 2),
        "mining_mwh": round(acc["mining_j"] / 3.6e9, 2),
        "site_planned_mwh": round((acc["gpu_j"] + acc["mining_j"]) / 3.6e9, 2),
        "cap_mwh": round(cap * result.window_s / 3.6e9, 2),
        "peak_site_planned_mw": round(acc["peak_site_w"] / 1e6, 4),
        "peak_gpu_planned_mw": round(acc["peak_gpu_w"] / 1e6, 4),
        "min_mining_mw": round(acc["min_mining_w"] / 1e6, 4),
        "cap_mw": round(cap / 1e6, 4),
        "peak_rack_planned_kw": round(acc["peak_rack_w"] / 1e3, 1),
        "never_over_cap": acc["peak_site_w"] <= cap + EPS_W,
    }

    reserved: dict[str, Any] = {}
    bound = guarantee_bound_s(result)
    viol = reservation_violations(result)
    for tenant, gpus in result.reservations.items():
        el = [j for j in jobs if j.tenant == tenant and j.eligible_s is not None]
        gw = [j.start_s - j.eligible_s for j in el if j.start_s is not None and j.eligible_s is not None]
        episodes = [b - a for a, b in acc["below_reservation_episodes"]]
        tv = [j for j in viol if j.tenant == tenant]
        reserved[tenant] = {
            "reserved_gpus": gpus,
            "requests_within_reservation": len(el),
            "placed_at_first_eligible_pass": sum(1 for w in gw if w <= 1e-9),
            "placed_after_preemption_within_bound": sum(1 for w in gw if 1e-9 < w <= bound + 1e-9),
            "wait_from_eligible_s": dist(gw),
            "bound_s": bound,
            "violations": len(tv),
            "violations_with_capacity_by_preemption": sum(1 for j in tv if j.capacity_by_preemption),
            "held": not tv,
            "violation_details": [_violation(j) for j in tv[:25]],
            "pending_while_below_reservation": {
                "episodes": len(episodes),
                "total_s": round(sum(episodes), 1),
                "p99_s": _r(percentile(episodes, 99)),
                "max_s": _r(max(episodes, default=0.0)),
            },
        }

    pending_end = [j for j in jobs if j.start_s is None]
    good = goodput(result)
    return {
        "scheduler": result.scheduler,
        "passes": result.passes,
        "decisions": result.decisions,
        "wall_s": round(result.wall_s, 2),
        "utilisation": {
            "window_h": round(window_h, 2),
            "available_gpu_hours": round(available, 1),
            "offered_gpu_hours": round(offered, 1),
            "allocated_gpu_hours": round(acc["alloc_gpu_s"] / 3600, 1),
            "no_wait_gpu_hours": round(no_wait, 1),
            "no_wait_share": round(no_wait / available, 4),
            "allocated_share": round(acc["alloc_gpu_s"] / 3600 / available, 4),
            "useful_share": round(acc["useful_gpu_s"] / 3600 / available, 4),
            "compute_weighted_share": round(acc["util_gpu_s"] / 3600 / available, 4),
            "goodput_share": round(good["window_gpu_s"] / 3600 / available, 4),
            "goodput_gpu_hours": round(good["window_gpu_s"] / 3600, 1),
            "lost_to_preemption_gpu_hours": round(good["lost_window_gpu_s"] / 3600, 1),
            "hourly_allocated_share": hourly,
            "sampled_5min": _frac_stats([s.allocated / result.gpus for s in day]),
        },
        "waits_s": waits,
        "goodput": {
            "rule": "completed work, and a cut attempt's run up to its last checkpoint; the rest of its run is lost",
            "day_gpu_hours": round(good["window_gpu_s"] / 3600, 1),
            "day_share_of_allocation": round(good["window_gpu_s"] / acc["alloc_gpu_s"], 4)
            if acc["alloc_gpu_s"]
            else None,
            "lost_day_gpu_hours": round(good["lost_window_gpu_s"] / 3600, 1),
            "whole_run_gpu_hours": round(good["gpu_s"] / 3600, 1),
            "lost_whole_run_gpu_hours": round(good["lost_gpu_s"] / 3600, 1),
            "cut_attempts": good["cut"],
            "cut_attempts_with_checkpoints": good["cut_with_checkpoints"],
        },
        "planned_starts": planned_start_error(result),
        "preemptions": preemptions,
        "fragmentation": frag,
        "energy": energy,
        "reservation": reserved,
        "never_started_gang_sizes": dict(Counter(j.gpus for j in pending_end)),
        "finished": {
            "workloads": sum(1 for j in jobs if j.attempt == 0),
            "completed": sum(1 for j in jobs if j.completed),
            "pending_at_end": len(pending_end),
            "pending_reasons": dict(Counter(_reason_kind(j.reason) for j in pending_end).most_common(8)),
            "last_release_h": round(max((j.end_s or 0.0) for j in jobs) / 3600, 2) if jobs else 0.0,
        },
        "violations": result.violations[:50],
        "violation_count": len(result.violations),
    }


def workload_chains(result: ReplayResult) -> dict[str, list[Job]]:
    """Each original workload's submissions, in attempt order."""
    chains: dict[str, list[Job]] = {}
    for j in result.jobs.values():
        chains.setdefault(j.base, []).append(j)
    for c in chains.values():
        c.sort(key=lambda j: j.attempt)
    return chains


def total_waits(chains: dict[str, list[Job]]) -> dict[str, float]:
    """Per original workload whose every submission started: the sum of start - (re)submission."""
    out = {}
    for base, chain in chains.items():
        if all(j.start_s is not None for j in chain):
            out[base] = sum((j.start_s or 0.0) - j.submit_s for j in chain)
    return out


def goodput(result: ReplayResult) -> dict[str, Any]:
    """GPU-seconds of work that counted and of run lost to preemption, over the day window and whole run.

    A completed attempt counts its whole run; a cut one [start, start + kept) (its work up to the
    last checkpoint) and loses [start + kept, release). Work still running at the end counts so far."""
    window, end_of_run = result.window_s, result.end_s
    good = lost = good_w = lost_w = 0.0
    cut = cut_ckpt = 0
    for j in result.jobs.values():
        if j.start_s is None:
            continue
        end = j.end_s if j.end_s is not None else end_of_run
        useful_end = end if j.end_s is None or j.completed else j.start_s + j.kept_s
        good += j.gpus * (useful_end - j.start_s)
        lost += j.gpus * (end - useful_end)
        good_w += j.gpus * _overlap(j.start_s, useful_end, window)
        lost_w += j.gpus * _overlap(useful_end, end, window)
        if j.end_s is not None and not j.completed:
            cut += 1
            cut_ckpt += j.checkpoint_s is not None
    return {
        "gpu_s": good,
        "lost_gpu_s": lost,
        "window_gpu_s": good_w,
        "lost_window_gpu_s": lost_w,
        "cut": cut,
        "cut_with_checkpoints": cut_ckpt,
    }


def _overlap(a: float, b: float, window: float) -> float:
    return max(0.0, min(b, window) - max(a, 0.0))


def planned_start_error(result: ReplayResult) -> dict[str, Any]:
    """Actual start - the first planned start, over the submissions that were given a plan."""
    planned = [j for j in result.jobs.values() if j.first_plan_s is not None]
    started = [j for j in planned if j.start_s is not None]
    errs = [(j.start_s or 0.0) - (j.first_plan_s or 0.0) for j in started]
    slack = result.pass_interval_s + 1e-9  # a pass runs at the first tick at or after the planned start
    by_size = {
        label: dist(xs)
        for label, lo, hi in size_buckets(j.gpus for j in result.jobs.values())
        if (xs := [e for j, e in zip(started, errs, strict=True) if lo <= j.gpus <= hi])
    }

    # Late starts the issue excuses: higher-class work (a submission or resubmission of a higher
    # class) arrived between the pass that first planned it and its start. Classes as the core
    # orders them (``queue.competing_rank``): reserved work beyond its tenant's reservation
    # competes with on_demand work, and reserved work within it comes first, so its arrival
    # (the first pass at which it is within) excuses any reserved or on_demand plan.
    # The core's order has one more rank inside a class (outside reservations): a planned gang
    # larger than ``rules.large_gang_gpus`` decides before the class's smaller plans and may move
    # them (README, "Large gangs first"); the core says so in the plan it moves
    # (``PlannedStart.gave_way``). "No higher-rank work" excuses those plans too; "no
    # higher-class arrival" is the classes alone.
    def rank(priority: PriorityClass) -> int:
        return competing_rank(priority, within=False) if priority in CLASSES else len(CLASSES)

    arrivals: dict[int, list[float]] = {}
    for j in result.jobs.values():
        arrivals.setdefault(rank(j.priority), []).append(j.submit_s)
        if j.eligible_s is not None:
            arrivals.setdefault(-1, []).append(j.eligible_s)
    for xs in arrivals.values():
        xs.sort()

    def own_rank(j: Job) -> int:
        within = j.eligible_s is not None and j.eligible_s <= (j.first_planned_at_s or 0.0)
        return -1 if within else rank(j.priority)

    def higher_arrived(j: Job) -> bool:
        lo, hi = j.first_planned_at_s or 0.0, j.start_s or 0.0
        for r, xs in arrivals.items():
            if r < own_rank(j):
                n = bisect.bisect_right(xs, hi) - bisect.bisect_right(xs, lo)
                if r == -1 and j.eligible_s is not None and lo < j.eligible_s <= hi:
                    n -= 1  # its own turn within the reservation excuses nothing
                if n > 0:
                    return True
        return False

    late = [(j, e) for j, e in zip(started, errs, strict=True) if e > slack]
    unexcused = [(j, e) for j, e in late if not higher_arrived(j)]
    unranked = [(j, e) for j, e in unexcused if not j.gave_way]
    return {
        "late": len(late),
        "late_with_no_higher_rank_work": len(unranked),
        "late_with_no_higher_rank_work_by_class": dict(Counter(j.priority.value for j, _ in unranked)),
        "late_with_no_higher_rank_work_error_s": dist([e for _, e in unranked]),
        "late_with_no_higher_class_arrival": len(unexcused),
        "late_with_no_higher_class_arrival_by_class": dict(Counter(j.priority.value for j, _ in unexcused)),
        "late_with_no_higher_class_arrival_error_s": dist([e for _, e in unexcused]),
        "late_by_class": dict(Counter(j.priority.value for j, _ in late)),
        "planned": len(planned),
        "started": len(started),
        "never_started": len(planned) - len(started),
        "error_s": dist(errs),
        "error_by_gang_size_s": by_size,
        "started_by_planned_start": sum(1 for e in errs if e <= slack),
        "share_started_by_planned_start": round(sum(1 for e in errs if e <= slack) / len(errs), 4) if errs else None,
        "on_time_slack_s": result.pass_interval_s,
        "plans_moved": sum(j.plan_changes for j in planned),
        "workloads_whose_plan_moved": sum(1 for j in planned if j.plan_changes),
    }


def preemption_churn(result: ReplayResult) -> dict[str, Any]:
    """Notices per original workload (across its resubmissions) and per preemptor."""
    per_workload = Counter(result.jobs[p.victim].base for p in result.preemptions)
    originals = sorted({j.base for j in result.jobs.values()})
    counts = [float(per_workload.get(b, 0)) for b in originals]
    hit = [float(n) for n in per_workload.values()]
    times: dict[str, list[float]] = {}
    for p in result.preemptions:
        times.setdefault(result.jobs[p.victim].base, []).append(p.t)
    in_an_hour = 0
    over_cap = 0
    cap = result.rules.notices_per_hour
    for ts in times.values():
        ts.sort()
        lo = 0
        peak = 0
        for hi, t in enumerate(ts):
            while t - ts[lo] >= 3600.0:
                lo += 1
            peak = max(peak, hi - lo + 1)
        in_an_hour = max(in_an_hour, peak)
        over_cap += peak > cap
    # Victims noticed sooner than the minimum run after their (re)start.
    early = [p for p in result.preemptions if p.t - (result.jobs[p.victim].start_s or 0.0) < result.rules.min_run_s]
    per_preemptor = Counter(p.preemptor for p in result.preemptions)
    passes = _passes_by_preemptor(result.preemptions)
    chains = workload_chains(result)
    most = []
    for base, n in sorted(per_workload.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
        chain = chains[base]
        last = chain[-1]
        most.append(
            {
                "id": base,
                "class": chain[0].priority.value,
                "gpus": chain[0].gpus,
                "notices": n,
                "work_h": round(chain[0].duration_s / 3600, 2),
                "submitted_to_done_h": None
                if not last.completed or last.end_s is None
                else round((last.end_s - chain[0].submit_s) / 3600, 2),
                "lost_h": round(sum(j.lost_s for j in chain) / 3600, 2),
            }
        )
    return {
        "per_workload": {k: v for k, v in dist(counts).items() if k != "mean"},
        "per_preempted_workload": {k: v for k, v in dist(hit).items() if k != "mean"},
        "workloads_preempted": len(per_workload),
        "workloads_preempted_more_than_twice": sum(1 for n in per_workload.values() if n > 2),
        "most_notices_to_one_workload_in_an_hour": in_an_hour,
        "notices_per_hour_cap": cap,
        "workloads_over_the_notice_cap": over_cap,
        "min_run_s": result.rules.min_run_s,
        "notices_before_min_run": len(early),
        "notices_before_min_run_for_reserved": sum(1 for p in early if p.preemptor_class == "reserved"),
        "notices_per_preemptor_max": max(per_preemptor.values(), default=0),
        "passes_with_notices_per_preemptor_max": max((len(ts) for ts in passes.values()), default=0),
        "most_preempted": most,
    }


def _used_by_preemptor(result: ReplayResult, p: PreemptionRecord) -> bool:
    victim, preemptor = result.jobs[p.victim], result.jobs[p.preemptor]
    return bool({g for _, g in victim.placed} & {g for _, g in preemptor.placed})


def _passes_by_preemptor(pre: Sequence[PreemptionRecord]) -> dict[str, set[float]]:
    out: dict[str, set[float]] = {}
    for p in pre:
        out.setdefault(p.preemptor, set()).add(p.t)
    return out


def _violation(j: Job) -> dict[str, Any]:
    return {
        "id": j.id,
        "gpus": j.gpus,
        "nvlink": j.nvlink.value,
        "submitted_s": j.submit_s,
        "eligible_s": j.eligible_s,
        "started_s": j.start_s,
        "waited_s": None if j.start_s is None or j.eligible_s is None else j.start_s - j.eligible_s,
        "capacity_by_preemption": j.capacity_by_preemption,
        "reasons": j.reasons_while_eligible[:3],
    }


def _reason_kind(reason: str) -> str:
    return reason.split(":")[0] if reason else "(none)"


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _frac_stats(xs: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": _r(_mean(xs), 4),
        "p50": _r(percentile(xs, 50), 4),
        "p95": _r(percentile(xs, 95), 4),
        "max": _r(max(xs), 4) if xs else None,
    }


# -- report --------------------------------------------------------------------------------------


def markdown(out: dict[str, Any]) -> str:
    cols = [c for c in out["columns"] if c in out]
    ms = [out[c] for c in cols]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> str:
        return f"| {label} | " + " | ".join(_fmt(get(m)) for m in ms) + " |"

    def triple(get: Callable[[dict[str, Any]], dict[str, Any] | None]) -> Callable[[dict[str, Any]], str]:
        def f(m: dict[str, Any]) -> str:
            d = get(m) or {}
            return " / ".join(_fmt(d.get(k)) for k in ("p50", "p99", "max"))

        return f

    buckets = [b[0] for b in size_buckets(out.get("gang_sizes", []))]
    lines = [
        f"# Day replay on `{out['site']}` ({out['gpus']:,} GPUs, {out['cap_mw']:g} MW cap): `{out['workloads_file']}`",
        "",
        f"{out['workloads']:,} workloads ({out['offered_over_fleet']:.2f}x the fleet's GPU-hours over the day), "
        f"simulated time, passes on a {out['rules']['pass_interval_s']:g} s tick, spot/on_demand grace "
        f"{out['rules']['stop_grace_s']:g} s; preempted work loses what it did since its last checkpoint and is "
        "resubmitted with the rest; figures over the day [0, 24 h) from a cold start. Written by "
        "`bench/replay_day.py`; rules in its docstring and in the JSON beside this file.",
        "",
        "| | " + " | ".join(TITLES[c] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
        row("GPU allocation, allocated / available GPU-hours", lambda m: m["utilisation"]["allocated_share"]),
        row("goodput: useful / available GPU-hours", lambda m: m["utilisation"]["goodput_share"]),
        row("GPU-hours lost to preemption (day)", lambda m: m["goodput"]["lost_day_gpu_hours"]),
        row("  of allocation, not in preemption grace", lambda m: m["utilisation"]["useful_share"]),
        row("  weighted by mean GPU utilisation", lambda m: m["utilisation"]["compute_weighted_share"]),
        row("ceiling: share had every workload started at submission", lambda m: m["utilisation"]["no_wait_share"]),
    ]
    for cls in ("reserved", "on_demand", "spot"):
        lines.append(row(f"wait {cls}, every requeue: p50 / p99 / max (s)", triple(_total_wait(cls))))
        lines += [row(f"  {cls} gangs of {b} GPUs", triple(_total_wait(cls, b))) for b in buckets]
    lines += [row(f"wait, all classes, gangs of {b}: p50 / p99 / max (s)", triple(_total_wait("", b))) for b in buckets]
    lines += [
        row(
            "workloads never started / still waiting at the end (reserved / on_demand / spot)",
            lambda m: " / ".join(
                str(m["waits_s"][c]["still_waiting_at_end"]) for c in ("reserved", "on_demand", "spot")
            ),
        ),
        row(
            "first-submission wait on_demand p50 / p99 / max (s)",
            triple(lambda m: m["waits_s"]["on_demand"]["first_submission"]),
        ),
        row("submissions given a planned start", lambda m: m["planned_starts"]["planned"]),
        row(
            "planned-start error, actual - first planned: p50 / p99 / max (s)",
            triple(lambda m: m["planned_starts"]["error_s"]),
        ),
        row(
            "  share started by its planned start (+ one tick)",
            lambda m: m["planned_starts"]["share_started_by_planned_start"],
        ),
        row(
            "  late / of which with no higher-class arrival since planned",
            lambda m: f"{m['planned_starts']['late']} / {m['planned_starts']['late_with_no_higher_class_arrival']}",
        ),
        row(
            "  of which not moved behind a larger gang of its class (large gangs first)",
            lambda m: m["planned_starts"].get("late_with_no_higher_rank_work", "—"),
        ),
        row(
            "preemption notices (victims spot / on_demand)",
            lambda m: (
                f"{m['preemptions']['total']} ("
                f"{m['preemptions']['by_victim_class'].get('spot', 0)} / "
                f"{m['preemptions']['by_victim_class'].get('on_demand', 0)})"
            ),
        ),
        row("preemptions per workload p50 / p99 / max", triple(lambda m: m["preemptions"]["per_workload"])),
        row("  per preempted workload p50 / p99 / max", triple(lambda m: m["preemptions"]["per_preempted_workload"])),
        row(
            "  workloads preempted / more than twice",
            lambda m: (
                f"{m['preemptions']['workloads_preempted']} / {m['preemptions']['workloads_preempted_more_than_twice']}"
            ),
        ),
        row(
            "  most notices to one workload in an hour",
            lambda m: m["preemptions"]["most_notices_to_one_workload_in_an_hour"],
        ),
        row(
            "  workloads over the notice cap (per hour, PlanningRules)",
            lambda m: (
                f"{m['preemptions']['workloads_over_the_notice_cap']} (cap {m['preemptions']['notices_per_hour_cap']})"
            ),
        ),
        row(
            "  notices before the minimum run (all / for reserved)",
            lambda m: (
                f"{m['preemptions']['notices_before_min_run']} / "
                f"{m['preemptions']['notices_before_min_run_for_reserved']} (min {m['preemptions']['min_run_s']:g} s)"
            ),
        ),
        row(
            "notices per preemptor, max / preemptors noticing in > 1 pass",
            lambda m: " / ".join(
                _fmt(m["preemptions"][k])
                for k in ("notices_per_preemptor_max", "preemptors_noticing_more_than_one_pass")
            ),
        ),
        row(
            "preemptors reserved / on_demand / spot",
            lambda m: " / ".join(
                str(m["preemptions"]["by_preemptor_class"].get(c, 0)) for c in ("reserved", "on_demand", "spot")
            ),
        ),
        row(
            "preemptions whose victim's GPUs went to their preemptor",
            lambda m: m["preemptions"]["victim_gpus_used_by_their_preemptor"],
        ),
        row("free GPUs (mean of 5-min samples)", lambda m: m["fragmentation"]["mean_free_gpus"]),
        row("free GPUs outside whole nodes (mean)", lambda m: m["fragmentation"]["outside_whole_nodes"]["mean"]),
        row("free GPUs outside whole domains (mean)", lambda m: m["fragmentation"]["outside_whole_domains"]["mean"]),
        row("whole free domains (mean)", lambda m: m["fragmentation"]["whole_free_domains"]["mean"]),
        row("largest free block (mean)", lambda m: m["fragmentation"]["largest_free_block"]["mean"]),
        row(
            "5-min samples with >= 72 free but no whole domain",
            lambda m: m["fragmentation"]["samples_72_free_but_no_whole_domain"],
        ),
        row("GPU energy, planned (MWh)", lambda m: m["energy"]["gpu_planned_mwh"]),
        row("mining energy (MWh)", lambda m: m["energy"]["mining_mwh"]),
        row(
            "peak planned site draw (MW) vs cap",
            lambda m: f"{m['energy']['peak_site_planned_mw']:.3f} / {m['energy']['cap_mw']:g}",
        ),
        row("peak planned GPU draw (MW)", lambda m: m["energy"]["peak_gpu_planned_mw"]),
        row(
            "acme-ai within-reservation requests", lambda m: m["reservation"]["acme-ai"]["requests_within_reservation"]
        ),
        row(
            "acme-ai wait from eligible p99 / max (s)",
            lambda m: " / ".join(_fmt(m["reservation"]["acme-ai"]["wait_from_eligible_s"][k]) for k in ("p99", "max")),
        ),
        row(
            "acme-ai guarantee violations (bound: grace + 1 pass)", lambda m: m["reservation"]["acme-ai"]["violations"]
        ),
        row(
            "acme-ai pending while below 1,024: episodes, p99 / max (s)",
            lambda m: (
                f"{m['reservation']['acme-ai']['pending_while_below_reservation']['episodes']}, "
                f"{_fmt(m['reservation']['acme-ai']['pending_while_below_reservation']['p99_s'])} / "
                f"{_fmt(m['reservation']['acme-ai']['pending_while_below_reservation']['max_s'])}"
            ),
        ),
        row("invariant violations (double booking, shape, rights, cap)", lambda m: m["violation_count"]),
        row("last release (h)", lambda m: m["finished"]["last_release_h"]),
        row("scheduling passes", lambda m: m["passes"]),
        row("replay wall time (s)", lambda m: m["wall_s"]),
    ]
    lines += [
        "",
        f"Whole run: {len(out.get('days_in_the_run') or [1])} day(s) x {len(cols)} columns in "
        f"{out.get('wall_s_all_days_and_columns', '-')} s wall with {out.get('parallel_jobs', 1)} process(es) "
        "on this project's 2-core machine (shared: wall times move with the machine's other load).",
    ]
    checks = targets(out)
    if checks:
        lines += ["", "Targets of issue 10, the new core against today's core on this day:", ""]
        lines += [f"- {'met' if ok else 'NOT met'}: {what}" for what, ok in checks]
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in out.get("notes", [])]
    for c, m in zip(cols, ms, strict=True):
        details = m["reservation"]["acme-ai"]["violation_details"]
        if details:
            lines += ["", f"Reservation guarantee violations ({TITLES[c]}, first {min(len(details), 10)}):", ""]
            lines += [
                f"- {d['id']} ({d['gpus']} GPUs, nvlink {d['nvlink']}): within from t={d['eligible_s']:.0f} s, "
                f"started {_when(d['started_s'])}, "
                f"capacity by preemption: {d['capacity_by_preemption']}; "
                f"{d['reasons'][0] if d['reasons'] else ''}"
                for d in details[:10]
            ]
    return "\n".join(lines) + "\n"


def targets(out: dict[str, Any]) -> list[tuple[str, bool]]:
    """Issue 10's targets, each with whether the new core meets it here (nothing without both cores)."""
    if "core" not in out or "legacy" not in out:
        return []
    new, old = out["core"], out["legacy"]
    checks = []
    for key, label in (("allocated_share", "allocation"), ("goodput_share", "goodput")):
        a, b = new["utilisation"][key], old["utilisation"][key]
        checks.append((f"{label} not below today's core ({_fmt(a)} vs {_fmt(b)})", a >= b))
    od = new["waits_s"]["on_demand"]["total_by_gang_size"]
    for b in ("33-72", ">72"):
        if b in od:
            p50 = od[b]["p50"]
            checks.append((f"on_demand gangs of {b} GPUs wait under 1 h at the median ({_fmt(p50)} s)", p50 < 3600))
    pre = new["preemptions"]
    checks += [
        (f"preemptions per workload p99 <= 2 ({_fmt(pre['per_workload']['p99'])})", pre["per_workload"]["p99"] <= 2),
        (
            f"one round of notices per preemptor ({pre['preemptors_noticing_more_than_one_pass']} preemptors "
            "noticed in more than one pass)",
            pre["preemptors_noticing_more_than_one_pass"] == 0,
        ),
        (
            f"no workload above the notice cap ({pre['workloads_over_the_notice_cap']} above "
            f"{pre['notices_per_hour_cap']} an hour)",
            pre["workloads_over_the_notice_cap"] == 0,
        ),
    ]
    for tenant, r in new["reservation"].items():
        was = old["reservation"][tenant]["violations"]
        checks.append(
            (
                f"{tenant}'s reservation guarantee held ({r['violations']} violations; today's core {was})",
                not r["violations"],
            )
        )
    ps = new["planned_starts"]
    if ps["planned"]:
        share, late = ps["share_started_by_planned_start"], ps["late_with_no_higher_rank_work"]
        checks.append(
            (
                f"planned starts met unless higher-ranked work arrived: a higher class, or a gang larger than "
                f"{out['rules'].get('large_gang_gpus', '?')} GPUs of its class that moved the plan ({late} late "
                f"with neither; {ps['late_with_no_higher_class_arrival']} counting classes alone; "
                f"{_fmt(share)} of {ps['planned']} started by their planned start)",
                late == 0,
            )
        )
    return checks


def notes(out: dict[str, Any]) -> list[str]:
    cols = [c for c in out["columns"] if c in out]
    lines = [
        "Waits are from (re)submission to the pass that placed the work, summed over a workload's "
        "submissions (every requeue after a preemption counted); passes run on a 2 s tick, so up to 2 s of "
        "every wait is tick alignment. Workloads still waiting at the end are counted apart, not in the "
        "percentiles.",
        "Goodput counts completed work and a cut attempt's run up to its last checkpoint; the rest of a "
        "cut attempt's run, grace included, is lost. Declared limits (max duration, checkpoint interval) "
        "are the file's or, for the scenario day, the rule in controlplane/scenarios/limits.py.",
        "The planned-start error is over submissions the core gave a plan (first fit and today's core give "
        "none); a start within one pass tick after the planned start counts as on time.",
    ]
    if "legacy" in cols and out.get("legacy_is_default"):
        lines.append(
            "Today's core and the new core ran the same profile: framework.LEGACY_PROFILE is the branch's "
            "local stand-in (= DEFAULT_PROFILE) until the lead's profile lands, so their columns are the same."
        )
    if "first_fit" in cols:
        never = out["first_fit"]["never_started_gang_sizes"]
        lines.append(
            f"First fit never started {sum(never.values())} workloads (gang sizes {never}): it looks for an NVLink "
            "gang in one domain only, so a required gang larger than a domain never fits. Its utilisation, waits "
            "and fragmentation are over less work than the cores' (compare the ceiling row)."
        )
    lines.append(
        "Fragmentation shares are over the 5-minute samples with any free GPU; they depend on how full the "
        "fleet is, so the columns are not at the same load."
    )
    for c in cols:
        if c == "first_fit":
            continue
        pre = out[c]["preemptions"]
        worst = pre["most_preempted"][0] if pre["most_preempted"] else None
        lines.append(
            f"{TITLES[c].capitalize()}: {pre['total']} notices for {pre['preemptors']} preemptors; "
            f"{pre['victim_gpus_used_by_their_preemptor']} victims' GPUs went to their own preemptor, "
            f"{pre['preemptors_noticing_more_than_one_pass']} preemptors gave notices in more than one pass."
            + (
                f" Most preempted: {worst['id']} ({worst['class']}, {worst['gpus']} GPUs), {worst['notices']} notices, "
                f"{_fmt(worst['submitted_to_done_h'])} h from submission to done for {worst['work_h']} h of work "
                f"({worst['lost_h']} h of its runs lost)."
                if worst
                else ""
            )
        )
    return lines


def _total_wait(cls: str, bucket: str | None = None) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    """The total-wait distribution of a class (all classes: ""), or of one gang-size bucket of it."""

    def get(m: dict[str, Any]) -> dict[str, Any] | None:
        if not cls:
            assert bucket is not None
            return m["waits_s"]["all_classes_total_by_gang_size"].get(bucket)  # type: ignore[no-any-return]
        w = m["waits_s"][cls]
        return w["total"] if bucket is None else w["total_by_gang_size"].get(bucket)  # type: ignore[no-any-return]

    return get


def _when(t: float | None) -> str:
    return "never" if t is None else f"t={t:.0f} s"


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.4f}" if abs(x) < 1 else f"{x:,.1f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


def replay(spec: dict[str, Any], workloads: Sequence[dict[str, Any]], **kwargs: Any) -> ReplayResult:
    return Replay(spec, workloads, **kwargs).run()


def _column(
    name: Scheduler, spec: dict[str, Any], workloads: Sequence[dict[str, Any]], kwargs: dict[str, Any]
) -> tuple[Scheduler, dict[str, Any], float]:
    res = replay(spec, workloads, scheduler=name, **kwargs)
    return name, metrics(res), res.wall_s


def run_day(
    workloads_file: Path, *, site: str, columns: Sequence[Scheduler], jobs: int, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Every column over one day's workloads: the report's data."""
    return run_days([workloads_file], site=site, columns=columns, jobs=jobs, kwargs=kwargs)[0]


def run_days(
    files: Sequence[Path], *, site: str, columns: Sequence[Scheduler], jobs: int, kwargs: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every column over each day: one report's data per day. With ``jobs`` > 1 the (day, column)
    runs share one pool of processes, the days with more work submitted first."""
    spec = load_site(site)
    days = [(path, load_workloads(path)) for path in files]
    outs = [_day_header(path, spec, site, workloads, columns, jobs, kwargs) for path, workloads in days]
    tasks = [(d, c) for d in sorted(range(len(days)), key=lambda d: -len(days[d][1])) for c in columns]
    t0 = time.perf_counter()
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(min(jobs, len(tasks))) as pool:
            done = pool.starmap(_column, [(c, spec, days[d][1], kwargs) for d, c in tasks])
    else:
        done = [_column(c, spec, days[d][1], kwargs) for d, c in tasks]
    wall = round(time.perf_counter() - t0, 1)
    for (d, _), (name, m, column_wall) in zip(tasks, done, strict=True):
        outs[d][name] = m
        outs[d].setdefault("column_wall_s", {})[name] = round(column_wall, 1)
    for out, (path, _) in zip(outs, days, strict=True):
        out["wall_s_all_days_and_columns"] = wall
        print(f"== {path.name}")
        for name in columns:
            _print_column(name, out[name], out["column_wall_s"][name])
        out["notes"] = notes(out)
    return outs


def _day_header(
    workloads_file: Path,
    spec: dict[str, Any],
    site: str,
    workloads: Sequence[dict[str, Any]],
    columns: Sequence[Scheduler],
    jobs: int,
    kwargs: dict[str, Any],
) -> dict[str, Any]:
    from controlplane.scheduling import framework

    gpus = spec["racks"]["count"] * spec["racks"]["nodes_per_rack"] * spec["racks"]["gpus_per_node"]
    limits = [limits_of(w) for w in workloads]
    out: dict[str, Any] = {
        "bench": "replay_day",
        "site": site,
        "gpus": gpus,
        "cap_mw": spec["grid_capacity_mw"],
        "workloads_file": workloads_file.name,
        "workloads": len(workloads),
        "offered_over_fleet": round(sum(w["gpus"] * w["duration_s"] for w in workloads) / (gpus * DAY_S), 4),
        "gang_sizes": sorted({int(w["gpus"]) for w in workloads}),
        "declared": {
            "from_file": all(w.get("max_duration_s") is not None for w in workloads),
            "with_checkpoints": sum(1 for d in limits if d.checkpoint_interval_s is not None),
            "max_over_duration_mean": round(
                sum(d.max_duration_s / float(w["duration_s"]) for d, w in zip(limits, workloads, strict=True))
                / max(1, len(workloads)),
                3,
            ),
        },
        "columns": list(columns),
        "legacy_is_default": framework.LEGACY_PROFILE == framework.DEFAULT_PROFILE,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "rules": {
            "pass_interval_s": kwargs["pass_interval_s"],
            "passes": "on a fixed tick, at the first tick at or after any event; skipped when nothing happened",
            "stop_grace_s": kwargs["stop_grace_s"],
            "large_gang_gpus": PlanningRules().large_gang_gpus,
            "mining_grace_s": 0.0,
            "preempted_work": "not resubmitted"
            if not kwargs["resubmit"]
            else "loses its run since its last checkpoint; resubmitted at release with the work left after it",
            "declared_limits": "the file's max_duration_s / checkpoint_interval_s, else controlplane.scenarios.limits",
            "plans": "each pass's Unplaced.plan is the workload's WorkloadRequest.plan at the next pass",
            "start": "cold: empty fleet at 00:00; runs until every workload has finished",
            "day_window_h": 24,
            "reservations": RESERVATIONS,
            "share_weights": "1.0 for every tenant",
            "quotas": "none",
            "mining": "starts at the ASIC fleet's full draw; after every pass min(fleet max, cap - planned GPU draw)",
            "guarantee_bound_s": "stop grace + one pass interval from the first pass a request is within its "
            "reservation",
            "fragmentation_sample_s": SAMPLE_S,
        },
    }
    out["parallel_jobs"] = jobs
    out["days_in_the_run"] = [workloads_file.name]  # main names every day of the run
    return out


def _print_column(name: str, m: dict[str, Any], wall: float) -> None:
    u, r, w, pre = m["utilisation"], m["reservation"]["acme-ai"], m["waits_s"], m["preemptions"]
    ps = m["planned_starts"]
    print(
        f"{name:>9}: {wall:.1f} s wall, {m['passes']:,} passes | allocated {u['allocated_share']:.4f} goodput "
        f"{u['goodput_share']:.4f} (lost {u['lost_to_preemption_gpu_hours']} GPU-h) | waits p50/p99/max by size: "
        + " ".join(
            f"{b} " + "/".join(_fmt(d[k]) for k in ("p50", "p99", "max"))
            for b, d in w["all_classes_total_by_gang_size"].items()
        )
    )
    print(
        f"{'':>9}  notices {pre['total']}, per workload p99/max {pre['per_workload']['p99']}/"
        f"{pre['per_workload']['max']}, >2: {pre['workloads_preempted_more_than_twice']}, preemptors in >1 pass "
        f"{pre['preemptors_noticing_more_than_one_pass']} | plans {ps['planned']}, error p50/p99/max "
        + "/".join(_fmt(ps["error_s"][k]) for k in ("p50", "p99", "max"))
        + f" | acme-ai violations {r['violations']} | invariant violations {m['violation_count']}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default=SITE)
    ap.add_argument("--day", choices=(*DAYS, "both"), default="both", help="which day (default: both)")
    ap.add_argument("--workloads", type=Path, default=None, help="another workloads file (its own report name)")
    ap.add_argument("--name", default=None, help="report name for --workloads (default: replay_<file stem>)")
    ap.add_argument("--columns", default=",".join(COLUMNS), help=f"comma-separated, of {', '.join(COLUMNS)}")
    ap.add_argument("--until-s", type=float, default=None, help="stop at this simulated time (default: run dry)")
    ap.add_argument("--pass-interval-s", type=float, default=PASS_INTERVAL_S)
    ap.add_argument("--stop-grace-s", "--spot-grace-s", dest="stop_grace_s", type=float, default=30.0)
    ap.add_argument("--no-resubmit", action="store_true", help="preempted work is not resubmitted")
    ap.add_argument("--jobs", type=int, default=1, help="columns run in this many processes")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render-only", action="store_true", help="rewrite the .md from the .json already in --out")
    args = ap.parse_args()
    columns = tuple(c for c in COLUMNS if c in args.columns.split(","))
    if args.workloads is not None:
        days = [(args.workloads, args.name or f"replay_{args.workloads.stem.replace('-', '_')}")]
    else:
        days = list(DAYS.values()) if args.day == "both" else [DAYS[args.day]]
    kwargs = {
        "pass_interval_s": args.pass_interval_s,
        "stop_grace_s": args.stop_grace_s,
        "until_s": args.until_s,
        "resubmit": not args.no_resubmit,
    }
    if args.render_only:
        for _, name in days:
            out = json.loads((args.out / f"{name}.json").read_text())
            (args.out / f"{name}.md").write_text(markdown(out))
            print(f"rewrote {args.out / name}.md from its JSON")
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outs = run_days([path for path, _ in days], site=args.site, columns=columns, jobs=args.jobs, kwargs=kwargs)
    for out, (_, name) in zip(outs, days, strict=True):
        out["days_in_the_run"] = [p.name for p, _ in days]
        (args.out / f"{name}.json").write_text(json.dumps(out, indent=2, default=_json_default) + "\n")
        (args.out / f"{name}.md").write_text(markdown(out))
        print(f"wrote {args.out / name}.json and .md")
    print(f"{len(days)} days x {len(columns)} columns in {time.perf_counter() - t0:.1f} s wall ({args.jobs} processes)")
    return 0


def _json_default(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return asdict(x)
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
