"""Choosing victims: only when filtering leaves nothing, only of classes the request may displace.

A preemptor claims what it waits for (the free GPUs it will use, the GPUs being freed, its
victims) for the rest of the pass, so lower-priority work cannot take them meanwhile.

Victims are chosen to free the fewest GPUs, then the lowest classes, then the youngest work: of
three candidate sets (the best single victim; Kubernetes-style "remove all, reprieve the most
valuable while the rest still suffices", once by class and once by size) the best by that key.
The set must make the gang fit its shape: for ``required`` gangs only GPUs inside the chosen
NVLink domain count, so a victim spread over several domains is charged all its GPUs but
credited only those. A ``required`` gang larger than any domain is freed the way
``fit.whole_domains`` places it: whole domains, cheapest first, then one domain for the remainder.
"""

from __future__ import annotations

from collections.abc import Callable

from controlplane.domain.enums import PRIORITY_RANK, PriorityClass
from controlplane.scheduling.index import ModelPool
from controlplane.scheduling.preemption.candidates import Choice, ModelPreemption, Victim, _size_key

_key = _size_key

# ``allowed(d, n)``: whether domain ``d`` may give the gang ``n`` GPUs (the caller's planning map:
# a choice there must not break another plan's window). None: every domain may.
Allowed = Callable[[int, int], bool] | None


def _reprieve(
    cands: list[tuple[int, Victim]], need: int, order_key: Callable[[tuple[int, Victim]], tuple[int, int, float]]
) -> list[Victim] | None:
    total = sum(u for u, _ in cands)
    if total < need:
        return None
    kept: list[Victim] = []
    ordered = sorted(cands, key=order_key)
    for u, v in ordered:
        if total - u >= need:
            total -= u  # reprieved: the rest still frees enough
        else:
            kept.append(v)
    return kept


def select_victims(
    cands: list[tuple[int, Victim]], need: int, key: Callable[[list[Victim]], tuple[float, ...]] = _key
) -> list[Victim] | None:
    """The best victim set freeing at least ``need`` useful GPUs; cands: (useful GPUs, victim)."""
    options: list[list[Victim]] = []
    singles = [v for u, v in cands if u >= need]
    if singles:
        options.append(min(([v] for v in singles), key=key))
    # Reprieve the most valuable first: higher class, then more GPUs, then older.
    by_class = _reprieve(cands, need, lambda t: (PRIORITY_RANK[t[1].run.priority], -t[1].cost, t[1].run.started_at))
    if by_class is not None:
        options.append(by_class)
    by_size = _reprieve(cands, need, lambda t: (-t[1].cost, PRIORITY_RANK[t[1].run.priority], t[1].run.started_at))
    if by_size is not None:
        options.append(by_size)
    if not options:
        return None
    return min(options, key=key)


# Domains compared once one can be freed: a bounded search; domains lacking the fewest GPUs come first.
MAX_DOMAINS_COMPARED = 8


def choose_in_domain(
    pool: ModelPool, mp: ModelPreemption, c: int, rights: frozenset[PriorityClass], allowed: Allowed = None
) -> Choice | None:
    """Waiting (on GPUs being freed) or preempting inside one NVLink domain, whichever costs least."""
    dom_free, dom_size, soon_by_dom = pool.dom_free, pool.dom_size, mp.soon_by_dom
    best: Choice | None = None
    bounds: list[tuple[int, int]] = []
    arr = mp.by_rights(rights, len(dom_free)) if rights else None
    for d in mp.doms:
        if dom_size[d] < c:
            continue
        free = dom_free[d]
        soon = soon_by_dom.get(d, 0)
        if free + soon >= c:
            used_soon = c - free if c > free else 0
            if (best is None or used_soon < best.soon_used) and (allowed is None or allowed(d, c)):
                best = Choice([], min(free, c), used_soon, d)
            continue
        if arr is not None and best is None:
            need = c - free - soon
            if arr[d] >= need and (allowed is None or allowed(d, c)):
                bounds.append((need, d))
    if best is not None:
        return best
    bounds.sort()
    best_key: tuple[float, ...] | None = None
    best_gpus = 0
    compared = 0
    for need, d in bounds:
        if best_key is not None and (need > best_gpus or compared >= MAX_DOMAINS_COMPARED):
            break
        cands = [
            (v.useful_by_dom[d], v)
            for v in mp.by_dom.get(d, ())
            if not v.taken and v.run.priority in rights and v.useful_by_dom[d] > 0
        ]
        victims = select_victims(cands, need, mp.key)
        if victims is None:
            continue
        compared += 1
        key = mp.key(victims)
        if best_key is None or key < best_key:
            best_key = key
            best_gpus = sum(v.cost for v in victims)
            best = Choice(victims, dom_free[d], soon_by_dom.get(d, 0), d)
    return best


def choose_across_domains(
    pool: ModelPool, mp: ModelPreemption, c: int, rights: frozenset[PriorityClass], allowed: Allowed = None
) -> Choice | None:
    """A ``required`` gang larger than any domain, shaped as ``fit.whole_domains`` places it.

    Whole domains are taken cheapest first (those needing no victims, fewest GPUs being freed
    first, then the victim ranking of ``select_victims``), then one more domain for any remainder.
    A victim chosen for one domain also credits the GPUs it frees in the others."""
    dom_free, dom_size, soon_by_dom = pool.dom_free, pool.dom_size, mp.soon_by_dom
    arr = mp.by_rights(rights, len(dom_free)) if rights else None
    waits: list[tuple[int, int]] = []  # (GPUs being freed used, domain): whole without preempting
    bounds: list[tuple[int, int]] = []  # (GPUs to preempt, domain)
    for d, size in enumerate(dom_size):
        if not size or size > c:
            continue
        lack = size - dom_free[d]
        soon = soon_by_dom.get(d, 0)
        if lack <= soon:
            if allowed is None or allowed(d, size):
                waits.append((max(lack, 0), d))
        elif arr is not None and arr[d] >= lack - soon and (allowed is None or allowed(d, size)):
            bounds.append((lack - soon, d))
    waits.sort()
    bounds.sort()
    # Bounded: the domains lacking the fewest GPUs, as many as the gang could need and a few more.
    compared: list[tuple[tuple[float, ...], int]] = []
    for need, d in bounds[: c // max(pool.dmax, 1) + MAX_DOMAINS_COMPARED]:
        victims = select_victims(_dom_cands(mp, d, rights, set()), need, mp.key)
        if victims is not None:
            compared.append((mp.key(victims), d))
    compared.sort()
    chosen: list[Victim] = []
    chosen_ids: set[int] = set()
    parts: list[tuple[int, int, int]] = []
    left = c
    for d in [d for _, d in waits] + [d for _, d in compared]:
        size = dom_size[d]
        if size > left:
            continue
        got = _take_domain(mp, d, size, rights, chosen, chosen_ids, dom_free[d])
        if got is None:
            continue
        parts.append((d, dom_free[d], got))
        left -= size
        if not left:
            break
    if left:
        used = {d for d, _, _ in parts}
        rest = _remainder(pool, mp, left, rights, used, chosen, chosen_ids, allowed)
        if rest is None:
            return None
        parts.append(rest)
    return Choice(chosen, sum(f for _, f, _ in parts), sum(s for _, _, s in parts), -1, parts)


def _dom_cands(
    mp: ModelPreemption, d: int, rights: frozenset[PriorityClass], chosen_ids: set[int]
) -> list[tuple[int, Victim]]:
    return [
        (v.useful_by_dom[d], v)
        for v in mp.by_dom.get(d, ())
        if not v.taken and id(v) not in chosen_ids and v.run.priority in rights and v.useful_by_dom[d] > 0
    ]


def _take_domain(
    mp: ModelPreemption,
    d: int,
    want: int,
    rights: frozenset[PriorityClass],
    chosen: list[Victim],
    chosen_ids: set[int],
    free: int,
) -> int | None:
    """Make ``want`` GPUs of domain ``d`` available: the GPUs being freed it uses, or None.

    Free GPUs first, then those freed by victims already chosen, then work under notice, then
    new victims (added to ``chosen``)."""
    credit = sum(v.useful_by_dom.get(d, 0) for v in chosen)
    soon = mp.soon_by_dom.get(d, 0)
    lack = max(want - min(free, want) - credit, 0)
    if lack <= soon:
        return lack
    if not rights:
        return None
    victims = select_victims(_dom_cands(mp, d, rights, chosen_ids), lack - soon, mp.key)
    if victims is None:
        return None
    chosen.extend(victims)
    chosen_ids.update(id(v) for v in victims)
    return soon


def _remainder(
    pool: ModelPool,
    mp: ModelPreemption,
    want: int,
    rights: frozenset[PriorityClass],
    used: set[int],
    chosen: list[Victim],
    chosen_ids: set[int],
    allowed: Allowed = None,
) -> tuple[int, int, int] | None:
    """The domain for the last ``want`` GPUs: one needing no new victims if any (fewest GPUs being
    freed used), else the cheapest of a bounded few."""
    dom_free, dom_size, soon_by_dom = pool.dom_free, pool.dom_size, mp.soon_by_dom
    best_wait: tuple[int, int] | None = None
    bounds: list[tuple[int, int]] = []
    for d, size in enumerate(dom_size):
        if d in used or size < want:
            continue
        free = dom_free[d]
        have = min(free, want) + sum(v.useful_by_dom.get(d, 0) for v in chosen)
        soon = soon_by_dom.get(d, 0)
        lack = max(want - have, 0)
        if lack <= soon:
            if (best_wait is None or lack < best_wait[0]) and (allowed is None or allowed(d, want)):
                best_wait = (lack, d)
        elif rights and best_wait is None:
            need = lack - soon
            if sum(u for u, _ in _dom_cands(mp, d, rights, chosen_ids)) >= need and (
                allowed is None or allowed(d, want)
            ):
                bounds.append((need, d))
    if best_wait is not None:
        d = best_wait[1]
        return (d, min(dom_free[d], want), best_wait[0])
    bounds.sort()
    best: tuple[tuple[float, ...], int, list[Victim]] | None = None
    for need, d in bounds[:MAX_DOMAINS_COMPARED]:
        victims = select_victims(_dom_cands(mp, d, rights, chosen_ids), need, mp.key)
        if victims is not None and (best is None or mp.key(victims) < best[0]):
            best = (mp.key(victims), d, victims)
    if best is None:
        return None
    _, d, victims = best
    chosen.extend(victims)
    chosen_ids.update(id(v) for v in victims)
    return (d, min(dom_free[d], want), soon_by_dom.get(d, 0))


def choose_anywhere(pool: ModelPool, mp: ModelPreemption, c: int, rights: frozenset[PriorityClass]) -> Choice | None:
    free = pool.free_total
    if free + mp.soon_total >= c:
        return Choice([], free, c - free, -1)
    need = c - free - mp.soon_total
    if not rights or mp.preemptible(rights) < need:
        return None
    # Victims are sorted fewest GPUs first: the smallest that suffice, and the best single one.
    cands: list[tuple[int, Victim]] = []
    got = 0
    single: Victim | None = None
    for v in mp.victims:
        if v.taken or v.run.priority not in rights or v.useful <= 0:
            continue
        if got < need:
            cands.append((v.useful, v))
            got += v.useful
        if v.useful >= need:
            single = v
            break
    if single is not None and all(x is not single for _, x in cands):
        cands.append((single.useful, single))
    victims = select_victims(cands, need, mp.key)
    if victims is None:
        return None
    return Choice(victims, free, mp.soon_total, -1)


def claim(mp: ModelPreemption, choice: Choice) -> None:
    """Take ``choice``'s GPUs being freed and its victims out of reach for the rest of the pass."""
    left = choice.soon_used
    mp.soon_total -= left
    if choice.parts:
        for d, _, s in choice.parts:
            if s:
                mp.soon_by_dom[d] -= s
    elif choice.domain >= 0:
        if left:
            mp.soon_by_dom[choice.domain] -= left
    else:
        for d, s in list(mp.soon_by_dom.items()):
            if left <= 0:
                break
            x = min(s, left)
            mp.soon_by_dom[d] = s - x
            left -= x
    for v in choice.victims:
        v.taken = True
        cls = v.run.priority
        mp.pre_total[cls] -= v.useful
        for d, x in v.useful_by_dom.items():
            mp.pre_by_dom[d][cls] -= x
            for rights, arr in mp.rights_arr.items():
                if cls in rights:
                    arr[d] -= x
