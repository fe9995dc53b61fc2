"""Filters: which GPUs can take new work, and the words for why the others cannot.

The per-GPU filters (allocated, node state, health) run once per pass while the index is built;
their counts per GPU model become the pending reasons, so no request rescans the fleet to explain
itself. Request-level filters (model, NVLink domain, quota, rack and site power) live where their
state does (``fit``, ``quota``, ``power``) and return the same kind of reason.
"""

from __future__ import annotations

from collections import Counter

from controlplane.scheduling.snapshot import GpuSlot, NodeView


def exclusion(node: NodeView, gpu: GpuSlot) -> str:
    """Why ``gpu`` admits no new work, or "" if it does. Allocation first: an allocated GPU on a
    cordoned node is busy before it is cordoned."""
    if gpu.allocated:
        return "allocated"
    if node.unschedulable:
        return node.unschedulable
    if not gpu.healthy:
        return "unhealthy"
    return ""


def describe(counts: Counter[str]) -> str:
    """ "61 allocated, 8 cordoned, 3 unhealthy": largest first, ties by name."""
    parts = [f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if n]
    return ", ".join(parts) if parts else "none excluded"


def gpus_of(n: int, model: str) -> str:
    """ "8 NVIDIA GB300 GPUs"."""
    return f"{n} {model} GPU{'' if n == 1 else 's'}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
