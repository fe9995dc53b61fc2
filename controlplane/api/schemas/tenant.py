"""Tenant API bodies: workloads, offerings, quota. Separate from the ORM; services return read
models and ``api.convert`` turns them into these."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

from controlplane.api.schemas.common import Arg, Name, Request, Text
from controlplane.domain.enums import NvlinkPolicy, OverQuotaPolicy
from controlplane.domain.reasons import PendingCode
from controlplane.domain.specs import MAX_CHECKPOINT_INTERVAL_S, MIN_CHECKPOINT_INTERVAL_S

# What one workload may ask to run (README, "Limits"). argv and env together stay within
# 128 KiB, the smallest ARG_MAX POSIX allows, so whatever is accepted can be exec'd.
MAX_ARGS = 256
MAX_ARG_CHARS = 8192
MAX_COMMAND_BYTES = 64 * 1024
MAX_ENV = 128
MAX_ENV_VALUE_CHARS = 16 * 1024
MAX_ENV_BYTES = 64 * 1024
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"

EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]


def _utf8(values: list[str]) -> int:
    return sum(len(v.encode()) for v in values)


class WorkloadCreate(Request):
    name: Name = Field("", max_length=128)
    gpus: StrictInt = Field(ge=1, le=131072, description="GPUs in the gang (all or nothing)")
    gpu_model: Name = Field("NVIDIA GB300", min_length=1, max_length=96)
    nvlink: NvlinkPolicy = Field(
        NvlinkPolicy.REQUIRED, description="required: one NVLink domain; preferred: try to; none: anywhere"
    )
    priority: Literal["reserved", "on_demand", "spot"] = "on_demand"
    command: list[Annotated[Arg, Field(max_length=MAX_ARG_CHARS)]] = Field(
        min_length=1, max_length=MAX_ARGS, description=f"argv, at most {MAX_COMMAND_BYTES} bytes in UTF-8"
    )
    env: dict[EnvName, Annotated[Arg, Field(max_length=MAX_ENV_VALUE_CHARS)]] = Field(
        default_factory=dict, max_length=MAX_ENV, description=f"names and values at most {MAX_ENV_BYTES} bytes"
    )
    max_duration_s: StrictInt | None = Field(None, ge=1, le=30 * 24 * 3600)
    checkpoint_interval_s: StrictInt | None = Field(
        None,
        ge=MIN_CHECKPOINT_INTERVAL_S,
        le=MAX_CHECKPOINT_INTERVAL_S,
        description="how often it checkpoints (s, at most its max duration): a preemption loses the work "
        "since the last checkpoint; absent: all of it",
    )
    sim_utilization: float = Field(0.9, ge=0.0, le=1.0, description="simulator only: GPU load to drive")

    @field_validator("command")
    @classmethod
    def _command_fits(cls, command: list[str]) -> list[str]:
        if _utf8(command) > MAX_COMMAND_BYTES:
            raise ValueError(f"the command may hold at most {MAX_COMMAND_BYTES} bytes (UTF-8)")
        return command

    @field_validator("env")
    @classmethod
    def _env_fits(cls, env: dict[str, str]) -> dict[str, str]:
        if _utf8([*env, *env.values()]) > MAX_ENV_BYTES:
            raise ValueError(f"env names and values may hold at most {MAX_ENV_BYTES} bytes (UTF-8)")
        return env


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
    checkpoint_interval_s: int | None = None
    # While pending with a planned start (pending_reason_code "planned"): when it is expected to
    # start; null otherwise.
    expected_start_at: datetime | None = None
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
    reason: Text = Field("cancelled by the tenant", max_length=500)


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
    # The tenant's fair share among the tenants of its class, in proportion to this weight.
    share_weight: float = 1.0


class UsageLineOut(BaseModel):
    group: str  # a workload id, or a UTC day (YYYY-MM-DD)
    gpu_hours: Decimal
    kwh_it: Decimal
    kwh_facility: Decimal
    amount_usd: Decimal
    ledger_rows: int
    estimated_rows: int  # (partly) from power samples: no energy counter for part of them


class UsageOut(BaseModel):
    """Metered usage from the usage ledger, over [from, to) in UTC days."""

    start: str
    end: str
    by: Literal["workload", "day"]
    price_usd_per_gpu_hour: Decimal
    lines: list[UsageLineOut]
    total_gpu_hours: Decimal
    total_kwh_facility: Decimal
    total_usd: Decimal
