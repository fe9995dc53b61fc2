"""The series only Switchyard has: per GPU (``switchyard_gpu_*``) and per agent.

They lint clean under ``promtool check metrics``: counters end in ``_total`` and their labels
leave out ``modelName`` and the driver version (join on ``UUID``).

- ``switchyard_gpu_health`` is a numeric code, ``0`` healthy, ``1`` degraded, ``2`` unhealthy,
  so ``max by (Hostname)`` gives a node's worst GPU and an alert is ``> 0``;
  ``switchyard_gpu_health_action{action=...}`` is 1 for the policy's current action (one of
  the six ``HealthAction`` values: bounded). Free-text reasons stay out of Prometheus.
- Who runs on a GPU is the separate info series ``switchyard_gpu_owner_info{UUID, workload_id}``
  (= 1), joined with ``* on (UUID) group_left (workload_id)``: a workload label on every GPU
  series would churn every series at each hand-over.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agents.exporter.series import GpuFamily, GpuView, Row, scalar
from agents.protocol import GpuHealthState, GpuInventory, GpuTelemetry

HEALTH_CODES: dict[GpuHealthState, int] = {
    GpuHealthState.HEALTHY: 0,
    GpuHealthState.DEGRADED: 1,
    GpuHealthState.UNHEALTHY: 2,
}

# An agent-wide family: (name, type, help, [(sample name, labels, value)]).
AgentFamily = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]


@dataclass(frozen=True)
class SpoolStats:
    """What the daemon's report spool tells the exporter at scrape time."""

    depth: int  # reports waiting to be sent
    dropped: int  # reports shed to stay under the spool's bound, since the agent started


@dataclass
class AgentState:
    """What the daemon tells the exporter; read under the exporter's lock at scrape time."""

    hostname: str
    gpus: list[GpuTelemetry] = field(default_factory=list)
    inventory: dict[str, GpuInventory] = field(default_factory=dict)
    reserved_mib: dict[str, float] = field(default_factory=dict)
    report_seq: int | None = None
    reports_sent: int = 0
    reports_failed: int = 0
    last_report_success: float | None = None
    running_assignments: int = 0
    gpu_owners: dict[str, str] = field(default_factory=dict)  # GPU UUID -> workload id


def labels(dcgm_labels: dict[str, str]) -> dict[str, str]:
    """Ours: dcgm-exporter's without ``modelName`` and the driver version."""
    return {k: v for k, v in dcgm_labels.items() if k not in ("modelName", "DCGM_FI_DRIVER_VERSION")}


def _xid_rows(view: GpuView) -> list[Row]:
    return [((("xid", str(xid)),), float(n)) for xid, n in sorted(view.sample.xid_counts.items())]


def _fabric_state_rows(view: GpuView) -> list[Row]:
    state = view.sample.fabric_state
    return [] if state is None else [((("state", state),), 1.0)]


def _health_action_rows(view: GpuView) -> list[Row]:
    return [((("action", view.sample.health_action.value),), 1.0)]


def _ours(name: str, typ: str, help_text: str, get: Callable[[GpuTelemetry], float | int | bool | None]) -> GpuFamily:
    return GpuFamily(name, typ, help_text, scalar(get), dcgm=False)


SWITCHYARD_FAMILIES: tuple[GpuFamily, ...] = (
    _ours(
        "switchyard_gpu_module_power_watts",
        "gauge",
        "Power draw of the GPU's module: the GPU plus its share of the Grace CPU (NVML field 186, scope 1).",
        lambda g: g.module_power_w,
    ),
    _ours(
        "switchyard_gpu_processes",
        "gauge",
        "Compute processes running on the GPU.",
        lambda g: None if g.processes is None else len(g.processes),
    ),
    _ours("switchyard_gpu_nvlink_links_up", "gauge", "NVLink links that are up.", lambda g: g.nvlink_links_up),
    _ours("switchyard_gpu_nvlink_links", "gauge", "NVLink links the GPU has.", lambda g: g.nvlink_links_total),
    _ours(
        "switchyard_gpu_nvlink_errors_total",
        "counter",
        "NVLink CRC, replay and recovery errors over all links since driver load.",
        lambda g: g.nvlink_errors,
    ),
    _ours(
        "switchyard_gpu_recovery_action",
        "gauge",
        "GPU recovery action (NVML field 230): 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, "
        "4 drain and reset, 5 recover IMEX domain, 6 bus reset, 7 system reboot.",
        lambda g: g.recovery_action,
    ),
    _ours(
        "switchyard_gpu_fabric_healthy",
        "gauge",
        "1 while the GPU's NVLink fabric reports healthy.",
        lambda g: g.fabric_healthy,
    ),
    GpuFamily(
        "switchyard_gpu_fabric_state",
        "gauge",
        "NVLink fabric state of the GPU (1 for the current state).",
        _fabric_state_rows,
        dcgm=False,
    ),
    GpuFamily(
        "switchyard_gpu_xid_total", "counter", "XID errors by code since the agent started.", _xid_rows, dcgm=False
    ),
    _ours(
        "switchyard_gpu_health",
        "gauge",
        "GPU health as the agent's XID/ECC policy judges it: 0 healthy, 1 degraded, 2 unhealthy.",
        lambda g: HEALTH_CODES[g.health],
    ),
    GpuFamily(
        "switchyard_gpu_health_action",
        "gauge",
        "What the agent's health policy says to do about the GPU (1 for the current action).",
        _health_action_rows,
        dcgm=False,
    ),
)


def agent_families(state: AgentState, spool: SpoolStats | None) -> list[AgentFamily]:
    """Small and cheap: built at each scrape, under the exporter's lock."""
    families: list[AgentFamily] = [
        (
            "switchyard_agent_report_seq",
            "gauge",
            "Sequence number of the last report attempted.",
            [] if state.report_seq is None else [("switchyard_agent_report_seq", {}, state.report_seq)],
        ),
        (
            "switchyard_agent_reports_sent_total",
            "counter",
            "Reports the control plane accepted.",
            [("switchyard_agent_reports_sent_total", {}, state.reports_sent)],
        ),
        (
            "switchyard_agent_reports_failed_total",
            "counter",
            "Reports that failed to reach the control plane.",
            [("switchyard_agent_reports_failed_total", {}, state.reports_failed)],
        ),
        (
            "switchyard_agent_last_report_success_timestamp_seconds",
            "gauge",
            "Unix time of the last report the control plane accepted.",
            []
            if state.last_report_success is None
            else [("switchyard_agent_last_report_success_timestamp_seconds", {}, state.last_report_success)],
        ),
        (
            "switchyard_agent_running_assignments",
            "gauge",
            "Assignments whose process is alive on this node.",
            [("switchyard_agent_running_assignments", {}, state.running_assignments)],
        ),
        (
            "switchyard_agent_gpus",
            "gauge",
            "GPUs in the last sample (a GPU that fell off the bus is missing).",
            [("switchyard_agent_gpus", {}, len(state.gpus))],
        ),
        (
            "switchyard_gpu_owner_info",
            "gauge",
            "Workload running on a GPU (1 while it runs).",
            [
                ("switchyard_gpu_owner_info", {"UUID": uuid, "workload_id": workload_id}, 1)
                for uuid, workload_id in sorted(state.gpu_owners.items())
            ],
        ),
    ]
    if spool is not None:
        families.append(
            (
                "switchyard_agent_spool_depth",
                "gauge",
                "Reports waiting in the spool to be sent.",
                [("switchyard_agent_spool_depth", {}, spool.depth)],
            )
        )
        families.append(
            (
                "switchyard_agent_spool_dropped_total",
                "counter",
                "Reports shed from the spool to stay under its size bound, since the agent started.",
                [("switchyard_agent_spool_dropped_total", {}, spool.dropped)],
            )
        )
    return families
