"""ProcessRunner against real subprocesses: environment, exit codes, process-group stops, logs."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from agents.protocol import Assignment, AssignmentPhase, AssignmentStatus
from agents.runtime.orphans import LiveProcess, read_start_ticks
from agents.runtime.processes import ProcessRunner, inherited_env, uid_processes

GPUS = ["GPU-aaaa", "GPU-bbbb"]


def assignment(code: str, **overrides: object) -> Assignment:
    fields: dict[str, object] = {
        "workload_id": "wl-1",
        "epoch": 3,
        "rank": 1,
        "world_size": 2,
        "gpu_uuids": GPUS,
        "command": [sys.executable, "-c", textwrap.dedent(code)],
        "master_addr": "10.0.0.1",
        "master_port": 29500,
        "peers": ["10.0.0.1", "10.0.0.2"],
    }
    fields.update(overrides)
    return Assignment.model_validate(fields)


def wait_for(
    runner: ProcessRunner, predicate: Callable[[AssignmentStatus], bool], timeout: float = 10.0
) -> AssignmentStatus:
    """Real processes take real time; poll with a deadline rather than sleeping a guess."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = runner.poll()
        if statuses and predicate(statuses[0]):
            return statuses[0]
        time.sleep(0.02)
    raise AssertionError(f"timed out; last statuses: {runner.poll()}")


def ended(status: AssignmentStatus) -> bool:
    return status.phase in (AssignmentPhase.EXITED, AssignmentPhase.STOPPED, AssignmentPhase.REJECTED)


def pid_gone(pid: int) -> bool:
    """Dead or a zombie: in a container PID 1 may be slow to reap re-parented orphans."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid_gone(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[ProcessRunner]:
    r = ProcessRunner(tmp_path / "logs", work_dir=tmp_path / "work")
    yield r
    r.stop_all(grace_s=0.5)
    r.wait_idle(5.0)


def test_placement_env_is_set_and_the_tenant_cannot_override_it(tmp_path: Path) -> None:
    agent_env = {
        "PATH": os.environ["PATH"],
        "HOME": "/home/agent",
        "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": "secret",
    }
    runner = ProcessRunner(tmp_path / "logs", work_dir=tmp_path / "work", base_env=inherited_env(agent_env))
    code = """
        import json, os
        print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd()}))
    """
    tenant_env = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "MASTER_PORT": "1", "RANK": "9", "TENANT_VAR": "yes"}
    runner.start(assignment(code, env=tenant_env), node_address="10.0.0.2")
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.EXITED and status.exit_code == 0
    seen = json.loads((tmp_path / "logs" / "wl-1" / "1.log").read_text())
    env = seen["env"]
    assert env["CUDA_VISIBLE_DEVICES"] == env["NVIDIA_VISIBLE_DEVICES"] == "GPU-aaaa,GPU-bbbb"
    assert env["TENANT_VAR"] == "yes"
    assert env["MASTER_ADDR"] == env["PET_MASTER_ADDR"] == "10.0.0.1"
    assert env["MASTER_PORT"] == env["PET_MASTER_PORT"] == "29500"
    assert env["RANK"] == env["NODE_RANK"] == env["PET_NODE_RANK"] == "1"
    assert env["WORLD_SIZE"] == env["NNODES"] == env["PET_NNODES"] == "2"
    assert env["LOCAL_WORLD_SIZE"] == env["PET_NPROC_PER_NODE"] == "2"
    assert env["SWITCHYARD_WORKLOAD_ID"] == "wl-1"
    assert env["SWITCHYARD_PEERS"] == "10.0.0.1,10.0.0.2"
    assert env["SWITCHYARD_NODE_ADDRESS"] == "10.0.0.2"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["HOME"] == "/home/agent"
    # The agent's own secrets stay out of tenant processes.
    assert "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN" not in env
    assert seen["cwd"] == str(tmp_path / "work" / "wl-1")


def test_exit_codes_and_timestamps(runner: ProcessRunner) -> None:
    runner.start(assignment("import sys; sys.exit(3)"))
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.EXITED
    assert status.exit_code == 3
    assert status.started_at is not None and status.finished_at is not None
    assert status.started_at <= status.finished_at
    assert status.message == "exited (exit code 3)"
    runner.start(assignment("pass", workload_id="wl-ok"))
    ok = wait_for(runner, lambda _: all(ended(s) for s in runner.poll()))
    assert {s.workload_id: s.exit_code for s in runner.poll()} == {"wl-1": 3, "wl-ok": 0}
    assert ok.epoch == 3


def test_phases_go_starting_running_then_stopped(runner: ProcessRunner) -> None:
    first = runner.start(assignment("import time; time.sleep(60)"))
    assert first.phase is AssignmentPhase.STARTING and first.pid is not None
    assert runner.poll()[0].phase is AssignmentPhase.RUNNING
    assert runner.start(assignment("import time; time.sleep(60)")).pid == first.pid  # idempotent
    runner.stop("wl-1", grace_s=5.0)
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.STOPPED
    assert status.exit_code == -15
    assert "SIGTERM" in (status.message or "")


def test_stop_kills_the_whole_process_group_without_blocking(runner: ProcessRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # Leader and grandchild both ignore SIGTERM: only the SIGKILL after the grace gets them.
    code = f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        time.sleep(600)
    """
    runner.start(assignment(code))
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    grandchild = int(pidfile.read_text())
    leader = runner.poll()[0].pid
    assert leader is not None
    began = time.monotonic()
    runner.stop("wl-1", grace_s=0.5)
    assert time.monotonic() - began < 0.2  # the grace period runs in the background
    assert not pid_gone(grandchild)  # SIGTERM alone did nothing
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.STOPPED and status.exit_code == -9
    assert wait_gone(grandchild) and wait_gone(leader)


def test_leftover_children_die_with_their_leader(runner: ProcessRunner, tmp_path: Path) -> None:
    pidfile = tmp_path / "orphan.pid"
    code = f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
    """
    runner.start(assignment(code))
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.EXITED and status.exit_code == 0
    assert wait_gone(int(pidfile.read_text()))


def test_missing_binary_is_a_rejected_status_not_an_exception(runner: ProcessRunner, tmp_path: Path) -> None:
    status = runner.start(assignment("", command=["/nonexistent/train.sh", "--fast"]))
    assert status.phase is AssignmentPhase.REJECTED
    assert status.message is not None
    assert "cannot execute '/nonexistent/train.sh'" in status.message
    assert "No such file" in status.message
    assert runner.poll() == [status]
    assert "No such file" in (tmp_path / "logs" / "wl-1" / "1.log").read_text()


def test_unsafe_workload_id_is_rejected(runner: ProcessRunner, tmp_path: Path) -> None:
    status = runner.start(assignment("pass", workload_id="../../etc"))
    assert status.phase is AssignmentPhase.REJECTED
    assert not (tmp_path / "etc").exists()


def test_log_file_holds_stdout_and_stderr_and_appends(runner: ProcessRunner, tmp_path: Path) -> None:
    code = """
        import sys
        print("to stdout")
        print("to stderr", file=sys.stderr)
    """
    runner.start(assignment(code))
    wait_for(runner, ended)
    runner.start(assignment("print('next epoch')", epoch=4))
    wait_for(runner, lambda _: all(ended(s) for s in runner.poll()))
    text = (tmp_path / "logs" / "wl-1" / "1.log").read_text()
    assert text.splitlines() == ["to stdout", "to stderr", "next epoch"]
    assert runner.log_files() == [("wl-1", 1, tmp_path / "logs" / "wl-1" / "1.log")]


def test_stop_all_and_forget(runner: ProcessRunner) -> None:
    runner.start(assignment("import time; time.sleep(60)"))
    runner.start(assignment("import time; time.sleep(60)", workload_id="wl-2"))
    assert len(runner.active_assignments()) == 2
    runner.forget(("wl-1", 1, 3))  # running: forgetting is refused
    assert len(runner.poll()) == 2
    runner.stop_all(grace_s=5.0)
    assert runner.wait_idle(10.0)
    assert {s.phase for s in runner.poll()} == {AssignmentPhase.STOPPED}
    assert runner.active_assignments() == []
    runner.forget(("wl-1", 1, 3))
    assert [s.workload_id for s in runner.poll()] == ["wl-2"]


def test_live_processes_are_recorded_on_start_and_removed_on_exit(tmp_path: Path) -> None:
    records: list[list[LiveProcess]] = []
    runner = ProcessRunner(tmp_path / "logs", record_live=lambda live: records.append(list(live)))
    status = runner.start(assignment("import time; time.sleep(60)"))
    assert status.pid is not None
    [entry] = records[-1]
    assert (entry.workload_id, entry.rank, entry.epoch, entry.pid) == ("wl-1", 1, 3, status.pid)
    assert entry.start_ticks == read_start_ticks(status.pid) and entry.started_at == status.started_at
    runner.stop_all(grace_s=5.0)
    assert runner.wait_idle(10.0)
    deadline = time.monotonic() + 10  # the waiter thread records the exit just after the status
    while records[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert runner.live_processes() == []


def test_a_process_that_cannot_be_recorded_is_stopped(tmp_path: Path) -> None:
    def full_disk(live: Sequence[LiveProcess]) -> None:
        if live:
            raise OSError(28, "No space left on device")

    runner = ProcessRunner(tmp_path / "logs", record_live=full_disk)
    runner.start(assignment("import time; time.sleep(60)"))
    status = wait_for(runner, ended)
    assert status.phase is AssignmentPhase.STOPPED
    assert (status.message or "").startswith("cannot record the process in the agent's state dir")


def test_uid_processes_sees_live_processes_of_that_uid_only(tmp_path: Path) -> None:
    """The wait before a sandbox uid is released (a SIGKILLed leader ends while the kernel still
    tears its namespace down) counts live processes of the uid: not zombies, not other uids, and
    a /proc entry that vanishes while read is skipped."""

    def proc(pid: str, uid: int, state: str) -> None:
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "status").write_text(
            f"Name:\tpython3\nState:\t{state} (x)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n"
        )

    proc("10", 60001, "R")
    proc("11", 60001, "S")
    proc("12", 60001, "Z")
    proc("13", 60002, "R")
    proc("14", 0, "S")
    (tmp_path / "15").mkdir()  # gone before its status could be read
    (tmp_path / "self").mkdir()
    assert sorted(uid_processes(60001, tmp_path)) == [10, 11]
    assert uid_processes(60003, tmp_path) == []
