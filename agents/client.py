"""HTTP client for the four agent endpoints of ``agents.protocol``.

Errors come in two kinds because the daemon must treat them differently: a ``RejectedError``
(4xx) means the request itself is wrong - a used bootstrap token, a revoked credential - and
retrying the same request will not help; a ``TransientError`` (connection refused, timeout,
5xx, 429) means "try again later", which is normal while the control plane restarts.
"""

from __future__ import annotations

from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agents.protocol import (
    DesiredState,
    LogUpload,
    LogUploadResponse,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    ReportResponse,
)

_M = TypeVar("_M", bound=BaseModel)

# Added to the long poll's server-side wait so the client never gives up first.
_LONG_POLL_MARGIN_S = 10.0
_TRANSIENT_4XX = frozenset({408, 425, 429})


class ControlPlaneError(Exception):
    """Any failed exchange with the control plane."""


class TransientError(ControlPlaneError):
    """Worth retrying with backoff: the control plane is unreachable, overloaded or failing."""


class RejectedError(ControlPlaneError):
    """The control plane refused the request (4xx); ``detail`` is its problem+json explanation."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class AgentClient:
    """One connection pool shared by the agent's loops (httpx.Client is thread-safe)."""

    def __init__(
        self,
        base_url: str,
        *,
        credential: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._timeout_s = timeout_s
        self._credential = credential
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": "switchyard-agent"},
        )

    def set_credential(self, credential: str) -> None:
        self._credential = credential

    def close(self) -> None:
        self._http.close()

    # -- endpoints ----------------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> RegisterResponse:
        return self._call("POST", "/v1/agent/register", RegisterResponse, json=request, auth=False)

    def report(self, node_id: str, request: ReportRequest) -> ReportResponse:
        return self._call("POST", f"/v1/agent/nodes/{node_id}/reports", ReportResponse, json=request)

    def desired(self, node_id: str, *, after: int, wait_s: float) -> DesiredState:
        """Long poll: the server holds up to ``wait_s``; the client waits a margin longer."""
        return self._call(
            "GET",
            f"/v1/agent/nodes/{node_id}/desired",
            DesiredState,
            params={"after": after, "wait": wait_s},
            timeout_s=wait_s + _LONG_POLL_MARGIN_S,
        )

    def upload_logs(self, node_id: str, upload: LogUpload) -> LogUploadResponse:
        return self._call("POST", f"/v1/agent/nodes/{node_id}/logs", LogUploadResponse, json=upload)

    # -- plumbing -----------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        path: str,
        model: type[_M],
        *,
        json: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        timeout_s: float | None = None,
    ) -> _M:
        headers = {}
        if auth:
            if self._credential is None:
                raise RuntimeError("the agent has no node credential yet; register first")
            headers["Authorization"] = f"Bearer {self._credential}"
        try:
            response = self._http.request(
                method,
                path,
                content=json.model_dump_json() if json is not None else None,
                params=params,
                headers={**headers, "Content-Type": "application/json"} if json is not None else headers,
                timeout=timeout_s if timeout_s is not None else self._timeout_s,
            )
        except httpx.TransportError as exc:  # connect, read, timeouts, protocol errors
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in _TRANSIENT_4XX:
            raise TransientError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        if response.status_code >= 400:
            raise RejectedError(response.status_code, _detail(response))
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # A proxy's HTML page or a half-deployed server: not the agent's fault, try later.
            raise TransientError(f"{method} {path}: unexpected response body: {exc}") from exc


def _detail(response: httpx.Response) -> str:
    """problem+json ``detail`` (or FastAPI's validation list), else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        return detail if isinstance(detail, str) else str(detail)[:2000]
    return str(body)[:500]
