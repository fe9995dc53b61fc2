"""Operator use cases that set a site up: sites and racks, tenants and their policy, API keys and
agent bootstrap tokens. The CLI, the operator API and the demo's seed all come through here."""

from controlplane.services.admin.keys import (
    IssuedKey,
    KeyFilter,
    KeyPage,
    TokenPage,
    get_api_key,
    issue_api_key,
    issue_bootstrap_token,
    list_api_keys,
    list_bootstrap_tokens,
    node_credentials,
    revoke_api_key,
    revoke_bootstrap_token,
    rotate_api_key,
    rotate_bootstrap_token,
    token_status,
)
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
    "KeyFilter",
    "KeyPage",
    "TokenPage",
    "create_site",
    "create_tenant",
    "get_rack",
    "get_site",
    "get_api_key",
    "get_tenant",
    "issue_api_key",
    "issue_bootstrap_token",
    "list_api_keys",
    "list_bootstrap_tokens",
    "node_credentials",
    "load_scenario",
    "site_spec",
    "rack_fabric_uuid",
    "rack_name",
    "revoke_api_key",
    "revoke_bootstrap_token",
    "rotate_api_key",
    "rotate_bootstrap_token",
    "token_status",
    "update_tenant_policy",
]
