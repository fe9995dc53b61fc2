"""Every priority class, two schedulers, lost leases and nodes, restarted and replaying agents: no
GPU ever has two owners.

A hypothesis state machine drives the real services against a real database and Redis:

- tenants submit reserved (one tenant holds a reservation set through ``update_tenant_policy``),
  on_demand and spot work, and the site submits GPU mining through the same submit service with
  an internal spec, so the scheduler preempts for real (reserved within its reservation over
  on_demand, spot and mining; on_demand over spot and mining; spot over mining);
- two scheduler instances acquire and lose the Redis lease and run passes with whatever epoch
  they believe they hold (a paused scheduler wakes up still believing it leads);
- any live workload can be cancelled;
- time passes on an injected clock and the liveness sweep runs: a node that stops reporting
  becomes unreachable and, after the grace, its work is requeued; its agent may come back later
  still running the old processes;
- agents are modelled by the real reconcile planner (``agents/reconcile.py``) over the real
  desired state: they start and stop processes, pause, freeze and thaw (the report thread racing
  the reconcile), act late, restart (in-memory state lost, orphans stopped, finished statuses,
  the credential and the seq counter kept on disk, the inventory re-sent), and every report goes
  through ``ingest.ingest_report`` (the report route's entry point: Redis dedup by (node, seq),
  the lease, the fingerprint skip, then the SQL fold), including copies of reports already
  delivered (retries, spool replays), which must change nothing.

After every step:

- no GPU has two live allocations; no GPU runs two processes, and no two tenants ever run a
  process on the same GPU;
- every process an agent runs holds a live allocation of that GPU for its workload and epoch;
  an allocation is released only by a report, once its own node's agent has said the process is
  gone (GPUs are freed only after the agent confirmed it, victims of preemption included);
- allocations still in a desired state belong only to live (scheduled, starting, running) work;
- every GPU's observed change of (state, owner) is allowed by ``domain.gpu.can_change``;
- every preemption is one the class rights allow, and reserved work is never a victim.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
from factories import GB300, make_site, make_tenant, register_node, workload_body
from fastapi.testclient import TestClient
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased
from testenv import empty_tables

from agents.protocol import (
    PROTOCOL_VERSION,
    Assignment,
    AssignmentPhase,
    AssignmentStatus,
    NodeInventory,
    ReportRequest,
)
from agents.reconcile import plan_reconcile
from agents.runtime.orphans import STOPPED_MESSAGE
from agents.runtime.processes import TERMINAL_PHASES, AssignmentKey, assignment_key
from controlplane.domain.enums import NvlinkPolicy, PriorityClass, UnreachablePolicy, WorkloadState
from controlplane.domain.epoch import PlacementEpoch
from controlplane.domain.errors import Conflict, InvalidRequest
from controlplane.domain.gpu import GpuState, can_change
from controlplane.domain.specs import WorkloadSpec
from controlplane.live.lease import SCHEDULER, LeaderLease
from controlplane.runtime import Runtime
from controlplane.scheduling.preemption.policy import victim_classes
from controlplane.services import admin
from controlplane.services.agents import desired, ingest, liveness
from controlplane.services.fleet.gpus import gpu_states
from controlplane.services.scheduler.run import run_pass
from controlplane.services.singleton import FencedOut, acquire
from controlplane.services.workloads import cancel, submit
from controlplane.store.models import Allocation, Gpu, Node, Preemption, Tenant, Workload, WorkloadRank

# CI: 150 examples on SQLite and a fifth of that on PostgreSQL: the whole file in about 100 s on the
# project's 2-core machine (3,000 on SQLite: 25 min, bench/results/scheduler_safety.txt).
EXAMPLES = int(os.environ.get("SWITCHYARD_SAFETY_EXAMPLES", "150"))
STEPS = 50
NODES = 2
LEASE_TTL_S = 15.0  # the node lease a report renews
GRACE_S = 30.0  # how long a node may stay unreachable before its work is requeued
TICK_S = 20.0  # one tick of the injected clock: longer than the lease, shorter than the grace
SEQ_BLOCK = 1000  # a restarted agent skips the rest of its reserved seq block (agents/state.py)

LIVE_STATES = frozenset({WorkloadState.SCHEDULED, WorkloadState.STARTING, WorkloadState.RUNNING})
CLASSES = (PriorityClass.RESERVED, PriorityClass.ON_DEMAND, PriorityClass.SPOT, PriorityClass.MINING)
WAKES = st.sampled_from([None, "A", "B"])  # which scheduler instance, if any, a wake-up reaches at once
_LIVE_PHASES = frozenset({AssignmentPhase.STARTING, AssignmentPhase.RUNNING})
_KEPT_ON_DISK = frozenset({AssignmentPhase.EXITED, AssignmentPhase.REJECTED})  # agents/state.FinishedLedger


@dataclass
class FakeAgent:
    """The agent's bookkeeping, decisions by the real planner; processes are just records."""

    node_id: str
    gpus: set[str]
    seq: int = 0
    generation: int = 0
    applied: int = 0
    max_epoch: int = 0
    admitted: set[AssignmentKey] = field(default_factory=set)
    desired: list[Assignment] = field(default_factory=list)
    fetched: list[Assignment] = field(default_factory=list)
    fetched_generation: int = 0
    alive: dict[AssignmentKey, Assignment] = field(default_factory=dict)  # running or stopping
    stopping: set[AssignmentKey] = field(default_factory=set)
    statuses: dict[AssignmentKey, AssignmentStatus] = field(default_factory=dict)
    inventory: NodeInventory | None = None  # sent with the first report after a start, as the agent does
    inventory_due: bool = True

    def fetch(self, runtime: Runtime) -> None:
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

    def next_report(self, now: float) -> ReportRequest:
        wanted = {assignment_key(a) for a in self.desired}
        if all(k in wanted for k in self.alive):
            self.applied = self.generation
        self.seq += 1
        return ReportRequest(
            protocol_version=PROTOCOL_VERSION,
            seq=self.seq,
            sent_at=now,
            gpus=[],
            assignments=list(self.statuses.values()),
            applied_generation=self.applied,
            inventory=self.inventory if self.inventory_due else None,
        )

    def delivered(self) -> None:
        """Forget terminal statuses the control plane now has and no longer wants."""
        self.inventory_due = False
        wanted = {assignment_key(a) for a in self.desired}
        for key in [k for k, s in self.statuses.items() if s.phase not in _LIVE_PHASES and k not in wanted]:
            del self.statuses[key]

    def restarted(self) -> FakeAgent:
        """The agent process died and started again on the same node with the same credential:
        what it kept in memory is gone; its orphaned processes are stopped before it registers
        (reported STOPPED), finished statuses come back from disk, and seqs keep increasing."""
        kept = {k: s for k, s in self.statuses.items() if s.phase in _KEPT_ON_DISK}
        for key, a in self.alive.items():
            kept[key] = _status(a, AssignmentPhase.STOPPED, STOPPED_MESSAGE)
        return FakeAgent(self.node_id, self.gpus, seq=self.seq + SEQ_BLOCK, statuses=kept, inventory=self.inventory)


def _status(a: Assignment, phase: AssignmentPhase, message: str = "", exit_code: int | None = None) -> AssignmentStatus:
    return AssignmentStatus(
        workload_id=a.workload_id, epoch=a.epoch, rank=a.rank, phase=phase, exit_code=exit_code, message=message or None
    )


@dataclass
class Tally:
    """What the runs exercised, summed over all examples (printed at the end of the test)."""

    examples: int = 0
    steps: int = 0
    events: Counter[str] = field(default_factory=Counter)
    first_failure: int | None = None  # the example in which a check first failed (before shrinking)

    @contextmanager
    def noting_failure(self) -> Iterator[None]:
        try:
            yield
        except AssertionError:
            if self.first_failure is None:
                self.first_failure = self.examples
            raise

    def line(self) -> str:
        parts = ", ".join(f"{name} {count}" for name, count in sorted(self.events.items()))
        failed = "" if self.first_failure is None else f"; first failure in example {self.first_failure}"
        return f"{self.examples} examples, {self.steps} steps{failed}; {parts}"


GpuView = dict[str, tuple[GpuState, str | None]]

# The invariant's statements, built once (each step runs them).
LIVE_ALLOCATIONS = (
    select(
        Allocation.id,
        Allocation.node_id,
        Gpu.uuid,
        Allocation.workload_id,
        Allocation.rank,
        Allocation.epoch,
        Allocation.stop_generation,
        Workload.tenant_id,
        Workload.state,
    )
    .join(Gpu, Gpu.id == Allocation.gpu_id)
    .join(Workload, Workload.id == Allocation.workload_id)
    .where(Allocation.released_at.is_(None))
)
_PREEMPTOR = aliased(Workload)
# Each preemption in order: the victim's class, the preemptor's class, the preemptor tenant's
# reservation and the preemptor's GPUs.
PREEMPTIONS = (
    select(Preemption.victim_priority, _PREEMPTOR.priority, Tenant.reserved_gpus, _PREEMPTOR.gpu_count)
    .join(_PREEMPTOR, _PREEMPTOR.id == Preemption.for_workload_id)
    .join(Tenant, Tenant.id == _PREEMPTOR.tenant_id)
    .order_by(Preemption.id)
)
RESERVED_PREEMPTED = select(Workload.id).where(
    Workload.priority == PriorityClass.RESERVED.value, Workload.state == WorkloadState.PREEMPTED.value
)
LIVE_IDS = select(Allocation.id, Allocation.node_id, Allocation.workload_id, Allocation.rank, Allocation.epoch).where(
    Allocation.released_at.is_(None)
)


def test_only_the_site_submits_mining(runtime: Runtime, client: TestClient) -> None:
    """The machine's mining work comes in through the internal spec; a tenant cannot ask for the
    class, through the service's input or the API (which has no way to say ``internal``)."""
    make_site(runtime)
    register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme")

    def spec(priority: PriorityClass, *, internal: bool = False) -> WorkloadSpec:
        return WorkloadSpec(
            gpu_count=1,
            gpu_model=GB300,
            nvlink=NvlinkPolicy.NONE,
            priority=priority,
            command=("mine",),
            internal=internal,
        )

    with pytest.raises(InvalidRequest, match="not available to tenants"):
        spec(PriorityClass.MINING)
    mining = spec(PriorityClass.MINING, internal=True)
    # The flag is part of the request's hash only when set: tenants' hashes are what they were.
    assert spec(PriorityClass.SPOT).fingerprint() != spec(PriorityClass.SPOT, internal=True).fingerprint()
    for body in (workload_body(1, priority="mining"), workload_body(1, priority="spot", internal=True)):
        assert client.post("/v1/workloads", json=body, headers=tenant.headers).status_code == 422
    with runtime.uow() as s:
        wl = submit.submit(s, tenant_id=tenant.tenant_id, spec=mining, idempotency_key=None, default_max_duration_s=60)
        assert wl.workload.priority == PriorityClass.MINING.value


def test_no_gpu_ever_has_two_owners(runtime: Runtime, db_url: str) -> None:
    examples = EXAMPLES if db_url.startswith("sqlite") else max(20, EXAMPLES // 5)
    tally = Tally()

    class SchedulerSafety(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = self.start = time.time()
            self.agents: dict[str, FakeAgent] = {}
            self.nodes: list[str] = []
            self.sent: dict[str, list[ReportRequest]] = {}
            self.paused: set[str] = set()
            self.tenants: list[str] = []
            self.miner = ""
            self.leases: dict[str, LeaderLease] = {}
            self.believed: dict[str, int | None] = {"A": None, "B": None}
            self.passes = {"A": 0, "B": 0}
            self.gpu_view: GpuView = {}
            # Live allocation id -> its node and the assignment it holds GPUs for.
            self.live_allocations: dict[int, tuple[str, AssignmentKey]] = {}
            # Per node: assignments its agent reported gone in a report that reached the control plane.
            self.confirmed_gone: dict[str, set[AssignmentKey]] = {}
            self.folded: set[str] = set()  # nodes whose report reached SQL in this step
            self.log: list[str] = []  # what this step did, for the failure message
            self.preemptions_seen = 0
            self.requeued: set[str] = set()

        @initialize(
            reservation=st.sampled_from([2, 4, 8]),
            prefill=st.lists(st.tuples(st.sampled_from(CLASSES[1:]), st.sampled_from([2, 4])), max_size=4),
        )
        def setup(self, reservation: int, prefill: list[tuple[PriorityClass, int]]) -> None:
            """A site with two nodes, three tenants (one with a reservation) and the site's own
            mining account; some work may already run (idle GPUs mine), so preemption is near."""
            _reset(runtime)
            make_site(runtime)
            for i in range(1, NODES + 1):
                node = register_node(runtime, i)
                gpus = {g.uuid for g in node.inventory.gpus}
                self.agents[node.node_id] = FakeAgent(node.node_id, gpus, inventory=node.inventory)
                self.sent[node.node_id] = []
                self.confirmed_gone[node.node_id] = set()
                # As the register route does: the lease starts at registration.
                runtime.live.renew_lease(node_id=node.node_id, now=self.clock, lease_ttl_s=LEASE_TTL_S)
            self.nodes = sorted(self.agents)
            self.tenants = [make_tenant(runtime, f"t{i}").tenant_id for i in range(3)]
            with runtime.uow() as s:
                admin.update_tenant_policy(s, tenant_id=self.tenants[0], changes={"reserved_gpus": reservation})
                self.miner = admin.create_tenant(s, name="site-mining").id
            self.leases = {name: self._lease(name) for name in "AB"}
            for i, (priority, count) in enumerate(prefill):
                self.submit(tenant=i % 3, priority=priority, gpus=count, nvlink=False, wakes=None)
            if prefill:
                self.lead_and_schedule("A")
                for node_id in self.nodes:
                    agent = self.agents[node_id]
                    agent.fetch(runtime)
                    agent.act()
                    self._report(agent)
            with runtime.read() as s:
                self.gpu_view = _gpu_view(s)
                self.live_allocations = {
                    row.id: (row.node_id, (row.workload_id, row.rank, row.epoch)) for row in s.execute(LIVE_IDS)
                }
            self.folded, self.log = set(), []
            tally.examples += 1

        def _lease(self, name: str) -> LeaderLease:
            return LeaderLease(runtime.redis, runtime.keys, lease_s=60, instance=f"{name}-{time.time_ns()}")

        # -- work arrives and leaves ------------------------------------------------------------

        @rule(
            tenant=st.integers(0, 2),
            priority=st.sampled_from(CLASSES),
            gpus=st.sampled_from([1, 2, 4, 8]),
            nvlink=st.booleans(),
            wakes=WAKES,
        )
        def submit(self, tenant: int, priority: PriorityClass, gpus: int, nvlink: bool, wakes: str | None) -> None:
            """A tenant submits reserved, on_demand or spot work; the site submits GPU mining
            (an internal spec, through the same service). The submission may wake a scheduler
            at once, as the bus does."""
            mining = priority is PriorityClass.MINING
            spec = WorkloadSpec(
                gpu_count=gpus,
                gpu_model=GB300,
                nvlink=NvlinkPolicy.REQUIRED if nvlink and not mining else NvlinkPolicy.NONE,
                priority=priority,
                command=("mine",) if mining else ("train",),
                internal=mining,
            )
            with runtime.uow() as s:
                submit.submit(
                    s,
                    tenant_id=self.miner if mining else self.tenants[tenant],
                    spec=spec,
                    idempotency_key=None,
                    default_max_duration_s=3600,
                )
            tally.events[f"submitted {priority.value}"] += 1
            if wakes:
                self.lead_and_schedule(wakes)

        @rule(pick=st.integers(0, 50))
        def cancel(self, pick: int) -> None:
            with runtime.read() as s:
                ids = s.scalars(
                    select(Workload.id).where(Workload.state.in_([x.value for x in LIVE_STATES])).order_by(Workload.id)
                ).all()
            if not ids:
                return
            try:
                with runtime.uow() as s:
                    cancel.cancel(s, tenant_id=None, workload_id=ids[pick % len(ids)], reason="test")
                tally.events["cancelled"] += 1
            except Conflict:
                pass

        # -- schedulers -------------------------------------------------------------------------

        @rule(name=st.sampled_from("AB"))
        def lead_and_schedule(self, name: str) -> None:
            """Acquire if it holds nothing, then run a pass with the epoch it believes it holds,
            even if that lease is gone by now (a paused process that has not noticed)."""
            if self.believed[name] is None:
                epoch = acquire(self.leases[name], runtime.uow)
                if epoch is None:
                    return
                self.believed[name], self.passes[name] = epoch, 0
            self.passes[name] += 1
            self._observe_gpus()
            try:
                result = run_pass(runtime, PlacementEpoch.of(self.believed[name] or 0, self.passes[name]))
            except FencedOut:
                self.believed[name] = None
                tally.events["fenced out"] += 1
                return
            except IntegrityError:
                tally.events["refused by the unique index"] += 1
                return
            tally.events["scheduling passes"] += 1
            self.log.append(f"pass by {name}: {result}")
            tally.events["placed"] += result.placed

        @rule(name=st.sampled_from("AB"), restarts=st.booleans())
        def scheduler_loses_its_lease(self, name: str, restarts: bool) -> None:
            """The lease expires (the holder may not notice: a paused process), or an instance
            restarts and forgets the epoch it held."""
            runtime.redis.delete(runtime.keys.leader(SCHEDULER))
            if restarts:
                self.leases[name] = self._lease(name)
                self.believed[name] = None

        # -- time and liveness ------------------------------------------------------------------

        @rule(ticks=st.integers(1, 3))
        def time_passes(self, ticks: int) -> None:
            """Time passes in ticks longer than the node lease: at each, the agents that are not
            paused report on their own (a heartbeat of what they already know), then the
            workers' liveness sweep runs. A paused agent's node becomes unreachable at the first
            tick and its work is requeued once the grace is over (the third tick)."""
            for _ in range(ticks):
                self.clock += TICK_S
                for node_id in self.nodes:
                    if node_id not in self.paused:
                        self._report(self.agents[node_id])
                result = liveness.sweep(
                    live=runtime.live,
                    uow=runtime.uow,
                    now_s=self.clock,
                    grace_s=GRACE_S,
                    policy=UnreachablePolicy.REQUEUE,
                )
                tally.events["nodes marked unreachable"] += len(result.marked_unreachable)
                tally.events["requeued after the grace"] += len(result.requeued)
                self.requeued.update(result.requeued)
                self.log.append(f"sweep at +{self.clock - self.start:.0f} s: {result}")
                assert not result.failed
                self._observe_gpus()

        @rule(index=st.integers(0, NODES - 1), fetched=st.booleans(), ticks=st.integers(1, 3), wakes=WAKES)
        def agent_freezes_for_a_while(self, index: int, fetched: bool, ticks: int, wakes: str | None) -> None:
            """An agent freezes (a stalled process, a paused VM, a partition), maybe just after
            fetching a new desired state, while its processes keep running and time passes; a
            requeue wakes a scheduler, which may place the work elsewhere. Then it thaws: its
            report thread reports what it still runs before the reconcile acts on the state it
            fetched before freezing. The old processes hold their GPUs until it confirms them
            gone. (An agent silent for good: toggle_pause.)"""
            node_id = self.nodes[index]
            agent = self.agents[node_id]
            if fetched and node_id not in self.paused:
                agent.fetch(runtime)
            self.paused.add(node_id)
            self.time_passes(ticks)
            if wakes:
                self.lead_and_schedule(wakes)
            self.paused.discard(node_id)
            self._report(agent)
            agent.act()

        # -- agents -----------------------------------------------------------------------------

        @rule(index=st.integers(0, NODES - 1), pause=st.booleans())
        def toggle_pause(self, index: int, pause: bool) -> None:
            (self.paused.add if pause else self.paused.discard)(self.nodes[index])

        def _agent(self, index: int) -> FakeAgent | None:
            node_id = self.nodes[index]
            return None if node_id in self.paused else self.agents[node_id]

        def _report(self, agent: FakeAgent) -> None:
            request = agent.next_report(self.clock)
            if any(wl in self.requeued for wl, _, _ in agent.alive):
                tally.events["reports of a requeued workload's old processes"] += 1
            self._deliver(agent.node_id, request)
            self.sent[agent.node_id] = [*self.sent[agent.node_id][-4:], request]
            agent.delivered()

        def _deliver(self, node_id: str, request: ReportRequest) -> ingest.Ingested:
            result = ingest.ingest_report(
                live=runtime.live,
                uow=runtime.uow,
                read=runtime.read,
                node_id=node_id,
                report=request,
                now=self.clock,
                lease_ttl_s=LEASE_TTL_S,
            )
            outcome = "duplicate" if result.duplicate else "folded" if result.folded else "skipped (fingerprint)"
            if not result.duplicate:  # a skipped report says what SQL already has
                gone = {assignment_key(st_) for st_ in request.assignments if st_.phase in TERMINAL_PHASES}
                self.confirmed_gone[node_id] |= gone
            self.log.append(f"report {node_id} seq {request.seq}: {outcome}")
            if result.folded:
                self.folded.add(node_id)
                tally.events["reports folded"] += 1
            elif not result.duplicate:
                tally.events["reports skipped by fingerprint"] += 1
            return result

        @rule(index=st.integers(0, NODES - 1), fetch=st.booleans(), reap=st.booleans(), act=st.booleans(), wakes=WAKES)
        def agent_tick(self, index: int, fetch: bool, reap: bool, act: bool, wakes: str | None) -> None:
            """Maybe fetch the desired state (the watch and report loops are separate threads);
            maybe the processes being stopped are gone by now; maybe act on the last fetched
            state at once (else later); report. A report that freed GPUs may wake a scheduler."""
            if agent := self._agent(index):
                if fetch:
                    agent.fetch(runtime)
                if reap:
                    agent.reap()
                if act:
                    agent.act()
                self._report(agent)
                if wakes:
                    self.lead_and_schedule(wakes)

        @rule(index=st.integers(0, NODES - 1), report_first=st.booleans())
        def agent_acts_late(self, index: int, report_first: bool) -> None:
            """Act on the desired state fetched earlier, maybe just after a report went out (the
            report thread does not wait for the reconcile): the window the applied-generation
            guard closes."""
            if agent := self._agent(index):
                if report_first:
                    self._report(agent)
                agent.act()

        @rule(index=st.integers(0, NODES - 1), code=st.sampled_from([0, 0, 1]))
        def a_process_exits(self, index: int, code: int) -> None:
            if agent := self._agent(index):
                agent.finish_one(code)

        @rule(index=st.integers(0, NODES - 1))
        def agent_restarts(self, index: int) -> None:
            """Killed and started again (paused or not): it stops its orphans and reports."""
            node_id = self.nodes[index]
            self.paused.discard(node_id)
            self.agents[node_id] = agent = self.agents[node_id].restarted()
            tally.events["agent restarts"] += 1
            self._report(agent)

        @rule(index=st.integers(0, NODES - 1), back=st.integers(0, 4))
        def a_report_arrives_again(self, index: int, back: int) -> None:
            """A retried request or a spool replay: a report already delivered (same seq), the
            last one or an older one, arrives again (even from a paused agent: the network held
            it). It is a duplicate and changes nothing in SQL."""
            sent = self.sent[self.nodes[index]]
            if not sent:
                return
            request = sent[-1 - back % len(sent)]
            with runtime.read() as s:
                before = _sql_state(s)
            result = self._deliver(self.nodes[index], request)
            with runtime.read() as s:
                after = _sql_state(s)
            with tally.noting_failure():
                assert result.duplicate and not result.folded, f"report seq {request.seq} accepted twice"
                assert after == before, "a duplicate report changed SQL state"
            tally.events["duplicates refused"] += 1

        # -- invariants -------------------------------------------------------------------------

        @invariant()
        def no_gpu_ever_has_two_owners(self) -> None:
            tally.steps += 1
            with tally.noting_failure():
                self._check_invariants()

        def _check_invariants(self) -> None:
            with runtime.read() as s:
                view = _gpu_view(s)
                live = s.execute(LIVE_ALLOCATIONS).all()
                preemptions = [
                    (PriorityClass(v), PriorityClass(p), reservation, gpus)
                    for v, p, reservation, gpus in s.execute(PREEMPTIONS)
                ]
                reserved_preempted = s.scalars(RESERVED_PREEMPTED).all()
            # One live allocation per GPU (the unique index says so too).
            doubled = [uuid for uuid, n in Counter(row.uuid for row in live).items() if n > 1]
            assert not doubled, f"GPUs with two live allocations: {doubled}"
            # A process runs only on GPUs still allocated to its workload, in the placement it
            # was started for; no GPU runs two processes, no two tenants share one.
            held = {(row.uuid, row.workload_id, row.epoch): row.tenant_id for row in live}
            on_gpu: dict[str, set[AssignmentKey]] = {}
            tenants_on_gpu: dict[str, set[str]] = {}
            for agent in self.agents.values():
                for key, a in agent.alive.items():
                    wl, _, epoch = key
                    for uuid in a.gpu_uuids:
                        tenant = held.get((uuid, wl, epoch))
                        assert tenant is not None, f"{wl} epoch {epoch} runs on {uuid} without a live allocation"
                        on_gpu.setdefault(uuid, set()).add(key)
                        tenants_on_gpu.setdefault(uuid, set()).add(tenant)
            assert all(len(keys) == 1 for keys in on_gpu.values()), on_gpu
            assert all(len(t) == 1 for t in tenants_on_gpu.values()), tenants_on_gpu
            # Allocations still in a desired state belong only to live work.
            stale = [row for row in live if row.stop_generation is None and WorkloadState(row.state) not in LIVE_STATES]
            assert not stale, f"allocations of {[(r.workload_id, r.state) for r in stale]} are still desired"
            # GPUs are freed only by a report, and only once their own node's agent has said the
            # process is gone: in this step's report from that node, or earlier (a gang's rank
            # that ended keeps its GPUs until the report that ends the workload frees them all).
            now_live = {row.id: (row.node_id, (row.workload_id, row.rank, row.epoch)) for row in live}
            for alloc_id, (node_id, key) in self.live_allocations.items():
                if alloc_id not in now_live:
                    assert self.folded and (node_id in self.folded or key in self.confirmed_gone[node_id]), (
                        f"allocation {alloc_id} of {key} on {node_id} released before its agent said the process"
                        f" was gone: {self.log}"
                    )
            self._gpus_changed_legally(view)
            # Preemptions follow the class rights; reserved work is never a victim.
            for victim, preemptor, reservation, gpus in preemptions:
                assert victim is not PriorityClass.RESERVED, "reserved work was preempted"
                assert victim in victim_classes(preemptor, within_reservation=True), (
                    f"{preemptor.value} work preempted {victim.value} work"
                )
                if victim is PriorityClass.ON_DEMAND:
                    assert gpus <= reservation, "reserved work beyond its reservation preempted on_demand work"
            assert not reserved_preempted, f"reserved workloads preempted: {reserved_preempted}"
            for victim, preemptor, *_ in preemptions[self.preemptions_seen :]:
                tally.events[f"preempted {victim.value} for {preemptor.value}"] += 1
            self.preemptions_seen = len(preemptions)
            self.live_allocations, self.folded, self.log = now_live, set(), []

        def _gpus_changed_legally(self, view: GpuView) -> None:
            """Every observed GPU change is one the GPU state machine allows. Also checked in the
            middle of a step that does two things (a report, then the pass it woke)."""
            for uuid, (after, after_owner) in view.items():
                before, before_owner = self.gpu_view.get(uuid, (GpuState.FREE, None))
                assert can_change(before, before_owner, after, after_owner), (
                    f"{uuid}: {before.value} ({before_owner}) -> {after.value} ({after_owner})"
                )
                if (before, before_owner) != (after, after_owner):
                    tally.events[f"gpu {before.value} -> {after.value}"] += 1
            self.gpu_view = view

        def _observe_gpus(self) -> None:
            with runtime.read() as s:
                view = _gpu_view(s)
            with tally.noting_failure():
                self._gpus_changed_legally(view)

    try:
        run_state_machine_as_test(
            SchedulerSafety,
            settings=settings(
                max_examples=examples,
                stateful_step_count=STEPS,
                # An example is up to 50 steps against a real database: seconds, not the default
                # 200 ms. No health check is suppressed: too_slow counts only the time spent drawing
                # the steps' arguments, never the steps themselves, and nothing else applies here.
                deadline=None,
            ),
        )
    finally:
        print(f"\nscheduler safety ({runtime.engine.dialect.name}): {tally.line()}")


def _gpu_view(session: Session) -> GpuView:
    return {row.gpu.uuid: (row.state, row.workload_id) for row in gpu_states(session)}


def _sql_state(session: Session) -> list[list[tuple[object, ...]]]:
    """What a report can change in SQL: workloads, ranks, allocations, nodes."""
    queries = [
        select(Workload.id, Workload.state, Workload.epoch, Workload.reason),
        select(WorkloadRank.workload_id, WorkloadRank.rank, WorkloadRank.phase, WorkloadRank.exit_code),
        select(Allocation.id, Allocation.released_at, Allocation.stop_generation),
        select(Node.id, Node.status, Node.generation),
    ]
    return [sorted((tuple(row) for row in session.execute(q)), key=repr) for q in queries]


def _reset(runtime: Runtime) -> None:
    empty_tables(runtime.engine)
    keys = list(runtime.redis.scan_iter(f"{runtime.keys.prefix}:*"))
    if keys:
        runtime.redis.delete(*keys)
    runtime.principals.forget_key("")  # nothing cached matters: keys are re-made


def test_a_slow_agent_never_starts_a_process_on_gpus_already_handed_over(runtime: Runtime) -> None:
    """The race the applied-generation guard closes: the agent fetched a desired state listing
    A, the tenant cancels A, the agent reports (A not started yet), then acts on its stale copy."""
    make_site(runtime)
    node = register_node(runtime, 1)
    agent = FakeAgent(node.node_id, {g.uuid for g in node.inventory.gpus})
    acme = make_tenant(runtime, "acme")
    spec = WorkloadSpec(
        gpu_count=4,
        gpu_model=GB300,
        nvlink=NvlinkPolicy.REQUIRED,
        priority=PriorityClass.ON_DEMAND,
        command=("train",),
    )
    with runtime.uow() as s:
        a = submit.submit(
            s, tenant_id=acme.tenant_id, spec=spec, idempotency_key=None, default_max_duration_s=60
        ).workload.id
    run_pass(runtime, PlacementEpoch.of(1, 1))

    def report() -> None:
        ingest.ingest_report(
            live=runtime.live,
            uow=runtime.uow,
            read=runtime.read,
            node_id=node.node_id,
            report=agent.next_report(time.time()),
            now=time.time(),
            lease_ttl_s=LEASE_TTL_S,
        )
        agent.delivered()

    def held() -> int:
        with runtime.read() as s:
            return len(s.scalars(select(Allocation.id).where(Allocation.released_at.is_(None))).all())

    agent.fetch(runtime)  # lists A
    with runtime.uow() as s:
        cancel.cancel(s, tenant_id=None, workload_id=a, reason="changed my mind")
    report()  # A not started yet: not in the report
    assert held() == 4  # the agent has not applied the generation that dropped A: GPUs stay held
    agent.act()  # acting on the stale copy starts A ...
    agent.fetch(runtime)
    agent.act()  # ... and the newer state stops it
    agent.reap()
    report()
    assert held() == 0 and not agent.alive
