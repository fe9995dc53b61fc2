"""The workload sandbox against real processes: a tenant's code cannot reach the agent or another tenant.

Each workload here runs through the agent's real ProcessRunner and Sandbox (as root: a uid of
its own, its own PID and mount namespaces). The stealing workload records every attempt and its
result as JSON lines in its own log, so the test checks both that it ran and what it got.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.client import AgentClient
from agents.config import AgentConfig
from agents.daemon import Agent, recover_orphans
from agents.exporter import AgentCollector
from agents.gpu.sim import SimBackend
from agents.protocol import Assignment, AssignmentPhase, AssignmentStatus, DesiredState, RegisterResponse
from agents.runtime.orphans import group_members
from agents.runtime.processes import ProcessRunner, inherited_env
from agents.runtime.sandbox import Sandbox, SandboxPolicy, default_policy
from agents.spool import Spool
from agents.state import FinishedLedger, ProcessLedger, SeqAllocator

ROOT = Path(__file__).resolve().parents[2]

needs_root = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="the sandbox needs Linux and root (uid switch, PID and mount namespaces)",
)

GPUS = ["GPU-0000", "GPU-1111", "GPU-2222", "GPU-3333"]
MINORS = {uuid: i for i, uuid in enumerate(GPUS)}

# Tries everything issue 8 found a workload could do; one JSON line per attempt.
STEALER = r"""
import errno, glob, json, os, signal, sys
def attempt(name, action):
    try:
        result = {"ok": True, "got": action()}
    except OSError as exc:
        result = {"ok": False, "errno": errno.errorcode.get(exc.errno, str(exc.errno))}
    print(json.dumps({"attempt": name, **result}), flush=True)
def read(path):
    with open(path, "rb") as f:
        return f.read().decode(errors="replace")
state = os.environ["STATE_DIR"]
ppid = os.getppid()
attempt("identity", lambda: [os.getuid(), os.getgid(), os.getgroups()])
attempt("parent cmdline", lambda: read(f"/proc/{ppid}/cmdline"))
# The state dir as the parent's command line would have named it, and as known.
def from_cmdline():
    args = read(f"/proc/{ppid}/cmdline").split("\0")
    return read(args[args.index("--state-dir") + 1] + "/credential.json")
attempt("state dir from cmdline", from_cmdline)
attempt("credential", lambda: read(os.path.join(state, "credential.json")))
attempt("list state dir", lambda: sorted(os.listdir(state)))
attempt("other log", lambda: read(os.environ["OTHER_LOG"]))
attempt("other work file", lambda: read(os.environ["OTHER_FILE"]))
attempt("agent cmdline", lambda: read(f"/proc/{os.environ['AGENT_PID']}/cmdline"))
attempt("agent environ", lambda: read(f"/proc/{os.environ['AGENT_PID']}/environ"))
attempt("agent root", lambda: sorted(os.listdir(f"/proc/{os.environ['AGENT_PID']}/root")))
attempt("pids", lambda: sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
attempt("signal other", lambda: os.kill(int(os.environ["OTHER_PID"]), signal.SIGKILL))
attempt("signal agent", lambda: os.kill(int(os.environ["AGENT_PID"]), signal.SIGTERM))
attempt("signal everyone", lambda: os.kill(-1, signal.SIGKILL))
attempt("nvidia devices", lambda: sorted(glob.glob("/dev/nvidia*")))
attempt("other tmp", lambda: read("/tmp/secret"))
attempt("other shm", lambda: read("/dev/shm/secret"))
attempt("write etc", lambda: open("/etc/switchyard-stolen", "w").close())
attempt("own work dir", lambda: open("mine.txt", "w").write("ok"))
print("stealer done", flush=True)
"""

# The other tenant: keeps a secret in its work dir (world-readable on purpose), /tmp and /dev/shm.
VICTIM = r"""
import os, time
for path in ("secret.txt", "/tmp/secret", "/dev/shm/secret"):
    with open(path, "w") as f:
        f.write("ALPHA_SECRET=hunter2")
    os.chmod(path, 0o644)
print("victim ready ALPHA_SECRET=hunter2", flush=True)
time.sleep(600)
"""


def assignment(workload_id: str, code: str, gpus: list[str], **env: str) -> Assignment:
    return Assignment(
        workload_id=workload_id,
        epoch=1,
        rank=0,
        world_size=1,
        gpu_uuids=gpus,
        command=[sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        master_addr="127.0.0.1",
        master_port=29500,
    )


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def status_of(runner: ProcessRunner, workload_id: str) -> AssignmentStatus:
    return next(s for s in runner.poll() if s.workload_id == workload_id)


def ended(runner: ProcessRunner, workload_id: str) -> bool:
    return status_of(runner, workload_id).phase in (AssignmentPhase.EXITED, AssignmentPhase.STOPPED)


def uid_processes(uids: set[int]) -> list[int]:
    """Live processes (any namespace) running as one of ``uids``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields["Uid"].split()[0]) in uids and fields["State"].split()[0] not in ("Z", "X"):
            found.append(int(entry.name))
    return found


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """An agent state dir as the agent keeps it: 0700, a credential 0600."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "credential.json").write_text(json.dumps({"node_id": "n1", "credential": "sy_agent_SECRET"}))
    (state / "credential.json").chmod(0o600)
    return state


def sandbox_for(state: Path, tmp_path: Path) -> Sandbox:
    """The agent's default policy, with a device dir holding fake /dev/nvidia* nodes (char 1:3)."""
    dev = tmp_path / "dev"
    dev.mkdir()
    for name in [*(f"nvidia{i}" for i in range(4)), "nvidiactl", "nvidia-uvm"]:
        os.mknod(dev / name, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        (dev / name).chmod(0o666)  # as the NVIDIA driver makes them
    policy = default_policy(state, home=str(tmp_path / "home"), gpu_minors=lambda: MINORS)
    return Sandbox(SandboxPolicy(**{**policy.__dict__, "dev_dir": dev}))


@pytest.fixture
def runner(state: Path, tmp_path: Path) -> Iterator[ProcessRunner]:
    r = ProcessRunner(state / "logs", work_dir=state / "work", sandbox=sandbox_for(state, tmp_path))
    yield r
    r.stop_all(grace_s=0.5)
    r.wait_idle(10.0)


@needs_root
def test_a_stealing_workload_finds_nothing_of_the_agent_or_the_other_tenant(runner: ProcessRunner, state: Path) -> None:
    victim = runner.start(assignment("wl-victim", VICTIM, GPUS[:2]))
    assert victim.phase is AssignmentPhase.STARTING and victim.pid is not None
    victim_log = state / "logs" / "wl-victim" / "0.log"
    wait_until(lambda: "victim ready" in victim_log.read_text(), what="the victim's secret")
    leader = victim.pid
    # The host pid of the victim's own process (pid 2 of its namespace), not just its launcher.
    victim_uid = (state / "work" / "wl-victim").stat().st_uid
    victim_pids = wait_until(lambda: uid_processes({victim_uid}), what="victim pids")

    env = {
        "STATE_DIR": str(state),
        "OTHER_LOG": str(victim_log),
        "OTHER_FILE": str(state / "work" / "wl-victim" / "secret.txt"),
        "OTHER_PID": str(max(victim_pids)),
        "AGENT_PID": str(os.getpid()),
    }
    runner.start(assignment("wl-stealer", STEALER, [GPUS[2]], **env))
    wait_until(lambda: ended(runner, "wl-stealer"), what="the stealer to finish")
    log = (state / "logs" / "wl-stealer" / "0.log").read_text()
    assert log.rstrip().endswith("stealer done"), log  # it ran every attempt
    got = {line["attempt"]: line for line in map(json.loads, log.splitlines()[:-1])}

    uid, gid, groups = got["identity"]["got"]
    assert uid not in (0, os.getuid()) and gid not in (0, os.getgid()) and groups == []
    for name in ("parent cmdline", "state dir from cmdline", "agent cmdline", "agent environ", "agent root"):
        assert got[name] == {"attempt": name, "ok": False, "errno": "ENOENT"}, got[name]
    for name in ("credential", "other log", "other work file", "other tmp", "other shm"):
        assert got[name] == {"attempt": name, "ok": False, "errno": "ENOENT"}, got[name]
    assert got["list state dir"]["got"] == ["work"]  # an empty view: only the path to its own work dir
    assert got["pids"]["got"] == [2]  # itself; its namespace's init (pid 1) is not even visible
    assert got["signal other"]["errno"] == "ESRCH" and got["signal agent"]["errno"] == "ESRCH"
    assert got["signal everyone"]["errno"] == "ESRCH"  # nobody it may signal
    assert got["nvidia devices"]["got"] == ["/dev/nvidia-uvm", "/dev/nvidia2", "/dev/nvidiactl"]
    assert got["write etc"]["errno"] == "EROFS"
    assert got["own work dir"] == {"attempt": "own work dir", "ok": True, "got": 2}
    assert status_of(runner, "wl-stealer").exit_code == 0

    # Nothing happened to the agent, the victim, or the host's files.
    assert status_of(runner, "wl-victim").phase is AssignmentPhase.RUNNING
    assert uid_processes({victim_uid}) == victim_pids and group_members(leader)
    assert not Path("/etc/switchyard-stolen").exists()
    assert "sy_agent_SECRET" in (state / "credential.json").read_text()
    owners = {p.name: p.stat().st_uid for p in (state / "work").iterdir() if not p.name.startswith(".")}
    assert owners["wl-stealer"] == uid and victim_uid not in (0, uid)  # one uid per workload
    assert ((state / "work" / "wl-victim").stat().st_mode & 0o777) == 0o700


SIGNALS = r"""
import os, signal, subprocess, sys, time
# A grandchild that leaves the process group and session: SIGTERM still reaches it, once.
child = subprocess.Popen([sys.executable, "-c",
    "import os, signal, sys, time\n"
    "os.setsid()\n"
    "signal.signal(signal.SIGTERM, lambda *_: (print('grandchild got SIGTERM', flush=True), sys.exit(0)))\n"
    "print('grandchild escaped', flush=True)\n"
    "time.sleep(600)"])
def polite(*_):  # let the grandchild finish, then die of the SIGTERM
    child.wait()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)
signal.signal(signal.SIGTERM, signal.SIG_IGN if sys.argv[1] == "stubborn" else polite)
print("leader", os.getpid(), flush=True)
time.sleep(600)
"""


@needs_root
@pytest.mark.parametrize("mode", ["polite", "stubborn"])
def test_stop_reaches_every_process_and_sigkill_ends_the_namespace(
    runner: ProcessRunner, state: Path, mode: str
) -> None:
    wl = assignment("wl-sig", SIGNALS, [GPUS[0]])
    wl = wl.model_copy(update={"command": [*wl.command, mode]})
    first = runner.start(wl)
    log = state / "logs" / "wl-sig" / "0.log"
    wait_until(lambda: "grandchild escaped" in log.read_text() and "leader" in log.read_text(), what="start")
    uid = (state / "work" / "wl-sig").stat().st_uid
    assert len(uid_processes({uid})) == 2
    runner.stop("wl-sig", grace_s=1.0)
    wait_until(lambda: ended(runner, "wl-sig"), what="the stop")
    status = status_of(runner, "wl-sig")
    assert status.phase is AssignmentPhase.STOPPED
    assert log.read_text().count("grandchild got SIGTERM") == 1  # forwarded once, past its setsid
    # The leader the agent watches ends last: when it has, no process of the workload is left.
    assert status.exit_code == (-signal.SIGTERM if mode == "polite" else -signal.SIGKILL)
    assert uid_processes({uid}) == [] and group_members(first.pid or 0) == []


AGENT = """
import json, os, signal, sys, time
from pathlib import Path
from agents.protocol import Assignment
from agents.runtime.processes import ProcessRunner
from agents.runtime.sandbox import Sandbox, default_policy
from agents.state import ProcessLedger

state = Path(sys.argv[1])
ledger = ProcessLedger(state / "processes.json")
sandbox = Sandbox(default_policy(state))
runner = ProcessRunner(state / "logs", work_dir=state / "work", record_live=ledger.save, sandbox=sandbox)
runner.start(Assignment.model_validate(json.loads(sys.argv[2])))
log = state / "logs" / "wl-orphan" / "0.log"
deadline = time.monotonic() + 20
while "grandchild escaped" not in (log.read_text() if log.exists() else ""):
    assert time.monotonic() < deadline, "workload did not start"
    time.sleep(0.02)
os.kill(os.getpid(), signal.SIGKILL)
"""


@needs_root
def test_a_killed_agents_sandboxed_workload_is_stopped_at_restart(state: Path) -> None:
    wl = assignment("wl-orphan", SIGNALS, [GPUS[0]])
    wl = wl.model_copy(update={"command": [*wl.command, "stubborn"]})
    agent = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(AGENT), str(state), wl.model_dump_json()],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == -signal.SIGKILL, agent.stderr
    uid = (state / "work" / "wl-orphan").stat().st_uid
    try:
        assert len(uid_processes({uid})) == 2  # the workload outlived its agent
        ledger = ProcessLedger(state / "processes.json")
        [entry] = ledger.load()
        statuses = recover_orphans(ledger, FinishedLedger(state / "finished.json"), grace_s=0.5)
        assert [s.message for s in statuses] == ["agent restarted: its process was stopped (SIGKILL after 0.5s)"]
        assert group_members(entry.pid) == []
        wait_until(lambda: uid_processes({uid}) == [], timeout=5, what="the namespace to be gone")
    finally:
        for pid in uid_processes({uid}):
            os.kill(pid, signal.SIGKILL)


def test_an_agent_that_cannot_sandbox_refuses_to_run_workloads(tmp_path: Path) -> None:
    """Not root (or no namespaces): the agent exits before registering, and says how to override."""
    argv = [sys.executable, "-m", "agents.daemon", "--server", "http://127.0.0.1:9", "--state-dir", str(tmp_path)]
    if os.geteuid() == 0:  # as root, make the check fail another way: a range holding a host user
        argv += ["--workload-uids", "65534-65534"]
    env = {"PATH": os.environ["PATH"], "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": "sy_boot_x", "HOME": str(tmp_path)}
    run = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "cannot sandbox tenant workloads" in run.stderr and "--insecure-no-sandbox" in run.stderr, run.stderr
    assert not (tmp_path / "credential.json").exists()


# -- finding 2: one assignment that cannot start does not stop the others ------------------------


def test_a_nul_byte_rejects_only_its_own_assignment(tmp_path: Path) -> None:
    """A real Agent reconciling a desired state whose first assignments carry NUL bytes."""
    cfg = AgentConfig(
        server="http://127.0.0.1:9",
        state_dir=tmp_path,
        backend="sim",
        hostname="tray01",
        advertise_addr="127.0.0.1",
        metrics_addr="127.0.0.1",
        metrics_port=0,
        log_level="INFO",
        insecure_no_sandbox=True,
    )
    runner = ProcessRunner(tmp_path / "logs", work_dir=tmp_path / "work", base_env=inherited_env())
    backend = SimBackend(4)
    uuids = [gpu.uuid for gpu in backend.inventory()]
    client = AgentClient(cfg.server, credential="c")
    agent = Agent(
        cfg,
        registration=RegisterResponse(
            node_id="n1", credential="c", report_interval_s=5, watch_timeout_s=1, lease_ttl_s=30
        ),
        backend=backend,
        runner=runner,
        client=client,
        collector=AgentCollector("tray01"),
        seqs=SeqAllocator(tmp_path / "seq.json", block=10),
        finished=FinishedLedger(tmp_path / "finished.json"),
        spool=Spool(tmp_path / "spool"),
        stop=threading.Event(),
    )
    ok = "print('started fine')"
    desired = [
        assignment("wl-a-env", ok, [uuids[0]], TENANT="bad\u0000value"),
        assignment("wl-b-cmd", ok, [uuids[1]]).model_copy(update={"command": [sys.executable, "-c", "print(1)\u0000"]}),
        assignment("wl-c-good", ok, [uuids[2]]),
        assignment("wl-d-good", ok, [uuids[3]]),
    ]
    try:
        agent.apply_desired(DesiredState(node_id="n1", generation=1, assignments=desired))
        wait_until(lambda: ended(runner, "wl-c-good") and ended(runner, "wl-d-good"), what="the good ones")
        by_id = {s.workload_id: s for s in runner.poll()}
        assert by_id["wl-a-env"].phase is AssignmentPhase.REJECTED
        assert by_id["wl-a-env"].message == "environment variable TENANT contains a NUL byte"
        assert by_id["wl-b-cmd"].phase is AssignmentPhase.REJECTED
        assert by_id["wl-b-cmd"].message == "command argument 2 contains a NUL byte"
        for wid in ("wl-c-good", "wl-d-good"):
            assert (by_id[wid].phase, by_id[wid].exit_code) == (AssignmentPhase.EXITED, 0)
            assert (tmp_path / "logs" / wid / "0.log").read_text() == "started fine\n"
    finally:
        runner.stop_all(grace_s=0.5)
        runner.wait_idle(5.0)
        client.close()
