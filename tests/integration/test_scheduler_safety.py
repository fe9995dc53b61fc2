"""Two schedulers, restarts, lost leases, paused agents: no GPU ever has two owners.

A hypothesis state machine drives the real services against a real database and Redis: two
scheduler instances acquire and lose the Redis lease and run passes with whatever epoch they
believe they hold (a paused scheduler wakes up still believing it leads); agents are modelled
by the real reconcile planner (agents/reconcile.py) over the real desired state, start and stop
processes, pause, and report late. After every step:

- no GPU has two live allocations, and no two tenants ever run a process on the same GPU;
- every process an agent runs holds a live allocation of that GPU (GPUs are freed only after the
  agent confirmed the process gone).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import pytest
from factories import make_site, make_tenant, register_node
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from agents.protocol import PROTOCOL_VERSION, Assignment, AssignmentPhase, AssignmentStatus, ReportRequest
from agents.reconcile import plan_reconcile
from agents.runtime.processes import assignment_key
from controlplane.domain.enums import NvlinkPolicy, PriorityClass, WorkloadState
from controlplane.domain.epoch import PlacementEpoch
from controlplane.domain.errors import Conflict
from controlplane.domain.specs import WorkloadSpec
from controlplane.live.lease import LeaderLease
from controlplane.services.agents import desired, reports
from controlplane.services.scheduler.run import run_pass
from controlplane.services.singleton import FencedOut
from controlplane.services.workloads import cancel, submit
from controlplane.store.models import Allocation, Gpu, Workload

EXAMPLES = int(os.environ.get("SWITCHYARD_SAFETY_EXAMPLES", "150"))
NODES = 2


@dataclass
class FakeAgent:
    """The agent's bookkeeping, decisions by the real planner; processes are just records."""

    node_id: str
    gpus: set[str]
    seq: int = 0
    generation: int = 0
    applied: int = 0
    max_epoch: int = 0
    admitted: set[tuple[str, int, int]] = field(default_factory=set)
    desired: list[Assignment] = field(default_factory=list)
    fetched: list[Assignment] = field(default_factory=list)
    fetched_generation: int = 0
    alive: dict[tuple[str, int, int], Assignment] = field(default_factory=dict)  # running or stopping
    stopping: set[tuple[str, int, int]] = field(default_factory=set)
    statuses: dict[tuple[str, int, int], AssignmentStatus] = field(default_factory=dict)

    def fetch(self, runtime) -> None:  # type: ignore[no-untyped-def]
        """Fetch the desired state; acting on it is a separate step (an agent can be slow to act)."""
        with runtime.read() as s:
            state = desired.desired_state(s, node_id=self.node_id)
        if state.generation > self.fetched_generation:
            self.fetched = list(state.assignments)
            self.fetched_generation = state.generation

    def act(self) -> None:
        """Reconcile towards the last fetched desired state, with the real planner."""
        if self.fetched_generation <= self.generation:
            return
        plan = plan_reconcile(
            self.fetched,
            list(self.statuses.values()),
            max_epoch_seen=self.max_epoch,
            node_gpus=self.gpus,
            admitted=self.admitted,
            busy_gpus={u for k in self.stopping for u in self.alive[k].gpu_uuids},
        )
        for a, message in plan.reject:
            self.statuses[assignment_key(a)] = _status(a, AssignmentPhase.REJECTED, message)
        for key in plan.stop:
            if key in self.alive:
                self.stopping.add(key)
        for a in plan.start:
            self.alive[assignment_key(a)] = a
            self.statuses[assignment_key(a)] = _status(a, AssignmentPhase.RUNNING)
        rejected = {assignment_key(a) for a, _ in plan.reject}
        self.admitted = {assignment_key(a) for a in self.fetched} - rejected
        self.max_epoch = max([self.max_epoch, *(a.epoch for a in self.fetched)])
        self.desired, self.generation = list(self.fetched), self.fetched_generation

    def reap(self) -> None:
        for key in list(self.stopping):
            a = self.alive.pop(key)
            self.stopping.discard(key)
            self.statuses[key] = _status(a, AssignmentPhase.STOPPED, "no longer desired")

    def finish_one(self, code: int) -> None:
        running = sorted(k for k in self.alive if k not in self.stopping)
        if running:
            a = self.alive.pop(running[0])
            self.statuses[running[0]] = _status(a, AssignmentPhase.EXITED, exit_code=code)

    def report(self, runtime) -> None:  # type: ignore[no-untyped-def]
        wanted = {assignment_key(a) for a in self.desired}
        if all(k in wanted for k in self.alive):
            self.applied = self.generation
        self.seq += 1
        request = ReportRequest(
            protocol_version=PROTOCOL_VERSION,
            seq=self.seq,
            sent_at=time.time(),
            gpus=[],
            assignments=list(self.statuses.values()),
            applied_generation=self.applied,
        )
        with runtime.uow() as s:
            reports.apply_report(s, node_id=self.node_id, report=request)
        # Forget terminal statuses the control plane now has and no longer wants.
        for key in [k for k, st_ in self.statuses.items() if st_.phase not in _LIVE and k not in wanted]:
            del self.statuses[key]


_LIVE = {AssignmentPhase.STARTING, AssignmentPhase.RUNNING}


def _status(a: Assignment, phase: AssignmentPhase, message: str = "", exit_code: int | None = None) -> AssignmentStatus:
    return AssignmentStatus(
        workload_id=a.workload_id, epoch=a.epoch, rank=a.rank, phase=phase, exit_code=exit_code, message=message or None
    )


@pytest.fixture
def machine_runtime(runtime):  # type: ignore[no-untyped-def]
    return runtime


def test_no_gpu_ever_has_two_owners(machine_runtime, db_url) -> None:  # type: ignore[no-untyped-def]
    runtime = machine_runtime
    examples = EXAMPLES if db_url.startswith("sqlite") else max(20, EXAMPLES // 5)

    class SchedulerSafety(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            _reset(runtime)
            make_site(runtime)
            self.agents = {}
            for i in range(1, NODES + 1):
                node = register_node(runtime, i)
                self.agents[node.node_id] = FakeAgent(node.node_id, {g.uuid for g in node.inventory.gpus})
            self.tenants = [make_tenant(runtime, f"t{i}").tenant_id for i in range(3)]
            self.leases = {name: LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance=name) for name in "AB"}
            self.believed: dict[str, int | None] = {"A": None, "B": None}
            self.passes = {"A": 0, "B": 0}
            self.paused: set[str] = set()

        @rule(tenant=st.integers(0, 2), gpus=st.sampled_from([1, 2, 4, 8]), nvlink=st.booleans())
        def submit(self, tenant: int, gpus: int, nvlink: bool) -> None:
            spec = WorkloadSpec(
                gpu_count=gpus,
                gpu_model="NVIDIA GB300",
                nvlink=NvlinkPolicy.REQUIRED if nvlink else NvlinkPolicy.NONE,
                priority=PriorityClass.ON_DEMAND,
                command=("train",),
            )
            with runtime.uow() as s:
                submit.submit(
                    s, tenant_id=self.tenants[tenant], spec=spec, idempotency_key=None, default_max_duration_s=3600
                )

        @rule(name=st.sampled_from("AB"))
        def lead_and_schedule(self, name: str) -> None:
            """Acquire if it holds nothing, then run a pass with the epoch it believes it holds,
            even if that lease is gone by now (a paused process that has not noticed)."""
            if self.believed[name] is None:
                epoch = self.leases[name].try_acquire()
                if epoch is None:
                    return
                self.believed[name], self.passes[name] = epoch, 0
            self.passes[name] += 1
            try:
                run_pass(runtime, PlacementEpoch.of(self.believed[name] or 0, self.passes[name]))
            except (FencedOut, IntegrityError):
                self.believed[name] = None

        @rule()
        def lease_expires(self) -> None:
            runtime.redis.delete(runtime.keys.leader("scheduler"))

        @rule(name=st.sampled_from("AB"))
        def restart_scheduler(self, name: str) -> None:
            self.leases[name] = LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance=f"{name}{time.time_ns()}")
            self.believed[name] = None

        @rule(index=st.integers(0, NODES - 1), pause=st.booleans())
        def toggle_pause(self, index: int, pause: bool) -> None:
            node_id = sorted(self.agents)[index]
            (self.paused.add if pause else self.paused.discard)(node_id)

        def _agent(self, index: int) -> FakeAgent | None:
            node_id = sorted(self.agents)[index]
            return None if node_id in self.paused else self.agents[node_id]

        @rule(index=st.integers(0, NODES - 1), act=st.booleans())
        def agent_tick(self, index: int, act: bool) -> None:
            """Fetch the desired state, maybe act on it at once, and report."""
            if agent := self._agent(index):
                agent.fetch(runtime)
                if act:
                    agent.act()
                agent.report(runtime)

        @rule(index=st.integers(0, NODES - 1))
        def agent_reports(self, index: int) -> None:
            if agent := self._agent(index):
                agent.report(runtime)

        @rule(index=st.integers(0, NODES - 1))
        def agent_acts_late(self, index: int) -> None:
            if agent := self._agent(index):
                agent.act()

        @rule(index=st.integers(0, NODES - 1), report=st.booleans())
        def agent_reaps_stopped_processes(self, index: int, report: bool) -> None:
            if agent := self._agent(index):
                agent.reap()
                if report:
                    agent.report(runtime)

        @rule(index=st.integers(0, NODES - 1), code=st.sampled_from([0, 0, 1]))
        def a_process_exits(self, index: int, code: int) -> None:
            if agent := self._agent(index):
                agent.finish_one(code)

        @precondition(lambda self: hasattr(self, "tenants"))
        @rule(pick=st.integers(0, 50))
        def cancel(self, pick: int) -> None:
            live_states = [x.value for x in (WorkloadState.SCHEDULED, WorkloadState.STARTING, WorkloadState.RUNNING)]
            with runtime.read() as s:
                ids = s.scalars(select(Workload.id).where(Workload.state.in_(live_states)).order_by(Workload.id)).all()
            if not ids:
                return
            wl_id = ids[pick % len(ids)]
            try:
                with runtime.uow() as s:
                    cancel.cancel(s, tenant_id=None, workload_id=wl_id, reason="test")
            except Conflict:
                pass

        @invariant()
        def one_owner_per_gpu(self) -> None:
            if not hasattr(self, "agents"):
                return
            with runtime.read() as s:
                live = s.execute(
                    select(Gpu.uuid, Allocation.workload_id, Workload.tenant_id)
                    .join(Gpu, Gpu.id == Allocation.gpu_id)
                    .join(Workload, Workload.id == Allocation.workload_id)
                    .where(Allocation.released_at.is_(None))
                ).all()
                doubled = s.scalar(
                    select(func.count()).select_from(
                        select(Allocation.gpu_id)
                        .where(Allocation.released_at.is_(None))
                        .group_by(Allocation.gpu_id)
                        .having(func.count() > 1)
                        .subquery()
                    )
                )
            assert doubled == 0
            held = {(uuid, wl) for uuid, wl, _ in live}
            tenant_of = {wl: tenant for _, wl, tenant in live}
            owners: dict[str, set[str]] = {}
            for agent in self.agents.values():
                for (wl, _, _), a in agent.alive.items():
                    for uuid in a.gpu_uuids:
                        # A process runs only on GPUs still allocated to its workload.
                        assert (uuid, wl) in held, f"{wl} runs on {uuid} without a live allocation"
                        owners.setdefault(uuid, set()).add(tenant_of[wl])
            assert all(len(t) == 1 for t in owners.values()), owners

        @invariant()
        def states_are_consistent(self) -> None:
            if not hasattr(self, "agents"):
                return
            with runtime.read() as s:
                bad = s.scalar(
                    select(func.count())
                    .select_from(Allocation)
                    .join(Workload, Workload.id == Allocation.workload_id)
                    .where(
                        Allocation.released_at.is_(None),
                        Allocation.stop_generation.is_(None),
                        Workload.state.in_(
                            [
                                st_.value
                                for st_ in (
                                    WorkloadState.PENDING,
                                    WorkloadState.SUCCEEDED,
                                    WorkloadState.FAILED,
                                    WorkloadState.CANCELLED,
                                )
                            ]
                        ),
                    )
                )
            assert bad == 0, "a finished or pending workload still has allocations in a desired state"

    run_state_machine_as_test(
        SchedulerSafety,
        settings=settings(
            max_examples=examples, stateful_step_count=50, deadline=None, suppress_health_check=list(HealthCheck)
        ),
    )


def _reset(runtime) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    from controlplane.store.models import Base

    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with runtime.engine.begin() as conn:
        if runtime.engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(text(f"DELETE FROM {table}"))
    keys = list(runtime.redis.scan_iter(f"{runtime.keys.prefix}:*"))
    if keys:
        runtime.redis.delete(*keys)
    runtime.principals.forget_key("")  # nothing cached matters: keys are re-made


def test_a_slow_agent_never_starts_a_process_on_gpus_already_handed_over(runtime) -> None:  # type: ignore[no-untyped-def]
    """The race the applied-generation guard closes: the agent fetched a desired state listing
    A, the tenant cancels A, the agent reports (A not started yet), then acts on its stale copy."""
    make_site(runtime)
    node = register_node(runtime, 1)
    agent = FakeAgent(node.node_id, {g.uuid for g in node.inventory.gpus})
    acme = make_tenant(runtime, "acme")
    spec = WorkloadSpec(
        gpu_count=4,
        gpu_model="NVIDIA GB300",
        nvlink=NvlinkPolicy.REQUIRED,
        priority=PriorityClass.ON_DEMAND,
        command=("train",),
    )
    with runtime.uow() as s:
        a = submit.submit(
            s, tenant_id=acme.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60
        ).workload.id
    run_pass(runtime, PlacementEpoch.of(1, 1))
    agent.fetch(runtime)  # lists A
    with runtime.uow() as s:
        cancel.cancel(s, tenant_id=None, workload_id=a, reason="changed my mind")
    agent.report(runtime)  # A not started yet: not in the report
    with runtime.read() as s:
        held = s.scalar(select(func.count()).select_from(Allocation).where(Allocation.released_at.is_(None)))
    assert held == 4  # the agent has not applied the generation that dropped A: GPUs stay held
    agent.act()  # acting on the stale copy starts A ...
    agent.fetch(runtime)
    agent.act()  # ... and the newer state stops it
    agent.reap()
    agent.report(runtime)
    with runtime.read() as s:
        held = s.scalar(select(func.count()).select_from(Allocation).where(Allocation.released_at.is_(None)))
    assert held == 0 and not agent.alive
