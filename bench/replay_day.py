"""Replay one day of tenant work on ``site-18mw`` through the scheduling core, in simulated time.

Side by side in the same run: the core (``controlplane.scheduling.core.schedule``: priorities,
preemption, reservations, site and rack power with mining as the block shed first) and the naive
first fit (``controlplane.scheduling.baseline.first_fit``: no preemption, no power awareness; the
replay's shell still gives mining only what the GPUs leave under the cap, as the control plane
does after every commit). Writes bench/results/replay_day.json and bench/results/replay_day.md.

    .venv/bin/python bench/replay_day.py [--until-s 86400] [--pass-interval-s 2] [--spot-grace-s 30]

Rules of the replay (the choices the issue leaves open):

- Time is simulated: a heap of events, no sleeping and no wall clock in the logic (wall time is
  only reported). Events: submissions (``submit_s``), completions (start + ``duration_s``) and
  preemption releases (notice + grace: the snapshot's ``stop_grace_s``, 30 s, for spot and
  on_demand victims; mining would be 0 s, but mining here is the ASIC block, not GPU work).
- Scheduling passes run on a fixed 2 s tick, and only when something happened since the last
  one: every event at time t is applied at t, and a pass runs at the first tick at or after t
  (so events up to 2 s apart are batched, as a scheduler loop with a 2 s debounce would). A pass
  with nothing new would repeat the last one's decisions exactly (the core is a pure function of
  its snapshot), so it is skipped.
- The fleet starts empty at 00:00 (a cold start, no carry-over from the day before); the replay
  runs until every workload has finished, and the day's figures (utilisation, energy,
  fragmentation) are taken over [0, 24 h).
- Preemption: a victim gets its notice at the pass, keeps its GPUs (and their planned power)
  through its grace, and frees them at notice + grace, unless it finishes on its own first (then
  it simply completes). A cut victim is resubmitted by its tenant at the release with the work it
  had left at the notice (the grace is spent checkpointing; the progress up to the notice is
  kept): id ``<id>.r<n>``, same tenant, class, shape, and a fresh submission time (it queues behind
  older work of its class). Its wait after resubmission is reported apart from first waits.
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
- Tenants: ``acme-ai`` has ``reserved_gpus=1024``; no other quotas or budgets.
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
import heapq
import json
import math
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from controlplane.dispatch.budget import mining_target_w
from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.site import SiteSpec
from controlplane.power.model import PowerModel, Tally
from controlplane.scenarios import day_workloads_file, sites_file
from controlplane.scheduling.baseline import first_fit
from controlplane.scheduling.core import schedule
from controlplane.scheduling.fragmentation import fragmentation
from controlplane.scheduling.queue import within_reservation
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    GpuSlot,
    MiningBlock,
    NodeView,
    Placement,
    Preempt,
    RunningWorkload,
    ShedMining,
    TenantPolicy,
    Unplaced,
    WorkloadRequest,
)

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = day_workloads_file()
RESULTS = ROOT / "bench" / "results"
SITE = "site-18mw"
DAY_S = 86_400.0
PASS_INTERVAL_S = 2.0
SAMPLE_S = 300.0
RESERVATIONS = {"acme-ai": 1024}
CLASSES = (PriorityClass.RESERVED, PriorityClass.ON_DEMAND, PriorityClass.SPOT)
EPS_W = 1e-3
SIZE_BUCKETS = (("1-4", 1, 4), ("8-32", 5, 32), ("33-72", 33, 72), ("73+", 73, 1 << 30))

Scheduler = Literal["core", "first_fit"]


# -- inputs --------------------------------------------------------------------------------------


def load_site(name: str = SITE, path: Path | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((path or sites_file()).read_text())[name]
    return spec


def load_workloads(path: Path = WORKLOADS) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
    request: WorkloadRequest
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

    @property
    def state(self) -> str:
        if self.end_s is not None:
            return "completed" if self.completed else "preempted"
        return "pending" if self.start_s is None else "running"


def make_job(w: dict[str, Any], *, job_id: str, attempt: int, duration_s: float, submit_s: float, model: str) -> Job:
    priority = PriorityClass(w["priority"])
    nvlink = NvlinkPolicy(w["nvlink"])
    request = WorkloadRequest(
        workload_id=job_id,
        gpu_count=int(w["gpus"]),
        gpu_model=model,
        nvlink=nvlink,
        priority=priority,
        submitted_at=submit_s,
        tenant_id=w["tenant"],
        max_duration_s=duration_s,
        price_usd_per_gpu_hour=Decimal(str(w.get("price_usd_per_gpu_hour", 0))),
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
    )


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


# -- the replay ----------------------------------------------------------------------------------

SUBMIT, FREE = 0, 1


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
        self.tenants = {t: TenantPolicy(t, reserved_gpus=n) for t, n in self.reservations.items()}
        self.interval = pass_interval_s
        self.grace = stop_grace_s
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
            while self.events and self.events[0][0] <= p:
                t, _, kind, job_id, token = heapq.heappop(self.events)
                self._advance(t)
                if kind == SUBMIT:
                    self.pending[job_id] = self.jobs[job_id]
                else:
                    self._free(self.jobs[job_id], token)
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
        done = t - job.start_s >= job.duration_s - 1e-9
        job.completed = done
        if not done and job.notice_s is not None and self.resubmit:
            left = job.duration_s - (job.notice_s - job.start_s)
            if left > 0:
                w = self.workloads[job.base]
                again = make_job(
                    w,
                    job_id=f"{job.base}.r{job.attempt + 1}",
                    attempt=job.attempt + 1,
                    duration_s=left,
                    submit_s=t,
                    model=self.fleet.model,
                )
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
        )
        if self.pending:
            self.passes += 1
            queue = [j.request for j in self.pending.values()]
            within = within_reservation(queue, snap) if self.reservations else set()
            reserved_at_start = dict(self.reserved_running)
            if self.scheduler == "core":
                decisions: Sequence[Decision] = schedule(snap, queue)
            else:
                decisions = first_fit(snap, queue)
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
                    if job.eligible_s is not None and len(job.reasons_while_eligible) < 8:
                        job.reasons_while_eligible.append(f"t={p:.0f}: {d.reason}")
            if self.scheduler == "core":
                core_site = mining_before - shed + self.gpu_planned_w()
                if core_site > self.power.site_cap_w + EPS_W:
                    self.violations.append(
                        f"t={p:.0f}: the core's pass leaves {core_site / 1e6:.6f} MW planned "
                        f"(mining {mining_before / 1e6:.3f} MW - shed {shed / 1e6:.3f} MW + GPUs), over the cap"
                    )
        self.mining_w = self._mining_target()
        self._record_power()
        self._below_reservation()

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
        self.run_views[job.id] = RunningWorkload(
            workload_id=job.id,
            tenant_id=job.tenant,
            priority=job.priority,
            gpus=gpus,
            started_at=p,
            gpu_model=self.fleet.model,
        )
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
        self.preempting_gpus += victim.gpus
        natural = victim.start_s + victim.duration_s
        release = min(natural, p + d.grace_s)
        self.run_views[victim.id] = RunningWorkload(
            workload_id=victim.id,
            tenant_id=victim.tenant,
            priority=victim.priority,
            gpus=victim.placed,
            started_at=victim.start_s,
            gpu_model=self.fleet.model,
            preempting=True,
        )
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

    waits: dict[str, Any] = {}
    for cls in CLASSES:
        first = [j.start_s - j.submit_s for j in jobs if j.attempt == 0 and j.priority is cls and j.start_s is not None]
        again = [j.start_s - j.submit_s for j in jobs if j.attempt > 0 and j.priority is cls and j.start_s is not None]
        never = sum(1 for j in jobs if j.priority is cls and j.start_s is None)
        by_size: dict[str, Any] = {}
        for label, lo, hi in SIZE_BUCKETS:
            xs = [
                j.start_s - j.submit_s
                for j in jobs
                if j.attempt == 0 and j.priority is cls and j.start_s is not None and lo <= j.gpus <= hi
            ]
            if xs:
                by_size[label] = dist(xs)
        waits[cls.value] = {
            "first_submission": dist(first),
            "resubmitted": dist(again),
            "never_started": never,
            "first_submission_by_gang_size": by_size,
        }

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
            "hourly_allocated_share": hourly,
            "sampled_5min": _frac_stats([s.allocated / result.gpus for s in day]),
        },
        "waits_s": waits,
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
    core, base = out["core"], out["first_fit"]

    def row(label: str, get: Callable[[dict[str, Any]], Any]) -> str:
        return f"| {label} | {_fmt(get(core))} | {_fmt(get(base))} |"

    lines = [
        f"# Day replay on `{out['site']}` ({out['gpus']:,} GPUs, {out['cap_mw']:g} MW cap)",
        "",
        f"{out['workloads']:,} workloads from `day-workloads.jsonl`, simulated time, passes on a "
        f"{out['rules']['pass_interval_s']:g} s tick, spot/on_demand grace {out['rules']['stop_grace_s']:g} s, "
        "preempted work resubmitted with what it had left; figures over the day [0, 24 h) from a cold start. "
        "Written by `bench/replay_day.py`; rules in its docstring and in replay_day.json.",
        "",
        "| | core | first fit |",
        "|---|---:|---:|",
        row("GPU allocation, allocated / available GPU-hours", lambda m: m["utilisation"]["allocated_share"]),
        row("  of which useful (not in preemption grace)", lambda m: m["utilisation"]["useful_share"]),
        row("  weighted by mean GPU utilisation", lambda m: m["utilisation"]["compute_weighted_share"]),
        row("ceiling: share had every workload started at submission", lambda m: m["utilisation"]["no_wait_share"]),
    ]
    for cls in ("reserved", "on_demand", "spot"):
        lines.append(row(f"wait {cls} p50 / p95 / p99 / max (s)", _waits_of(cls)))
    lines += [
        row(
            "wait of gangs > 72 GPUs: on_demand p50 / max (s)",
            lambda m: " / ".join(
                _fmt(m["waits_s"]["on_demand"]["first_submission_by_gang_size"].get("73+", {}).get(k))
                for k in ("p50", "max")
            ),
        ),
        row(
            "never started (reserved / on_demand / spot)",
            lambda m: " / ".join(str(m["waits_s"][c]["never_started"]) for c in ("reserved", "on_demand", "spot")),
        ),
        row(
            "resubmitted after preemption: wait p50 / max (s)",
            lambda m: " / ".join(_fmt(_merge_resub(m)[k]) for k in ("p50", "max")),
        ),
        row(
            "preemptions (victims spot / on_demand)",
            lambda m: (
                f"{m['preemptions']['total']} ("
                f"{m['preemptions']['by_victim_class'].get('spot', 0)} / "
                f"{m['preemptions']['by_victim_class'].get('on_demand', 0)})"
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
        row("scheduling passes", lambda m: m["passes"]),
        row("replay wall time (s)", lambda m: m["wall_s"]),
    ]
    lines += ["", "Notes:", ""]
    lines += [f"- {note}" for note in out.get("notes", [])]
    for name, m in (("core", core), ("first fit", base)):
        details = m["reservation"]["acme-ai"]["violation_details"]
        if details:
            lines += ["", f"Reservation guarantee violations ({name}, first {len(details)}):", ""]
            lines += [
                f"- {d['id']} ({d['gpus']} GPUs, nvlink {d['nvlink']}): within from t={d['eligible_s']:.0f} s, "
                f"started {_when(d['started_s'])}, "
                f"capacity by preemption: {d['capacity_by_preemption']}; "
                f"{d['reasons'][0] if d['reasons'] else ''}"
                for d in details[:10]
            ]
    return "\n".join(lines) + "\n"


def notes(out: dict[str, Any]) -> list[str]:
    core, base = out["core"], out["first_fit"]
    never = base["never_started_gang_sizes"]
    pre = core["preemptions"]
    return [
        "Waits are from submission to the pass that placed the work; passes run on a 2 s tick, so up to "
        "2 s of every wait is tick alignment.",
        f"First fit never started {sum(never.values())} workloads (gang sizes {never}): it looks for an NVLink "
        "gang in one domain only, so a required gang larger than a domain never fits. Its utilisation, waits "
        "and fragmentation are over less work than the core's (compare the ceiling row).",
        "Fragmentation shares are over the 5-minute samples with any free GPU; they depend on how full the "
        "fleet is, so the two columns are not at the same load.",
        f"Core preemptions: {pre['total']} notices for {pre['preemptors']} preemptors; "
        f"{pre['victim_gpus_used_by_their_preemptor']} victims' GPUs went to their own preemptor, "
        f"{pre['preemptors_noticing_more_than_one_pass']} preemptors gave notices in more than one pass (GPUs "
        "being freed for one request are re-decided each pass in queue order, so an older or higher-class "
        "request can take them).",
        "NVLink-required gangs larger than one domain (144 GPUs) preempt across whole domains, like any gang.",
    ]


def _waits_of(cls: str) -> Callable[[dict[str, Any]], str]:
    def get(m: dict[str, Any]) -> str:
        first = m["waits_s"][cls]["first_submission"]
        return " / ".join(_fmt(first[k]) for k in ("p50", "p95", "p99", "max"))

    return get


def _when(t: float | None) -> str:
    return "never" if t is None else f"t={t:.0f} s"


def _merge_resub(m: dict[str, Any]) -> dict[str, Any]:
    vals = [m["waits_s"][c]["resubmitted"] for c in ("reserved", "on_demand", "spot")]
    vals = [v for v in vals if v["n"]]
    if not vals:
        return {"p50": None, "max": None}
    return {"p50": max(v["p50"] for v in vals), "max": max(v["max"] for v in vals)}


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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--site", default=SITE)
    ap.add_argument("--workloads", type=Path, default=WORKLOADS)
    ap.add_argument("--until-s", type=float, default=None, help="stop at this simulated time (default: run dry)")
    ap.add_argument("--pass-interval-s", type=float, default=PASS_INTERVAL_S)
    ap.add_argument("--spot-grace-s", type=float, default=30.0)
    ap.add_argument("--no-resubmit", action="store_true", help="preempted work is not resubmitted")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    spec = load_site(args.site)
    workloads = load_workloads(args.workloads)
    out: dict[str, Any] = {
        "bench": "replay_day",
        "site": args.site,
        "gpus": spec["racks"]["count"] * spec["racks"]["nodes_per_rack"] * spec["racks"]["gpus_per_node"],
        "cap_mw": spec["grid_capacity_mw"],
        "workloads": len(workloads),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "rules": {
            "pass_interval_s": args.pass_interval_s,
            "passes": "on a fixed tick, at the first tick at or after any event; skipped when nothing happened",
            "stop_grace_s": args.stop_grace_s,
            "mining_grace_s": 0.0,
            "preempted_work": "not resubmitted"
            if args.no_resubmit
            else ("resubmitted at release with the work left at the notice (grace spent checkpointing)"),
            "start": "cold: empty fleet at 00:00; runs until every workload has finished",
            "day_window_h": 24,
            "reservations": RESERVATIONS,
            "quotas": "none",
            "mining": "starts at the ASIC fleet's full draw; after every pass min(fleet max, cap - planned GPU draw)",
            "guarantee_bound_s": "spot grace + one pass interval from the first pass a request is within its "
            "reservation",
            "fragmentation_sample_s": SAMPLE_S,
        },
    }
    names: tuple[Scheduler, ...] = ("core", "first_fit")
    for name in names:
        res = replay(
            spec,
            workloads,
            scheduler=name,
            pass_interval_s=args.pass_interval_s,
            stop_grace_s=args.stop_grace_s,
            until_s=args.until_s,
            resubmit=not args.no_resubmit,
        )
        m = metrics(res)
        out[name] = m
        u, e, r = m["utilisation"], m["energy"], m["reservation"]["acme-ai"]
        w = m["waits_s"]
        print(
            f"{name:>9}: {res.wall_s:.1f} s wall, {m['passes']:,} passes | allocated {u['allocated_share']:.4f} "
            f"(useful {u['useful_share']:.4f}, offered {u['offered_gpu_hours'] / u['available_gpu_hours']:.4f}) | "
            + " ".join(
                f"{c} p50/p95/p99/max "
                + "/".join(_fmt(w[c]["first_submission"][k]) for k in ("p50", "p95", "p99", "max"))
                for c in ("reserved", "on_demand", "spot")
            )
        )
        print(
            f"{'':>9}  preemptions {m['preemptions']['total']} by victim {m['preemptions']['by_victim_class']} "
            f"by preemptor {m['preemptions']['by_preemptor_class']} | frag outside nodes "
            f"{m['fragmentation']['outside_whole_nodes']['mean']} domains "
            f"{m['fragmentation']['outside_whole_domains']['mean']} whole doms "
            f"{m['fragmentation']['whole_free_domains']['mean']} largest {m['fragmentation']['largest_free_block']}"
        )
        print(
            f"{'':>9}  GPU {e['gpu_planned_mwh']} MWh, mining {e['mining_mwh']} MWh, peak {e['peak_site_planned_mw']} "
            f"MW / cap {e['cap_mw']} | acme-ai within {r['requests_within_reservation']}, wait p99/max "
            f"{r['wait_from_eligible_s']['p99']}/{r['wait_from_eligible_s']['max']} s, violations {r['violations']} "
            f"| invariant violations {m['violation_count']}"
        )
    out["notes"] = notes(out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "replay_day.json").write_text(json.dumps(out, indent=2, default=_json_default) + "\n")
    (args.out / "replay_day.md").write_text(markdown(out))
    print(f"wrote {args.out / 'replay_day.json'} and replay_day.md")
    return 0


def _json_default(x: Any) -> Any:
    if hasattr(x, "__dataclass_fields__"):
        return asdict(x)
    raise TypeError(type(x).__name__)


if __name__ == "__main__":
    raise SystemExit(main())
