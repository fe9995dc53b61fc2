"""The agent's /metrics: dcgm-exporter-compatible GPU series plus what only Switchyard knows.

Operators' GPU dashboards (Grafana 12239 and friends) select dcgm-exporter's names and labels,
so every per-GPU series that has a DCGM field copies dcgm-exporter's name, type, unit, help text
and labels exactly (``gpu, UUID, pci_bus_id, device, modelName, Hostname``, in that order),
including two things ``promtool check metrics`` lints and dcgm-exporter does anyway: counters
without a lower-case ``_total`` suffix (``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION``, the ECC
``*_TOTAL`` counters, ...) and the camel-case ``modelName`` label. Changing either would break
the dashboards and recording rules that select them, so those lint findings are the price of
compatibility; the ``switchyard_*`` series lint clean (their labels leave out ``modelName``; join
on ``UUID``).

What is exported, and what is not:

- A field the sample does not have (``None``) produces no series; nothing is made up. The
  ``DCGM_FI_PROF_*`` ratios need DCGM's profiling module, which NVML does not give: absent.
- ``DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL`` is NVLink data tx + rx since driver load, in KiB
  (NVML fields 138-141), a counter as dcgm-exporter declares it.
- ``DCGM_FI_DEV_CLOCKS_EVENT_REASONS`` is DCGM field 112 under its current name (DCGM < 3.3
  called it ``DCGM_FI_DEV_CLOCK_THROTTLE_REASONS``): the nvmlClocksEventReason bitmask.
- ``switchyard_gpu_health`` is a numeric code, ``0`` healthy, ``1`` degraded, ``2`` unhealthy,
  so ``max by (Hostname)`` gives a node's worst GPU and an alert is ``> 0``;
  ``switchyard_gpu_health_action{action=...}`` is 1 for the policy's current action (one of
  the six ``HealthAction`` values: bounded). Free-text reasons stay out of Prometheus.
- Who runs on a GPU is the separate info series ``switchyard_gpu_owner_info{UUID, workload_id}``
  (= 1), joined with ``* on (UUID) group_left (workload_id)``: a workload label on every GPU
  series would churn every series at each hand-over.

Rendering is hand-built text: prometheus_client cannot print a counter under a name without
``_total`` and re-creates every sample object on each scrape. The per-GPU block is rendered
once per sample (the daemon's fast loop) and cached until the next ``set_gpus``; per-GPU label
strings are built once per inventory. ``bench/bench_agent.py`` measures it against
prometheus_client's ``generate_latest``. The collector still implements ``Collector.collect()``
from the same series definitions, for any other registry that wants it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agents.protocol import GpuHealthState, GpuInventory, GpuTelemetry

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

HEALTH_CODES: dict[GpuHealthState, int] = {
    GpuHealthState.HEALTHY: 0,
    GpuHealthState.DEGRADED: 1,
    GpuHealthState.UNHEALTHY: 2,
}


@dataclass(frozen=True)
class SpoolStats:
    """What the daemon's report spool tells the exporter at scrape time."""

    depth: int  # reports waiting to be sent
    dropped: int  # reports shed to stay under the spool's bound, since the agent started


SpoolStatsProvider = Callable[[], SpoolStats | None]

# One per-GPU series: (extra labels, value). Most families have one row per GPU and no extras.
_Row = tuple[tuple[tuple[str, str], ...], float]
_NO_EXTRA: tuple[tuple[str, str], ...] = ()
# An agent-wide family: (name, type, help, [(sample name, labels, value)]).
_AgentFamily = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]


@dataclass(frozen=True)
class _GpuFamily:
    name: str
    type: str  # "gauge" | "counter"
    help: str
    rows: Callable[[GpuTelemetry, float | None], list[_Row]]  # (sample, reserved MiB) -> rows
    dcgm: bool  # dcgm-exporter's label set (with modelName); else Switchyard's (without)


def _scalar(
    get: Callable[[GpuTelemetry], float | int | bool | None],
) -> Callable[[GpuTelemetry, float | None], list[_Row]]:
    def rows(gpu: GpuTelemetry, _reserved: float | None) -> list[_Row]:
        value = get(gpu)
        return [] if value is None else [(_NO_EXTRA, float(value))]

    return rows


def _reserved(gpu: GpuTelemetry, reserved: float | None) -> list[_Row]:
    held = gpu.memory_reserved_mib if gpu.memory_reserved_mib is not None else reserved
    return [] if held is None else [(_NO_EXTRA, held)]


def _free(gpu: GpuTelemetry, reserved: float | None) -> list[_Row]:
    held = gpu.memory_reserved_mib if gpu.memory_reserved_mib is not None else reserved
    if gpu.memory_used_mib is None or gpu.memory_total_mib is None or held is None:
        return []
    # dcgm: free = total - reserved - used, never negative
    return [(_NO_EXTRA, max(0.0, gpu.memory_total_mib - held - gpu.memory_used_mib))]


def _nvlink_total(gpu: GpuTelemetry) -> int | None:
    if gpu.nvlink_tx_kib is None or gpu.nvlink_rx_kib is None:
        return None
    return gpu.nvlink_tx_kib + gpu.nvlink_rx_kib


def _xid_rows(gpu: GpuTelemetry, _reserved: float | None) -> list[_Row]:
    return [((("xid", str(xid)),), float(n)) for xid, n in sorted(gpu.xid_counts.items())]


def _fabric_state_rows(gpu: GpuTelemetry, _reserved: float | None) -> list[_Row]:
    return [] if gpu.fabric_state is None else [((("state", gpu.fabric_state),), 1.0)]


def _health_action_rows(gpu: GpuTelemetry, _reserved: float | None) -> list[_Row]:
    return [((("action", gpu.health_action.value),), 1.0)]


def _dcgm(name: str, typ: str, help_text: str, get: Callable[[GpuTelemetry], float | int | bool | None]) -> _GpuFamily:
    return _GpuFamily(name, typ, help_text, _scalar(get), dcgm=True)


def _ours(name: str, typ: str, help_text: str, get: Callable[[GpuTelemetry], float | int | bool | None]) -> _GpuFamily:
    return _GpuFamily(name, typ, help_text, _scalar(get), dcgm=False)


# Help texts of the DCGM families are dcgm-exporter's (etc/default-counters.csv and the DCGM
# field descriptions for the ones not in it).
GPU_FAMILIES: tuple[_GpuFamily, ...] = (
    _dcgm("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", lambda g: g.sm_clock_mhz),
    _dcgm("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", lambda g: g.mem_clock_mhz),
    _dcgm("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", lambda g: g.temperature_memory_c),
    _dcgm("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", lambda g: g.temperature_gpu_c),
    _dcgm("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", lambda g: g.power_w),
    _dcgm("DCGM_FI_DEV_POWER_MGMT_LIMIT", "gauge", "Power management limit (in W).", lambda g: g.power_limit_w),
    _dcgm(
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        lambda g: g.energy_mj,
    ),
    _dcgm("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "counter", "Total number of PCIe retries.", lambda g: g.pcie_replay_count),
    _dcgm("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", lambda g: g.utilization_gpu_pct),
    _dcgm("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", lambda g: g.utilization_memory_pct),
    _dcgm("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", lambda g: g.xid_last),
    _dcgm(
        "DCGM_FI_DEV_CLOCKS_EVENT_REASONS",
        "gauge",
        "Current clock event reasons (bitmask of DCGM_CLOCKS_EVENT_REASON_*).",
        lambda g: g.clock_event_reasons,
    ),
    _GpuFamily("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB).", _free, dcgm=True),
    _dcgm("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB).", lambda g: g.memory_used_mib),
    _GpuFamily("DCGM_FI_DEV_FB_RESERVED", "gauge", "Framebuffer memory reserved (in MiB).", _reserved, dcgm=True),
    _dcgm("DCGM_FI_DEV_FB_TOTAL", "gauge", "Framebuffer memory total (in MiB).", lambda g: g.memory_total_mib),
    _dcgm(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "counter",
        "Total number of single-bit volatile ECC errors.",
        lambda g: g.ecc_volatile_sbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "counter",
        "Total number of double-bit volatile ECC errors.",
        lambda g: g.ecc_volatile_dbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "counter",
        "Total number of single-bit persistent ECC errors.",
        lambda g: g.ecc_aggregate_sbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "counter",
        "Total number of double-bit persistent ECC errors.",
        lambda g: g.ecc_aggregate_dbe,
    ),
    _dcgm(
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        "counter",
        "Total number of NVLink bandwidth counters for all lanes.",
        _nvlink_total,
    ),
    _dcgm(
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for uncorrectable errors",
        lambda g: g.remapped_rows_uncorrectable,
    ),
    _dcgm(
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "counter",
        "Number of remapped rows for correctable errors",
        lambda g: g.remapped_rows_correctable,
    ),
    _dcgm(
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "gauge",
        "Whether remapping of rows has failed",
        lambda g: g.remapped_rows_failure,
    ),
    _dcgm(
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        "gauge",
        "Whether remapping of rows is pending",
        lambda g: g.remapped_rows_pending,
    ),
    # -- Switchyard's own --
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
    _GpuFamily(
        "switchyard_gpu_fabric_state",
        "gauge",
        "NVLink fabric state of the GPU (1 for the current state).",
        _fabric_state_rows,
        dcgm=False,
    ),
    _GpuFamily(
        "switchyard_gpu_xid_total", "counter", "XID errors by code since the agent started.", _xid_rows, dcgm=False
    ),
    _ours(
        "switchyard_gpu_health",
        "gauge",
        "GPU health as the agent's XID/ECC policy judges it: 0 healthy, 1 degraded, 2 unhealthy.",
        lambda g: HEALTH_CODES[g.health],
    ),
    _GpuFamily(
        "switchyard_gpu_health_action",
        "gauge",
        "What the agent's health policy says to do about the GPU (1 for the current action).",
        _health_action_rows,
        dcgm=False,
    ),
)


@dataclass(frozen=True)
class _GpuLabels:
    index: int
    dcgm_text: str  # 'gpu="0",UUID="...",...' without braces
    dcgm: dict[str, str]
    ours_text: str
    ours: dict[str, str]


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


class AgentCollector(Collector):
    """Holds the daemon's latest view and renders it; the GPU block is cached per sample."""

    def __init__(self, hostname: str, *, spool_stats: SpoolStatsProvider | None = None) -> None:
        self._lock = threading.Lock()
        self._state = AgentState(hostname=hostname)
        self._spool_stats = spool_stats
        self._labels: dict[str, _GpuLabels] = {}
        self._gpu_text: str | None = None

    # -- updates from the daemon --------------------------------------------------------------

    def set_inventory(self, gpus: Iterable[GpuInventory], reserved_mib: Mapping[str, float]) -> None:
        with self._lock:
            self._state.inventory = {gpu.uuid: gpu for gpu in gpus}
            self._state.reserved_mib = dict(reserved_mib)
            self._labels.clear()
            self._gpu_text = None

    def set_gpus(self, samples: Sequence[GpuTelemetry]) -> None:
        with self._lock:
            self._state.gpus = sorted(samples, key=lambda g: g.index)
            self._gpu_text = None

    def record_report(self, seq: int, *, ok: bool, at: float) -> None:
        with self._lock:
            self._state.report_seq = seq
            if ok:
                self._state.reports_sent += 1
                self._state.last_report_success = at
            else:
                self._state.reports_failed += 1

    def set_assignments(self, running: int, gpu_owners: Mapping[str, str]) -> None:
        with self._lock:
            self._state.running_assignments = running
            self._state.gpu_owners = dict(gpu_owners)

    def set_spool_stats_provider(self, provider: SpoolStatsProvider | None) -> None:
        """Called at each scrape; may return None (no spool yet). A provider that raises costs
        its two series, never the scrape."""
        with self._lock:
            self._spool_stats = provider

    # -- rendering ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """Prometheus text format 0.0.4."""
        with self._lock:
            if self._gpu_text is None:
                self._gpu_text = self._render_gpus()
            gpu_text = self._gpu_text
            agent = self._agent_families()
        lines: list[str] = []
        for name, typ, help_text, samples in agent:
            if samples:
                lines.append(f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {typ}")
                for sample, labels, value in samples:
                    text = f"{{{_label_text(labels)}}}" if labels else ""
                    lines.append(f"{sample}{text} {_format_value(value)}")
        agent_text = "\n".join(lines) + "\n" if lines else ""
        return (gpu_text + agent_text).encode()

    def _render_gpus(self) -> str:
        state = self._state
        labelled = [(gpu, self._gpu_labels(gpu), state.reserved_mib.get(gpu.uuid)) for gpu in state.gpus]
        out: list[str] = []
        for family in GPU_FAMILIES:
            body: list[str] = []
            for gpu, labels, reserved in labelled:
                base = labels.dcgm_text if family.dcgm else labels.ours_text
                for extra, value in family.rows(gpu, reserved):
                    if extra:
                        more = ",".join(f'{k}="{_escape_label(v)}"' for k, v in extra)
                        body.append(f"{family.name}{{{base},{more}}} {_format_value(value)}")
                    else:
                        body.append(f"{family.name}{{{base}}} {_format_value(value)}")
            if body:
                out.append(f"# HELP {family.name} {_escape_help(family.help)}\n# TYPE {family.name} {family.type}")
                out.extend(body)
        return "\n".join(out) + "\n" if out else ""

    def _gpu_labels(self, gpu: GpuTelemetry) -> _GpuLabels:
        cached = self._labels.get(gpu.uuid)
        if cached is not None and cached.index == gpu.index:
            return cached
        inv = self._state.inventory.get(gpu.uuid)
        # dcgm-exporter's label order.
        dcgm = {
            "gpu": str(gpu.index),
            "UUID": gpu.uuid,
            "pci_bus_id": (inv.pci_bus_id or "") if inv else "",
            "device": f"nvidia{gpu.index}",
            "modelName": inv.name if inv else "",
            "Hostname": self._state.hostname,
        }
        ours = {k: v for k, v in dcgm.items() if k != "modelName"}
        labels = _GpuLabels(gpu.index, _label_text(dcgm), dcgm, _label_text(ours), ours)
        self._labels[gpu.uuid] = labels
        return labels

    def _agent_families(self) -> list[_AgentFamily]:
        """Small and cheap: built at each scrape, under the lock."""
        state = self._state
        families: list[_AgentFamily] = [
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
        spool = self._read_spool()
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

    def _read_spool(self) -> SpoolStats | None:
        if self._spool_stats is None:
            return None
        try:
            return self._spool_stats()
        except Exception:
            log.exception("the spool stats provider failed; its series are left out of this scrape")
            return None

    # -- Collector ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The same series as ``render()``, as prometheus_client families (for other registries;
        note prometheus_client's encoder prints a counter's TYPE line with ``_total`` added)."""
        with self._lock:
            state = self._state
            labelled = [(gpu, self._gpu_labels(gpu), state.reserved_mib.get(gpu.uuid)) for gpu in state.gpus]
            agent = self._agent_families()
        for family in GPU_FAMILIES:
            metric = Metric(_family_name(family.name, family.type), family.help, family.type)
            for gpu, labels, reserved in labelled:
                base = labels.dcgm if family.dcgm else labels.ours
                for extra, value in family.rows(gpu, reserved):
                    metric.add_sample(family.name, {**base, **dict(extra)} if extra else base, value)
            yield metric
        for name, typ, help_text, samples in agent:
            metric = Metric(_family_name(name, typ), help_text, typ)
            for sample, sample_labels, value in samples:
                metric.add_sample(sample, sample_labels, value)
            yield metric


def _family_name(name: str, typ: str) -> str:
    return name[: -len("_total")] if typ == "counter" and name.endswith("_total") else name


def _label_text(labels: Mapping[str, str]) -> str:
    return ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())


class _AgentRegistry(CollectorRegistry):
    """A registry that knows its agent collector, so ``render_text`` takes the cached path."""

    def __init__(self, collector: AgentCollector) -> None:
        super().__init__(auto_describe=False)
        self.agent_collector = collector
        self.register(collector)


def render_text(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, each family under the name it was built with (see above)."""
    if isinstance(registry, _AgentRegistry):
        return registry.agent_collector.render()
    lines: list[str] = []
    for family in registry.collect():
        if not family.samples:
            continue
        header = family.name
        if family.type == "counter" and all(s.name == f"{family.name}_total" for s in family.samples):
            header = f"{family.name}_total"
        typ = "untyped" if family.type == "unknown" else family.type
        lines.append(f"# HELP {header} {_escape_help(family.documentation)}")
        lines.append(f"# TYPE {header} {typ}")
        for sample in family.samples:
            labels = _label_text(sample.labels)
            lines.append(
                f"{sample.name}{{{labels}}} {_format_value(sample.value)}"
                if labels
                else f"{sample.name} {_format_value(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _format_value(value: float) -> str:
    if type(value) is int:  # counters in mJ stay exact and readable, as dcgm-exporter prints them
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class MetricsServer:
    """Serves ``render_text`` over HTTP on a background thread for the agent's lifetime."""

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = _make_handler(registry)
        self._httpd = ThreadingHTTPServer((host, port), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="metrics-http", daemon=True)

    @property
    def host(self) -> str:
        return str(self._httpd.server_address[0])

    @property
    def port(self) -> int:
        """The bound port: the one asked for, or the one the OS picked for port 0."""
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def _make_handler(registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server dispatches on this name
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404)
                return
            try:
                body = render_text(registry)
            except Exception:
                log.exception("rendering /metrics failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics %s - " + format, self.address_string(), *args)

    return _Handler


def build_exporter(
    hostname: str, *, spool_stats: SpoolStatsProvider | None = None
) -> tuple[CollectorRegistry, AgentCollector]:
    """A fresh registry holding only the agent's collector (nothing on the global registry)."""
    collector = AgentCollector(hostname, spool_stats=spool_stats)
    return _AgentRegistry(collector), collector
