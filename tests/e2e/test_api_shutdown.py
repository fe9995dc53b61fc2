"""Stopping the real API process while agents hold long polls: they are answered, not cut off."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from factories import make_site, register_node
from harness import free_port, wait_for
from testenv import PEPPER

from controlplane.config import Settings
from controlplane.runtime import Runtime

GRACEFUL_SHUTDOWN_S = 3.0  # `switchyard api` gives open requests this long before cancelling them
POLLS = 3


def _start_api(settings: Settings, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "SWITCHYARD_DATA_DIR": str(settings.data_dir),
        "SWITCHYARD_DATABASE_URL": settings.database_url,
        "SWITCHYARD_REDIS_URL": settings.redis_url,
        "SWITCHYARD_REDIS_PREFIX": settings.redis_prefix,
        "SWITCHYARD_PEPPER": PEPPER,
        "SWITCHYARD_WATCH_TIMEOUT_S": "25",
    }
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "controlplane.cli", "api", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def test_sigterm_answers_held_long_polls_and_logs_no_traceback(
    settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "api.log"
    api = _start_api(settings, port, log_path)
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=1).status_code == 200, timeout=30, what="the API")
        desired_url = f"{url}/v1/agent/nodes/{node.node_id}/desired"
        generation = httpx.get(desired_url, headers=node.headers, timeout=5).json()["generation"]
        answers: list[dict[str, Any]] = []
        lock = threading.Lock()

        def hold_poll() -> None:
            try:
                r = httpx.get(desired_url, params={"after": generation, "wait": 25}, headers=node.headers, timeout=30)
                body = r.json() if r.status_code == 200 else r.text
                answer: dict[str, Any] = {"status": r.status_code, "body": body, "at": time.monotonic()}
            except httpx.HTTPError as exc:
                answer = {"status": None, "error": repr(exc), "at": time.monotonic()}
            with lock:
                answers.append(answer)

        polls = [threading.Thread(target=hold_poll) for _ in range(POLLS)]
        for poll in polls:
            poll.start()
        time.sleep(1.0)  # let the server park every poll (nothing will change the generation)
        assert answers == [], "a poll returned before anything changed: it was not held"
        signalled = time.monotonic()
        api.send_signal(signal.SIGTERM)
        for poll in polls:
            poll.join(30)
        api.wait(30)
    finally:
        if api.poll() is None:
            os.killpg(api.pid, signal.SIGKILL)
            api.wait()
    log = log_path.read_text(errors="replace")
    assert len(answers) == POLLS, answers
    for answer in answers:
        # Answered with the current desired state, before uvicorn would have cancelled the request.
        assert answer["status"] == 200, (answer, log[-3000:])
        assert answer["body"]["generation"] == generation and answer["body"]["assignments"] == []
        assert answer["at"] - signalled < GRACEFUL_SHUTDOWN_S, (answer["at"] - signalled, log[-3000:])
    assert "Traceback" not in log and "CancelledError" not in log, log[-5000:]
    assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
