"""An agent host has only the base install: the agent must import and start without the server stack."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agents.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
SERVER_ONLY = ("fastapi", "sqlalchemy", "celery", "redis", "pydantic_settings")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_agent_modules_import_without_server_dependencies() -> None:
    code = f"""
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in {SERVER_ONLY!r}:
                    raise ImportError(f"{{name}} is a server dependency")
                return None

        sys.meta_path.insert(0, Block())
        import agents.daemon, agents.exporter, agents.gpu.sim, agents.runtime.processes, agents.client
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in {SERVER_ONLY!r})
        assert not leaked, leaked
        print("ok")
    """
    result = run_python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bad_options_exit_non_zero_with_a_message_and_no_traceback(tmp_path: Path) -> None:
    cases = [
        ([], "--server is required"),
        (["--server", "ftp://x"], "--server: invalid value 'ftp://x'"),
        (["--server", "http://127.0.0.1:9", "--sim-gpus", "0"], "--sim-gpus: invalid value '0'"),
        (["--server", "http://127.0.0.1:9", "--backend", "nvml"], "switchyard-agent: --backend nvml: "),
        (["--server", "http://127.0.0.1:9", "--spool-max-bytes", "1KiB"], "--spool-max-bytes: invalid value"),
        (["--server", "http://127.0.0.1:9", "--bootstrap-token-file", str(tmp_path / "nope")], "cannot read"),
        (["--server", "http://127.0.0.1:9", "--no-such-flag"], "unrecognized arguments"),
    ]
    for argv, expected in cases:
        result = run_python("import sys; from agents.daemon import main; sys.exit(main(sys.argv[1:]))", *argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert expected in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr


def test_a_used_bootstrap_token_without_a_credential_is_fatal_not_a_traceback(tmp_path: Path) -> None:
    # No credential and no token: the agent cannot register and says so.
    result = run_python(
        "import sys; from agents.daemon import main; sys.exit(main(sys.argv[1:]))",
        "--server",
        "http://127.0.0.1:9",
        "--state-dir",
        str(tmp_path),
    )
    assert result.returncode == 1, result.stderr
    assert "no bootstrap token" in result.stderr
    assert "Traceback" not in result.stderr


def test_environment_variables_configure_the_agent() -> None:
    env = {
        "SWITCHYARD_AGENT_SERVER": "http://cp:8000/",
        "SWITCHYARD_AGENT_SIM_GPUS": "2",
        "SWITCHYARD_AGENT_LOG_LEVEL": "debug",
        "SWITCHYARD_AGENT_BOOTSTRAP_TOKEN": "tok-123456789",
        "PATH": "/usr/bin",
    }
    cfg = load_config([], env)
    assert (cfg.server, cfg.sim_gpus, cfg.log_level) == ("http://cp:8000", 2, "DEBUG")
    assert cfg.bootstrap_token == "tok-123456789"
    assert "tok-123456789" not in repr(cfg)
    # Tenant processes inherit a whitelist, never the agent's own settings.
    assert cfg.child_env["PATH"] == "/usr/bin"
    assert not [k for k in cfg.child_env if k.startswith("SWITCHYARD_AGENT_")]
    assert load_config(["--sim-gpus", "3"], env).sim_gpus == 3  # a flag beats its variable
    with pytest.raises(ConfigError, match="SWITCHYARD_AGENT_SIM_GPUS: invalid value 'many'"):
        load_config([], {**env, "SWITCHYARD_AGENT_SIM_GPUS": "many"})


def test_the_spool_bound_takes_binary_units() -> None:
    base = {"SWITCHYARD_AGENT_SERVER": "http://cp:8000"}
    assert load_config([], base).spool_max_bytes == 64 * 1024 * 1024
    assert load_config(["--spool-max-bytes", "16MiB"], base).spool_max_bytes == 16 * 1024 * 1024
    assert load_config([], {**base, "SWITCHYARD_AGENT_SPOOL_MAX_BYTES": "1048576"}).spool_max_bytes == 1048576
    with pytest.raises(ConfigError, match="--spool-max-bytes: invalid value '64 parsecs'"):
        load_config(["--spool-max-bytes", "64 parsecs"], base)
