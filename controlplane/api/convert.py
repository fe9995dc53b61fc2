"""Read models -> response bodies. No SQL, no arithmetic: the services computed everything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Query

from controlplane.api.deps import QueryId
from controlplane.api.schemas import (
    AllocationOut,
    EventOut,
    GpuEventOut,
    GpuOut,
    KeyOut,
    NodeOut,
    OfferingOut,
    PreemptionOut,
    QuotaOut,
    RackOut,
    RankOut,
    SiteOut,
    SitePowerOut,
    TenantOut,
    UsageLineOut,
    UsageOut,
    WorkloadOut,
    WorkloadPage,
)
from controlplane.api.schemas.credentials import (
    ApiKeyOut,
    AuditEntryOut,
    AuditPageOut,
    BootstrapTokenOut,
    BootstrapTokenPageOut,
    KeyPageOut,
)
from controlplane.domain.enums import OverQuotaPolicy, WorkloadState
from controlplane.domain.reasons import PendingCode
from controlplane.services import audit
from controlplane.services.admin.keys import KeyPage, TokenPage, token_status
from controlplane.services.audit import AuditPage
from controlplane.services.fleet.capacity import Offering
from controlplane.services.fleet.power import SitePower
from controlplane.services.fleet.views import GpuLive, NodeLive, RackView, SiteView
from controlplane.services.metering.views import UsageView
from controlplane.services.workloads.quota import QuotaView
from controlplane.services.workloads.read import MAX_PAGE, Page
from controlplane.store.models import ApiKey, BootstrapToken, GpuEvent, Preemption, Tenant
from controlplane.store.queries.workloads import AllocationView, WorkloadView


@dataclass(frozen=True)
class WorkloadQuery:
    """The list filters both audiences use; FastAPI reads them from the query string."""

    state: WorkloadState | None = None
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50
    cursor: QueryId = None


def workload_page(page: Page) -> WorkloadPage:
    return WorkloadPage(items=[workload_out(v) for v in page.items], next_cursor=page.next_cursor)


def workload_out(v: WorkloadView) -> WorkloadOut:
    wl = v.workload
    pending = wl.state == WorkloadState.PENDING
    return WorkloadOut(
        id=wl.id,
        name=wl.name,
        state=wl.state,
        reason=wl.reason,
        pending_reason=wl.reason if pending else None,
        pending_reason_code=PendingCode(wl.reason_code) if pending and wl.reason_code else None,
        gpus=wl.gpu_count,
        gpu_model=wl.gpu_model,
        nvlink=wl.nvlink,
        priority=wl.priority,
        command=list(wl.command),
        env=dict(wl.env),
        max_duration_s=wl.max_duration_s,
        checkpoint_interval_s=wl.checkpoint_interval_s,
        expected_start_at=wl.expected_start_at if pending else None,
        created_at=wl.created_at,
        scheduled_at=wl.scheduled_at,
        started_at=wl.started_at,
        finished_at=wl.finished_at,
        allocation=_allocation(v.allocation),
        history=None
        if v.history is None
        else [EventOut(from_state=e.from_state, to_state=e.to_state, reason=e.reason, at=e.at) for e in v.history],
    )


def _allocation(a: AllocationView | None) -> AllocationOut | None:
    if a is None:
        return None
    return AllocationOut(
        epoch=a.epoch,
        gpu_count=a.gpu_count,
        released=a.released,
        ranks=[
            RankOut(
                rank=r.rank,
                node_id=r.node_id,
                hostname=r.hostname,
                address=r.address,
                gpu_uuids=list(r.gpu_uuids),
                phase=r.phase,
                exit_code=r.exit_code,
            )
            for r in a.ranks
        ],
    )


def gpu_out(g: GpuLive) -> GpuOut:
    gpu, node = g.row.gpu, g.row.node
    return GpuOut(
        id=gpu.id,
        uuid=gpu.uuid,
        index=gpu.index,
        model=gpu.model,
        node_id=node.id,
        hostname=node.hostname,
        state=g.row.state.value,
        workload_id=g.row.workload_id,
        health=gpu.health,
        health_action=gpu.health_action,
        health_reason=gpu.health_reason,
        present=gpu.present,
        memory_total_mib=gpu.memory_total_mib,
        telemetry=g.telemetry,
        energy_mj_total=g.energy.total_mj if g.energy else None,
    )


def node_out(n: NodeLive) -> NodeOut:
    node = n.node
    return NodeOut(
        id=node.id,
        hostname=node.hostname,
        address=node.address,
        site_id=node.site_id,
        rack_id=node.rack_id,
        status=node.status,
        status_reason=node.status_reason,
        cordoned=node.cordoned,
        draining=node.draining,
        cordon_reason=node.cordon_reason,
        nvlink_domain=node.nvlink_domain,
        backend=node.backend,
        driver_version=node.driver_version,
        lease_alive=n.lease_alive,
        protocol_version=node.protocol_version,
        agent_version=node.agent_version,
        metrics_url=node.metrics_url,
        reports_accepted=n.reports_accepted,
        reports_duplicate=n.reports_duplicate,
        last_seq=n.last_seq,
        credential_id=n.credential_id,
        gpus=[gpu_out(g) for g in n.gpus],
    )


def site_out(v: SiteView) -> SiteOut:
    s = v.site
    return SiteOut(
        id=s.id, name=s.name, description=s.description, grid_capacity_mw=s.grid_capacity_mw, pue=s.pue, racks=v.racks
    )


def rack_out(v: RackView) -> RackOut:
    r = v.rack
    return RackOut(
        id=r.id,
        site_id=r.site_id,
        name=r.name,
        model=r.model,
        nodes_expected=r.nodes_expected,
        nodes_registered=v.nodes_registered,
        power_capacity_kw=r.power_capacity_kw,
        nvlink_domain=f"{r.fabric_cluster_uuid}.{r.fabric_clique_id}",
    )


def gpu_event_out(e: GpuEvent) -> GpuEventOut:
    return GpuEventOut.model_validate(e, from_attributes=True)


def preemption_out(p: Preemption) -> PreemptionOut:
    return PreemptionOut.model_validate(p, from_attributes=True)


def site_power_out(p: SitePower) -> SitePowerOut:
    return SitePowerOut.model_validate(p, from_attributes=True)


def tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(
        id=t.id,
        name=t.name,
        created_at=t.created_at,
        reserved_gpus=t.reserved_gpus,
        max_gpus=t.max_gpus,
        gpu_hours_limit=t.gpu_hours_limit,
        spend_cap_usd=t.spend_cap_usd,
        over_quota=OverQuotaPolicy(t.over_quota),
        price_usd_per_gpu_hour=t.price_usd_per_gpu_hour,
        share_weight=t.share_weight,
    )


def key_out(key: ApiKey, secret: str | None = None) -> KeyOut:
    return KeyOut(
        id=key.id,
        scope=key.scope,
        name=key.name,
        display_prefix=key.display_prefix,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        secret=secret,
    )


def offering_out(o: Offering) -> OfferingOut:
    return OfferingOut.model_validate(o, from_attributes=True)


def quota_out(q: QuotaView) -> QuotaOut:
    return QuotaOut(
        reserved_gpus=q.reserved_gpus,
        max_gpus=q.max_gpus,
        gpu_hours_limit=q.gpu_hours_limit,
        spend_cap_usd=q.spend_cap_usd,
        over_quota=OverQuotaPolicy(q.over_quota),
        gpus_in_use=q.gpus_in_use,
        gpu_hours_this_month=q.gpu_hours_this_month,
        spend_this_month_usd=q.spend_this_month_usd,
        share_weight=q.share_weight,
    )


def usage_out(v: UsageView) -> UsageOut:
    return UsageOut(
        start=v.start.isoformat(),
        end=v.end.isoformat(),
        by=v.by,
        price_usd_per_gpu_hour=v.price_usd_per_gpu_hour,
        lines=[
            UsageLineOut(
                group=x.group,
                gpu_hours=x.gpu_hours,
                kwh_it=x.kwh_it,
                kwh_facility=x.kwh_facility,
                amount_usd=x.amount_usd,
                ledger_rows=x.rows,
                estimated_rows=x.estimated_rows,
            )
            for x in v.lines
        ],
        total_gpu_hours=v.total_gpu_hours,
        total_kwh_facility=v.total_kwh_facility,
        total_usd=v.total_usd,
    )


def api_key_out(key: ApiKey, secret: str | None = None) -> ApiKeyOut:
    return ApiKeyOut(
        **key_out(key, secret).model_dump(),
        tenant_id=key.tenant_id,
        node_id=key.node_id,
        replaced_by_id=key.replaced_by_id,
    )


def key_page(page: KeyPage) -> KeyPageOut:
    return KeyPageOut(items=[api_key_out(k) for k in page.items], next_cursor=page.next_cursor)


def token_out(token: BootstrapToken, secret: str | None = None) -> BootstrapTokenOut:
    return BootstrapTokenOut(
        id=token.id,
        display_prefix=token.display_prefix,
        site_id=token.site_id,
        rack_id=token.rack_id,
        created_at=token.created_at,
        expires_at=token.expires_at,
        used_at=token.used_at,
        used_by_node_id=token.used_by_node_id,
        revoked_at=token.revoked_at,
        status=token_status(token),
        secret=secret,
    )


def token_page(page: TokenPage) -> BootstrapTokenPageOut:
    return BootstrapTokenPageOut(items=[token_out(t) for t in page.items], next_cursor=page.next_cursor)


def audit_page(page: AuditPage) -> AuditPageOut:
    return AuditPageOut(
        items=[AuditEntryOut.model_validate(audit.as_dict(e)) for e in page.items], next_cursor=page.next_cursor
    )
