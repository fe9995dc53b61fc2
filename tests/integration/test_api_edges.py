"""The API's edges over a real socket (issue 8, findings 7 and 11), on PostgreSQL and SQLite.

The app runs in uvicorn on a loopback port, as in production, and the tests speak HTTP/1.1 on
a raw socket, so what is sent before a body arrives, and what happens to the connection after
an answer, is seen exactly: a refused body is refused before it is read (401, 413, 415 with
``Connection: close``), and an unexpected error answers problem+json and leaves the client
knowing the connection's state.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from factories import make_site, make_tenant, workload_body
from harness import free_port
from sqlalchemy import update

from controlplane.api.app import create_app
from controlplane.api.bodies import WORKLOAD_BODY_BYTES
from controlplane.config import Settings
from controlplane.runtime import Runtime
from controlplane.store.models import Workload

PROBLEM = "application/problem+json"
# No answer within this long means the server is waiting for the body it should have refused.
ANSWER_TIMEOUT_S = 10


@pytest.fixture
def base_url(settings: Settings, runtime: Runtime) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(create_app(settings, runtime=runtime), host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            thread.join(0.05)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def _connect(base_url: str) -> socket.socket:
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=ANSWER_TIMEOUT_S)
    return sock


def _read_answer(sock: socket.socket) -> Answer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in the middle of its answer"
        body += chunk
    return Answer(int(status_line.split()[1]), headers, body[:length])


def _request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return False


def test_an_unexpected_error_is_a_problem_and_the_connection_stays_honest(base_url: str, runtime: Runtime) -> None:
    """Finding 11: after a 500 the server dropped the connection without saying so; a pooled
    client's next call on it failed with a reset."""
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    with httpx.Client(base_url=base_url, headers=acme.headers) as api:
        broken = api.post("/v1/workloads", json=workload_body(1)).json()["id"]
        healthy = api.post("/v1/workloads", json=workload_body(1)).json()["id"]
    # A row no code path writes (a corrupt env): reading it fails in a way nobody planned for.
    with runtime.uow() as session:
        session.execute(update(Workload).where(Workload.id == broken).values(env=[1]))

    sock = _connect(base_url)
    with sock:
        sock.sendall(_request("GET", f"/v1/workloads/{broken}", acme.headers))
        first = _read_answer(sock)
        assert first.status == 500 and first.headers["content-type"] == PROBLEM
        assert first.json() == {
            "type": "about:blank",
            "title": "Internal error",
            "status": 500,
            "detail": "the server failed; the error was logged",
        }
        # Either the server says it closes (and does), or the connection serves the next call.
        if first.headers.get("connection", "").lower() == "close":
            assert _closed_by_server(sock)
        else:
            sock.sendall(_request("GET", f"/v1/workloads/{healthy}", acme.headers))
            assert _read_answer(sock).status == 200
    assert first.headers.get("connection", "").lower() == "close"

    # A pooled client goes on with its next call after the 500, on a fresh connection.
    with httpx.Client(base_url=base_url, headers=acme.headers) as api:
        assert api.get(f"/v1/workloads/{broken}").status_code == 500
        assert api.get(f"/v1/workloads/{healthy}").status_code == 200


def test_an_anonymous_upload_is_refused_before_its_body_is_read(base_url: str, runtime: Runtime) -> None:
    """Finding 7: a 30 MB unauthenticated POST was read and parsed before the 401."""
    sock = _connect(base_url)
    with sock:
        # Only the headers: the server must answer without waiting for the 30 MB.
        sock.sendall(
            _request("POST", "/v1/workloads", {"Content-Type": "application/json", "Content-Length": "31457280"})
        )
        answer = _read_answer(sock)
        assert answer.status == 401 and answer.headers["content-type"] == PROBLEM
        assert answer.headers["connection"].lower() == "close"
        assert _closed_by_server(sock)


def test_an_oversized_body_is_refused_before_it_is_read(base_url: str, runtime: Runtime) -> None:
    make_site(runtime)
    acme = make_tenant(runtime, "acme")
    headers = {**acme.headers, "Content-Type": "application/json"}
    # Declared: refused from Content-Length alone.
    sock = _connect(base_url)
    with sock:
        sock.sendall(_request("POST", "/v1/workloads", {**headers, "Content-Length": str(WORKLOAD_BODY_BYTES + 1)}))
        answer = _read_answer(sock)
        assert answer.status == 413 and answer.headers["content-type"] == PROBLEM
        assert str(WORKLOAD_BODY_BYTES) in answer.json()["detail"]  # type: ignore[index]
        assert answer.headers["connection"].lower() == "close"
    # Chunked: refused once the limit is passed, though the body never ends.
    sock = _connect(base_url)
    with sock:
        sock.sendall(_request("POST", "/v1/workloads", {**headers, "Transfer-Encoding": "chunked"}))
        piece = b" " * 65536
        sent = 0
        while sent <= WORKLOAD_BODY_BYTES:
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
        answer = _read_answer(sock)
        assert answer.status == 413 and answer.headers["content-type"] == PROBLEM
    # A media type that is not JSON: refused before the body is read.
    sock = _connect(base_url)
    with sock:
        sock.sendall(
            _request(
                "POST", "/v1/workloads", {**acme.headers, "Content-Type": "text/plain", "Content-Length": "100000"}
            )
        )
        answer = _read_answer(sock)
        assert answer.status == 415 and answer.headers["connection"].lower() == "close"
    # And a body at its limit is read and judged on what it says.
    body = json.dumps(workload_body(1)).encode()
    body += b" " * (WORKLOAD_BODY_BYTES - len(body))
    with httpx.Client(base_url=base_url, headers=acme.headers) as api:
        r = api.post("/v1/workloads", content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 201, r.text
