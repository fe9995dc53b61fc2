"""A tenant's client for the REST API (the SDK under `switchyard workloads ...`): httpx only, so
it runs wherever the agent's base install does.

The server and the key come from the arguments, else from ``SWITCHYARD_SERVER`` and
``SWITCHYARD_API_KEY`` (a key given in the environment stays out of the process list). Every
error the API returns is problem+json; ``ApiError`` carries its status and its detail.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_ENV = "SWITCHYARD_SERVER"
KEY_ENV = "SWITCHYARD_API_KEY"


class ApiError(Exception):
    """The API refused a request: its HTTP status and the problem's detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class ClientConfigError(Exception):
    """No key to call with; the message says how to give one."""


def server_from(value: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return (value or env.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")


def key_from(value: str | None, environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    key = value or env.get(KEY_ENV)
    if not key:
        raise ClientConfigError(f"no API key: set {KEY_ENV} (or pass --key)")
    return key


class Client:
    """The tenant's workloads over HTTP: submit, list, show."""

    def __init__(self, server: str, key: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(
            base_url=f"{server}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def submit(
        self,
        *,
        gpus: int,
        command: Sequence[str],
        gpu_model: str | None = None,
        nvlink: str | None = None,
        priority: str | None = None,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        max_duration_s: int | None = None,
        checkpoint_interval_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit a workload; fields left None take the API's defaults."""
        body: dict[str, Any] = {"gpus": gpus, "command": list(command)}
        optional = {
            "gpu_model": gpu_model,
            "nvlink": nvlink,
            "priority": priority,
            "name": name,
            "env": dict(env) if env is not None else None,
            "max_duration_s": max_duration_s,
            "checkpoint_interval_s": checkpoint_interval_s,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call("POST", "/workloads", json=body, headers=headers)

    def workloads(self, *, state: str | None = None, limit: int = 50, cursor: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        if cursor:
            params["cursor"] = cursor
        return self._call("GET", "/workloads", params=params)

    def workload(self, workload_id: str) -> dict[str, Any]:
        return self._call("GET", f"/workloads/{urllib.parse.quote(workload_id, safe='')}")

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the API at {self._http.base_url}: {exc}") from None
        if r.status_code >= 400:
            raise ApiError(r.status_code, _detail(r))
        body = r.json()
        assert isinstance(body, dict)
        return body


def _detail(r: httpx.Response) -> str:
    try:
        problem = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    if isinstance(problem, dict) and isinstance(problem.get("detail"), str) and problem["detail"]:
        return f"{problem['detail']} (HTTP {r.status_code})"
    return f"HTTP {r.status_code}"
