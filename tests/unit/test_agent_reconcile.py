"""The agent's reconcile decision as a pure function of plain objects."""

from __future__ import annotations

from agents.protocol import Assignment, AssignmentPhase, AssignmentStatus
from agents.reconcile import plan_reconcile

NODE_GPUS = ["GPU-0", "GPU-1", "GPU-2", "GPU-3"]


def want(workload_id: str, epoch: int, gpus: list[str], rank: int = 0) -> Assignment:
    return Assignment(
        workload_id=workload_id,
        epoch=epoch,
        rank=rank,
        world_size=1,
        gpu_uuids=gpus,
        command=["true"],
        master_addr="127.0.0.1",
        master_port=29500,
    )


def have(workload_id: str, epoch: int, phase: AssignmentPhase, rank: int = 0) -> AssignmentStatus:
    return AssignmentStatus(workload_id=workload_id, epoch=epoch, rank=rank, phase=phase)


RUNNING = AssignmentPhase.RUNNING
EXITED = AssignmentPhase.EXITED


def test_starts_what_is_new_and_leaves_running_ones_alone() -> None:
    plan = plan_reconcile(
        [want("a", 1, ["GPU-0"]), want("b", 1, ["GPU-1"])],
        [have("a", 1, RUNNING)],
        max_epoch_seen=0,
        node_gpus=NODE_GPUS,
        busy_gpus={"GPU-0"},
    )
    assert [a.workload_id for a in plan.start] == ["b"]
    assert plan.stop == () and plan.reject == () and plan.forget == ()


def test_stops_what_left_the_desired_state() -> None:
    plan = plan_reconcile([], [have("a", 1, RUNNING)], max_epoch_seen=1, node_gpus=NODE_GPUS)
    assert plan.stop == (("a", 0, 1),)
    assert plan.start == ()


def test_refuses_a_new_assignment_older_than_an_epoch_seen_before() -> None:
    plan = plan_reconcile([want("late", 4, ["GPU-2"])], [], max_epoch_seen=7, node_gpus=NODE_GPUS)
    assert plan.start == ()
    [(assignment, message)] = plan.reject
    assert assignment.workload_id == "late"
    assert message.startswith("stale epoch")


def test_older_epochs_side_by_side_in_one_state_or_already_admitted_are_not_stale() -> None:
    # Epochs are the scheduler's leadership epoch: placements of an earlier leader stay valid.
    desired = [want("old", 3, ["GPU-0"]), want("new", 5, ["GPU-1"])]
    plan = plan_reconcile(desired, [], max_epoch_seen=3, node_gpus=NODE_GPUS)
    assert sorted(a.workload_id for a in plan.start) == ["new", "old"]
    # A deferred assignment from an earlier state is not re-judged against a later epoch.
    plan = plan_reconcile(desired, [], max_epoch_seen=5, node_gpus=NODE_GPUS, admitted={("old", 0, 3), ("new", 0, 5)})
    assert plan.reject == ()


def test_unknown_or_duplicate_gpus_are_refused() -> None:
    plan = plan_reconcile(
        [want("x", 1, ["GPU-9"]), want("y", 1, ["GPU-1", "GPU-1"])], [], max_epoch_seen=0, node_gpus=NODE_GPUS
    )
    messages = {a.workload_id: m for a, m in plan.reject}
    assert messages["x"] == "unknown GPU(s) on this node: GPU-9"
    assert messages["y"] == "the same GPU is listed twice"
    assert plan.start == ()


def test_two_assignments_claiming_one_gpu_the_newer_epoch_wins() -> None:
    plan = plan_reconcile(
        [want("older", 2, ["GPU-0"]), want("newer", 3, ["GPU-0", "GPU-1"])],
        [],
        max_epoch_seen=0,
        node_gpus=NODE_GPUS,
    )
    assert [a.workload_id for a in plan.start] == ["newer"]
    [(loser, message)] = plan.reject
    assert loser.workload_id == "older" and "GPU conflict with workload newer" in message


def test_a_start_waits_until_the_previous_owner_released_the_gpus() -> None:
    # Same workload re-placed with a new epoch: stop the old process, start the new one later.
    desired = [want("a", 6, ["GPU-0", "GPU-1"])]
    plan = plan_reconcile(desired, [have("a", 5, RUNNING)], max_epoch_seen=5, node_gpus=NODE_GPUS, busy_gpus={"GPU-1"})
    assert plan.stop == (("a", 0, 5),)
    assert plan.start == () and plan.reject == ()
    stopped = have("a", 5, AssignmentPhase.STOPPED)
    plan = plan_reconcile(desired, [stopped], max_epoch_seen=6, node_gpus=NODE_GPUS, admitted={("a", 0, 6)})
    assert [a.epoch for a in plan.start] == [6]


def test_a_finished_assignment_is_never_restarted_and_kept_until_settled() -> None:
    done = have("a", 1, EXITED)
    still_desired = plan_reconcile([want("a", 1, ["GPU-0"])], [done], max_epoch_seen=1, node_gpus=NODE_GPUS)
    assert still_desired.start == () and still_desired.forget == ()
    not_yet_reported = plan_reconcile([], [done], max_epoch_seen=1, node_gpus=NODE_GPUS)
    assert not_yet_reported.forget == () and not_yet_reported.stop == ()
    reported = plan_reconcile([], [done], max_epoch_seen=1, node_gpus=NODE_GPUS, settled={("a", 0, 1)})
    assert reported.forget == (("a", 0, 1),)


def test_rejected_assignments_stay_rejected_while_desired() -> None:
    rejected = have("x", 1, AssignmentPhase.REJECTED)
    plan = plan_reconcile([want("x", 1, ["GPU-9"])], [rejected], max_epoch_seen=0, node_gpus=NODE_GPUS)
    assert plan == type(plan)()
