"""The operator's CLI as a user runs it: real processes, a real SQLite file, clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BLOCK_SERVER_DEPS = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"fastapi", "sqlalchemy", "celery", "redis", "pydantic_settings", "uvicorn"}:
            raise ImportError(f"{name} is not installed on this agent host")
sys.meta_path.insert(0, Block())
from controlplane.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        **os.environ,
        "SWITCHYARD_DATA_DIR": str(tmp_path / "data"),
        "SWITCHYARD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
    }
    base.pop("SWITCHYARD_PEPPER", None)
    return subprocess.run(
        [sys.executable, "-m", "controlplane.cli", *argv],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_admin_flow_and_errors(tmp_path: Path) -> None:
    assert run(tmp_path, "db", "upgrade").returncode == 0
    ok = run(tmp_path, "admin", "create-site", "demo-rack")
    assert ok.returncode == 0 and "1 racks" in ok.stdout

    for argv, fragment in [
        (("admin", "create-site", "demo-rack"), "already exists"),
        (("admin", "create-site", "atlantis"), "not in"),
        (("admin", "create-site", "demo-rack", "--sites-file", str(tmp_path / "none.json")), "cannot read"),
        (("admin", "create-tenant", "Bad Name!"), "lowercase"),
        (("admin", "create-tenant", "acme\n"), "lowercase"),  # a trailing newline is not part of a name
        (("admin", "create-key", "--tenant", "ghost"), "no tenant"),
        (("admin", "bootstrap-token", "--site", "demo-rack", "--rack", "rack-999"), "no rack"),
        (("admin", "revoke-key", "key_nope"), "no API key"),
    ]:
        result = run(tmp_path, *argv)
        assert result.returncode == 2, (argv, result.stdout, result.stderr)
        assert fragment in result.stderr and "Traceback" not in result.stderr, result.stderr

    assert run(tmp_path, "admin", "create-tenant", "acme").returncode == 0
    key = run(tmp_path, "admin", "create-key", "--tenant", "acme", "--quiet")
    assert key.returncode == 0 and key.stdout.strip().startswith("sy_tenant_")
    # The embedded default generated its own pepper, private to the owner.
    pepper = tmp_path / "data" / "pepper"
    assert pepper.exists() and (pepper.stat().st_mode & 0o077) == 0
    tokens = run(tmp_path, "admin", "bootstrap-token", "--site", "demo-rack", "--count", "3")
    lines = tokens.stdout.split()
    assert tokens.returncode == 0 and len(lines) == 3 and len(set(lines)) == 3
    assert all(t.startswith("sy_boot_") for t in lines)


def test_postgres_without_a_pepper_refuses_to_start(tmp_path: Path, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        return  # the SQLite default generates its own pepper (checked above)
    result = run(tmp_path, "admin", "create-key", "--operator", env={"SWITCHYARD_DATABASE_URL": db_url})
    assert result.returncode == 2 and "SWITCHYARD_PEPPER" in result.stderr and "Traceback" not in result.stderr


def test_unmigrated_database_is_refused_with_the_fix(tmp_path: Path) -> None:
    result = run(tmp_path, "admin", "create-tenant", "acme")
    assert result.returncode == 2 and "switchyard db upgrade" in result.stderr, result.stderr


def test_usage_errors_exit_non_zero(tmp_path: Path) -> None:
    assert run(tmp_path).returncode == 2
    assert run(tmp_path, "admin", "create-key").returncode == 2  # needs --tenant or --operator


@pytest.mark.parametrize("argv", [("agent", "--help"), ("agent", "--backend", "bogus", "--server", "http://x")])
def test_agent_subcommand_runs_without_server_dependencies(tmp_path: Path, argv: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BLOCK_SERVER_DEPS, *argv], capture_output=True, text=True, timeout=60
    )
    assert "is not installed on this agent host" not in result.stderr, result.stderr
    assert result.returncode == (0 if "--help" in argv else 2), result.stderr
