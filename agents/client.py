"""HTTP client for the four agent endpoints of ``agents.protocol``.

Errors come in two kinds because the daemon must treat them differently: a ``RejectedError``
(4xx) means the request itself is wrong - a used bootstrap token, a revoked credential - and
retrying the same request will not help; a ``TransientError`` (connection refused, timeout,
5xx, 429) means "try again later", which is normal while the control plane restarts.

The client also negotiates the protocol version (``agents.protocol``). It speaks the newest
version it knows until the control plane refuses it - a 400 whose detail names the protocol
(the version is out of the server's range), or a 422 for fields the server does not know (a
version-1 server refuses unknown fields) - then steps down, one version on a 400, straight to
version 1 on a 422 (only version 1 refuses unknown fields), and sends the same request again,
cut down to the fields that version knew (``for_version``). The version it settles on holds
for every later request of this process. Refusals happen before the server changes anything
(the bootstrap token stays unspent), so the retry is safe; a request already
at ``MIN_PROTOCOL_VERSION`` raises the refusal as usual.

A report batch (protocol 3) is not negotiated: ``report_batch`` answers None when the control
plane has no batch route or does not take this batch (an older control plane, or a report in
it that the wire model refuses), and the caller sends the same reports one by one instead.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import cache
from importlib import metadata
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from agents.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    DesiredState,
    LogUpload,
    LogUploadResponse,
    RegisterRequest,
    RegisterResponse,
    ReportBatchResponse,
    ReportRequest,
    ReportResponse,
    for_version,
)

log = logging.getLogger(__name__)

_M = TypeVar("_M", bound=BaseModel)

# Added to the long poll's server-side wait so the client never gives up first.
_LONG_POLL_MARGIN_S = 10.0
_TRANSIENT_4XX = frozenset({408, 425, 429})
BATCH_SINCE = 3  # the protocol version that added POST .../reports/batch
# A credential refused is the node's problem, not the batch's: the caller must not fall back.
_CREDENTIAL_REFUSED = frozenset({401, 403})


class ControlPlaneError(Exception):
    """Any failed exchange with the control plane."""


class TransientError(ControlPlaneError):
    """Worth retrying with backoff: the control plane is unreachable, overloaded or failing."""


class RejectedError(ControlPlaneError):
    """The control plane refused the request (4xx); ``detail`` is its problem+json explanation."""

    def __init__(self, status_code: int, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
        self.errors = errors or []  # a 422's per-field errors ({"loc", "msg", "type"})

    @property
    def refuses_version(self) -> bool:
        """The control plane refused the protocol version, or (being older) fields it does not know."""
        if self.status_code == 400:
            return "protocol version" in self.detail.lower()
        return self.status_code == 422 and any(e.get("type") == "extra_forbidden" for e in self.errors)


@cache
def agent_version() -> str | None:
    """This agent's software version (the installed ``switchyard`` distribution), None if unknown."""
    try:
        return metadata.version("switchyard")
    except metadata.PackageNotFoundError:
        return None


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
        self._protocol = PROTOCOL_VERSION
        self._protocol_lock = threading.Lock()
        self._batches = True  # until the control plane says it has no batch route
        version = agent_version()
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            headers={"User-Agent": f"switchyard-agent/{version}" if version else "switchyard-agent"},
        )

    def set_credential(self, credential: str) -> None:
        self._credential = credential

    @property
    def protocol_version(self) -> int:
        """The version this client speaks now: its newest, or what the control plane settled it on."""
        with self._protocol_lock:
            return self._protocol

    def close(self) -> None:
        self._http.close()

    # -- endpoints ----------------------------------------------------------------------------

    def register(self, request: RegisterRequest) -> RegisterResponse:
        response = self._negotiate("POST", "/v1/agent/register", RegisterResponse, message=request, auth=False)
        with self._protocol_lock:  # min(ours, the server's newest)
            self._protocol = max(MIN_PROTOCOL_VERSION, min(self._protocol, response.protocol_version))
        return response

    def report(self, node_id: str, request: ReportRequest) -> ReportResponse:
        return self._negotiate("POST", f"/v1/agent/nodes/{node_id}/reports", ReportResponse, message=request)

    def report_batch(self, node_id: str, reports: list[ReportRequest]) -> ReportBatchResponse | None:
        """Send several reports, oldest first, in one request; None: send them one by one instead.

        None when the version this client speaks has no batches, or the control plane refuses
        this batch for anything but the credential (no such route: an older control plane; a
        report the wire model refuses). Transient failures and a refused credential raise.
        """
        version = self.protocol_version
        if version < BATCH_SINCE or not self._batches:
            return None
        data = {
            "protocol_version": version,
            "reports": [{**for_version(r, version), "protocol_version": version} for r in reports],
        }
        content = json.dumps(data, separators=(",", ":")).encode()
        try:
            answer = self._call(
                "POST", f"/v1/agent/nodes/{node_id}/reports/batch", ReportBatchResponse, content=content
            )
        except RejectedError as exc:
            if exc.status_code in _CREDENTIAL_REFUSED:
                raise
            if exc.status_code in (404, 405):
                self._batches = False  # an older control plane: it will not grow the route while we run
            log.info(
                "the control plane did not take a batch of %d report(s) (%s); sending them one by one",
                len(reports),
                exc,
            )
            return None
        if [r.seq for r in answer.results] != [r.seq for r in reports]:
            raise TransientError(f"a batch answer names seqs {[r.seq for r in answer.results]}, not the batch's")
        return answer

    def desired(self, node_id: str, *, after: int, wait_s: float) -> DesiredState:
        """Long poll: the server holds up to ``wait_s``; the client waits a margin longer."""
        return self._negotiate(
            "GET",
            f"/v1/agent/nodes/{node_id}/desired",
            DesiredState,
            params={"after": after, "wait": wait_s},
            timeout_s=wait_s + _LONG_POLL_MARGIN_S,
        )

    def upload_logs(self, node_id: str, upload: LogUpload) -> LogUploadResponse:
        return self._negotiate("POST", f"/v1/agent/nodes/{node_id}/logs", LogUploadResponse, message=upload)

    # -- plumbing -----------------------------------------------------------------------------

    def _negotiate(
        self,
        method: str,
        path: str,
        model: type[_M],
        *,
        message: BaseModel | None = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        timeout_s: float | None = None,
    ) -> _M:
        """One exchange in the version this client speaks, stepping down while the server refuses it.

        A body is cut down to the fields of that version and carries it as ``protocol_version``;
        a GET carries it as ``?protocol=`` (a version-1 server ignores the parameter).
        """
        while True:
            version = self.protocol_version
            content = None
            if message is not None:
                data = for_version(message, version)
                data["protocol_version"] = version
                content = json.dumps(data, separators=(",", ":")).encode()
            query = {**(params or {}), "protocol": version} if message is None else params
            try:
                return self._call(method, path, model, content=content, params=query, auth=auth, timeout_s=timeout_s)
            except RejectedError as exc:
                if version <= MIN_PROTOCOL_VERSION or not exc.refuses_version:
                    raise
                with self._protocol_lock:
                    if self._protocol == version:  # another thread may have stepped down already
                        # Refused fields: only version 1 refuses what it does not know, so it is
                        # version 1 (one refusal, not one per version in between).
                        self._protocol = MIN_PROTOCOL_VERSION if exc.status_code == 422 else version - 1
                log.warning(
                    "the control plane refused protocol version %d on %s %s (%s); speaking %d",
                    version,
                    method,
                    path,
                    exc.detail,
                    self.protocol_version,
                )

    def _call(
        self,
        method: str,
        path: str,
        model: type[_M],
        *,
        content: bytes | None = None,
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
                content=content,
                params=params,
                headers={**headers, "Content-Type": "application/json"} if content is not None else headers,
                timeout=timeout_s if timeout_s is not None else self._timeout_s,
            )
        except httpx.TransportError as exc:  # connect, read, timeouts, protocol errors
            raise TransientError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in _TRANSIENT_4XX:
            raise TransientError(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        if response.status_code >= 400:
            raise RejectedError(response.status_code, _detail(response), errors=_errors(response))
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            # A proxy's HTML page or a half-deployed server: not the agent's fault, try later.
            raise TransientError(f"{method} {path}: unexpected response body: {exc}") from exc


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    """A 422 problem's per-field ``errors`` (empty for anything else)."""
    try:
        body = response.json()
    except ValueError:
        return []
    errors = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


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
