"""The one place that shapes an answer for an agent older than this control plane.

A version-1 agent refuses unknown fields, so everything it receives must hold only the fields
version 1 knew; later agents ignore what they do not know, but are answered in their own
version all the same, so each version sees exactly what it was written against. Which version
added a field is declared beside the field, in ``agents.protocol`` (``Since``); a version that
changes what a field means, rather than adding one, would be translated here too.

Problem bodies (problem+json) are not shaped: every agent version reads only their ``detail``.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Query, Response
from pydantic import BaseModel

from agents.protocol import MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, for_version

JSON = "application/json"

# The desired-state poll is a GET with no body to carry the version: agents from version 2 on
# say it as ``?protocol=<version>``; a version-1 agent never sends it, hence the default.
# Checked by ``check_protocol`` (400 naming the range), not here (a 422 would not name it).
AgentProtocol = Annotated[
    int,
    Query(
        alias="protocol",
        description=f"the agent's protocol version, {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION} (absent: 1)",
    ),
]


def for_agent(message: BaseModel, *, version: int, status_code: int = 200) -> Response:
    """``message`` as an agent speaking protocol ``version`` may receive it.

    Returned as a ready ``Response``, so FastAPI's response model cannot put the fields back.
    The caller has checked ``version`` (``registration.check_protocol``) before doing anything.
    """
    if version >= PROTOCOL_VERSION:
        body = message.model_dump_json()
    else:
        body = json.dumps(for_version(message, version), separators=(",", ":"))
    return Response(content=body, status_code=status_code, media_type=JSON)
