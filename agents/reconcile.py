"""The agent's reconcile decision: a pure function of plain data, tested with plain objects."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

from agents.protocol import STALE_EPOCH, Assignment, AssignmentStatus
from agents.runtime.processes import TERMINAL_PHASES, AssignmentKey, assignment_key


@dataclass(frozen=True)
class ReconcilePlan:
    start: tuple[Assignment, ...] = ()
    reject: tuple[tuple[Assignment, str], ...] = ()
    stop: tuple[AssignmentKey, ...] = ()
    forget: tuple[AssignmentKey, ...] = ()


def plan_reconcile(
    desired: Sequence[Assignment],
    known: Sequence[AssignmentStatus],
    *,
    max_epoch_seen: int,
    node_gpus: Collection[str],
    admitted: Collection[AssignmentKey] = frozenset(),
    busy_gpus: Collection[str] = frozenset(),
    settled: Collection[AssignmentKey] = frozenset(),
) -> ReconcilePlan:
    """Decide what to start, refuse, stop and forget to move ``known`` towards ``desired``.

    Fencing: an assignment new to this agent whose epoch is lower than the highest epoch of an
    *earlier* desired state comes from a deposed scheduler and is refused ("stale epoch").
    Epochs are the scheduler's leadership epoch, so assignments of different epochs live side
    by side in one desired state; comparing only against earlier states (and never against an
    assignment already ``admitted``) keeps legitimate older placements running.

    A terminal status is kept (and reported) until the assignment has left the desired state
    and the control plane has received that status (``settled``); an assignment that ended is
    never restarted while it is still desired. A start waits while any of its GPUs is still
    held by a process being stopped, so a GPU never has two owners at once.
    """
    known_keys = {assignment_key(status) for status in known}
    desired_keys = {assignment_key(a) for a in desired}
    busy = set(busy_gpus)
    claimed: dict[str, AssignmentKey] = {}
    start: list[Assignment] = []
    reject: list[tuple[Assignment, str]] = []
    for a in sorted(desired, key=lambda a: (-a.epoch, a.workload_id, a.rank)):
        key = assignment_key(a)
        if key in known_keys:
            continue
        unknown = [uuid for uuid in a.gpu_uuids if uuid not in node_gpus]
        conflict = next((claimed[uuid] for uuid in a.gpu_uuids if uuid in claimed), None)
        if key not in admitted and a.epoch < max_epoch_seen:
            reject.append((a, f"{STALE_EPOCH}: {a.epoch} is older than epoch {max_epoch_seen} seen before"))
        elif unknown:
            reject.append((a, f"unknown GPU(s) on this node: {', '.join(unknown)}"))
        elif len(set(a.gpu_uuids)) != len(a.gpu_uuids):
            reject.append((a, "the same GPU is listed twice"))
        elif conflict is not None:
            reject.append((a, f"GPU conflict with workload {conflict[0]} epoch {conflict[2]} in one desired state"))
        else:
            claimed.update(dict.fromkeys(a.gpu_uuids, key))
            if not busy.intersection(a.gpu_uuids):
                start.append(a)
    stop: list[AssignmentKey] = []
    forget: list[AssignmentKey] = []
    for status in known:
        key = assignment_key(status)
        if key in desired_keys:
            continue
        if status.phase not in TERMINAL_PHASES:
            stop.append(key)
        elif key in settled:
            forget.append(key)
    return ReconcilePlan(start=tuple(start), reject=tuple(reject), stop=tuple(stop), forget=tuple(forget))
