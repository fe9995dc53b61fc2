"""The FastAPI application: one factory, routers per audience, problem+json everywhere."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from controlplane.api import problems, request_id
from controlplane.api.routers import agent, operator, tenant
from controlplane.api.waker import Waker
from controlplane.config import Settings
from controlplane.metrics.collector import FleetCollector
from controlplane.metrics.metering import MeteringCollector
from controlplane.runtime import Runtime, build_runtime

API_VERSION = "v1"
# Every route of the API but /healthz and /metrics (which take no input), mounted under /v1.
ROUTERS = (tenant.router, operator.router, agent.router)


def create_app(settings: Settings, *, runtime: Runtime | None = None) -> FastAPI:
    rt = runtime or build_runtime(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        waker = Waker(settings.redis_url, rt.keys.node_wake_channel)
        app.state.waker = waker
        await waker.start()
        try:
            yield
        finally:
            await waker.stop()
            if runtime is None:
                rt.close()

    app = FastAPI(
        title="Switchyard",
        version="0.1.0",
        description="GPU-as-a-Service control plane for converted mining sites.",
        openapi_url=f"/{API_VERSION}/openapi.json",
        docs_url=f"/{API_VERSION}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = rt
    problems.install(app)
    problems.install_redis(app)
    request_id.install(app)
    for router in ROUTERS:
        app.include_router(router, prefix=f"/{API_VERSION}")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(rt))
    registry.register(MeteringCollector(rt))

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
