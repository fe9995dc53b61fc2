"""The agent's settings: command-line flags, each also readable from ``SWITCHYARD_AGENT_<NAME>``.

This is the only module that reads the process environment, so every input the agent acts on
is validated here at start-up and a bad value stops the agent with a one-line message instead
of a traceback minutes later. (pydantic-settings would do this, but it is a server dependency
and an agent host must not need it.)
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.runtime.processes import inherited_env
from agents.runtime.sandbox import DEFAULT_UID_COUNT, DEFAULT_UID_FIRST

ENV_PREFIX = "SWITCHYARD_AGENT_"
BACKENDS = ("sim", "nvml")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the flag and its variable."""


WILDCARD_ADDRS = frozenset({"", "0.0.0.0", "::", "[::]"})


@dataclass(frozen=True)
class AgentConfig:
    server: str
    state_dir: Path
    backend: str
    hostname: str
    advertise_addr: str
    metrics_addr: str
    metrics_port: int
    log_level: str
    bootstrap_token: str | None = field(default=None, repr=False)
    report_interval_s: float | None = None
    stop_grace_s: float = 10.0
    sim_gpus: int = 4
    sim_node_index: int = 0
    sim_cluster_uuid: str | None = None
    sim_clique_id: int = 32766
    sim_seed: int = 0
    # Reports kept on disk while the control plane is unreachable (agents.spool).
    spool_max_bytes: int = 64 * 1024 * 1024
    # What tenant processes inherit from the agent's environment (PATH, HOME, LANG, ...).
    child_env: dict[str, str] = field(default_factory=dict, repr=False)
    # Workloads run sandboxed (agents.runtime.sandbox) unless the operator says otherwise.
    insecure_no_sandbox: bool = False
    workload_uids: tuple[int, int] = (DEFAULT_UID_FIRST, DEFAULT_UID_COUNT)  # (first, count)
    sandbox_hide: tuple[Path, ...] = ()

    def metrics_url(self, port: int) -> str:
        """Where others scrape this agent's /metrics once it listens on ``port``: the listener's
        address, or the node's advertised one when it listens on every address."""
        host = self.metrics_addr
        if host in WILDCARD_ADDRS:
            host = self.advertise_addr
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # IPv6
        return f"http://{host}:{port}/metrics"


@dataclass(frozen=True)
class _Option:
    flag: str
    convert: Callable[[str], Any]
    default: Any
    help: str
    switch: bool = False  # a flag without a value (the variable takes true/false)

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.dest.upper()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def convert(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return convert


def _choice(options: Sequence[str], *, upper: bool = False) -> Callable[[str], str]:
    def convert(text: str) -> str:
        value = text.upper() if upper else text
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return convert


_BYTE_UNITS = {"": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2, "g": 1024**3, "gib": 1024**3}
MIN_SPOOL_BYTES = 64 * 1024


def _byte_size(text: str) -> int:
    """``67108864``, ``64MiB``, ``64M``, ``512KiB``: binary units, case-insensitive."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _BYTE_UNITS:
        raise ValueError("must be a byte count such as 67108864 or 64MiB")
    value = int(match.group(1)) * _BYTE_UNITS[unit]
    if value < MIN_SPOOL_BYTES:
        raise ValueError(f"must be at least {MIN_SPOOL_BYTES} bytes")
    return value


def _server_url(text: str) -> str:
    if not text.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL")
    return text.rstrip("/")


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _uid_range(text: str) -> tuple[int, int]:
    """``FIRST-LAST`` (inclusive) -> (first, count); never uid 0 and never past 2^32-2."""
    match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
    if match is None:
        raise ValueError("must be FIRST-LAST, e.g. 1879048192-1879113727")
    first, last = int(match.group(1)), int(match.group(2))
    if not 1000 <= first <= last <= 2**32 - 2:
        raise ValueError("must satisfy 1000 <= FIRST <= LAST <= 4294967294")
    return first, last - first + 1


def _paths(text: str) -> tuple[Path, ...]:
    paths = tuple(Path(p) for p in text.split(":") if p.strip())
    if not all(p.is_absolute() for p in paths):
        raise ValueError("must be absolute paths separated by ':'")
    return paths


_OPTIONS: tuple[_Option, ...] = (
    _Option("--server", _server_url, None, "control plane base URL, e.g. http://127.0.0.1:8000 (required)"),
    _Option("--bootstrap-token", _text, None, "single-use registration token (first start only)"),
    _Option("--bootstrap-token-file", Path, None, "file holding the bootstrap token"),
    _Option("--state-dir", Path, Path("./.switchyard/agent"), "credential, sequence numbers, logs"),
    _Option("--backend", _choice(BACKENDS), "sim", "GPU backend: sim | nvml"),
    _Option("--sim-gpus", _int_in(1, 64), 4, "simulated GPUs on this node"),
    _Option("--sim-node-index", _int_in(0, 1_000_000), 0, "tray index in the simulated rack (identities)"),
    _Option("--sim-cluster-uuid", _text, None, "simulated NVLink fabric clusterUuid (one per rack)"),
    _Option("--sim-clique-id", _int_in(0, 2**31 - 1), 32766, "simulated NVLink fabric cliqueId"),
    _Option("--sim-seed", int, 0, "seed of the simulator's noise"),
    _Option("--hostname", _text, None, "node hostname (default: this host's name)"),
    _Option("--advertise-addr", _text, "127.0.0.1", "address peers use to reach this node"),
    _Option("--metrics-addr", _text, "127.0.0.1", "address of the /metrics listener"),
    _Option("--metrics-port", _int_in(0, 65535), 0, "port of the /metrics listener (0: any free)"),
    _Option("--report-interval", _positive_float, None, "seconds between reports (default: server's)"),
    _Option("--spool-max-bytes", _byte_size, 64 * 1024 * 1024, "bound of the on-disk report spool, e.g. 64MiB"),
    _Option("--stop-grace", _positive_float, 10.0, "seconds between SIGTERM and SIGKILL on stop"),
    _Option("--log-level", _choice(LOG_LEVELS, upper=True), "INFO", "DEBUG | INFO | WARNING | ERROR"),
    _Option(
        "--workload-uids",
        _uid_range,
        (DEFAULT_UID_FIRST, DEFAULT_UID_COUNT),
        "FIRST-LAST: host uids given to sandboxed workloads, one per workload; no user of this host may hold one",
    ),
    _Option(
        "--sandbox-hide", _paths, (), "more paths workloads must not see, ':'-separated (state dir and home always)"
    ),
    _Option(
        "--insecure-no-sandbox",
        _boolean,
        False,
        "run workloads as the agent's own user without a sandbox (development only: they can read its credential)",
        switch=True,
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchyard-agent",
        description="Switchyard node agent. Every flag can also be set as SWITCHYARD_AGENT_<FLAG>.",
    )
    for opt in _OPTIONS:
        # No type= here: conversion happens once, below, for flags and variables alike.
        if opt.switch:
            parser.add_argument(
                opt.flag,
                dest=opt.dest,
                action="store_const",
                const="true",
                default=None,
                help=f"{opt.help} [{opt.env}]",
            )
        else:
            parser.add_argument(opt.flag, dest=opt.dest, default=None, help=f"{opt.help} [{opt.env}]")
    return parser


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Flags win over variables, variables over defaults. Raises ConfigError on a bad value;
    argparse itself exits (status 2, usage on stderr) on an unknown flag or ``--help``."""
    env = os.environ if environ is None else environ
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for opt in _OPTIONS:
        raw, source = args[opt.dest], opt.flag
        if raw is None and env.get(opt.env):
            raw, source = env[opt.env], opt.env
        if raw is None:
            values[opt.dest] = opt.default
            continue
        try:
            values[opt.dest] = opt.convert(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: invalid value {raw!r}: {exc}") from None
    if values["server"] is None:
        raise ConfigError(f"--server is required (or set {ENV_PREFIX}SERVER)")
    token = values.pop("bootstrap_token")
    token_file = values.pop("bootstrap_token_file")
    if token is not None and token_file is not None:
        raise ConfigError("give --bootstrap-token or --bootstrap-token-file, not both")
    if token_file is not None:
        try:
            token = token_file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"--bootstrap-token-file: cannot read {token_file}: {exc.strerror}") from None
        if token is None:
            raise ConfigError(f"--bootstrap-token-file: {token_file} is empty")
    return AgentConfig(
        server=values["server"],
        bootstrap_token=token,
        state_dir=values["state_dir"],
        backend=values["backend"],
        hostname=values["hostname"] or socket.gethostname(),
        advertise_addr=values["advertise_addr"],
        metrics_addr=values["metrics_addr"],
        metrics_port=values["metrics_port"],
        log_level=values["log_level"],
        report_interval_s=values["report_interval"],
        stop_grace_s=values["stop_grace"],
        sim_gpus=values["sim_gpus"],
        sim_node_index=values["sim_node_index"],
        sim_cluster_uuid=values["sim_cluster_uuid"],
        sim_clique_id=values["sim_clique_id"],
        sim_seed=values["sim_seed"],
        spool_max_bytes=values["spool_max_bytes"],
        child_env=inherited_env(env),
        insecure_no_sandbox=values["insecure_no_sandbox"],
        workload_uids=values["workload_uids"],
        sandbox_hide=values["sandbox_hide"],
    )
