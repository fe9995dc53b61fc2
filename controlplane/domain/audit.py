"""The audit log's vocabulary: who can act, and the actions recorded so far.

Actions are dotted names (``credential.revoked``); the set is open so that later capabilities
(the dispatcher's curtailment commands) record their own without a schema change.
"""

from __future__ import annotations

import re
from enum import StrEnum


class ActorKind(StrEnum):
    OPERATOR = "operator"  # an operator API key
    TENANT = "tenant"  # a tenant API key
    AGENT = "agent"  # a node credential
    BOOTSTRAP = "bootstrap"  # an agent's single-use join token, at registration
    CLI = "cli"  # `switchyard admin ...`, as the OS user who ran it
    SYSTEM = "system"  # the control plane itself (seeding, the scheduler, the dispatcher)


class CredentialKind(StrEnum):
    TENANT = "tenant"
    OPERATOR = "operator"
    AGENT = "agent"
    BOOTSTRAP = "bootstrap"


# Credential events (finding 12): created, used from an address not seen before, revoked, rotated.
CREDENTIAL_CREATED = "credential.created"
CREDENTIAL_USED_FROM_NEW_ADDRESS = "credential.used_from_new_address"
CREDENTIAL_REVOKED = "credential.revoked"
CREDENTIAL_ROTATED = "credential.rotated"
# Operator actions.
SITE_CREATED = "site.created"
TENANT_CREATED = "tenant.created"
TENANT_POLICY_CHANGED = "tenant.policy_changed"
NODE_CORDONED = "node.cordoned"
NODE_DRAINED = "node.drained"
NODE_UNCORDONED = "node.uncordoned"
# Recorded by the dispatcher once it exists (issue 12 of the roadmap): one entry per command.
CURTAILMENT_COMMANDED = "curtailment.commanded"

TARGET_CREDENTIAL = "credential"

_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
MAX_ACTION = 64


def is_action(name: str) -> bool:
    """A well-formed action name: dotted lowercase words, at most 64 characters."""
    return len(name) <= MAX_ACTION and _ACTION.fullmatch(name) is not None
