"""How fragmented the free capacity is: the measure the packing is judged by in the replay and bench.

Free GPUs are those that could take work (schedulable node, healthy, unallocated) and are not in
``placements``. A free GPU outside a whole free node cannot serve a 4-GPU gang on one node; one
outside a whole free domain cannot serve a 72-GPU one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from controlplane.scheduling.filters import exclusion
from controlplane.scheduling.snapshot import FleetSnapshot, Placement


@dataclass(frozen=True, slots=True)
class Fragmentation:
    free_gpus: int
    whole_free_nodes: int
    whole_free_domains: int
    # Share of free GPUs not in whole free nodes / not in whole free domains (0: perfectly packed).
    outside_whole_nodes: float
    outside_whole_domains: float
    largest_free_block: int  # most free GPUs in one NVLink domain
    mean_free_block: float  # mean free GPUs over domains that have any


def fragmentation(snapshot: FleetSnapshot, placements: Iterable[Placement] = ()) -> Fragmentation:
    taken = {g for p in placements for r in p.ranks for g in r.gpu_ids}
    dom_free: dict[str, int] = {}
    dom_size: dict[str, int] = {}
    free = whole_nodes = in_whole_nodes = 0
    for node in snapshot.nodes:
        n_free = sum(1 for g in node.gpus if not exclusion(node, g) and g.gpu_id not in taken)
        free += n_free
        if n_free and n_free == len(node.gpus):
            whole_nodes += 1
            in_whole_nodes += n_free
        if node.domain is not None:
            dom_free[node.domain] = dom_free.get(node.domain, 0) + n_free
            dom_size[node.domain] = dom_size.get(node.domain, 0) + len(node.gpus)
    whole_doms = [d for d, f in dom_free.items() if f and f == dom_size[d]]
    in_whole_doms = sum(dom_free[d] for d in whole_doms)
    blocks = [f for f in dom_free.values() if f]
    return Fragmentation(
        free_gpus=free,
        whole_free_nodes=whole_nodes,
        whole_free_domains=len(whole_doms),
        outside_whole_nodes=(free - in_whole_nodes) / free if free else 0.0,
        outside_whole_domains=(free - in_whole_doms) / free if free else 0.0,
        largest_free_block=max(blocks, default=0),
        mean_free_block=sum(blocks) / len(blocks) if blocks else 0.0,
    )
