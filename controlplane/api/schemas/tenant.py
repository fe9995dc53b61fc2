"""Tenant API bodies: workloads, offerings, quota. Separate from the ORM; services return read
models and ``api.convert`` turns them into these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt

from controlplane.api.schemas.common import Request
from controlplane.domain.enums import NvlinkPolicy, OverQuotaPolicy
from controlplane.domain.reasons import PendingCode


class WorkloadCreate(Request):
    name: str = Field("", max_length=128)
    gpus: StrictInt = Field(ge=1, le=131072, description="GPUs in the gang (all or nothing)")
    gpu_model: str = Field("NVIDIA GB300", min_length=1, max_length=96)
    nvlink: NvlinkPolicy = Field(
        NvlinkPolicy.REQUIRED, description="required: one NVLink domain; preferred: try to; none: anywhere"
    )
    priority: Literal["reserved", "on_demand", "spot"] = "on_demand"
    command: list[Annotated[str, Field(max_length=8192)]] = Field(min_length=1, max_length=256)
    env: dict[Annotated[str, Field(max_length=128)], Annotated[str, Field(max_length=32768)]] = Field(
        default_factory=dict, max_length=256
    )
    max_duration_s: StrictInt | None = Field(None, ge=1, le=30 * 24 * 3600)
    sim_utilization: float = Field(0.9, ge=0.0, le=1.0, description="simulator only: GPU load to drive")


class RankOut(BaseModel):
    rank: int
    node_id: str
    hostname: str
    address: str
    gpu_uuids: list[str]
    phase: str
    exit_code: int | None


class AllocationOut(BaseModel):
    epoch: int
    gpu_count: int
    ranks: list[RankOut]
    released: bool


class EventOut(BaseModel):
    from_state: str | None
    to_state: str
    reason: str
    at: datetime


class WorkloadOut(BaseModel):
    id: str
    name: str
    state: str
    reason: str
    pending_reason: str | None
    # While pending: a bounded code for the reason (submitted, gpus, nvlink_domain, quota_spend, ...).
    pending_reason_code: PendingCode | None = None
    gpus: int
    gpu_model: str
    nvlink: str
    priority: str
    command: list[str]
    env: dict[str, str]
    max_duration_s: int
    created_at: datetime
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    allocation: AllocationOut | None
    history: list[EventOut] | None = None


class WorkloadPage(BaseModel):
    items: list[WorkloadOut]
    next_cursor: str | None


class CancelRequest(Request):
    reason: str = Field("cancelled by the tenant", max_length=500)


class OfferingOut(BaseModel):
    gpu_model: str
    memory_mib: int
    total: int
    available: int
    largest_node_block: int
    largest_nvlink_block: int


class QuotaOut(BaseModel):
    reserved_gpus: int
    max_gpus: int | None
    gpu_hours_limit: float | None
    spend_cap_usd: Decimal | None
    over_quota: OverQuotaPolicy
    gpus_in_use: int
    gpu_hours_this_month: float
    spend_this_month_usd: Decimal
