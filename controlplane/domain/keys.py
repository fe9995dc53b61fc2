"""API key format and hashing: pure functions, no storage.

A key looks like ``sy_tenant_<43 chars base64url of 32 random bytes><6 chars checksum>``. The typed
prefix tells a leaked key's kind at a glance (and to secret scanners); the CRC32 checksum lets
us refuse a mistyped key without a database lookup. Keys are stored as HMAC-SHA256 under a
server-side pepper: random 256-bit keys need no slow KDF, and a per-request PBKDF2 would be a
DoS amplifier (FACTS.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import zlib

from controlplane.domain.enums import KeyScope

_PREFIX = {
    KeyScope.TENANT: "sy_tenant_",
    KeyScope.OPERATOR: "sy_operator_",
    KeyScope.AGENT: "sy_agent_",
}
BOOTSTRAP_PREFIX = "sy_boot_"


def _checksum(body: str) -> str:
    return base64.b32encode(zlib.crc32(body.encode()).to_bytes(4, "big")).decode()[:6].lower()


def _random_body() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def generate(scope: KeyScope) -> str:
    prefix = _PREFIX[scope]
    body = _random_body()
    return f"{prefix}{body}{_checksum(prefix + body)}"


def generate_bootstrap_token() -> str:
    body = _random_body()
    return f"{BOOTSTRAP_PREFIX}{body}{_checksum(BOOTSTRAP_PREFIX + body)}"


def scope_of(key: str) -> KeyScope | None:
    """The scope a well-formed key claims, or None when the key is malformed or mistyped."""
    for scope, prefix in _PREFIX.items():
        if key.startswith(prefix) and _well_formed(key, prefix):
            return scope
    return None


def is_bootstrap_token(token: str) -> bool:
    return token.startswith(BOOTSTRAP_PREFIX) and _well_formed(token, BOOTSTRAP_PREFIX)


def _well_formed(key: str, prefix: str) -> bool:
    rest = key[len(prefix) :]
    if len(rest) != 43 + 6:
        return False
    body, check = rest[:43], rest[43:]
    return hmac.compare_digest(_checksum(prefix + body), check)


def digest(key: str, pepper: bytes) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


def display_prefix(key: str) -> str:
    """What we may show after creation: enough to recognise a key, useless to use it."""
    for prefix in (*_PREFIX.values(), BOOTSTRAP_PREFIX):
        if key.startswith(prefix):
            return key[: len(prefix) + 6]
    return key[:6]
