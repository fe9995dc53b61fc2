"""The workload state machine: which transitions exist, and nothing else."""

from __future__ import annotations

from controlplane.domain.enums import TERMINAL_STATES, WorkloadState
from controlplane.domain.errors import InvalidTransition

S = WorkloadState

_ALLOWED: dict[WorkloadState, frozenset[WorkloadState]] = {
    S.PENDING: frozenset({S.SCHEDULED, S.CANCELLED, S.FAILED}),
    S.SCHEDULED: frozenset({S.STARTING, S.RUNNING, S.PENDING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED}),
    S.STARTING: frozenset({S.RUNNING, S.PENDING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED}),
    S.RUNNING: frozenset({S.PENDING, S.SUCCEEDED, S.FAILED, S.CANCELLED, S.PREEMPTED}),
}


def can_transition(current: WorkloadState, target: WorkloadState) -> bool:
    return target in _ALLOWED.get(current, frozenset())


def check_transition(current: WorkloadState, target: WorkloadState) -> None:
    if not can_transition(current, target):
        if current in TERMINAL_STATES:
            raise InvalidTransition(f"workload is already {current.value}")
        raise InvalidTransition(f"a {current.value} workload cannot become {target.value}")


def is_terminal(state: WorkloadState) -> bool:
    return state in TERMINAL_STATES
