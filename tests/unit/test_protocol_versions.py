"""Protocol versions as plain data: what a peer of each version receives, when an agent steps down."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict

from agents.client import RejectedError
from agents.protocol import PROTOCOL_VERSION, ReportResponse, Since, for_version


class _Inner(BaseModel):
    model_config = ConfigDict(frozen=True)
    x: int
    y: Annotated[int, Since(2)] = 0


class _Outer(BaseModel):
    model_config = ConfigDict(frozen=True)
    a: str
    b: Annotated[str | None, Since(2)] = None
    c: Annotated[_Inner | None, Since(3)] = None
    inner: list[_Inner] = []
    by_key: dict[int, _Inner] = {}
    maybe: _Inner | None = None
    counts: dict[int, int] = {}


def test_a_peer_receives_only_the_fields_its_version_knew_at_every_depth() -> None:
    message = _Outer(
        a="x",
        b="new",
        c=_Inner(x=9, y=9),
        inner=[_Inner(x=1, y=2), _Inner(x=3, y=4)],
        by_key={7: _Inner(x=5, y=6)},
        maybe=_Inner(x=8, y=9),
        counts={13: 2},
    )
    assert for_version(message, 1) == {
        "a": "x",
        "inner": [{"x": 1}, {"x": 3}],
        "by_key": {"7": {"x": 5}},
        "maybe": {"x": 8},
        "counts": {"13": 2},
    }
    v2 = for_version(message, 2)
    assert "c" not in v2 and v2["b"] == "new" and v2["inner"] == [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
    assert for_version(message, 3) == message.model_dump(mode="json")
    assert for_version(_Outer(a="x"), 1) == {"a": "x", "inner": [], "by_key": {}, "maybe": None, "counts": {}}


def test_readers_ignore_fields_they_do_not_know() -> None:
    answer = ReportResponse.model_validate_json(b'{"accepted": true, "generation": 3, "from_v9": {"x": 1}}')
    assert answer == ReportResponse(accepted=True, generation=3)


def test_the_agent_steps_down_on_a_refused_version_or_refused_fields_only() -> None:
    refused = RejectedError(
        400, f"agent protocol version {PROTOCOL_VERSION} is not supported; this control plane speaks 1"
    )
    assert refused.refuses_version
    unknown = [{"loc": "body.agent_version", "msg": "Extra inputs are not permitted", "type": "extra_forbidden"}]
    assert RejectedError(422, "body.agent_version: Extra inputs are not permitted", errors=unknown).refuses_version
    missing = [{"loc": "body.seq", "msg": "Field required", "type": "missing"}]
    assert not RejectedError(422, "body.seq: Field required", errors=missing).refuses_version
    assert not RejectedError(400, "the request body is not valid JSON").refuses_version
    assert not RejectedError(401, "the bootstrap token was already used").refuses_version


def test_no_wire_field_is_newer_than_the_newest_version() -> None:
    """What lets ``for_version`` send the newest version's messages unpruned (every report's path)."""
    import agents.protocol as protocol

    wire = [m for m in vars(protocol).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    assert len(wire) > 10
    newer = [
        f"{model.__name__}.{name}"
        for model in wire
        for name, info in model.model_fields.items()
        if protocol.field_since(info) > PROTOCOL_VERSION
    ]
    assert not newer, newer
