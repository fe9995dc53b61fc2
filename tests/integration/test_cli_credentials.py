"""`switchyard admin` for credentials and the audit log, as an operator runs it: real processes,
on PostgreSQL and SQLite. Bad input gets one message and exit status 2, never a traceback.

Regression (issue 8 findings 6 and 12): agent and operator keys could not be listed, nothing
could be rotated, join tokens could not be listed or revoked, and nothing was audited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from factories import make_site, register_node
from testenv import PEPPER

from controlplane.runtime import Runtime


class Cli:
    def __init__(self, tmp_path: Path, db_url: str) -> None:
        self.env = {
            **os.environ,
            "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
            "SWITCHYARD_DATABASE_URL": db_url,
            "SWITCHYARD_PEPPER": PEPPER,
        }

    def __call__(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controlplane.cli", *argv], env=self.env, capture_output=True, text=True, timeout=60
        )

    def ok(self, *argv: str) -> str:
        result = self(*argv)
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
        return result.stdout

    def fails(self, *argv: str, fragment: str) -> None:
        result = self(*argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, result.stderr
        message = result.stderr.strip().splitlines()[-1]
        assert fragment in message, result.stderr
        if not result.stderr.startswith("usage:"):  # argparse adds its usage line; ours is one line
            assert result.stderr.strip() == message, result.stderr

    def audit(self, *argv: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.ok("admin", "audit", *argv).splitlines()]


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    return Cli(tmp_path, db_url)


def _rows(out: str) -> list[list[str]]:
    return [line.split("\t") for line in out.splitlines()]


def test_every_credential_kind_is_listed_rotated_and_revoked(cli: Cli, runtime: Runtime) -> None:
    make_site(runtime)
    node = register_node(runtime, 1)
    cli.ok("admin", "create-tenant", "acme")
    tenant_secret = cli.ok("admin", "create-key", "--tenant", "acme", "--quiet").strip()
    cli.ok("admin", "create-key", "--operator", "--name", "oncall")
    keys = {row[1]: row for row in _rows(cli.ok("admin", "list-keys"))}
    assert set(keys) == {"tenant", "operator", "agent"}
    assert keys["agent"][3] == node.node_id and keys["agent"][2] == "active"
    assert all(tenant_secret not in "\t".join(row) for row in keys.values())
    assert [r[1] for r in _rows(cli.ok("admin", "list-keys", "--scope", "operator"))] == ["operator"]

    # The stolen node credential, found and revoked without SQL.
    agent_id = keys["agent"][0]
    assert "revoked" in cli.ok("admin", "revoke-key", agent_id)
    assert _rows(cli.ok("admin", "list-keys", "--node", node.node_id, "--active")) == []
    new_agent = cli.ok("admin", "rotate-key", agent_id, "--quiet").strip()
    assert new_agent.startswith("sy_agent_")
    cli.fails("admin", "rotate-key", agent_id, fragment="already rotated")

    tenant_id = keys["tenant"][0]
    new_tenant = cli.ok("admin", "rotate-key", tenant_id, "--quiet").strip()
    assert new_tenant.startswith("sy_tenant_") and new_tenant != tenant_secret
    tenant_rows = _rows(cli.ok("admin", "list-keys", "--tenant", "acme"))
    assert sorted(r[2] for r in tenant_rows) == ["active", "revoked"]

    first, second = cli.ok("admin", "bootstrap-token", "--site", "demo-rack", "--count", "2").split()
    tokens = _rows(cli.ok("admin", "list-bootstrap-tokens", "--unused"))
    assert sorted(r[2] for r in tokens) == sorted([first[:14], second[:14]])
    assert all(r[1] == "active" for r in tokens)
    by_prefix = {r[2]: r[0] for r in tokens}
    assert "revoked" in cli.ok("admin", "revoke-bootstrap-token", by_prefix[first[:14]])
    fresh = cli.ok("admin", "rotate-bootstrap-token", by_prefix[second[:14]]).strip()
    assert fresh.startswith("sy_boot_")
    cli.fails("admin", "rotate-bootstrap-token", by_prefix[first[:14]], fragment="is revoked")
    assert [r[2] for r in _rows(cli.ok("admin", "list-bootstrap-tokens", "--unused"))] == [fresh[:14]]

    # All of it is in the audit log, as the OS user who ran the commands, under one request id each.
    mine = [e for e in cli.audit("--limit", "200") if e["actor_kind"] == "cli"]
    assert {e["action"] for e in mine} == {
        "tenant.created",
        "credential.created",
        "credential.revoked",
        "credential.rotated",
    }
    assert all(e["address"] == "local" and e["request_id"].startswith("cli-") for e in mine)
    rotated = cli.audit("--action", "credential.rotated")
    assert sorted(e["detail"]["kind"] for e in rotated) == ["agent", "bootstrap", "tenant"]
    assert all(new_agent not in json.dumps(e) and new_tenant not in json.dumps(e) for e in mine)


def test_audit_pages_and_filters(cli: Cli, runtime: Runtime) -> None:
    for name in ("acme", "bravo", "charlie"):
        cli.ok("admin", "create-tenant", name)
    first = cli("admin", "audit", "--action", "tenant.created", "--limit", "2")
    assert first.returncode == 0 and len(first.stdout.splitlines()) == 2
    cursor = first.stderr.split("--cursor")[1].strip()
    rest = cli.audit("--action", "tenant.created", "--cursor", cursor)
    names = [json.loads(line)["detail"]["name"] for line in first.stdout.splitlines()] + [
        e["detail"]["name"] for e in rest
    ]
    assert names == ["charlie", "bravo", "acme"]
    user = cli.audit("--limit", "1")[0]["actor_id"]
    assert len(cli.audit("--actor", user)) == 3
    assert cli.audit("--since", "2999-01-01T00:00:00Z") == []
    assert len(cli.audit("--until", "2999-01-01T00:00:00+00:00")) == 3


BAD_INPUT = [
    (("admin", "audit", "--since", "yesterday"), "ISO 8601"),
    (("admin", "audit", "--until", "2026-01-01T00:00:00"), "time zone"),
    (("admin", "audit", "--limit", "0"), "limit must be between 1 and 200"),
    (("admin", "audit", "--cursor", "0"), "cursor must be between"),
    (("admin", "audit", "--cursor", "x"), "invalid int value"),
    (("admin", "list-keys", "--limit", "1000"), "limit must be between 1 and 200"),
    (("admin", "list-keys", "--scope", "root"), "invalid choice"),
    (("admin", "list-keys", "--tenant", "ghost"), "no tenant"),
    (("admin", "list-bootstrap-tokens", "--site", "atlantis"), "no site"),
    (("admin", "rotate-key", "key_nope"), "no API key"),
    (("admin", "revoke-key", "key_nope"), "no API key"),
    (("admin", "revoke-bootstrap-token", "boot_nope"), "no bootstrap token"),
    (("admin", "rotate-bootstrap-token", "boot_nope"), "no bootstrap token"),
]


def test_bad_input_gets_one_message_and_exit_2(cli: Cli) -> None:
    for argv, fragment in BAD_INPUT:
        cli.fails(*argv, fragment=fragment)
    assert cli.audit() == []  # and nothing changed
