"""Agent routes (DESIGN.md section 3): register, report, watch desired state, ship logs."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from agents.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    DesiredState,
    LogUpload,
    LogUploadResponse,
    RegisterRequest,
    RegisterResponse,
    ReportBatch,
    ReportBatchResponse,
    ReportRequest,
    ReportResponse,
)
from controlplane.api.bodies import (
    LOG_BODY_BYTES,
    REGISTER_BODY_BYTES,
    REPORT_BATCH_BODY_BYTES,
    REPORT_BODY_BYTES,
    GuardedRoute,
    body_limit,
)
from controlplane.api.compatibility import AgentProtocol, for_agent
from controlplane.api.deps import AgentPrincipal, PathId, RuntimeDep
from controlplane.api.origin import OriginDep
from controlplane.api.waker import Waker
from controlplane.services import auth
from controlplane.services.agents import desired as desired_states
from controlplane.services.agents import ingest, logs, registration

router = APIRouter(prefix="/agent", tags=["agent"], route_class=GuardedRoute)
NodeId = PathId
# A desired-state generation: counts placements, so far inside both databases' integers.
MAX_GENERATION = 2**53


# Each agent route answers in the version the agent spoke (``compatibility.for_agent``): the
# response models below are what the newest agent receives, and what the API docs show.


@router.post(
    "/register", response_model=RegisterResponse, status_code=201, openapi_extra=body_limit(REGISTER_BODY_BYTES)
)
def register(body: RegisterRequest, runtime: RuntimeDep, origin: OriginDep) -> Response:
    settings = runtime.settings
    with runtime.uow() as session:
        node, credential = registration.register(session, pepper=runtime.pepper, request=body, origin=origin)
        node_id = node.id
    runtime.live.start_lease(node_id=node_id, now=time.time(), lease_ttl_s=settings.lease_ttl_s)
    answer = RegisterResponse(
        protocol_version=PROTOCOL_VERSION,
        min_protocol_version=MIN_PROTOCOL_VERSION,
        node_id=node_id,
        credential=credential,
        report_interval_s=settings.report_interval_s,
        watch_timeout_s=settings.watch_timeout_s,
        lease_ttl_s=settings.lease_ttl_s,
    )
    return for_agent(answer, version=body.protocol_version, status_code=201)


@router.post("/nodes/{node_id}/reports", response_model=ReportResponse, openapi_extra=body_limit(REPORT_BODY_BYTES))
def report(node_id: NodeId, body: ReportRequest, agent: AgentPrincipal, runtime: RuntimeDep) -> Response:
    registration.authorize_node(agent.node_id, node_id)
    registration.check_protocol(body.protocol_version)
    result = ingest.ingest_report(
        live=runtime.live,
        uow=runtime.uow,
        read=runtime.read,
        node_id=node_id,
        report=body,
        now=time.time(),
        lease_ttl_s=runtime.settings.lease_ttl_s,
        checkpoints=runtime.checkpoints,
    )
    answer = ReportResponse(accepted=result.accepted, duplicate=result.duplicate, generation=result.generation)
    return for_agent(answer, version=body.protocol_version)


@router.post(
    "/nodes/{node_id}/reports/batch",
    response_model=ReportBatchResponse,
    openapi_extra=body_limit(REPORT_BATCH_BODY_BYTES),
)
def report_batch(node_id: NodeId, body: ReportBatch, agent: AgentPrincipal, runtime: RuntimeDep) -> Response:
    """Protocol 3: several reports, oldest first, each folded as if it had been sent alone."""
    registration.authorize_node(agent.node_id, node_id)
    registration.check_batch_protocol(body.protocol_version, [r.protocol_version for r in body.reports])
    result = ingest.ingest_batch(
        live=runtime.live,
        uow=runtime.uow,
        read=runtime.read,
        node_id=node_id,
        batch=body,
        now=time.time(),
        lease_ttl_s=runtime.settings.lease_ttl_s,
        checkpoints=runtime.checkpoints,
    )
    answer = ReportBatchResponse(results=result.results, generation=result.generation)
    return for_agent(answer, version=body.protocol_version)


@router.get("/nodes/{node_id}/desired", response_model=DesiredState)
async def desired(
    node_id: NodeId,
    agent: AgentPrincipal,
    runtime: RuntimeDep,
    request: Request,
    after: Annotated[int, Query(ge=0, le=MAX_GENERATION)] = 0,
    wait: Annotated[float, Query(ge=0, le=120)] = 0,
    protocol: AgentProtocol = 1,
) -> Response:
    """Long poll: answers once the generation passes ``after``, or after ``wait`` seconds."""
    registration.authorize_node(agent.node_id, node_id)
    registration.check_protocol(protocol)
    waker: Waker = request.app.state.waker

    def generation() -> int:
        with runtime.read() as session:
            return desired_states.current_generation(session, node_id)

    timeout_s = min(wait, runtime.settings.watch_timeout_s)
    await waker.wait_past(node_id, after, timeout_s=timeout_s, read=lambda: run_in_threadpool(generation))

    def state() -> DesiredState:
        with runtime.read() as session:
            # The poll may have held for many seconds: a credential revoked meanwhile gets nothing.
            auth.check_active(session, key_id=agent.key_id)
            return desired_states.desired_state(session, node_id=node_id, stop_grace_s=runtime.settings.stop_grace_s)

    return for_agent(await run_in_threadpool(state), version=protocol)


@router.post("/nodes/{node_id}/logs", response_model=LogUploadResponse, openapi_extra=body_limit(LOG_BODY_BYTES))
def upload_logs(node_id: NodeId, body: LogUpload, agent: AgentPrincipal, runtime: RuntimeDep) -> Response:
    registration.authorize_node(agent.node_id, node_id)
    with runtime.uow() as session:
        acked = logs.append_logs(session, node_id=node_id, upload=body)
    return for_agent(LogUploadResponse(acked=acked), version=body.protocol_version)
