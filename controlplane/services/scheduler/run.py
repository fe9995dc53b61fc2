"""One scheduling pass: for each site, build the snapshot, run the pure core, commit."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.config import Settings
from controlplane.domain.epoch import PlacementEpoch
from controlplane.scheduling.core import schedule
from controlplane.scheduling.framework import DEFAULT_PROFILE, Profile
from controlplane.scheduling.snapshot import Decision, Placement, Preempt, Unplaced
from controlplane.services.scheduler import build as snapshots
from controlplane.services.scheduler.commit import CommitResult, commit
from controlplane.store.models import Site


class Handles(Protocol):
    """What a pass needs of its process (a ``Runtime`` has both): settings and units of work."""

    settings: Settings

    def uow(self) -> AbstractContextManager[Session]: ...


def run_pass(runtime: Handles, epoch: PlacementEpoch, *, profile: Profile = DEFAULT_PROFILE) -> CommitResult:
    """One pass, one transaction: each site in turn gets the workloads still pending, under its
    own power cap; the commit advances the scheduler's fence to ``epoch.leader`` first."""
    placed = preempted = 0
    pending = 0
    planned: set[str] = set()
    with runtime.uow() as session:
        queue = snapshots.pending_queue(session)
        sites: list[Site | None] = list(session.scalars(select(Site).order_by(Site.name)).all()) or [None]
        if not queue and sites == [None]:
            return CommitResult(placed=0, still_pending=0)
        for site in sites:
            # Even with nothing pending, each site's pass gives freed power back to mining.
            snapshot = snapshots.build_snapshot(
                session,
                site=site,
                stop_grace_s=runtime.settings.stop_grace_s,
                rules=runtime.settings.planning_rules,
            )
            decisions = keep_plans(schedule(snapshot, queue, profile), planned)
            planned.update(d.workload_id for d in decisions if isinstance(d, Unplaced) and d.plan is not None)
            result = commit(session, decisions=decisions, epoch=epoch.value, site=site, snapshot=snapshot)
            placed += result.placed
            preempted += result.preempted
            done = {d.workload_id for d in decisions if isinstance(d, Placement)}
            waiting = {d.for_workload_id for d in decisions if isinstance(d, Preempt)}
            queue = [r for r in queue if r.workload_id not in done and r.workload_id not in waiting]
            pending = len(queue)
    return CommitResult(placed=placed, still_pending=pending, preempted=preempted)


def keep_plans(decisions: Sequence[Decision], planned: set[str]) -> list[Decision]:
    """A site's decisions without its Unplaced for work an earlier site of this pass planned: the
    plan (its reason, expected start and held domains) stands, and is kept to the next pass.
    Another site may still place that work now (the placement clears the plan)."""
    if not planned:
        return list(decisions)
    return [d for d in decisions if not (isinstance(d, Unplaced) and d.workload_id in planned)]
