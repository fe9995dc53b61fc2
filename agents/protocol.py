"""Wire models of the agent <-> control plane protocol (DESIGN.md section 3).

Both sides import this module, so it depends on pydantic only: an agent host must not need
FastAPI, SQLAlchemy or Celery.

Versions. Every request carries ``protocol_version``. Each side speaks a range,
``MIN_PROTOCOL_VERSION`` to ``PROTOCOL_VERSION``; the control plane answers 400 problem+json
naming its range to a version outside it. Readers ignore fields they do not know, so agents and
control plane roll out independently (a DaemonSet updates node by node). Version 1 readers
refused unknown fields, so whatever goes to a version-1 peer is cut down to the fields version 1
knew: ``for_version`` does it, from the ``Since`` marker each later field carries (a field
without one was in version 1). The agent sends its newest version first and steps down when the
control plane refuses the version (400) or, being older, the fields (422); see
``agents.client``. The control plane shapes its answers in ``controlplane.api.compatibility``.

- 1: the first version.
- 2: readers ignore unknown fields; ``agent_version`` in ``RegisterRequest`` and
  ``ReportRequest``; ``min_protocol_version`` in ``RegisterResponse``; the desired-state poll
  takes ``protocol=<version>`` (absent: 1), so its answer can be shaped for the agent.

Endpoints (all JSON, all initiated by the agent):

- ``POST /v1/agent/register``                      RegisterRequest  -> RegisterResponse
  (the single-use bootstrap token is in the body; no Authorization header)
- ``POST /v1/agent/nodes/{node_id}/reports``       ReportRequest    -> ReportResponse
- ``GET  /v1/agent/nodes/{node_id}/desired?after=G&wait=S&protocol=V`` -> DesiredState
  (long poll: answers at once if the generation is newer than G, else holds up to S seconds
  and then answers with the current state, whose generation may equal G)
- ``POST /v1/agent/nodes/{node_id}/logs``          LogUpload        -> LogUploadResponse

The node routes need ``Authorization: Bearer <node credential>``; a credential is valid for
its own node only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

PROTOCOL_VERSION = 2  # the newest version this code speaks
MIN_PROTOCOL_VERSION = 1  # the oldest version this code still speaks

Uuid = Annotated[str, Field(min_length=1, max_length=96)]
Count = Annotated[int, Field(ge=0)]


@dataclass(frozen=True)
class Since:
    """Marks a field added after version 1: ``Annotated[T, Since(2)]``. Peers older than
    ``version`` never receive it (``for_version``)."""

    version: int


class _Wire(BaseModel):
    # Unknown fields are ignored on read, so a newer peer's additions do not break this one.
    # (Version 1 refused them; ``for_version`` keeps them away from a version-1 peer.)
    model_config = ConfigDict(extra="ignore", frozen=True)


def field_since(info: FieldInfo) -> int:
    """The protocol version that added a field (1 for a field without a ``Since`` marker)."""
    return next((m.version for m in info.metadata if isinstance(m, Since)), 1)


def for_version(message: BaseModel, version: int) -> dict[str, Any]:
    """``message`` as JSON-ready data holding only the fields protocol ``version`` knew, nested
    messages included: what a peer speaking ``version`` may receive."""
    pruned = _prune(message, message.model_dump(mode="json"), version)
    assert isinstance(pruned, dict)
    return pruned


def _prune(value: object, dumped: Any, version: int) -> Any:
    if isinstance(value, BaseModel):
        return {
            name: _prune(getattr(value, name), dumped[name], version)
            for name, info in type(value).model_fields.items()
            if name in dumped and field_since(info) <= version
        }
    if isinstance(value, Mapping):
        # JSON turned the keys into strings; the order is the same.
        return {key: _prune(item, dumped[key], version) for key, item in zip(dumped, value.values(), strict=True)}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_prune(item, out, version) for item, out in zip(value, dumped, strict=True)]
    return dumped


class MigDevice(_Wire):
    uuid: Uuid
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    memory_total_mib: float | None = None


class GpuInventory(_Wire):
    """Static facts about one GPU, sent at registration."""

    index: Count
    uuid: Uuid
    name: str = Field(max_length=96)
    serial: str | None = Field(default=None, max_length=64)
    pci_bus_id: str | None = Field(default=None, max_length=32)
    memory_total_mib: Count
    power_limit_default_w: float | None = None
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None
    # NVLink domain identity from nvmlDeviceGetGpuFabricInfoV; None where the GPU has no fabric.
    fabric_cluster_uuid: str | None = Field(default=None, max_length=64)
    fabric_clique_id: int | None = None
    fabric_state: str | None = Field(default=None, max_length=32)  # "completed", "in_progress", ...
    module_id: int | None = None
    # Added for the NVML backend (issue 3); all optional so a simpler backend can leave them out.
    pci_device_id: str | None = Field(default=None, max_length=16)  # "0x31C210DE"
    memory_reserved_mib: float | None = None
    module_power_limit_w: float | None = None
    max_sm_clock_mhz: float | None = None
    max_mem_clock_mhz: float | None = None
    chassis_serial: str | None = Field(default=None, max_length=64)
    slot_number: int | None = None
    tray_index: int | None = None
    host_id: int | None = None
    mig_mode: bool | None = None
    mig_devices: list[MigDevice] = Field(default_factory=list, max_length=8)


class NodeInventory(_Wire):
    hostname: str = Field(min_length=1, max_length=253)
    # Where the node's peers reach it (MASTER_ADDR for multi-node workloads).
    address: str = Field(min_length=1, max_length=253)
    backend: str = Field(max_length=16)  # "sim" | "nvml"
    driver_version: str | None = Field(default=None, max_length=32)
    nvml_version: str | None = Field(default=None, max_length=32)
    cuda_driver_version: int | None = None
    gpus: list[GpuInventory] = Field(max_length=64)


AgentVersion = Annotated[str | None, Since(2), Field(max_length=64)]


class RegisterRequest(_Wire):
    protocol_version: int
    bootstrap_token: str = Field(min_length=8, max_length=256)
    inventory: NodeInventory
    # v2: the agent's software version ("0.1.0"); None where it does not know it.
    agent_version: AgentVersion = None


class RegisterResponse(_Wire):
    # The newest version the control plane speaks (v1: the only one).
    protocol_version: int = PROTOCOL_VERSION
    # v2: the oldest version it still speaks; a version-1 control plane said nothing, so 1.
    min_protocol_version: Annotated[int, Since(2)] = 1
    node_id: str
    credential: str
    report_interval_s: float
    watch_timeout_s: float
    lease_ttl_s: float


class GpuProcess(_Wire):
    pid: int
    used_memory_mib: float | None = None


class GpuHealthState(StrEnum):
    HEALTHY = "healthy"
    # Usable, but something happened that the tenant or the operator should know about.
    DEGRADED = "degraded"
    # Must not receive new work until the condition clears (reset, reboot, operator).
    UNHEALTHY = "unhealthy"


class HealthAction(StrEnum):
    """What NVIDIA's XID catalog says to do, as the agent's policy maps it."""

    NONE = "none"
    NOTIFY_TENANT = "notify_tenant"
    RESET_GPU = "reset_gpu"
    DRAIN_NODE = "drain_node"
    REBOOT_NODE = "reboot_node"
    DRAIN_NVLINK_PEERS = "drain_nvlink_peers"


class EventKind(StrEnum):
    XID = "xid"
    # NVML delivers ECC and recovery-action events on the same event set as XIDs; the driver may
    # also log an XID for the same error, so the kind keeps them apart (no double counting).
    ECC_DBE = "ecc_dbe"
    ECC_SBE = "ecc_sbe"
    RECOVERY_ACTION = "recovery_action"


class XidEvent(_Wire):
    uuid: Uuid
    xid: int  # the XID; for ECC kinds 48 (double-bit) or 0, for recovery_action the field-230 value
    kind: EventKind = EventKind.XID
    at: float  # unix seconds, agent clock
    detail: str | None = Field(default=None, max_length=500)


class GpuTelemetry(_Wire):
    """One GPU's sample. None means the backend could not read that field ("absent")."""

    uuid: Uuid
    index: Count
    utilization_gpu_pct: float | None = None
    utilization_memory_pct: float | None = None
    memory_used_mib: float | None = None
    memory_total_mib: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    # Cumulative counter in mJ since driver load (NVML nvmlDeviceGetTotalEnergyConsumption).
    energy_mj: int | None = None
    temperature_gpu_c: float | None = None
    temperature_memory_c: float | None = None
    sm_clock_mhz: float | None = None
    mem_clock_mhz: float | None = None
    xid_last: int | None = None
    xid_count: Count = 0  # cumulative since the agent started
    # -- fast loop (issue 3) --
    module_power_w: float | None = None  # GPU + CPU module (field 186/185 scopeId 1)
    memory_reserved_mib: float | None = None
    clock_event_reasons: int | None = None  # nvmlClocksEventReason bitmask
    processes: list[GpuProcess] | None = None  # None: could not be read; []: none running
    # Cumulative NVLink throughput counters (fields 138-141), KiB.
    nvlink_tx_kib: int | None = None
    nvlink_rx_kib: int | None = None
    # -- slow loop: the last value read, repeated in every report --
    ecc_volatile_sbe: int | None = None
    ecc_volatile_dbe: int | None = None
    ecc_aggregate_sbe: int | None = None
    ecc_aggregate_dbe: int | None = None
    remapped_rows_correctable: int | None = None
    remapped_rows_uncorrectable: int | None = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    recovery_action: int | None = None  # field 230: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, ...
    nvlink_links_up: int | None = None
    nvlink_links_total: int | None = None
    nvlink_errors: int | None = None  # cumulative CRC + replay + recovery errors over all links
    pcie_replay_count: int | None = None
    fabric_state: str | None = Field(default=None, max_length=32)
    fabric_healthy: bool | None = None
    xid_counts: dict[int, int] = Field(default_factory=dict)  # cumulative by XID code
    # -- health, as the agent's XID/ECC policy judges it --
    health: GpuHealthState = GpuHealthState.HEALTHY
    health_action: HealthAction = HealthAction.NONE
    health_reasons: list[str] = Field(default_factory=list, max_length=16)


class AssignmentPhase(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    # The process ended on its own; exit_code says how.
    EXITED = "exited"
    # The agent stopped it because it left the desired state (cancel, preemption, timeout).
    STOPPED = "stopped"
    # The agent could not start it (bad command, stale epoch, unknown GPU); message says why.
    REJECTED = "rejected"


# How a REJECTED status's message starts when the agent refused the assignment as a deposed
# scheduler's (an epoch older than one it has seen): nothing the tenant did, so the control plane
# places the workload again instead of failing it. Agents of every version word it so.
STALE_EPOCH = "stale epoch"


class AssignmentStatus(_Wire):
    workload_id: str
    epoch: int
    rank: Count
    phase: AssignmentPhase
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None  # unix seconds
    finished_at: float | None = None
    message: str | None = Field(default=None, max_length=2000)


class ReportRequest(_Wire):
    protocol_version: int
    # v2: the agent's software version, in every report, so an upgrade in place shows.
    agent_version: AgentVersion = None
    seq: Count  # strictly increasing per node across agent restarts (persisted by the agent)
    sent_at: float  # unix seconds, agent clock
    gpus: list[GpuTelemetry] = Field(max_length=64)
    assignments: list[AssignmentStatus] = Field(default_factory=list, max_length=256)
    # The newest desired-state generation the agent has fully reconciled (started what it lists,
    # stopped what it dropped). The control plane frees a dropped assignment's GPUs only once
    # this reaches the generation that dropped it, so no GPU is handed over while the old
    # process may still run.
    applied_generation: int = 0
    # XID and ECC events since the previous report, in order (issue 3).
    xid_events: list[XidEvent] = Field(default_factory=list, max_length=1024)
    # Sent when the node's GPU inventory changed (a GPU fell off the bus, or came back).
    inventory: NodeInventory | None = None


class ReportResponse(_Wire):
    accepted: bool
    duplicate: bool = False
    # The node's current desired-state generation: an agent that has seen less polls at once.
    generation: int


class Assignment(_Wire):
    """One process the agent must run: one rank of a workload on this node's GPUs."""

    workload_id: str
    epoch: int
    rank: Count
    world_size: int = Field(ge=1)  # number of nodes (processes) in the gang
    gpu_uuids: list[str] = Field(min_length=1)
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)
    master_addr: str
    master_port: int
    peers: list[str] = Field(default_factory=list)  # node addresses by rank
    # Simulator only: the GPU utilisation the workload drives while it runs.
    sim_utilization: float = Field(default=0.9, ge=0.0, le=1.0)
    # Seconds between SIGTERM and SIGKILL when this process is stopped (cancel, preemption,
    # deadline): a spot workload's preemption notice. None: the agent's own --stop-grace.
    stop_grace_s: float | None = Field(default=None, ge=0.0, le=3600.0)


class DesiredState(_Wire):
    node_id: str
    generation: int
    assignments: list[Assignment] = Field(default_factory=list)


class LogChunk(_Wire):
    """Bytes [offset, offset+len(data)) of a rank's combined stdout+stderr, base64-encoded."""

    workload_id: str
    rank: Count
    offset: Count
    data_b64: str = Field(max_length=1_500_000)


class LogUpload(_Wire):
    protocol_version: int
    chunks: list[LogChunk] = Field(max_length=64)


class LogUploadResponse(_Wire):
    # Per (workload_id, rank): the byte offset the control plane holds up to, so an agent that
    # sent a gap or a duplicate resumes from the right place.
    acked: dict[str, int]


def log_key(workload_id: str, rank: int) -> str:
    return f"{workload_id}/{rank}"
