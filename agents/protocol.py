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
- 3: ``metrics_url`` (where the agent serves its ``/metrics``) in ``RegisterRequest`` and
  ``ReportRequest``; ``POST .../reports/batch`` (``ReportBatch`` -> ``ReportBatchResponse``),
  which a spool replay uses to send several reports per request. An agent that settled on an
  older version sends its reports one by one.

Endpoints (all JSON, all initiated by the agent):

- ``POST /v1/agent/register``                      RegisterRequest  -> RegisterResponse
  (the single-use bootstrap token is in the body; no Authorization header)
- ``POST /v1/agent/nodes/{node_id}/reports``       ReportRequest    -> ReportResponse
- ``POST /v1/agent/nodes/{node_id}/reports/batch`` ReportBatch      -> ReportBatchResponse (v3)
  (up to ``MAX_BATCH_REPORTS`` reports, folded in order as if each had been sent alone)
- ``GET  /v1/agent/nodes/{node_id}/desired?after=G&wait=S&protocol=V`` -> DesiredState
  (long poll: answers at once if the generation is newer than G, else holds up to S seconds
  and then answers with the current state, whose generation may equal G)
- ``POST /v1/agent/nodes/{node_id}/logs``          LogUpload        -> LogUploadResponse

The node routes need ``Authorization: Bearer <node credential>``; a credential is valid for
its own node only.

Bounds. Every field a peer sends is bounded here, so nothing unbounded reaches Redis, SQL or a
``datetime``: integers within int64 and what the hardware can report (sequence numbers and
counters within 2**53, exact in JSON and in Redis's Lua), floats finite and in physical range,
times between 1970 and 2100, identifiers in a fixed charset, every list and string in length.
Two kinds of field are treated differently on purpose:

- What the agent itself decides (sequence numbers, times, ids, phases, ranks, events, the
  inventory's identity) is refused when out of bounds: the control plane answers 422 before it
  writes anything.
- A hardware *reading* (``Reading``: a power, a temperature, an energy or ECC counter, an optional
  inventory fact) outside its physical range - a driver's error sentinel, a negative counter, a
  NaN - is what the model already calls absent: it reads as None, on both sides. A sensor glitch
  must not make a node's whole report (its workloads' phases) refused, nor the agent fail to
  build one; and an absent counter adds no energy, so a bad one never reaches the books.

Free text the agent relays (``Text``: an XID's detail, a process's exit message, health reasons)
keeps its words but has control, bidi and zero-width characters replaced by U+FFFD: it may quote
a tenant's command, which must not get a node's reports refused nor spoof an operator's table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.fields import FieldInfo

PROTOCOL_VERSION = 3  # the newest version this code speaks
MIN_PROTOCOL_VERSION = 1  # the oldest version this code still speaks

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1
# Sequence numbers and agent-kept counts: exact as a double (JSON readers, Redis's Lua scripts).
MAX_SEQ = 2**53 - 1
MAX_COUNT = 2**53 - 1
# NVML's energy counter (mJ since driver load): 10**15 mJ is a 2 kW module for 15 years.
MAX_ENERGY_MJ = 10**15
MAX_UNIX_S = 4_102_444_800.0  # 2100-01-01T00:00:00Z: agent clocks, event and process times
MAX_POWER_W = 10_000.0  # one GPU or GPU module (a GB300 module draws under 3 kW)
MAX_MIB = 16 * 1024 * 1024  # 16 TiB of GPU memory
MAX_CLOCK_MHZ = 100_000.0
MIN_TEMPERATURE_C, MAX_TEMPERATURE_C = -50.0, 250.0
MAX_GPU_INDEX = 1023
MAX_PID = 2**31 - 1  # pid_t
# How far ahead of the node's last report a sequence number may jump: the agent skips at most
# one block of reserved seqs per restart (agents.state.SEQ_BLOCK, 1000) and its spool keeps the
# oldest report, so a live agent never jumps far. The allowance grows with the time since the
# node's last accepted report, faster than any agent reports (once a second or slower), so an
# agent whose reports were lost for a long time still gets back in; one corrupt seq can hold a
# node's reports back only for a bounded time, never for good. Refused jumps answer 409.
SEQ_JUMP_ALLOWANCE = 10_000
SEQ_JUMP_PER_S = 10.0

Count = Annotated[int, Field(ge=0, le=MAX_COUNT)]
UnixTime = Annotated[float, Field(ge=0.0, le=MAX_UNIX_S, allow_inf_nan=False)]

# GPU and MIG UUIDs ("GPU-3c4d...", "MIG-...", older drivers "MIG-GPU-.../1/0"), and a simulator's.
Uuid = Annotated[str, Field(min_length=1, max_length=96, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")]
# The control plane's ids ("wl_01HV..."), as the agent echoes them back: whatever an assignment
# carried, so the agent can always report on it (even to reject it), but printable and short.
WireId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Epoch = Annotated[int, Field(ge=0, le=INT64_MAX)]
Rank = Annotated[int, Field(ge=0, le=INT32_MAX)]
# What drivers and firmware report as names, serials, versions and states: printable ASCII.
_PRINTABLE = r"^[\x20-\x7e]*$"
Printable16 = Annotated[str, Field(max_length=16, pattern=_PRINTABLE)]
Printable32 = Annotated[str, Field(max_length=32, pattern=_PRINTABLE)]
Printable64 = Annotated[str, Field(max_length=64, pattern=_PRINTABLE)]
Printable96 = Annotated[str, Field(max_length=96, pattern=_PRINTABLE)]
Hostname = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
# An IPv4 or IPv6 address (with its zone) or a host name: what peers put in MASTER_ADDR.
Address = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:%\[\]_-]+$")]

# Control (but tab and newline), format (bidi, zero-width, BOM), surrogate, line and paragraph
# separator characters: Unicode's Cc, Cf, Cs, Zl and Zp (tests/unit/test_protocol_bounds.py
# checks the list against ``unicodedata``).
_UNSAFE_TEXT = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2"
    "\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f]"
)


def safe_text(value: str) -> str:
    """``value`` with every control, bidi, zero-width and surrogate character replaced by U+FFFD."""
    return _UNSAFE_TEXT.sub("\ufffd", value)


Text500 = Annotated[str, Field(max_length=500), AfterValidator(safe_text)]
Text2000 = Annotated[str, Field(max_length=2000), AfterValidator(safe_text)]


def _absent_outside(low: float, high: float) -> Callable[[object], object]:
    """A hardware reading outside [low, high], or not finite, is one the backend could not read."""

    def check(value: object) -> object:
        if isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if low <= value <= high else None
        if isinstance(value, float):
            return value if math.isfinite(value) and low <= value <= high else None
        return value  # not a number: the field's own validation says why

    return check


def _float_reading(low: float, high: float) -> Any:
    return BeforeValidator(_absent_outside(low, high))


Watts = Annotated[
    Annotated[float, Field(ge=0.0, le=MAX_POWER_W, allow_inf_nan=False)] | None, _float_reading(0.0, MAX_POWER_W)
]
MiB = Annotated[Annotated[float, Field(ge=0.0, le=MAX_MIB, allow_inf_nan=False)] | None, _float_reading(0.0, MAX_MIB)]
MHz = Annotated[
    Annotated[float, Field(ge=0.0, le=MAX_CLOCK_MHZ, allow_inf_nan=False)] | None, _float_reading(0.0, MAX_CLOCK_MHZ)
]
Celsius = Annotated[
    Annotated[float, Field(ge=MIN_TEMPERATURE_C, le=MAX_TEMPERATURE_C, allow_inf_nan=False)] | None,
    _float_reading(MIN_TEMPERATURE_C, MAX_TEMPERATURE_C),
]
Percent = Annotated[Annotated[float, Field(ge=0.0, le=100.0, allow_inf_nan=False)] | None, _float_reading(0.0, 100.0)]
EnergyMj = Annotated[Annotated[int, Field(ge=0, le=MAX_ENERGY_MJ)] | None, _float_reading(0, MAX_ENERGY_MJ)]
Counter = Annotated[Annotated[int, Field(ge=0, le=INT64_MAX)] | None, _float_reading(0, INT64_MAX)]
Int32Reading = Annotated[Annotated[int, Field(ge=0, le=INT32_MAX)] | None, _float_reading(0, INT32_MAX)]
Uint32Reading = Annotated[Annotated[int, Field(ge=0, le=UINT32_MAX)] | None, _float_reading(0, UINT32_MAX)]


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
    dumped = message.model_dump(mode="json")
    if version >= PROTOCOL_VERSION:
        return dumped  # the newest version knew every field: nothing to prune (every report's path)
    pruned = _prune(message, dumped, version)
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
    gpu_instance_id: Uint32Reading = None
    compute_instance_id: Uint32Reading = None
    memory_total_mib: MiB = None


class GpuInventory(_Wire):
    """Static facts about one GPU, sent at registration."""

    index: Annotated[int, Field(ge=0, le=MAX_GPU_INDEX)]
    uuid: Uuid
    name: Printable96
    serial: Printable64 | None = None
    pci_bus_id: Printable32 | None = None
    memory_total_mib: Annotated[int, Field(ge=0, le=MAX_MIB)]
    power_limit_default_w: Watts = None
    power_limit_min_w: Watts = None
    power_limit_max_w: Watts = None
    # NVLink domain identity from nvmlDeviceGetGpuFabricInfoV; None where the GPU has no fabric.
    fabric_cluster_uuid: Printable64 | None = None
    fabric_clique_id: Int32Reading = None
    fabric_state: Printable32 | None = None  # "completed", "in_progress", ...
    module_id: Uint32Reading = None
    # Added for the NVML backend (issue 3); all optional so a simpler backend can leave them out.
    pci_device_id: Printable16 | None = None  # "0x31C210DE"
    memory_reserved_mib: MiB = None
    module_power_limit_w: Watts = None
    max_sm_clock_mhz: MHz = None
    max_mem_clock_mhz: MHz = None
    chassis_serial: Printable64 | None = None
    slot_number: Uint32Reading = None
    tray_index: Uint32Reading = None
    host_id: Uint32Reading = None
    mig_mode: bool | None = None
    mig_devices: list[MigDevice] = Field(default_factory=list, max_length=8)


class NodeInventory(_Wire):
    hostname: Hostname
    # Where the node's peers reach it (MASTER_ADDR for multi-node workloads).
    address: Address
    backend: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z0-9_-]+$")]  # "sim" | "nvml"
    driver_version: Printable32 | None = None
    nvml_version: Printable32 | None = None
    cuda_driver_version: Int32Reading = None
    gpus: list[GpuInventory] = Field(max_length=64)

    @model_validator(mode="after")
    def _each_gpu_once(self) -> NodeInventory:
        if len({g.uuid for g in self.gpus}) != len(self.gpus) or len({g.index for g in self.gpus}) != len(self.gpus):
            raise ValueError("the inventory lists a GPU UUID or index twice")
        return self


AgentVersion = Annotated[Printable64 | None, Since(2)]
# Where an operator's Prometheus scrapes the agent: http(s), printable, no spaces.
MetricsUrl = Annotated[
    Annotated[str, Field(min_length=8, max_length=255, pattern=r"^https?://[\x21-\x7e]+$")] | None, Since(3)
]
ProtocolVersion = Annotated[int, Field(ge=0, le=INT32_MAX)]


class RegisterRequest(_Wire):
    protocol_version: ProtocolVersion
    bootstrap_token: str = Field(min_length=8, max_length=256, pattern=r"^[\x21-\x7e]+$")
    inventory: NodeInventory
    # v2: the agent's software version ("0.1.0"); None where it does not know it.
    agent_version: AgentVersion = None
    # v3: the URL of the agent's /metrics listener (None where it serves none).
    metrics_url: MetricsUrl = None


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
    pid: Annotated[int, Field(ge=0, le=UINT32_MAX)]  # NVML's unsigned int
    used_memory_mib: MiB = None


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
    # The XID; for ECC kinds 48 (double-bit) or 0, for recovery_action the field-230 value.
    xid: Annotated[int, Field(ge=0, le=INT32_MAX)]
    kind: EventKind = EventKind.XID
    at: UnixTime  # unix seconds, agent clock
    detail: Text500 | None = None


class GpuTelemetry(_Wire):
    """One GPU's sample. None means the backend could not read that field ("absent"); so does a
    reading outside its physical range (``Reading`` in the module's docstring)."""

    uuid: Uuid
    index: Annotated[int, Field(ge=0, le=MAX_GPU_INDEX)]
    utilization_gpu_pct: Percent = None
    utilization_memory_pct: Percent = None
    memory_used_mib: MiB = None
    memory_total_mib: MiB = None
    power_w: Watts = None
    power_limit_w: Watts = None
    # Cumulative counter in mJ since driver load (NVML nvmlDeviceGetTotalEnergyConsumption).
    energy_mj: EnergyMj = None
    temperature_gpu_c: Celsius = None
    temperature_memory_c: Celsius = None
    sm_clock_mhz: MHz = None
    mem_clock_mhz: MHz = None
    xid_last: Int32Reading = None
    xid_count: Count = 0  # cumulative since the agent started
    # -- fast loop (issue 3) --
    module_power_w: Watts = None  # GPU + CPU module (field 186/185 scopeId 1)
    memory_reserved_mib: MiB = None
    clock_event_reasons: Counter = None  # nvmlClocksEventReason bitmask
    processes: list[GpuProcess] | None = Field(default=None, max_length=256)  # None: could not be read; []: none
    # Cumulative NVLink throughput counters (fields 138-141), KiB.
    nvlink_tx_kib: Counter = None
    nvlink_rx_kib: Counter = None
    # -- slow loop: the last value read, repeated in every report --
    ecc_volatile_sbe: Counter = None
    ecc_volatile_dbe: Counter = None
    ecc_aggregate_sbe: Counter = None
    ecc_aggregate_dbe: Counter = None
    remapped_rows_correctable: Int32Reading = None
    remapped_rows_uncorrectable: Int32Reading = None
    remapped_rows_pending: bool | None = None
    remapped_rows_failure: bool | None = None
    recovery_action: Int32Reading = None  # field 230: 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, ...
    nvlink_links_up: Int32Reading = None
    nvlink_links_total: Int32Reading = None
    nvlink_errors: Counter = None  # cumulative CRC + replay + recovery errors over all links
    pcie_replay_count: Counter = None
    fabric_state: Printable32 | None = None
    fabric_healthy: bool | None = None
    # Cumulative by XID code.
    xid_counts: dict[Annotated[int, Field(ge=0, le=INT32_MAX)], Count] = Field(default_factory=dict, max_length=256)
    # -- health, as the agent's XID/ECC policy judges it --
    health: GpuHealthState = GpuHealthState.HEALTHY
    health_action: HealthAction = HealthAction.NONE
    health_reasons: list[Text500] = Field(default_factory=list, max_length=16)


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
    workload_id: WireId
    epoch: Epoch
    rank: Rank
    phase: AssignmentPhase
    pid: Annotated[int, Field(ge=0, le=MAX_PID)] | None = None
    # A process's exit status; negative: killed by that signal (Popen's returncode).
    exit_code: Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)] | None = None
    started_at: UnixTime | None = None  # unix seconds
    finished_at: UnixTime | None = None
    message: Text2000 | None = None


class ReportRequest(_Wire):
    protocol_version: ProtocolVersion
    # v2: the agent's software version, in every report, so an upgrade in place shows.
    agent_version: AgentVersion = None
    # v3: the URL of the agent's /metrics listener; a report without it leaves the last one known.
    metrics_url: MetricsUrl = None
    # Strictly increasing per node across agent restarts (persisted by the agent); a jump far
    # ahead of the node's last report is refused (SEQ_JUMP_ALLOWANCE).
    seq: Annotated[int, Field(ge=0, le=MAX_SEQ)]
    sent_at: UnixTime  # unix seconds, agent clock
    gpus: list[GpuTelemetry] = Field(max_length=64)
    assignments: list[AssignmentStatus] = Field(default_factory=list, max_length=256)
    # The newest desired-state generation the agent has fully reconciled (started what it lists,
    # stopped what it dropped). The control plane frees a dropped assignment's GPUs only once
    # this reaches the generation that dropped it, so no GPU is handed over while the old
    # process may still run.
    applied_generation: Annotated[int, Field(ge=0, le=INT64_MAX)] = 0
    # XID and ECC events since the previous report, in order (issue 3).
    xid_events: list[XidEvent] = Field(default_factory=list, max_length=1024)
    # Sent when the node's GPU inventory changed (a GPU fell off the bus, or came back).
    inventory: NodeInventory | None = None

    @model_validator(mode="after")
    def _each_gpu_once(self) -> ReportRequest:
        if len({g.uuid for g in self.gpus}) != len(self.gpus):
            raise ValueError("the report samples a GPU UUID twice")
        return self


class ReportResponse(_Wire):
    accepted: bool
    duplicate: bool = False
    # The node's current desired-state generation: an agent that has seen less polls at once.
    generation: int


MAX_BATCH_REPORTS = 64


class ReportBatch(_Wire):
    """v3: several reports of one node in one request, oldest first (a spool replay)."""

    protocol_version: ProtocolVersion
    reports: list[ReportRequest] = Field(min_length=1, max_length=MAX_BATCH_REPORTS)

    @model_validator(mode="after")
    def _in_seq_order(self) -> ReportBatch:
        seqs = [r.seq for r in self.reports]
        if any(b <= a for a, b in zip(seqs, seqs[1:], strict=False)):
            raise ValueError("the reports of a batch must be in increasing seq order")
        return self


class BatchedResult(_Wire):
    """What one report of a batch came to: a ReportResponse's fields, or why it was refused."""

    seq: int
    accepted: bool
    duplicate: bool = False
    # The HTTP status and detail the report would have got alone (a 409 or 422), if refused.
    refused_status: int | None = None
    refused_detail: str | None = None


class ReportBatchResponse(_Wire):
    # One result per report, in the batch's order.
    results: list[BatchedResult]
    generation: int


class Assignment(_Wire):
    """One process the agent must run: one rank of a workload on this node's GPUs."""

    # Bounded as the agent's statuses echo them, so it can always report on an assignment.
    workload_id: WireId
    epoch: Epoch
    rank: Rank
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

    workload_id: WireId
    rank: Rank
    offset: Count
    data_b64: str = Field(max_length=1_500_000)


class LogUpload(_Wire):
    protocol_version: ProtocolVersion
    chunks: list[LogChunk] = Field(max_length=64)


class LogUploadResponse(_Wire):
    # Per (workload_id, rank): the byte offset the control plane holds up to, so an agent that
    # sent a gap or a duplicate resumes from the right place.
    acked: dict[str, int]


def log_key(workload_id: str, rank: int) -> str:
    return f"{workload_id}/{rank}"
