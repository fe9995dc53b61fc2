"""HTTP request and response bodies. Separate from the ORM; routers convert explicitly."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from controlplane.domain.enums import NvlinkPolicy


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkloadCreate(_Request):
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


class CancelRequest(_Request):
    reason: str = Field("cancelled by the tenant", max_length=500)


class OfferingOut(BaseModel):
    gpu_model: str
    memory_mib: int
    total: int
    available: int
    largest_node_block: int
    largest_nvlink_block: int


class SiteOut(BaseModel):
    id: str
    name: str
    description: str
    grid_capacity_mw: float
    pue: float
    racks: int


class RackOut(BaseModel):
    id: str
    site_id: str
    name: str
    model: str
    nodes_expected: int
    nodes_registered: int
    power_capacity_kw: float
    nvlink_domain: str


class GpuOut(BaseModel):
    id: str
    uuid: str
    index: int
    model: str
    node_id: str
    hostname: str
    state: str
    workload_id: str | None
    health: str
    health_action: str
    health_reason: str
    present: bool
    memory_total_mib: int
    # The latest sample the agent reported (fields it could not read are absent), plus "at".
    telemetry: dict[str, Any] | None
    # Energy counted since the control plane first heard of the GPU (counter deltas, resets handled).
    energy_mj_total: int | None = None


class GpuEventOut(BaseModel):
    kind: str  # xid | health | lost | found
    xid: int | None
    detail: str
    at: datetime


class NodeOut(BaseModel):
    id: str
    hostname: str
    address: str
    site_id: str
    rack_id: str | None
    status: str
    status_reason: str
    cordoned: bool
    draining: bool
    cordon_reason: str
    nvlink_domain: str | None
    backend: str
    driver_version: str | None
    lease_alive: bool
    # Reports folded in, and refused as already seen (agent retries, spool replays); the last seq.
    reports_accepted: int = 0
    reports_duplicate: int = 0
    last_seq: int | None = None
    gpus: list[GpuOut]


class CordonRequest(_Request):
    reason: str = Field("cordoned by an operator", max_length=500)


class TenantCreate(_Request):
    name: str = Field(min_length=1, max_length=63)


class TenantPolicyIn(_Request):
    """Fields left out keep their value; null clears a limit."""

    reserved_gpus: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_gpus: StrictInt | None = Field(None, ge=0, le=1_000_000)
    gpu_hours_limit: float | None = Field(None, ge=0)
    spend_cap_usd: float | None = Field(None, ge=0)
    over_quota: Literal["reject", "hold"] | None = None
    price_usd_per_gpu_hour: float | None = Field(None, ge=0, le=1000)


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    reserved_gpus: int = 0
    max_gpus: int | None = None
    gpu_hours_limit: float | None = None
    spend_cap_usd: float | None = None
    over_quota: str = "hold"
    price_usd_per_gpu_hour: float = 3.0


class QuotaOut(BaseModel):
    reserved_gpus: int
    max_gpus: int | None
    gpu_hours_limit: float | None
    spend_cap_usd: float | None
    over_quota: str
    gpus_in_use: int
    gpu_hours_this_month: float
    spend_this_month_usd: float


class PreemptionOut(BaseModel):
    victim_id: str
    for_workload_id: str
    victim_priority: str
    gpu_count: int
    reason: str
    grace_s: float
    noticed_at: datetime
    released_at: datetime | None


class MiningEventOut(BaseModel):
    delta_w: float
    planned_w: float
    reason: str
    at: datetime


class SitePowerOut(BaseModel):
    site_id: str
    cap_w: float
    pue: float
    gpu_planned_w: float
    mining_planned_w: float
    mining_fleet_w: float
    headroom_w: float
    gpus_allocated: int
    gpus_total: int
    recent_mining_events: list[MiningEventOut]


class KeyCreate(_Request):
    name: str = Field("", max_length=128)


class KeyOut(BaseModel):
    id: str
    scope: str
    name: str
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    # Present only in the response that created the key; never stored.
    secret: str | None = None
