"""Per-pass indexes over the snapshot, so a decision costs O(node size + domain size), not O(fleet).

Nodes and NVLink domains are small ints. Per GPU model, a ``ModelPool`` keeps each node's free
(schedulable, healthy, unallocated) GPUs and three families of buckets, each a stack with lazy
deletion (an entry is valid while the node's or domain's current count still matches the bucket;
counts only fall during a pass, so no entry is ever pushed twice into one bucket):

- ``nb[k][f]``: nodes with k free GPUs in an NVLink domain with f free (best fit on the node,
  then on the domain, is the first non-empty bucket in (k, f) order);
- ``ob[p][k]``: nodes outside any usable domain (p=0: no domain, p=1: draining its NVLink peers);
- ``db[f]``: domains with f free GPUs, and ``whole``: domains with every GPU free.

Stacks are filled in reverse node order, so ties go to the first node in the snapshot.
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

from controlplane.scheduling.filters import exclusion
from controlplane.scheduling.power_budget import node_rack
from controlplane.scheduling.snapshot import FleetSnapshot

POOL_NONE = -1  # the node has no GPU of this model that could ever take work this pass
POOL_DOMAIN = 0  # in a usable NVLink domain
POOL_NO_DOMAIN = 1
POOL_NVLINK_DRAINING = 2

HELD = "held for a preemptor"
HELD_PLAN = "held for a planned start"
_NO_FREE: list[str] = []  # the free GPU ids of every node without any (see ModelPool.free)


class Fleet:
    """Model-independent facts: node, domain and rack numbering."""

    __slots__ = (
        "node_ids",
        "node_dom",
        "node_rack",
        "dom_names",
        "rack_names",
        "node_index",
        "draining",
        "unschedulable",
    )

    def __init__(self, snapshot: FleetSnapshot) -> None:
        nodes = snapshot.nodes
        self.node_ids: list[str] = [node.node_id for node in nodes]
        self.draining: list[bool] = [node.nvlink_draining for node in nodes]
        self.unschedulable: list[bool] = [bool(node.unschedulable) for node in nodes]
        self.node_dom: list[int] = []
        self.node_rack: list[int] = []
        self.dom_names: list[str] = []
        self.rack_names: list[str] = []
        dom_index: dict[str, int] = {}
        rack_index: dict[str, int] = {}
        for node in nodes:
            if node.domain is None:
                self.node_dom.append(-1)
            else:
                d = dom_index.get(node.domain)
                if d is None:
                    d = dom_index[node.domain] = len(self.dom_names)
                    self.dom_names.append(node.domain)
                self.node_dom.append(d)
            rack = node_rack(node)
            if rack is None:
                self.node_rack.append(-1)
            else:
                r = rack_index.get(rack)
                if r is None:
                    r = rack_index[rack] = len(self.rack_names)
                    self.rack_names.append(rack)
                self.node_rack.append(r)
        self.node_index = {n: i for i, n in enumerate(self.node_ids)}


class ModelPool:
    """The free GPUs of one model and the buckets over them (see the module docstring)."""

    __slots__ = (
        "model",
        "node_size",
        "dmax",
        "free",
        "k",
        "pool",
        "node_dom",
        "dom_free",
        "dom_size",
        "dom_nodes",
        "nb",
        "cnt_k",
        "ob",
        "db",
        "whole",
        "free_total",
        "free_by_pool",
        "total",
        "excluded",
        "doms_with_free",
        "version",
        "dom_usable",
        "unhealthy",
    )

    def __init__(self, model: str, fleet: Fleet) -> None:
        n_nodes = len(fleet.node_ids)
        n_doms = len(fleet.dom_names)
        self.model = model
        self.node_size = 0
        self.dmax = 0
        # Free GPU ids per node; nodes with none share one empty list (never appended to: a node
        # gets its own list at its first free GPU), so a full fleet costs no list per busy node.
        self.free: list[list[str]] = [_NO_FREE] * n_nodes
        self.k = [0] * n_nodes
        self.pool = [POOL_NONE] * n_nodes
        self.node_dom = fleet.node_dom
        self.dom_free = [0] * n_doms
        self.dom_size = [0] * n_doms
        self.dom_nodes: list[list[int]] = [[] for _ in range(n_doms)]
        self.nb: list[list[list[int]]] = []
        self.cnt_k: list[int] = []
        self.ob: list[list[list[int]]] = []
        self.db: list[list[int]] = []
        self.whole: list[int] = []
        self.free_total = 0
        self.free_by_pool = [0, 0, 0]
        self.total = 0
        self.excluded: Counter[str] = Counter()
        self.doms_with_free = 0
        self.version = 0  # bumped whenever free GPUs change: memoised failures stay valid until then
        # Per usable domain (not draining), its GPUs that could take work at all: free or busy,
        # healthy, on schedulable nodes (what a planned start may count on). Counted for the busy
        # ones while building; ``finish`` adds the free ones (all of them qualify).
        self.dom_usable = [0] * n_doms
        self.unhealthy: set[str] = set()  # GPU ids of the model that are not healthy

    def finish(self) -> None:
        """Size the buckets and fill them, once every node has been added."""
        g, dmax = self.node_size, max(self.dom_size, default=0)
        self.dmax = dmax
        self.nb = [[[] for _ in range(dmax + 1)] for _ in range(g + 1)]
        self.cnt_k = [0] * (g + 1)
        self.ob = [[[] for _ in range(g + 1)] for _ in range(2)]
        self.db = [[] for _ in range(dmax + 1)]
        k, pool, dom, dom_free = self.k, self.pool, self.node_dom, self.dom_free
        for n in range(len(k) - 1, -1, -1):
            kn = k[n]
            if kn == 0:
                continue
            p = pool[n]
            if p == POOL_DOMAIN:
                self.nb[kn][dom_free[dom[n]]].append(n)
                self.cnt_k[kn] += 1
            elif p > 0:
                self.ob[p - 1][kn].append(n)
        for d in range(len(dom_free) - 1, -1, -1):
            f = dom_free[d]
            if f:
                self.db[f].append(d)
                self.doms_with_free += 1
                if f == self.dom_size[d]:
                    self.whole.append(d)
        for nodes in self.dom_nodes:
            nodes.reverse()  # pushes go in this order: the first node ends on top
        self.dom_usable = [u + f for u, f in zip(self.dom_usable, dom_free, strict=True)]

    def take(
        self, plan: list[tuple[int, int]], reason: str = "allocated", by_dom: dict[int, int] | None = None
    ) -> list[tuple[int, tuple[str, ...]]]:
        """Reserve ``plan`` [(node, count)], first free GPUs by index; returns the GPU ids per node.
        ``by_dom``: also count into it the GPUs taken per usable NVLink domain (what the planning
        map needs of a placement, counted here where the domains are touched anyway)."""
        out: list[tuple[int, tuple[str, ...]]] = []
        touched: list[int] = []
        before: list[int] = []  # each touched domain's free GPUs before
        k, pool, dom = self.k, self.pool, self.node_dom
        total = 0
        for n, c in plan:
            gl = self.free[n]
            out.append((n, tuple(gl[:c])))
            # In place: a new list per node taken would be one more object for the collector to
            # count (and promote), tens of thousands in a campus pass.
            del gl[:c]
            old = k[n]
            new = old - c
            k[n] = new
            total += c
            p = pool[n]
            self.free_by_pool[p] -= c
            if p == POOL_DOMAIN:
                self.cnt_k[old] -= 1
                if new:
                    self.cnt_k[new] += 1
                d = dom[n]
                if d not in touched:
                    touched.append(d)
                    before.append(self.dom_free[d])
                self.dom_free[d] -= c
            elif new:
                self.ob[p - 1][new].append(n)
        self.free_total -= total
        self.excluded[reason] += total
        self.version += 1
        nb = self.nb
        for d in touched:
            f = self.dom_free[d]
            if f:
                self.db[f].append(d)
                for m in self.dom_nodes[d]:
                    km = k[m]
                    if km:
                        nb[km][f].append(m)
            else:
                self.doms_with_free -= 1
        if by_dom is not None:
            for d, f in zip(touched, before, strict=True):
                by_dom[d] = f - self.dom_free[d]
        return out

    def largest_domain_free(self) -> int:
        for f in range(self.dmax, 0, -1):
            st = self.db[f]
            while st and self.dom_free[st[-1]] != f:
                st.pop()
            if st:
                return f
        return 0

    def whole_domains(self) -> list[int]:
        st = self.whole
        return [d for d in reversed(st) if self.dom_free[d] == self.dom_size[d]]


_BY_INDEX = attrgetter("index")  # a node's GPUs in index order (a C key: 122,400 GPUs per campus pass)


def build_pools(snapshot: FleetSnapshot, fleet: Fleet) -> dict[str, ModelPool]:
    pools: dict[str, ModelPool] = {}
    node_dom = fleet.node_dom
    for n, node in enumerate(snapshot.nodes):
        d = node_dom[n]
        p = POOL_NO_DOMAIN if d < 0 else POOL_NVLINK_DRAINING if node.nvlink_draining else POOL_DOMAIN
        unschedulable = node.unschedulable
        usable = p == POOL_DOMAIN and not unschedulable
        per_model: dict[str, int] = {}
        for gpu in sorted(node.gpus, key=_BY_INDEX):
            pool = pools.get(gpu.model)
            if pool is None:
                pool = pools[gpu.model] = ModelPool(gpu.model, fleet)
            pool.total += 1
            per_model[gpu.model] = per_model.get(gpu.model, 0) + 1
            if d >= 0:
                pool.dom_size[d] += 1
            # Most GPUs of a campus are free: ``exclusion`` (the reason) only for the others.
            if gpu.allocated or unschedulable or not gpu.healthy:
                pool.excluded[exclusion(node, gpu)] += 1
                if not gpu.healthy:
                    pool.unhealthy.add(gpu.gpu_id)
                elif usable:
                    pool.dom_usable[d] += 1
                continue
            ids = pool.free[n]
            if ids is _NO_FREE:
                ids = pool.free[n] = []
            ids.append(gpu.gpu_id)
            pool.k[n] += 1
            pool.pool[n] = p
            pool.free_total += 1
            pool.free_by_pool[p] += 1
            if p == POOL_DOMAIN:
                pool.dom_free[d] += 1
        for model, count in per_model.items():
            pool = pools[model]
            if count > pool.node_size:
                pool.node_size = count
            if p == POOL_DOMAIN and pool.pool[n] == POOL_DOMAIN:
                pool.dom_nodes[d].append(n)
    for pool in pools.values():
        pool.finish()
    return pools
