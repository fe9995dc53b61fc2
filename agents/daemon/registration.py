"""Joining the control plane: the node's inventory, registration, and the orphans a previous
agent left running (stopped before registering, so no assignment ever runs twice on its GPUs)."""

from __future__ import annotations

import json
import logging
import threading

from agents.client import AgentClient, RejectedError, TransientError, agent_version
from agents.config import AgentConfig
from agents.daemon.backoff import Backoff
from agents.gpu.base import GpuBackend, LibraryVersions
from agents.protocol import (
    MIN_PROTOCOL_VERSION,
    PROTOCOL_VERSION,
    AssignmentStatus,
    GpuInventory,
    NodeInventory,
    RegisterRequest,
    RegisterResponse,
    for_version,
)
from agents.runtime.orphans import stop_orphans
from agents.state import FatalError, FinishedLedger, ProcessLedger, load_credential, write_private_file

log = logging.getLogger(__name__)


def node_inventory(cfg: AgentConfig, backend: GpuBackend, gpus: list[GpuInventory] | None = None) -> NodeInventory:
    versions = backend if isinstance(backend, LibraryVersions) else None
    return NodeInventory(
        hostname=cfg.hostname,
        address=cfg.advertise_addr,
        backend=backend.name,
        driver_version=backend.driver_version(),
        nvml_version=versions.nvml_version() if versions is not None else None,
        cuda_driver_version=versions.cuda_driver_version() if versions is not None else None,
        gpus=backend.inventory() if gpus is None else gpus,
    )


def register(
    cfg: AgentConfig,
    backend: GpuBackend,
    client: AgentClient,
    stop: threading.Event,
    *,
    metrics_url: str | None = None,
) -> RegisterResponse | None:
    """Exchange the bootstrap token for a node credential; retry while the control plane is away.

    The client negotiates the protocol version (a refused version leaves the token unspent). A
    saved credential says nothing about the control plane's version today: the client finds it
    out again on its first request.
    """
    path = cfg.state_dir / "credential.json"
    saved = load_credential(path)
    if saved is not None:
        return saved
    if cfg.bootstrap_token is None:
        raise FatalError(f"no credential in {path} and no bootstrap token: pass --bootstrap-token")
    request = RegisterRequest(
        protocol_version=PROTOCOL_VERSION,
        bootstrap_token=cfg.bootstrap_token,
        inventory=node_inventory(cfg, backend),
        agent_version=agent_version(),
        metrics_url=metrics_url,
    )
    backoff = Backoff()
    while not stop.is_set():
        try:
            response = client.register(request)
        except RejectedError as exc:
            raise FatalError(f"registration refused by {cfg.server}: {exc.detail} (HTTP {exc.status_code})") from None
        except TransientError as exc:
            delay = backoff.delay()
            log.warning("control plane unreachable for registration (%s); retrying in %.1fs", exc, delay)
            stop.wait(delay)
            continue
        # In the oldest version's fields, so an agent rolled back to it can still read its credential.
        write_private_file(path, json.dumps(for_version(response, MIN_PROTOCOL_VERSION)).encode())
        return response
    return None


def recover_orphans(processes: ProcessLedger, finished: FinishedLedger, *, grace_s: float) -> list[AssignmentStatus]:
    """Stop the workload processes a killed or crashed agent left running; record why they ended.

    Runs before the first reconcile: the statuses go into ``finished``, so they are reported
    (the control plane fails those workloads with the message) and the planner never starts
    the same (workload, rank, epoch) a second time on GPUs an orphan may still hold.
    """
    entries = processes.load()
    if not entries:
        return []
    log.warning("the previous agent left %d workload process(es) in its ledger", len(entries))
    statuses = stop_orphans(entries, grace_s=grace_s)
    finished.record(statuses)
    processes.save([])
    return statuses
