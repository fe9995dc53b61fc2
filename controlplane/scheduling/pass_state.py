"""What the planned path (``planned``) and the claims (``claims``) read and update of the pass
deciding (``core.SchedulingPass``): a Protocol, so those modules depend on this shape and not on
the core that calls them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingReason
from controlplane.scheduling import fit, planning, preemption
from controlplane.scheduling.framework import PassView, Profile, Verdict
from controlplane.scheduling.index import Fleet, ModelPool
from controlplane.scheduling.snapshot import Decision, PlannedStart, WorkloadRequest


class PassState(PassView, Protocol):
    """The pass's indexes, its decisions so far and the planning state of this pass (see
    ``core.SchedulingPass.__init__`` for what each holds)."""

    profile: Profile
    fleet: Fleet
    pools: dict[str, ModelPool]
    room: fit.RackRoom | None
    preempt: dict[str, preemption.ModelPreemption] | None
    fit_failed: dict[tuple[str, int, NvlinkPolicy], tuple[int, PendingReason]]
    decisions: list[Decision]
    holds: list[planning.Hold]
    holds_by_start: tuple[int, list[planning.Hold]]
    wants_whole: dict[str, bool]
    new_plans: int
    plan_failed: set[tuple[str, int, NvlinkPolicy, frozenset[PriorityClass]]]
    stopping_for: set[str]
    stopping_until: dict[str, float]
    dom_index: dict[str, int] | None
    planned_queue: list[WorkloadRequest]
    spread_claims: list[WorkloadRequest]
    due_spread: set[str]
    large: int
    plan_domains: dict[str, set[int]]
    decided: set[str]
    queue: Sequence[WorkloadRequest]

    @property
    def permit_calls(self) -> tuple[Callable[[PassView, WorkloadRequest, int], Verdict], ...]: ...

    def decide(self, req: WorkloadRequest) -> None: ...

    def commit(
        self,
        pool: ModelPool,
        req: WorkloadRequest,
        plan: fit.Plan,
        shed: float,
        taken: list[tuple[int, tuple[str, ...]]] | None = None,
    ) -> None: ...

    def planned_start(self, req: WorkloadRequest, start_at: float, domains: tuple[str, ...]) -> PlannedStart: ...

    def timeline(self, model: str) -> planning.Timeline: ...

    def per_domain(self, plan: fit.Plan) -> dict[int, int]: ...

    def kept_domains(self, req: WorkloadRequest) -> set[int] | None: ...

    def build_preemption(self) -> dict[str, preemption.ModelPreemption]: ...

    def usage(self) -> dict[str, tuple[int, dict[int, int]]]: ...

    def permitted(self, req: WorkloadRequest, gpus: int) -> float | None: ...
