"""Tenants and their policy: reservation, quotas, what happens over quota, price."""

from __future__ import annotations

import math
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.domain.enums import OverQuotaPolicy
from controlplane.domain.errors import Conflict, InvalidRequest, NotFound
from controlplane.domain.ids import new_id
from controlplane.domain.money import canonical, usd
from controlplane.domain.specs import DEFAULT_SHARE_WEIGHT, MAX_SHARE_WEIGHT, MIN_SHARE_WEIGHT
from controlplane.services.admin.sites import _check_name
from controlplane.store.models import Tenant
from controlplane.store.models.tenancy import DEFAULT_PRICE_USD_PER_GPU_HOUR


def create_tenant(session: Session, *, name: str) -> Tenant:
    _check_name("tenant", name)
    if session.scalar(select(Tenant).where(Tenant.name == name)) is not None:
        raise Conflict(f"tenant {name!r} already exists")
    tenant = Tenant(id=new_id("tnt"), name=name)
    session.add(tenant)
    session.flush()
    return tenant


def get_tenant(session: Session, name_or_id: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where((Tenant.name == name_or_id) | (Tenant.id == name_or_id)))
    if tenant is None:
        raise NotFound(f"no tenant {name_or_id!r}")
    return tenant


POLICY_FIELDS = frozenset(
    {
        "reserved_gpus",
        "max_gpus",
        "gpu_hours_limit",
        "spend_cap_usd",
        "over_quota",
        "price_usd_per_gpu_hour",
        "share_weight",
    }
)


NOT_NULL: dict[str, object] = {
    "reserved_gpus": 0,
    "over_quota": OverQuotaPolicy.HOLD.value,
    "price_usd_per_gpu_hour": DEFAULT_PRICE_USD_PER_GPU_HOUR,
    "share_weight": DEFAULT_SHARE_WEIGHT,
}
MONEY_FIELDS = frozenset({"spend_cap_usd", "price_usd_per_gpu_hour"})


def update_tenant_policy(session: Session, *, tenant_id: str, changes: dict[str, Any]) -> Tenant:
    tenant = get_tenant(session, tenant_id)
    unknown = set(changes) - POLICY_FIELDS
    if unknown:
        raise InvalidRequest(f"not tenant policy fields: {', '.join(sorted(unknown))}")
    for name, value in changes.items():
        if value is None and name in NOT_NULL:
            value = NOT_NULL[name]
        elif value is not None and name in MONEY_FIELDS:
            try:
                value = canonical(usd(value))
            except (TypeError, ValueError) as exc:
                raise InvalidRequest(
                    f"{name} must be an exact amount (a decimal string or an integer): {exc}"
                ) from None
            if value < 0:
                raise InvalidRequest(f"{name} must not be negative")
        elif value is not None and name == "share_weight":
            value = share_weight(value)
        elif isinstance(value, StrEnum):
            value = value.value
        setattr(tenant, name, value)
    return tenant


def share_weight(value: object) -> float:
    """A fair-share weight as stored: a finite number within its bounds (the API's and the CLI's)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest("share_weight must be a number")
    weight = float(value)
    if not math.isfinite(weight) or not MIN_SHARE_WEIGHT <= weight <= MAX_SHARE_WEIGHT:
        raise InvalidRequest(f"share_weight must be {MIN_SHARE_WEIGHT:g} to {MAX_SHARE_WEIGHT:g}, not {value}")
    return weight


def tenant_policy_view(tenant: Tenant) -> dict[str, Any]:
    """A tenant's policy as plain JSON values (money as exact decimal strings), for the CLI."""
    return {
        "id": tenant.id,
        "name": tenant.name,
        "reserved_gpus": tenant.reserved_gpus,
        "max_gpus": tenant.max_gpus,
        "gpu_hours_limit": tenant.gpu_hours_limit,
        "spend_cap_usd": None if tenant.spend_cap_usd is None else str(tenant.spend_cap_usd),
        "over_quota": tenant.over_quota,
        "price_usd_per_gpu_hour": str(tenant.price_usd_per_gpu_hour),
        "share_weight": tenant.share_weight,
    }
