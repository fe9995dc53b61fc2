"""Operator API bodies: the fleet with live state, tenants and their keys, preemptions, power."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, Field, StrictInt

from controlplane.api.schemas.common import Name, Request, Text
from controlplane.domain.enums import OverQuotaPolicy
from controlplane.domain.specs import MAX_SHARE_WEIGHT, MIN_SHARE_WEIGHT


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
    # The agent's protocol version and software version, as it last said.
    protocol_version: int | None = None
    agent_version: str | None = None
    # Where the node's agent serves /metrics (agents of protocol 3 on); null if it never said.
    metrics_url: str | None = None
    # Reports folded in, and refused as already seen (agent retries, spool replays); the last seq.
    reports_accepted: int = 0
    reports_duplicate: int = 0
    last_seq: int | None = None
    # The node's live agent credential (revoke or rotate it by this id); null when revoked.
    credential_id: str | None = None
    gpus: list[GpuOut]


class CordonRequest(Request):
    reason: Text = Field("cordoned by an operator", max_length=500)


class TenantCreate(Request):
    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9-]*$")


class TenantPolicyIn(Request):
    """Fields left out keep their value; null clears a limit."""

    reserved_gpus: StrictInt | None = Field(None, ge=0, le=1_000_000)
    max_gpus: StrictInt | None = Field(None, ge=0, le=1_000_000)
    gpu_hours_limit: float | None = Field(None, ge=0, le=1e12)
    # Money: a JSON number or a decimal string, kept exact ("12.50", not 12.499999...).
    spend_cap_usd: Decimal | None = Field(None, ge=0, le=Decimal("1e12"), max_digits=18, decimal_places=6)
    over_quota: OverQuotaPolicy | None = None
    price_usd_per_gpu_hour: Decimal | None = Field(None, ge=0, le=1000, max_digits=18, decimal_places=6)
    # Fair share among the tenants of one class, in proportion to this weight; null puts back 1.
    share_weight: float | None = Field(None, ge=MIN_SHARE_WEIGHT, le=MAX_SHARE_WEIGHT, allow_inf_nan=False, strict=True)


class TenantOut(BaseModel):
    id: str
    name: str
    created_at: datetime
    reserved_gpus: int = 0
    max_gpus: int | None = None
    gpu_hours_limit: float | None = None
    spend_cap_usd: Decimal | None = None
    over_quota: OverQuotaPolicy = OverQuotaPolicy.HOLD
    price_usd_per_gpu_hour: Decimal = Decimal("3.00")
    share_weight: float = 1.0


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
    # What planned draw must stay under: the cap less the site's safety margin.
    limit_w: float
    pue: float
    # The scheduler's planned GPU-side draw (x PUE), by the same formula its passes budget with.
    gpu_planned_w: float
    mining_planned_w: float
    mining_fleet_w: float
    # Limit - planned GPUs - planned mining: what new work could take without shedding mining.
    headroom_w: float
    gpus_allocated: int
    gpus_total: int
    recent_mining_events: list[MiningEventOut]


class KeyCreate(Request):
    name: Name = Field("", max_length=128)


class KeyOut(BaseModel):
    id: str
    scope: str
    name: str
    display_prefix: str
    created_at: datetime
    revoked_at: datetime | None
    # Present only in the response that created the key; never stored.
    secret: str | None = None
