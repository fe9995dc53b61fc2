"""Normalised, weighted scores for a candidate node (Kubernetes' score plugins, reduced to two).

Each score is in [0, 1], 1 the best. ``node_fit`` rewards leaving the node with few free GPUs,
``domain_fit`` leaving its NVLink domain with few: together, best fit on the node and then on the
domain, so whole nodes and whole domains stay free for large gangs. The node weight is at least
the domain weight x the node size, so one GPU of node fit always outweighs any domain fit: the
search in ``fit`` relies on that to stop at the first node size that has a candidate.
"""

from __future__ import annotations

WEIGHT_NODE_FIT = 5.0
WEIGHT_DOMAIN_FIT = 1.0


def node_fit(free: int, take: int, node_size: int) -> float:
    return 1.0 - (free - take) / node_size if node_size else 0.0


def domain_fit(domain_free: int | None, take: int, domain_size: int) -> float:
    """``domain_free`` None: the node has no usable NVLink domain, so nothing large is kept by sparing it."""
    if domain_free is None or domain_size <= 0:
        return 1.0
    return 1.0 - (domain_free - take) / domain_size


def score(free: int, take: int, node_size: int, domain_free: int | None, domain_size: int) -> float:
    total = WEIGHT_NODE_FIT + WEIGHT_DOMAIN_FIT
    return (
        WEIGHT_NODE_FIT * node_fit(free, take, node_size)
        + WEIGHT_DOMAIN_FIT * domain_fit(domain_free, take, domain_size)
    ) / total
