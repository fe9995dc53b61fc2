"""The agent's /metrics: dcgm-exporter-compatible GPU series plus what only Switchyard knows.

Operators' GPU dashboards (Grafana 12239 and friends) select dcgm-exporter's names and labels,
so the per-GPU series copy them exactly, including one detail prometheus_client cannot
produce: dcgm-exporter declares ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` as a *counter without
the _total suffix*. prometheus_client's text encoder appends ``_total`` to every counter's TYPE
line (and CounterMetricFamily to its samples), and declaring it a gauge instead would change the
TYPE dashboards and recording rules may check. So the collector is a normal prometheus_client
``Collector`` on an explicit registry, and ``render_text`` writes the 0.0.4 text format itself,
printing each family under its own name. It is ~30 lines and, for a handful of GPUs, costs
nothing (FACTS.md: hand-built text is also ~20x faster than prometheus_client's encoder).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agents.protocol import GpuInventory, GpuTelemetry

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (name, type, help, telemetry field); help texts are dcgm-exporter's default-counters.csv.
_DCGM_FIELDS: tuple[tuple[str, str, str, str], ...] = (
    ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_MEM_CLOCK", "gauge", "Memory clock frequency (in MHz).", "mem_clock_mhz"),
    ("DCGM_FI_DEV_MEMORY_TEMP", "gauge", "Memory temperature (in C).", "temperature_memory_c"),
    ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C).", "temperature_gpu_c"),
    ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W).", "power_w"),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        "counter",
        "Total energy consumption since boot (in mJ).",
        "energy_mj",
    ),
    ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %).", "utilization_gpu_pct"),
    ("DCGM_FI_DEV_MEM_COPY_UTIL", "gauge", "Memory utilization (in %).", "utilization_memory_pct"),
    ("DCGM_FI_DEV_XID_ERRORS", "gauge", "Value of the last XID error encountered.", "xid_last"),
)


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
    """Builds every family from one consistent snapshot of ``AgentState`` per scrape."""

    def __init__(self, hostname: str) -> None:
        self._lock = threading.Lock()
        self._state = AgentState(hostname=hostname)

    # -- updates from the daemon --------------------------------------------------------------

    def set_inventory(self, gpus: Iterable[GpuInventory], reserved_mib: Mapping[str, float]) -> None:
        with self._lock:
            self._state.inventory = {gpu.uuid: gpu for gpu in gpus}
            self._state.reserved_mib = dict(reserved_mib)

    def set_gpus(self, samples: Sequence[GpuTelemetry]) -> None:
        with self._lock:
            self._state.gpus = list(samples)

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

    # -- Collector ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            state = AgentState(**vars(self._state))
        yield from _gpu_families(state)
        yield from _agent_families(state)


def _gpu_families(state: AgentState) -> Iterator[Metric]:
    labelled = [(gpu, _dcgm_labels(gpu, state)) for gpu in sorted(state.gpus, key=lambda g: g.index)]
    for name, typ, help_text, attr in _DCGM_FIELDS:
        family = Metric(name, help_text, typ)
        for gpu, labels in labelled:
            value = getattr(gpu, attr)
            if value is not None:
                family.add_sample(name, labels, float(value))
        yield family
    free = Metric("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "gauge")
    used = Metric("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "gauge")
    reserved = Metric("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB).", "gauge")
    for gpu, labels in labelled:
        held = state.reserved_mib.get(gpu.uuid)
        if gpu.memory_used_mib is not None:
            used.add_sample(used.name, labels, gpu.memory_used_mib)
            if gpu.memory_total_mib is not None and held is not None:
                # dcgm: free = total - reserved - used, never negative
                free.add_sample(free.name, labels, max(0.0, gpu.memory_total_mib - held - gpu.memory_used_mib))
        if held is not None:
            reserved.add_sample(reserved.name, labels, held)
    yield free
    yield used
    yield reserved


def _dcgm_labels(gpu: GpuTelemetry, state: AgentState) -> dict[str, str]:
    inv = state.inventory.get(gpu.uuid)
    # dcgm-exporter's label order; render_text keeps it.
    return {
        "gpu": str(gpu.index),
        "UUID": gpu.uuid,
        "pci_bus_id": (inv.pci_bus_id or "") if inv else "",
        "device": f"nvidia{gpu.index}",
        "modelName": inv.name if inv else "",
        "Hostname": state.hostname,
    }


def _agent_families(state: AgentState) -> Iterator[Metric]:
    seq = GaugeMetricFamily("switchyard_agent_report_seq", "Sequence number of the last report attempted.")
    if state.report_seq is not None:
        seq.add_metric([], state.report_seq)
    yield seq
    sent = Metric("switchyard_agent_reports_sent", "Reports the control plane accepted.", "counter")
    sent.add_sample("switchyard_agent_reports_sent_total", {}, state.reports_sent)
    yield sent
    failed = Metric("switchyard_agent_reports_failed", "Reports that failed to reach the control plane.", "counter")
    failed.add_sample("switchyard_agent_reports_failed_total", {}, state.reports_failed)
    yield failed
    last = GaugeMetricFamily(
        "switchyard_agent_last_report_success_timestamp_seconds",
        "Unix time of the last report the control plane accepted.",
    )
    if state.last_report_success is not None:
        last.add_metric([], state.last_report_success)
    yield last
    yield GaugeMetricFamily(
        "switchyard_agent_running_assignments",
        "Assignments whose process is alive on this node.",
        value=state.running_assignments,
    )
    owners = GaugeMetricFamily(
        "switchyard_gpu_owner_info",
        "Workload running on a GPU (1 while it runs).",
        labels=["UUID", "workload_id"],
    )
    for uuid, workload_id in sorted(state.gpu_owners.items()):
        owners.add_metric([uuid, workload_id], 1)
    yield owners


def render_text(registry: CollectorRegistry) -> bytes:
    """Prometheus text format 0.0.4, each family under the name it was built with (see above)."""
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
            labels = ",".join(f'{k}="{_escape_label(v)}"' for k, v in sample.labels.items())
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
    value = float(value)  # collectors may hand over ints
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))  # counters in mJ stay exact and readable, as dcgm-exporter prints them
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


def build_exporter(hostname: str) -> tuple[CollectorRegistry, AgentCollector]:
    """A fresh registry holding only the agent's collector (nothing on the global registry)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = AgentCollector(hostname)
    registry.register(collector)
    return registry, collector
