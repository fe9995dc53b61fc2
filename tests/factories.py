"""Test data, made through the same services the product uses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.protocol import PROTOCOL_VERSION, GpuInventory, NodeInventory, RegisterRequest
from controlplane.domain.enums import KeyScope
from controlplane.runtime import Runtime
from controlplane.scenarios import sites_file
from controlplane.services import admin
from controlplane.services.admin import rack_fabric_uuid
from controlplane.services.agents import registration

GB300 = "NVIDIA GB300"


def demo_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(Path(sites_file()).read_text())["demo-rack"]
    spec.update(overrides)
    return spec


def make_site(runtime: Runtime, name: str = "demo-rack") -> str:
    with runtime.uow() as session:
        return admin.create_site(session, name=name, spec=demo_spec()).id


@dataclass(frozen=True)
class TenantKey:
    tenant_id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def make_tenant(runtime: Runtime, name: str) -> TenantKey:
    with runtime.uow() as session:
        tenant = admin.create_tenant(session, name=name)
        issued = admin.issue_api_key(session, pepper=runtime.pepper, scope=KeyScope.TENANT, tenant_id=tenant.id)
        return TenantKey(tenant.id, issued.secret)


def make_operator_key(runtime: Runtime) -> dict[str, str]:
    with runtime.uow() as session:
        issued = admin.issue_api_key(session, pepper=runtime.pepper, scope=KeyScope.OPERATOR, name="ops")
        return {"Authorization": f"Bearer {issued.secret}"}


def bootstrap_token(runtime: Runtime, site: str = "demo-rack", rack: str | None = "rack-001") -> str:
    with runtime.uow() as session:
        _, secret = admin.issue_bootstrap_token(session, pepper=runtime.pepper, site_name=site, rack=rack, ttl_s=3600)
        return secret


def inventory(node_index: int, *, site: str = "demo-rack", rack: str = "rack-001", gpus: int = 4) -> NodeInventory:
    cluster = rack_fabric_uuid(site, rack)
    return NodeInventory(
        hostname=f"{rack}-tray{node_index:02d}",
        address="127.0.0.1",
        backend="sim",
        driver_version="580.173.02",
        gpus=[
            GpuInventory(
                index=i,
                uuid=f"GPU-{rack}-{node_index:02d}-{i}",
                name=GB300,
                memory_total_mib=284208,
                power_limit_default_w=1400.0,
                fabric_cluster_uuid=cluster,
                fabric_clique_id=32766,
                fabric_state="completed",
            )
            for i in range(gpus)
        ],
    )


@dataclass(frozen=True)
class RegisteredNode:
    node_id: str
    credential: str
    inventory: NodeInventory

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"}


def register_node(runtime: Runtime, node_index: int, *, rack: str = "rack-001") -> RegisteredNode:
    inv = inventory(node_index, rack=rack)
    token = bootstrap_token(runtime, rack=rack)
    request = RegisterRequest(protocol_version=PROTOCOL_VERSION, bootstrap_token=token, inventory=inv)
    with runtime.uow() as session:
        node, credential = registration.register(session, pepper=runtime.pepper, request=request)
        return RegisteredNode(node.id, credential, inv)


def workload_body(gpus: int = 4, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "gpus": gpus,
        "command": ["python3", "-c", "print('hello')"],
        "nvlink": "required",
    }
    body.update(overrides)
    return body
