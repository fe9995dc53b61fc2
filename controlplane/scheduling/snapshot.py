"""The immutable fleet snapshot, the queue and the decisions of the placement core: plain data, no I/O.

Everything the core knows comes in here, time included (``FleetSnapshot.now``), so a pass is a pure
function of its inputs and a replay gives the same decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from controlplane.domain.enums import NvlinkPolicy, OverQuotaPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.power.model import PowerModel


@dataclass(frozen=True, slots=True)
class GpuSlot:
    gpu_id: str
    index: int
    model: str
    healthy: bool
    allocated: bool


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    # "<clusterUuid>.<cliqueId>" when the node's fabric is complete; None: no NVLink domain.
    domain: str | None
    # Why the node admits no new work ("cordoned", "draining", "unreachable"), or "" if it does.
    unschedulable: str
    gpus: tuple[GpuSlot, ...]
    # A GPU of this node's NVLink domain asked to drain its NVLink peers (recovery action 3/5):
    # no new multi-GPU NVLink work here until it clears.
    nvlink_draining: bool = False
    # The rack whose power cap the node draws from; None: the node's NVLink domain is its rack
    # (one NVL72 rack is one domain), and a node with neither answers to the site cap only.
    rack_id: str | None = None


@dataclass(frozen=True, slots=True)
class RunningWorkload:
    """Admitted work holding GPUs: the preemption candidates and the quota/reservation usage."""

    workload_id: str
    tenant_id: str
    priority: PriorityClass
    gpus: tuple[tuple[str, str], ...]  # (node_id, gpu_id)
    started_at: float
    gpu_model: str
    # Already under a preemption notice: its GPUs free soon; never preempted a second time.
    preempting: bool = False
    # Under notice for this preemptor: the GPUs it frees are claimed by it, no one else's.
    claimed_for: str = ""
    # When it must have ended: started_at + its max duration (enforced); None: no bound known.
    ends_by: float | None = None
    # Times this work was preempted before (across its requeues) and when its notices fell.
    preemptions: int = 0
    noticed_at: tuple[float, ...] = ()
    # Declared checkpoint interval: a preemption loses the work since the last checkpoint
    # (all of it since started_at when None).
    checkpoint_interval_s: float | None = None
    price_usd_per_gpu_hour: Decimal = Decimal(0)

    @property
    def gpu_count(self) -> int:
        return len(self.gpus)


@dataclass(frozen=True, slots=True)
class MiningBlock:
    """The ASIC fleet as one preemptible block of planned draw: shed first, never below ``min_w``."""

    power_w: float
    min_w: float = 0.0


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    tenant_id: str
    reserved_gpus: int = 0
    max_gpus: int | None = None
    gpu_hours_limit: float | None = None  # per calendar month
    gpu_hours_used: float = 0.0
    spend_cap_usd: Decimal | None = None
    spend_used_usd: Decimal = Decimal(0)
    # What an over-quota workload gets: refused at submission, or held pending with the reason.
    over_quota: OverQuotaPolicy = OverQuotaPolicy.HOLD
    # Fair share among tenants of one class: capacity in proportion to this weight (> 0).
    share_weight: float = 1.0


@dataclass(frozen=True, slots=True)
class PlanningRules:
    """The site's rules for planned starts, claims and preemption churn."""

    # Blocked requests given a new planned start per pass (in queue order); plans made in
    # earlier passes are kept on top of these. Each new plan searches every NVLink domain.
    max_plans: int = 8
    # A workload that (re)started less than this ago is not a victim (no thrash).
    min_run_s: float = 600.0
    # At most this many preemption notices per workload per hour.
    notices_per_hour: int = 2
    # A workload preempted this many times runs to its end unless reserved work within its
    # reservation needs the GPUs (the contract overrides churn limits).
    max_preemptions: int = 2
    # Planned gangs of more GPUs than this (one GB300 NVL72 domain) come first among their
    # class's plans and plan as if its smaller plans gave way (Slurm's job-size priority): they
    # need whole domains at once, which the windows of smaller plans, as long as their max
    # durations, keep out of reach for hours on a sold-out site. The smaller plans they overlap
    # are planned again after them. 0: no such priority.
    large_gang_gpus: int = 72


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    nodes: tuple[NodeView, ...]
    running: tuple[RunningWorkload, ...] = ()
    tenants: Mapping[str, TenantPolicy] = field(default_factory=dict)
    power: PowerModel | None = None
    mining: MiningBlock | None = None
    now: float = 0.0
    stop_grace_s: float = 30.0
    rules: PlanningRules = field(default_factory=PlanningRules)


@dataclass(frozen=True, slots=True)
class WorkloadRequest:
    workload_id: str
    gpu_count: int
    gpu_model: str
    nvlink: NvlinkPolicy
    priority: PriorityClass
    submitted_at: float
    tenant_id: str = ""
    max_duration_s: float | None = None
    price_usd_per_gpu_hour: Decimal = Decimal(0)
    # The planned start an earlier pass gave it (kept across passes), or None.
    plan: PlannedStart | None = None
    # Times the workload was preempted before (a resubmission carries its history): one that has
    # reached ``PlanningRules.max_preemptions`` is no victim, so it never fills a plan's gap.
    preemptions: int = 0


@dataclass(frozen=True, slots=True)
class PlannedStart:
    """When a blocked request is expected to start, and the NVLink domains held for it."""

    start_at: float
    domains: tuple[str, ...] = ()
    # The first planned start it was given (the planned-start error is measured against it).
    first_start_at: float | None = None
    # When it was first planned: planned requests of a class are decided in this order, so a
    # plan made later never takes what an earlier one counts on.
    planned_at: float | None = None
    # Later than its plan of the last pass because a gang larger than ``rules.large_gang_gpus``
    # of its class planned first and took part of its window (``core.SchedulingPass.decide_large``).
    gave_way: bool = False


@dataclass(frozen=True, slots=True)
class RankPlacement:
    node_id: str
    gpu_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Placement:
    workload_id: str
    # One entry per node; the list index is the rank.
    ranks: tuple[RankPlacement, ...]

    @property
    def gpu_count(self) -> int:
        return sum(len(r.gpu_ids) for r in self.ranks)


@dataclass(frozen=True, slots=True)
class Unplaced:
    workload_id: str
    reason: str
    code: PendingCode
    # Its planned start (shown to the tenant as expected_start_at), or None: no plan.
    plan: PlannedStart | None = None

    @classmethod
    def because(cls, workload_id: str, why: PendingReason) -> Unplaced:
        return cls(workload_id, why.text, why.code)


@dataclass(frozen=True, slots=True)
class Preempt:
    """Give ``victim_id`` its notice: it must release its GPUs within ``grace_s`` (0: at once)."""

    victim_id: str
    for_workload_id: str
    reason: str
    grace_s: float
    gpu_count: int


@dataclass(frozen=True, slots=True)
class ShedMining:
    """Lower the ASIC fleet's planned draw by ``watts`` before ``for_workload_id`` starts."""

    watts: float
    for_workload_id: str
    reason: str


Decision = Placement | Unplaced | Preempt | ShedMining
