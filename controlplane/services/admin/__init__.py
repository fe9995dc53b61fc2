"""Operator use cases that set a site up: sites and racks, tenants and their policy, API keys and
agent bootstrap tokens. The CLI, the operator API and the demo's seed all come through here."""

from controlplane.services.admin.keys import IssuedKey, issue_api_key, issue_bootstrap_token, revoke_api_key
from controlplane.services.admin.sites import (
    create_site,
    get_rack,
    get_site,
    load_scenario,
    rack_fabric_uuid,
    rack_name,
    site_spec,
)
from controlplane.services.admin.tenants import POLICY_FIELDS, create_tenant, get_tenant, update_tenant_policy

__all__ = [
    "POLICY_FIELDS",
    "IssuedKey",
    "create_site",
    "create_tenant",
    "get_rack",
    "get_site",
    "get_tenant",
    "issue_api_key",
    "issue_bootstrap_token",
    "load_scenario",
    "site_spec",
    "rack_fabric_uuid",
    "rack_name",
    "revoke_api_key",
    "update_tenant_policy",
]
