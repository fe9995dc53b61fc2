"""Preemption candidates per GPU model: running work that may be displaced, work already under
notice (its GPUs free soon), and where in the NVLink fabric each would free GPUs.

GPUs of running work already under notice (``preempting``) count as freeing soon: a request that
fits with them waits for them and preempts nothing more, and no workload is preempted twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.domain.enums import PRIORITY_RANK, PriorityClass
from controlplane.scheduling.index import Fleet
from controlplane.scheduling.snapshot import FleetSnapshot, GpuSlot, NodeView, RunningWorkload


@dataclass(slots=True, eq=False)
class Victim:
    run: RunningWorkload
    useful_by_dom: dict[int, int]  # GPUs that would become usable in each usable NVLink domain
    useful: int  # usable anywhere
    taken: bool = False

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


def _usable(node: NodeView, gpu_id: str) -> GpuSlot | None:
    if node.unschedulable:
        return None
    for gpu in node.gpus:
        if gpu.gpu_id == gpu_id:
            return gpu if gpu.healthy else None
    return None


def build(snapshot: FleetSnapshot, fleet: Fleet) -> dict[str, ModelPreemption]:
    out: dict[str, ModelPreemption] = {}
    for run in snapshot.running:
        if run.priority is PriorityClass.RESERVED and not run.preempting:
            continue  # never a victim, never freeing
        mp = out.setdefault(run.gpu_model, ModelPreemption())
        by_dom: dict[int, int] = {}
        useful = 0
        for node_id, gpu_id in run.gpus:
            n = fleet.node_index.get(node_id)
            if n is None or _usable(snapshot.nodes[n], gpu_id) is None:
                continue
            useful += 1
            d = fleet.node_dom[n]
            if d >= 0 and not fleet.draining[n]:
                by_dom[d] = by_dom.get(d, 0) + 1
        if run.preempting:
            mp.soon_total += useful
            for d, x in by_dom.items():
                mp.soon_by_dom[d] = mp.soon_by_dom.get(d, 0) + x
            continue
        victim = Victim(run, by_dom, useful)
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
