"""Preemption candidates per GPU model: running work that may be displaced, work already under
notice (its GPUs free soon), and where in the NVLink fabric each would free GPUs.

GPUs of running work already under notice (``preempting``) count as freeing soon: a request that
fits with them waits for them and preempts nothing more, and no workload is preempted twice.
With sticky claims, GPUs being freed for a preemptor still in the queue are that preemptor's
alone (``claims``): no other request counts them, so the same request never needs a second round
of notices. With churn limits, work that (re)started less than ``rules.min_run_s`` ago or had
``rules.notices_per_hour`` notices in the last hour is no victim, and victim sets are compared by
the work they would lose (``churn_key``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from controlplane.domain.enums import PRIORITY_RANK, PriorityClass
from controlplane.scheduling.index import Fleet, ModelPool
from controlplane.scheduling.preemption.policy import _CLASS_WEIGHT
from controlplane.scheduling.snapshot import FleetSnapshot, GpuSlot, NodeView, RunningWorkload

# What restarting costs a preempted workload beyond its lost progress, per GPU (scheduling,
# image pull, model load, NCCL warm-up): charged so a fresh large job is not a free victim.
RESTART_S = 300.0


@dataclass(slots=True, eq=False)
class Victim:
    run: RunningWorkload
    useful_by_dom: dict[int, int]  # GPUs that would become usable in each usable NVLink domain
    useful: int  # usable anywhere
    taken: bool = False
    lost: float = 0.0  # GPU-seconds a preemption now would lose (progress since its checkpoint + restart)

    @property
    def cost(self) -> int:
        return self.run.gpu_count


@dataclass(slots=True)
class ModelPreemption:
    soon_by_dom: dict[int, int] = field(default_factory=dict)
    soon_total: int = 0
    victims: list[Victim] = field(default_factory=list)  # sorted: fewest GPUs, lowest class, youngest
    by_dom: dict[int, list[Victim]] = field(default_factory=dict)
    # Useful GPUs of untaken victims, per class: per domain and anywhere (bounds that prune the search).
    pre_by_dom: dict[int, dict[PriorityClass, int]] = field(default_factory=dict)
    pre_total: dict[PriorityClass, int] = field(default_factory=dict)
    doms: list[int] = field(default_factory=list)  # domains with GPUs being freed or victims
    # Per domain, useful GPUs of untaken victims a given set of rights may preempt (built on first use).
    rights_arr: dict[frozenset[PriorityClass], list[int]] = field(default_factory=dict)
    # GPUs being freed for a preemptor (sticky claims): per preemptor, per domain, and in all.
    claims: dict[str, dict[int, int]] = field(default_factory=dict)
    claims_total: dict[str, int] = field(default_factory=dict)
    # Victims protected by the churn limits: out of reach (``taken``, uncounted) except to a
    # request with a contractual right (reserved work within its reservation: ``revealed``).
    protected: list[Victim] = field(default_factory=list)
    key: Callable[[list[Victim]], tuple[float, ...]] = field(default=lambda vs: _size_key(vs))

    @contextmanager
    def claimed_by(self, workload_id: str) -> Iterator[None]:
        """While deciding ``workload_id``: the GPUs being freed for it count as freeing soon."""
        mine = self.claims.pop(workload_id, None)
        if mine is None:
            yield
            return
        total = self.claims_total.pop(workload_id)
        before_total = self.soon_total
        before = {d: self.soon_by_dom.get(d, 0) for d in mine}
        self.soon_total += total
        for d, x in mine.items():
            self.soon_by_dom[d] = before[d] + x
        if set(mine) - set(self.doms):
            self.doms = sorted(set(self.doms) | set(mine))
        try:
            yield
        finally:
            # It uses its own claim first; what it leaves of it is nobody else's either.
            self.soon_total = min(self.soon_total, before_total)
            for d in mine:
                self.soon_by_dom[d] = min(self.soon_by_dom[d], before[d])

    def count(self, v: Victim, sign: int) -> None:
        cls = v.run.priority
        self.pre_total[cls] = self.pre_total.get(cls, 0) + sign * v.useful
        for d, x in v.useful_by_dom.items():
            per = self.pre_by_dom.setdefault(d, {})
            per[cls] = per.get(cls, 0) + sign * x
            for rights, arr in self.rights_arr.items():
                if cls in rights:
                    arr[d] += sign * x

    @contextmanager
    def revealed(self, active: bool) -> Iterator[None]:
        """While deciding a request whose right overrides the churn limits: protected victims
        are candidates. Those it chose stay taken; the others are hidden again."""
        shown = [v for v in self.protected if v.taken] if active else []
        for v in shown:
            v.taken = False
            self.count(v, +1)
        try:
            yield
        finally:
            for v in shown:
                if v.taken:  # chosen: claim() took it and its counts
                    self.protected.remove(v)
                else:
                    v.taken = True
                    self.count(v, -1)

    def by_rights(self, rights: frozenset[PriorityClass], n_doms: int) -> list[int]:
        arr = self.rights_arr.get(rights)
        if arr is None:
            arr = [0] * n_doms
            for d, per in self.pre_by_dom.items():
                arr[d] = sum(per.get(cls, 0) for cls in rights)
            self.rights_arr[rights] = arr
        return arr

    def preemptible(self, rights: frozenset[PriorityClass], d: int = -1) -> int:
        counts = self.pre_total if d < 0 else self.pre_by_dom.get(d)
        return sum(counts.get(cls, 0) for cls in rights) if counts else 0


@dataclass(slots=True)
class Choice:
    victims: list[Victim]
    free_used: int
    soon_used: int
    domain: int  # -1: anywhere, or across ``parts`` when there are any
    parts: list[tuple[int, int, int]] = field(default_factory=list)  # (domain, free used, soon used)


def usable_by_dom(run: RunningWorkload, fleet: Fleet, pool: ModelPool, by_dom: dict[int, int]) -> int:
    """Count ``run``'s GPUs that can take work once freed (healthy, on a schedulable node) into
    ``by_dom`` per usable NVLink domain; returns how many there are in all."""
    index, unschedulable, node_dom, draining, unhealthy = (
        fleet.node_index,
        fleet.unschedulable,
        fleet.node_dom,
        fleet.draining,
        pool.unhealthy,
    )
    useful = 0
    for node_id, gpu_id in run.gpus:
        n = index.get(node_id)
        if n is None or unschedulable[n] or gpu_id in unhealthy:
            continue
        useful += 1
        d = node_dom[n]
        if d >= 0 and not draining[n]:
            by_dom[d] = by_dom.get(d, 0) + 1
    return useful


def _usable(node: NodeView, gpu_id: str) -> GpuSlot | None:
    if node.unschedulable:
        return None
    for gpu in node.gpus:
        if gpu.gpu_id == gpu_id:
            return gpu if gpu.healthy else None
    return None


def lost_work(run: RunningWorkload, now: float) -> float:
    """GPU-seconds a preemption at ``now`` costs ``run``: its progress since its last checkpoint
    (all of it since it started when it declares none) plus the restart; mining loses nothing."""
    if run.priority is PriorityClass.MINING:
        return 0.0
    ran = max(now - run.started_at, 0.0)
    interval = run.checkpoint_interval_s
    since = ran % interval if interval else ran
    return run.gpu_count * (since + RESTART_S)


def may_be_victim(run: RunningWorkload, snapshot: FleetSnapshot) -> bool:
    """Churn limits: work preempted before runs ``min_run_s`` after its restart before it can be
    a victim again, no workload gets more than ``notices_per_hour``, and one preempted
    ``max_preemptions`` times is no victim again. Mining is never protected."""
    if run.priority is PriorityClass.MINING:
        return True
    rules, now = snapshot.rules, snapshot.now
    if run.preemptions >= rules.max_preemptions:
        return False
    if run.preemptions and now - run.started_at < rules.min_run_s:
        return False
    recent = sum(1 for t in run.noticed_at if now - t < 3600.0)
    return recent < rules.notices_per_hour


def _size_key(victims: list[Victim]) -> tuple[float, ...]:
    """Fewest GPUs, then the lowest classes, then the youngest (the order before churn limits)."""
    gpus = sum(v.cost for v in victims)
    weight = sum(v.cost * _CLASS_WEIGHT[v.run.priority] for v in victims)
    oldest = min((v.run.started_at for v in victims), default=0.0)
    return (gpus, weight, -oldest)


def churn_key(victims: list[Victim]) -> tuple[float, ...]:
    """The lowest highest class, then preempted least, then the least work lost, then fewest GPUs,
    then the youngest."""
    top = preempted = gpus = 0
    lost = 0.0
    oldest = 0.0 if not victims else victims[0].run.started_at
    for v in victims:
        run = v.run
        w = _CLASS_WEIGHT[run.priority]
        if w > top:
            top = w
        preempted += run.preemptions
        lost += v.lost
        gpus += len(run.gpus)
        if run.started_at < oldest:
            oldest = run.started_at
    return (top, preempted, lost, gpus, -oldest)


def build(
    snapshot: FleetSnapshot,
    fleet: Fleet,
    *,
    claimants: Collection[str] = (),
    churn_limits: bool = False,
    pools: Mapping[str, ModelPool] | None = None,
    usage: Mapping[str, tuple[int, dict[int, int]]] | None = None,
) -> dict[str, ModelPreemption]:
    """Candidates per model. ``claimants``: preemptors in the queue whose claims stick (empty:
    every GPU being freed is anyone's). ``churn_limits``: see the module docstring."""
    out: dict[str, ModelPreemption] = {}
    now = snapshot.now
    for run in snapshot.running:
        if run.priority is PriorityClass.RESERVED and not run.preempting:
            continue  # never a victim, never freeing
        mp = out.get(run.gpu_model)
        if mp is None:
            mp = out[run.gpu_model] = ModelPreemption(key=churn_key if churn_limits else _size_key)
        by_dom: dict[int, int] = {}
        useful = 0
        pool = pools.get(run.gpu_model) if pools is not None else None
        known = usage.get(run.workload_id) if usage is not None else None
        if known is not None:
            useful, by_dom = known[0], dict(known[1])
        elif pool is not None:
            useful = usable_by_dom(run, fleet, pool, by_dom)
        else:
            for node_id, gpu_id in run.gpus:
                n = fleet.node_index.get(node_id)
                if n is None or _usable(snapshot.nodes[n], gpu_id) is None:
                    continue
                useful += 1
                d = fleet.node_dom[n]
                if d >= 0 and not fleet.draining[n]:
                    by_dom[d] = by_dom.get(d, 0) + 1
        if run.preempting:
            if run.claimed_for and run.claimed_for in claimants:
                mine = mp.claims.setdefault(run.claimed_for, {})
                mp.claims_total[run.claimed_for] = mp.claims_total.get(run.claimed_for, 0) + useful
                for d, x in by_dom.items():
                    mine[d] = mine.get(d, 0) + x
                continue
            mp.soon_total += useful
            for d, x in by_dom.items():
                mp.soon_by_dom[d] = mp.soon_by_dom.get(d, 0) + x
            continue
        victim = Victim(run, by_dom, useful, lost=lost_work(run, now) if churn_limits else 0.0)
        if churn_limits and not may_be_victim(run, snapshot):
            victim.taken = True
            mp.protected.append(victim)
            mp.victims.append(victim)
            for d in by_dom:
                mp.by_dom.setdefault(d, []).append(victim)
            continue
        mp.victims.append(victim)
        mp.pre_total[run.priority] = mp.pre_total.get(run.priority, 0) + useful
        for d, x in by_dom.items():
            mp.by_dom.setdefault(d, []).append(victim)
            per = mp.pre_by_dom.setdefault(d, {})
            per[run.priority] = per.get(run.priority, 0) + x
    for mp in out.values():
        mp.victims.sort(key=_victim_order)
        mp.doms = sorted(set(mp.soon_by_dom) | set(mp.by_dom))
    return out


def _victim_order(v: Victim) -> tuple[int, int, float]:
    return (v.run.gpu_count, -PRIORITY_RANK[v.run.priority], -v.run.started_at)
