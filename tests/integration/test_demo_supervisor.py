"""The demo's children die with it: the kernel's death signal, with real processes.

A stand-in for the demo (a Python process using the real ``Supervisor``) spawns a child and is
SIGKILLed: nothing of the demo runs any more, yet the child must get SIGTERM and end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")

STANDIN = """
import sys, time
from pathlib import Path
from controlplane.processes.demo.supervisor import Stage, Supervisor
supervisor = Supervisor(Path(sys.argv[1]))
child = supervisor.spawn("sleeper", [sys.executable, "-c", "import time; time.sleep(120)"], {}, stage=Stage.AGENT)
print(child.process.pid, flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_child_gets_sigterm_when_the_demo_is_sigkilled(tmp_path: Path) -> None:
    demo = subprocess.Popen([sys.executable, "-c", STANDIN, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    assert demo.stdout is not None
    child = int(demo.stdout.readline())
    try:
        assert _alive(child)
        demo.kill()
        demo.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived the demo"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_all_terminates_each_stage_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    from controlplane.processes.demo import supervisor as sup

    s = sup.Supervisor(tmp_path, agent_stop_s=1.0)
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    stubborn += "time.sleep(120)"
    obedient = s.spawn("api", [sys.executable, "-c", "import time; time.sleep(120)"], {}, stage=sup.Stage.CONTROL_PLANE)
    deaf = s.spawn("agent-01", [sys.executable, "-c", stubborn], {}, stage=sup.Stage.AGENT, state_dir=tmp_path / "a1")
    deadline = time.monotonic() + 10
    while "ready" not in deaf.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    notes = s.stop_all()
    assert notes == ["agent-01 did not stop in time: killed"]
    assert deaf.process.returncode == -signal.SIGKILL and obedient.process.returncode == -signal.SIGTERM
