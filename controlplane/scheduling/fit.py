"""Shape search over a ``ModelPool``: where a gang of ``c`` GPUs goes, or None.

A plan is [(node, count)], one entry per rank. The searches read the buckets in best-fit order
and stop at the first fit, so the common case costs a few bucket probes. ``room`` is only passed
when some rack's power cap binds this pass (the cap leaves room for fewer GPUs than the rack has
free); the searches then skip nodes and domains their rack cannot power and look further.

- ``single_node``: best fit on one node, then on its domain (scores.score).
- ``in_one_domain``: the domain left with the fewest free GPUs that holds the gang; inside it,
  whole free nodes first, then the node that covers the remainder most tightly.
- ``whole_domains``: a gang larger than any domain takes whole free domains, the remainder the
  best-fitting other domain (NVLink inside each part, the fabric between them).
- ``spread``: when nothing tighter fits (nvlink none/preferred): fragments first (nodes with no
  usable domain, then domains from the fewest free GPUs up), so large free blocks survive.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.domain.enums import NvlinkPolicy
from controlplane.scheduling.index import POOL_DOMAIN, ModelPool
from controlplane.scheduling.scores import score

Plan = list[tuple[int, int]]


class RackRoom:
    """GPUs each rack can still power, for the racks whose cap binds this pass."""

    __slots__ = ("node_rack", "left")

    def __init__(self, node_rack: list[int], left: dict[int, int]) -> None:
        self.node_rack = node_rack
        self.left = left  # only constrained racks appear

    def cap(self, n: int, used: dict[int, int]) -> int:
        r = self.node_rack[n]
        left = self.left.get(r)
        if left is None:
            return 1 << 30
        return left - used.get(r, 0)


class SparingRoom(RackRoom):
    """A ``RackRoom`` (``base``, None when no rack binds) that also gives no room on the nodes of
    the ``spared`` NVLink domains: a search with it looks everywhere else first."""

    __slots__ = ("base", "spared", "node_dom")

    def __init__(self, base: RackRoom | None, node_rack: list[int], node_dom: list[int], spared: set[int]) -> None:
        super().__init__(node_rack, base.left if base is not None else {})
        self.base = base
        self.node_dom = node_dom
        self.spared = spared

    def cap(self, n: int, used: dict[int, int]) -> int:
        if self.node_dom[n] in self.spared:
            return 0
        return self.base.cap(n, used) if self.base is not None else 1 << 30


def _clean(st: list[int], valid: Callable[[int], bool]) -> None:
    while st and not valid(st[-1]):
        st.pop()


def _entries(st: list[int], valid: Callable[[int], bool]) -> list[int]:
    """All valid entries, top first; compacts the stack on the way (stale entries never revive)."""
    if not st:
        return []
    st[:] = [x for x in st if valid(x)]
    return st[::-1]


def _equals(values: list[int], wanted: int) -> Callable[[int], bool]:
    """An entry is still valid in the bucket of ``wanted``: bound here, not to the caller's loop variable."""
    return lambda i: values[i] == wanted


def single_node(pool: ModelPool, c: int, *, nvlink_only: bool, room: RackRoom | None) -> Plan | None:
    g, dmax = pool.node_size, pool.dmax
    k_arr, dom, dom_free = pool.k, pool.node_dom, pool.dom_free
    for k in range(c, g + 1):
        cands: list[tuple[float, int, int]] = []
        if pool.cnt_k[k]:
            row = pool.nb[k]
            for f in range(k, dmax + 1):
                st = row[f]
                if not st:
                    continue

                def valid(n: int, k: int = k, f: int = f) -> bool:
                    return k_arr[n] == k and dom_free[dom[n]] == f

                _clean(st, valid)
                if not st:
                    continue
                if room is None:
                    n = st[-1]
                else:
                    n = next((m for m in _entries(st, valid) if room.cap(m, {}) >= c), -1)
                    if n < 0:
                        continue
                cands.append((score(k, c, g, f, pool.dom_size[dom[n]]), -n, n))
                break
        for p in (0,) if nvlink_only else (0, 1):
            st = pool.ob[p][k]
            if not st:
                continue

            def valid_other(n: int, k: int = k) -> bool:
                return k_arr[n] == k

            _clean(st, valid_other)
            if not st:
                continue
            if room is None:
                n = st[-1]
            else:
                n = next((m for m in _entries(st, valid_other) if room.cap(m, {}) >= c), -1)
                if n < 0:
                    continue
            cands.append((score(k, c, g, None, 0), -n, n))
        if cands:
            # Node fit outweighs domain fit (scores' weights), so the first k with a candidate wins.
            return [(max(cands)[2], c)]
    return None


def take_nodes(pool: ModelPool, d: int, c: int, room: RackRoom | None, used: dict[int, int]) -> Plan | None:
    """``c`` GPUs from domain ``d``: whole free nodes first, then the tightest cover of the remainder."""
    k_arr = pool.k
    nodes = [m for m in pool.dom_nodes[d] if k_arr[m]]
    if room is None:
        avail = sorted(((k_arr[m], m) for m in nodes), key=lambda t: (-t[0], t[1]))
        plan: Plan = []
        need = c
        while need:
            best: tuple[int, int] | None = None
            for cap, m in avail:
                if cap >= need and (best is None or cap < best[0]):
                    best = (cap, m)
            if best is not None:
                plan.append((best[1], need))
                return plan
            if not avail:
                return None
            cap, m = avail.pop(0)
            plan.append((m, cap))
            need -= cap
        return plan
    local = dict(used)
    plan = []
    need = c
    remaining = list(nodes)
    while need:
        caps = [(min(k_arr[m], room.cap(m, local)), m) for m in remaining]
        caps = [t for t in caps if t[0] > 0]
        if not caps:
            return None
        covering = [t for t in caps if t[0] >= need]
        cap, m = min(covering, key=lambda t: (t[0], t[1])) if covering else min(caps, key=lambda t: (-t[0], t[1]))
        n_take = min(cap, need)
        plan.append((m, n_take))
        need -= n_take
        remaining.remove(m)
        r = room.node_rack[m]
        local[r] = local.get(r, 0) + n_take
    used.update(local)
    return plan


def _domains_from(pool: ModelPool, f_min: int, room: RackRoom | None) -> list[tuple[int, int]]:
    """(f, domain) with f >= f_min free GPUs, fewest first; with no room limits only the first."""
    dom_free = pool.dom_free
    out: list[tuple[int, int]] = []
    for f in range(max(f_min, 1), pool.dmax + 1):
        st = pool.db[f]
        if not st:
            continue

        def valid(d: int, f: int = f) -> bool:
            return dom_free[d] == f

        if room is None:
            _clean(st, valid)
            if st:
                return [(f, st[-1])]
            continue
        out.extend((f, d) for d in _entries(st, valid))
    return out


def in_one_domain(pool: ModelPool, c: int, room: RackRoom | None) -> Plan | None:
    if c > pool.dmax:
        return None
    for _, d in _domains_from(pool, c, room):
        plan = take_nodes(pool, d, c, room, {})
        if plan is not None:
            return plan
    return None


def whole_domains(pool: ModelPool, c: int, room: RackRoom | None) -> Plan | None:
    dom_free, dom_size = pool.dom_free, pool.dom_size
    plan: Plan = []
    used: dict[int, int] = {}
    chosen: set[int] = set()
    need = c
    for d in _entries(pool.whole, lambda d: dom_free[d] == dom_size[d]):
        if need <= 0:
            break
        if dom_size[d] > need:
            continue
        part = take_nodes(pool, d, dom_size[d], room, used)
        if part is None:
            continue
        plan += part
        chosen.add(d)
        need -= dom_size[d]
    if need > 0:
        for f in range(need, pool.dmax + 1):
            for d in _entries(pool.db[f], _equals(dom_free, f)):
                if d in chosen:
                    continue
                part = take_nodes(pool, d, need, room, used)
                if part is not None:
                    return plan + part
        return None
    return plan


def spread(pool: ModelPool, c: int, room: RackRoom | None) -> Plan | None:
    if pool.free_total < c:
        return None
    k_arr, dom_free = pool.k, pool.dom_free
    plan: Plan = []
    used: dict[int, int] = {}
    need = c
    for p in (0, 1):
        for k in range(1, pool.node_size + 1):
            for n in _entries(pool.ob[p][k], _equals(k_arr, k)):
                cap = k if room is None else min(k, room.cap(n, used))
                if cap <= 0:
                    continue
                take = min(cap, need)
                plan.append((n, take))
                if room is not None:
                    r = room.node_rack[n]
                    used[r] = used.get(r, 0) + take
                need -= take
                if not need:
                    return plan
    for f in range(1, pool.dmax + 1):
        for d in _entries(pool.db[f], _equals(dom_free, f)):
            part = take_nodes(pool, d, min(f, need), room, used)
            if part is None:
                continue
            plan += part
            need -= sum(x for _, x in part)
            if not need:
                return plan
    return None


def find(pool: ModelPool, c: int, nvlink: NvlinkPolicy, room: RackRoom | None) -> Plan | None:
    """The whole search for one request."""
    if c > pool.free_total:
        return None
    if nvlink is NvlinkPolicy.REQUIRED and c > 1:
        if c <= pool.node_size:
            plan = single_node(pool, c, nvlink_only=True, room=room)
            if plan is not None:
                return plan
        if c <= pool.dmax:
            return in_one_domain(pool, c, room)
        return whole_domains(pool, c, room)
    if c <= pool.node_size:
        plan = single_node(pool, c, nvlink_only=False, room=room)
        if plan is not None:
            return plan
    if pool.free_by_pool[POOL_DOMAIN] >= c:
        plan = in_one_domain(pool, c, room) if c <= pool.dmax else None
        if plan is None and nvlink is NvlinkPolicy.PREFERRED and c > pool.dmax:
            plan = whole_domains(pool, c, room)
        if plan is not None:
            return plan
    return spread(pool, c, room)
