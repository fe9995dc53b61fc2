"""The cases of the bad-input suite (issue 8), generated from the app's own route table.

The routes come from ``api.app.ROUTERS``, their inputs from what FastAPI knows of each route
(path and query parameters, the body model, the key scope), so a new route or field is covered
without editing this file; a body model without an example in ``EXAMPLES`` fails the suite.

Each case is one valid request with one thing wrong: a NUL, control, bidi or zero-width
character or an unpaired surrogate in a string; an integer past its bounds or past 64 bits; a
non-finite number; a duplicate key; a body too large (declared or chunked) or nested too deep;
a media type that is not JSON in UTF-8. Which characters a field refuses depends on its kind
(``api.schemas.common``): names refuse all of them, free text (a reason) allows zero-width
characters, what is handed to a tenant's process (argv, env values) refuses only NUL, and the
agent's wire fields (``agents.protocol``) are held here to what every body is: no NUL, no
unpaired surrogate, finite numbers, 64-bit integers.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Union, get_args, get_origin

import annotated_types
from factories import (
    RegisteredNode,
    TenantKey,
    bootstrap_token,
    inventory,
    make_operator_key,
    make_site,
    make_tenant,
    register_node,
    workload_body,
)
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy import select, text

from agents.protocol import PROTOCOL_VERSION, LogUpload, RegisterRequest, ReportBatch, ReportRequest
from controlplane.api import app as api_app
from controlplane.api import bodies, deps
from controlplane.api.schemas import (
    CancelRequest,
    CordonRequest,
    KeyCreate,
    TenantCreate,
    TenantPolicyIn,
    WorkloadCreate,
)
from controlplane.domain.audit import CREDENTIAL_USED_FROM_NEW_ADDRESS
from controlplane.domain.enums import KeyScope
from controlplane.domain.epoch import PlacementEpoch
from controlplane.runtime import Runtime
from controlplane.services import admin
from controlplane.services.scheduler.run import run_pass
from controlplane.store.models import ApiKey, Base, Gpu

PROBLEM = "application/problem+json"
ROUTES: list[APIRoute] = [r for router in api_app.ROUTERS for r in router.routes if isinstance(r, APIRoute)]


# -- the world every case runs in ---------------------------------------------------------------


@dataclass(frozen=True)
class World:
    site_id: str
    tenant: TenantKey
    ops: dict[str, str]
    node: RegisteredNode
    workload_id: str
    gpu_id: str
    key_id: str  # a second key of the tenant's: its own-key routes rotate and revoke it
    token: str
    operator_key_id: str = ""  # a third: the operator's key routes rotate and revoke it
    token_id: str = ""  # a spare join token: the operator's token route revokes it
    rotated_token_id: str = ""  # another: the operator's token route rotates it

    def path_value(self, name: str, route_path: str = "") -> str:
        operator = route_path.startswith("/operator/")
        return {
            "workload_id": self.workload_id,
            "node_id": self.node.node_id,
            "gpu_id": self.gpu_id,
            "tenant_id": self.tenant.tenant_id,
            "key_id": self.operator_key_id if operator else self.key_id,
            "token_id": self.rotated_token_id if route_path.endswith("/rotate") else self.token_id,
            "site_id": self.site_id,
            "month": "2026-11",
        }[name]

    def headers(self, scope: KeyScope | None) -> dict[str, str]:
        if scope is KeyScope.TENANT:
            return self.tenant.headers
        if scope is KeyScope.OPERATOR:
            return self.ops
        if scope is KeyScope.AGENT:
            return self.node.headers
        return {}


PLACEHOLDER = World(
    site_id="site_X",
    tenant=TenantKey("tnt_X", "sy_tenant_X"),
    ops={},
    node=RegisteredNode("node_X", "sy_agent_X", inventory(1)),
    workload_id="wl_X",
    gpu_id="gpu_X",
    key_id="key_X",
    token="sy_boot_XXXXXXXX",
)


def _report(w: World) -> dict[str, Any]:
    return {
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": "0.1.0",
        "metrics_url": "http://10.0.0.1:9400/metrics",
        "seq": 1,
        "sent_at": 1_700_000_000.5,
        "gpus": [
            {
                "uuid": g.uuid,
                "index": g.index,
                "power_w": 180.0,
                "energy_mj": 1000,
                "fabric_state": "completed",
                "health_reasons": ["XID 13: graphics engine exception"],
            }
            for g in w.node.inventory.gpus[:1]
        ],
        "assignments": [
            {"workload_id": w.workload_id, "epoch": 1, "rank": 0, "phase": "starting", "message": "starting"}
        ],
        "applied_generation": 0,
        "xid_events": [
            {"uuid": w.node.inventory.gpus[0].uuid, "xid": 13, "kind": "xid", "at": 1_700_000_000.25, "detail": "x"}
        ],
    }


# A valid body for every body model; the cases bend one part of it.
EXAMPLES: dict[type[BaseModel], Callable[[World], dict[str, Any]]] = {
    WorkloadCreate: lambda w: {
        **workload_body(1, name="train-7", env={"FOO": "bar"}),
        "gpu_model": "NVIDIA GB300",
        "max_duration_s": 3600,
        "checkpoint_interval_s": 600,
        "sim_utilization": 0.5,
    },
    CancelRequest: lambda w: {"reason": "changed my mind"},
    CordonRequest: lambda w: {"reason": "fan replacement"},
    TenantCreate: lambda w: {"name": "newco"},
    TenantPolicyIn: lambda w: {"reserved_gpus": 0, "max_gpus": 8, "gpu_hours_limit": 100.5, "share_weight": 2.5},
    KeyCreate: lambda w: {"name": "ci key"},
    RegisterRequest: lambda w: {
        "protocol_version": PROTOCOL_VERSION,
        "agent_version": "0.1.0",
        "metrics_url": "http://10.0.0.2:9400/metrics",
        "bootstrap_token": w.token,
        "inventory": inventory(2).model_dump(exclude_none=True),
    },
    ReportRequest: _report,
    ReportBatch: lambda w: {"protocol_version": PROTOCOL_VERSION, "reports": [_report(w)]},
    LogUpload: lambda w: {
        "protocol_version": PROTOCOL_VERSION,
        "chunks": [{"workload_id": w.workload_id, "rank": 0, "offset": 0, "data_b64": "c3RlcCAxCg=="}],
    },
}


# -- what each route takes ----------------------------------------------------------------------


def body_model(route: APIRoute) -> type[BaseModel] | None:
    if route.body_field is None:
        return None
    annotation = route.body_field.field_info.annotation
    candidates = get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else (annotation,)
    return next(c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel))


def _bounds(metadata: list[Any]) -> tuple[int | float | None, int | float | None]:
    lo = next((m.ge for m in metadata if isinstance(m, annotated_types.Ge)), None)
    hi = next((m.le for m in metadata if isinstance(m, annotated_types.Le)), None)
    return lo, hi  # type: ignore[return-value]


def _query_params(dependant: Dependant) -> list[Any]:
    return [*dependant.query_params, *(q for sub in dependant.dependencies for q in _query_params(sub))]


def method(route: APIRoute) -> str:
    return sorted(route.methods or ())[0]


def route_id(route: APIRoute) -> str:
    return f"{method(route)} /v1{route.path}"


# -- the cases ----------------------------------------------------------------------------------

# Characters no name, id or free text may hold, and which an argv element or env value may.
NUL = "a\x00b"
SURROGATE = "a\ud800b"
CONTROL = "red\x1b[31m"
BIDI = "abc\u202edcba"
ZERO_WIDTH = "ac\u200bme"
BAD_STRINGS = {"NUL": NUL, "control": CONTROL, "bidi": BIDI, "zero-width": ZERO_WIDTH}
# Body leaves handed to a tenant's process as they are: only NUL is refused there.
ARG_LEAVES = ("command", "env")
# Free text: ordinary Unicode (zero-width joiners in an emoji included), never a control.
TEXT_LEAVES = ("reason",)
INT64_PAST = 2**63
MALFORMED_KEY = b"Bearer sy_\xe2\x80\xae"  # what a client sends for "sy_" + U+202E: its UTF-8 bytes


@dataclass(frozen=True)
class Case:
    route: str
    what: str
    # One of: the request's path/query/headers/body, changed by ``bend`` from the valid one.
    bend: Callable[[Request], Request]
    statuses: tuple[int, ...] = (422,)
    # At-bound values are valid: any answer but a 5xx, and the database may not change for a GET.
    at_bound: bool = False

    @property
    def id(self) -> str:
        return f"{self.route} {self.what}"


@dataclass
class Request:
    method: str
    path: str
    params: dict[str, Any]
    headers: dict[str, Any]
    body: bytes | Iterator[bytes] | None
    content_type: str | None = "application/json"
    # A valid key of another audience than the route's.
    other_key: dict[str, str] | None = None

    def send(self, client: TestClient) -> Any:
        headers = dict(self.headers)
        if self.body is not None and self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return client.request(self.method, self.path, params=self.params, headers=headers, content=self.body)


@dataclass(frozen=True)
class _Raw:
    """A JSON token written as is (NaN, Infinity, 1e400), which json.dumps would not write."""

    token: str


def _dumps(value: Any) -> bytes:
    # ensure_ascii: an unpaired surrogate travels as a \ud800 escape, as any client's JSON would.
    tokens: dict[str, str] = {}

    def default(o: object) -> str:
        assert isinstance(o, _Raw), o
        marker = f"@@raw{len(tokens)}@@"
        tokens[marker] = o.token
        return marker

    out = json.dumps(value, ensure_ascii=True, default=default)
    for marker, token in tokens.items():
        out = out.replace(f'"{marker}"', token)
    return out.encode()


def valid_request(route: APIRoute, w: World) -> Request:
    path = "/v1" + route.path
    for param in route.dependant.path_params:
        path = path.replace("{" + param.name + "}", urllib.parse.quote(w.path_value(param.name, route.path), safe=""))
    model = body_model(route)
    body = _dumps(EXAMPLES[model](w)) if model is not None else None
    params: dict[str, Any] = {"wait": 0, "protocol": PROTOCOL_VERSION} if route.path.endswith("/desired") else {}
    if route.path == "/usage":  # its window is required
        params = {"from": "2026-11-01", "to": "2026-12-01"}
    scope = deps.required_scope(route.dependant)
    other = KeyScope.OPERATOR if scope is KeyScope.TENANT else KeyScope.TENANT
    return Request(method(route), path, params, w.headers(scope), body, other_key=w.headers(other))


def _leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _leaves(child, (*path, i))
    else:
        yield path, value


def _set(body: bytes | Iterator[bytes] | None, path: tuple[str | int, ...], value: Any) -> bytes:
    assert isinstance(body, bytes)
    data = json.loads(body)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return _dumps(data)


def _rename_key(body: bytes | Iterator[bytes] | None, path: tuple[str | int, ...], new: str) -> bytes:
    assert isinstance(body, bytes)
    data = json.loads(body)
    node = data
    for part in path[:-1]:
        node = node[part]
    node[new] = node.pop(path[-1])
    return _dumps(data)


def _with_path(route: APIRoute, name: str, value: str) -> Callable[[Request], Request]:
    def bend(r: Request) -> Request:
        template = "/v1" + route.path
        parts = dict(zip(template.split("/"), r.path.split("/"), strict=True))
        # Dots escaped too: a client resolves a literal ".." segment before sending, never the server.
        parts["{" + name + "}"] = urllib.parse.quote(value, safe="").replace(".", "%2E")
        return replace(r, path="/".join(parts.get(seg, seg) for seg in template.split("/")))

    return bend


Setter = Callable[[Any], Callable[["Request"], "Request"]]


def _string_cases(route: APIRoute, where: str, setter: Setter, kind: str) -> list[Case]:
    rid = route_id(route)
    chosen = {"NUL": NUL, "surrogate": SURROGATE}
    if kind != "arg":
        chosen |= {"control": CONTROL, "bidi": BIDI}
    if kind == "name":
        chosen["zero-width"] = ZERO_WIDTH
    return [Case(rid, f"{where} {label}", setter(value)) for label, value in chosen.items()]


def _route_cases(route: APIRoute) -> list[Case]:
    rid = route_id(route)
    cases: list[Case] = []
    agent_body = route.path.startswith("/agent")

    # The key: refused before anything else is looked at.
    if deps.required_scope(route.dependant) is not None:
        cases += [
            Case(rid, "no key", lambda r: replace(r, headers={}), (401,)),
            Case(rid, "a malformed key", lambda r: replace(r, headers={"Authorization": MALFORMED_KEY}), (401,)),
            Case(rid, "a key of another audience", lambda r: replace(r, headers=r.other_key or {}), (403,)),
        ]

    # Path parameters: ids (or names) of a fixed shape.
    for param in route.dependant.path_params:
        for label, value in {**BAD_STRINGS, "too long": "x" * 41, "space": "a b", "dot-dot": ".."}.items():
            cases.append(Case(rid, f"path {param.name} {label}", _with_path(route, param.name, value), (404, 422)))

    # Query parameters: strings and integers (at and past their bounds), floats.
    for param in _query_params(route.dependant):
        name = param.alias
        info = param.field_info
        kind = info.annotation
        kinds = get_args(kind) or (kind,)

        def setq(value: Any, name: str = name) -> Callable[[Request], Request]:
            return lambda r: replace(r, params={**r.params, name: value})

        if str in kinds:
            for label, value in {**BAD_STRINGS, "too long": "x" * 41}.items():
                cases.append(Case(rid, f"query {name} {label}", setq(value)))
        elif int in kinds or float in kinds:
            lo, hi = _bounds(info.metadata)
            past: list[Any] = [INT64_PAST, -INT64_PAST - 1, "1e400"]
            if hi is not None:
                past.append(hi + 1)
                cases.append(Case(rid, f"query {name} at its upper bound", setq(hi), at_bound=True))
            if lo is not None:
                past.append(lo - 1)
                cases.append(Case(rid, f"query {name} at its lower bound", setq(lo), at_bound=True))
            if float in kinds:
                past += ["nan", "inf", "-inf"]
            statuses = (400, 422) if name == "protocol" else (422,)
            for value in past:
                cases.append(Case(rid, f"query {name}={value}", setq(value), statuses))
        else:  # an enum
            cases.append(Case(rid, f"query {name} NUL", setq(NUL)))

    model = body_model(route)
    if model is None:
        return cases
    example = EXAMPLES[model](PLACEHOLDER)

    # Every leaf of the body: strings with what they may not hold, numbers past their bounds.
    for path, value in _leaves(example):
        where = "body " + ".".join(str(p) for p in path)

        def setb(new: Any, path: tuple[str | int, ...] = path) -> Callable[[Request], Request]:
            return lambda r: replace(r, body=_set(r.body, path, new))

        if isinstance(value, str):
            kind = "arg" if agent_body or path[0] in ARG_LEAVES else "text" if path[0] in TEXT_LEAVES else "name"
            cases += _string_cases(route, where, setb, kind)
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            cases.append(Case(rid, f"{where}=2**63", setb(INT64_PAST)))
            cases.append(Case(rid, f"{where}=-2**63-1", setb(-INT64_PAST - 1)))
            if not agent_body and len(path) == 1:
                lo, hi = _bounds(model.model_fields[str(path[0])].metadata)
                if hi is not None:
                    cases.append(Case(rid, f"{where} past its upper bound", setb(hi + 1)))
                if lo is not None:
                    cases.append(Case(rid, f"{where} past its lower bound", setb(lo - 1)))
        elif isinstance(value, float):
            for token in ("NaN", "Infinity", "-Infinity", "1e400"):
                cases.append(Case(rid, f"{where}={token}", setb(_Raw(token))))
            if not agent_body:
                cases.append(Case(rid, f"{where}='Infinity'", setb("Infinity")))
            if not agent_body and len(path) == 1:
                # Past a float's bounds, close to them: half a positive lower bound, twice the upper.
                lo, hi = _bounds(model.model_fields[str(path[0])].metadata)
                if hi is not None:
                    cases.append(Case(rid, f"{where} past its upper bound", setb(hi * 2 if hi > 0 else hi + 1)))
                if lo is not None:
                    cases.append(Case(rid, f"{where} past its lower bound", setb(lo / 2 if lo > 0 else lo - 1)))
    # dict keys a tenant chooses: env names.
    if model is WorkloadCreate:
        for label, name in {"NUL": "FO\x00O", "bidi": "FOO\u202e", "newline": "FOO\n", "'='": "A=B"}.items():

            def rename(r: Request, new: str = name) -> Request:
                return replace(r, body=_rename_key(r.body, ("env", "FOO"), new))

            cases.append(Case(rid, f"body env name {label}", rename))
        # A checkpoint interval within its own bounds but above the workload's max duration.
        above = setb_top("checkpoint_interval_s", example["max_duration_s"] + 1)
        cases.append(Case(rid, "body checkpoint_interval_s above max_duration_s", above))

    # The body as a whole: size, shape, duplicate keys, encoding, media type.
    limit = int((route.openapi_extra or {}).get(bodies.LIMIT_KEY, bodies.DEFAULT_BODY_BYTES))
    first = next(iter(example))
    cases += [
        Case(rid, "body one byte over its limit", lambda r: replace(r, body=_pad(r.body, limit + 1)), (413,)),
        Case(rid, "chunked body over its limit", lambda r: replace(r, body=_chunked(_pad(r.body, limit + 1))), (413,)),
        Case(rid, f"body nested {bodies.MAX_DEPTH + 1} deep", setb_nested(first, bodies.MAX_DEPTH + 1)),
        Case(rid, "body nested until the parser gives up", setb_nested(first, min(100_000, limit // 2 - 64))),
        Case(rid, f"body with {first!r} twice", lambda r: replace(r, body=_duplicate(r.body, first))),
        Case(rid, "body not UTF-8", lambda r: replace(r, body=_not_utf8(r.body)), (400,)),
        Case(rid, "body a JSON array", lambda r: replace(r, body=b"[1, 2, 3]")),
        Case(rid, "body a bare NaN", lambda r: replace(r, body=b"NaN")),
    ]
    for media in (
        "text/plain",
        "application/vnd.evil+json",
        "application/json; charset=utf-16",
        "application/x-www-form-urlencoded",
        None,
    ):

        def bend(r: Request, media: str | None = media) -> Request:
            body = r.body
            if media and "utf-16" in media:
                assert isinstance(body, bytes)
                body = body.decode().encode("utf-16")
            return replace(r, body=body, content_type=media)

        cases.append(Case(rid, f"content type {media}", bend, (415,)))
    return cases


def setb_top(key: str, value: Any) -> Callable[[Request], Request]:
    return lambda r: replace(r, body=_set(r.body, (key,), value))


def setb_nested(key: str, depth: int) -> Callable[[Request], Request]:
    def bend(r: Request) -> Request:
        assert isinstance(r.body, bytes)
        text_ = r.body.decode()
        data = json.loads(text_)
        data[key] = "@@nested@@"
        return replace(r, body=_dumps(data).replace(b'"@@nested@@"', b"[" * depth + b"]" * depth))

    return bend


def _pad(body: bytes | Iterator[bytes] | None, size: int) -> bytes:
    assert isinstance(body, bytes)
    return body + b" " * (size - len(body))


def _chunked(body: bytes) -> Iterator[bytes]:
    step = 64 * 1024
    for i in range(0, len(body), step):
        yield body[i : i + step]


def _duplicate(body: bytes | Iterator[bytes] | None, key: str) -> bytes:
    assert isinstance(body, bytes)
    data = json.loads(body)
    # The last one would win: a value that would be accepted on its own, written twice.
    return body[:-1] + b", " + json.dumps(key).encode() + b": " + json.dumps(data[key]).encode() + b"}"


def _not_utf8(body: bytes | Iterator[bytes] | None) -> bytes:
    assert isinstance(body, bytes)
    data = json.loads(body)
    key = (
        next(k for k, v in data.items() if isinstance(v, str))
        if any(isinstance(v, str) for v in data.values())
        else None
    )
    if key is None:
        return b'{"\xff\xfe": 1}'
    return body.replace(json.dumps(data[key]).encode(), b'"\xff\xfe"', 1)


CASES: list[Case] = [case for route in ROUTES for case in _route_cases(route)]
ROUTE_BY_ID = {route_id(r): r for r in ROUTES}


def build_world(client: TestClient, runtime: Runtime) -> World:
    """A site, a registered node, a tenant with a workload placed on that node, an operator."""
    site_id = make_site(runtime)
    node = register_node(runtime, 1)
    tenant = make_tenant(runtime, "acme")
    ops = make_operator_key(runtime)
    r = client.post("/v1/workloads", json=workload_body(4), headers=tenant.headers)
    assert r.status_code == 201, r.text
    run_pass(runtime, PlacementEpoch(0, 1))
    token = bootstrap_token(runtime)
    with runtime.uow() as session:
        token_id, rotated_token_id = (
            admin.issue_bootstrap_token(
                session, pepper=runtime.pepper, site_name="demo-rack", rack="rack-001", ttl_s=3600
            )[0].id
            for _ in range(2)
        )
    with runtime.sessions() as s:
        gpu_id = s.scalars(select(Gpu.id).order_by(Gpu.id)).first()
        used = s.scalars(select(ApiKey.id).where(ApiKey.tenant_id == tenant.tenant_id)).one()
    assert gpu_id is not None
    spare = [client.post(f"/v1/operator/tenants/{tenant.tenant_id}/keys", json={"name": n}, headers=ops) for n in "ab"]
    assert all(r.status_code == 201 for r in spare), [r.text for r in spare]
    own, other = (r.json()["id"] for r in spare)
    assert used not in (own, other)
    return World(
        site_id,
        tenant,
        ops,
        node,
        r.json()["id"],
        gpu_id,
        own,
        token,
        operator_key_id=other,
        token_id=token_id,
        rotated_token_id=rotated_token_id,
    )


# Authentication's own record, kept whatever the request then does: a key's first use from an
# address (``credential_addresses``, and its audit entry) is evidence, not the request's effect.
_AUTH_RECORD = f"SELECT * FROM audit_log WHERE action != '{CREDENTIAL_USED_FROM_NEW_ADDRESS}'"


def snapshot(runtime: Runtime, redis_prefix: str) -> dict[str, Any]:
    """Every row of every table but authentication's record, and every Redis key under the prefix."""
    tables: dict[str, list[str]] = {}
    with runtime.sessions() as s:
        for table in Base.metadata.sorted_tables:
            if table.name == "credential_addresses":
                continue
            query = _AUTH_RECORD if table.name == "audit_log" else f"SELECT * FROM {table.name}"
            tables[table.name] = sorted(repr(tuple(row)) for row in s.execute(text(query)))
    keys = sorted(runtime.redis.scan_iter(f"{redis_prefix}:*"))
    return {"tables": tables, "redis": {k: runtime.redis.dump(k) for k in keys}}
