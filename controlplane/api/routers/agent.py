"""Agent routes (DESIGN.md section 3): register, report, watch desired state, ship logs."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from agents.protocol import (
    DesiredState,
    LogUpload,
    LogUploadResponse,
    RegisterRequest,
    RegisterResponse,
    ReportRequest,
    ReportResponse,
)
from controlplane.api.deps import AgentPrincipal, RuntimeDep
from controlplane.api.waker import Waker
from controlplane.services.agents import desired as desired_states
from controlplane.services.agents import ingest, logs, registration

router = APIRouter(prefix="/agent", tags=["agent"])
NodeId = Annotated[str, Path(min_length=1, max_length=40)]


@router.post("/register", response_model=RegisterResponse, status_code=201)
def register(body: RegisterRequest, runtime: RuntimeDep) -> RegisterResponse:
    settings = runtime.settings
    with runtime.uow() as session:
        node, credential = registration.register(session, pepper=runtime.pepper, request=body)
        node_id = node.id
    runtime.live.renew_lease(node_id=node_id, now=time.time(), lease_ttl_s=settings.lease_ttl_s)
    return RegisterResponse(
        node_id=node_id,
        credential=credential,
        report_interval_s=settings.report_interval_s,
        watch_timeout_s=settings.watch_timeout_s,
        lease_ttl_s=settings.lease_ttl_s,
    )


@router.post("/nodes/{node_id}/reports", response_model=ReportResponse)
def report(node_id: NodeId, body: ReportRequest, agent: AgentPrincipal, runtime: RuntimeDep) -> ReportResponse:
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
    )
    return ReportResponse(accepted=result.accepted, duplicate=result.duplicate, generation=result.generation)


@router.get("/nodes/{node_id}/desired", response_model=DesiredState)
async def desired(
    node_id: NodeId,
    agent: AgentPrincipal,
    runtime: RuntimeDep,
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    wait: Annotated[float, Query(ge=0, le=120)] = 0,
) -> DesiredState:
    """Long poll: answers once the generation passes ``after``, or after ``wait`` seconds."""
    registration.authorize_node(agent.node_id, node_id)
    waker: Waker = request.app.state.waker
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, runtime.settings.watch_timeout_s)

    def generation() -> int:
        with runtime.read() as session:
            return desired_states.current_generation(session, node_id)

    while True:
        event = waker.register(node_id)  # before reading, so a wake between the two is not lost
        try:
            if await run_in_threadpool(generation) > after:
                break
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(event.wait(), timeout=remaining)
            except TimeoutError:
                break
        finally:
            waker.unregister(node_id, event)

    def state() -> DesiredState:
        with runtime.read() as session:
            return desired_states.desired_state(session, node_id=node_id, stop_grace_s=runtime.settings.stop_grace_s)

    return await run_in_threadpool(state)


@router.post("/nodes/{node_id}/logs", response_model=LogUploadResponse)
def upload_logs(node_id: NodeId, body: LogUpload, agent: AgentPrincipal, runtime: RuntimeDep) -> LogUploadResponse:
    registration.authorize_node(agent.node_id, node_id)
    with runtime.uow() as session:
        acked = logs.append_logs(session, node_id=node_id, upload=body)
    return LogUploadResponse(acked=acked)
