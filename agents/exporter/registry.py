"""The agent's collector: the daemon's latest view, rendered as Prometheus text.

Rendering is hand-built text: prometheus_client cannot print a counter under a name without
``_total`` and re-creates every sample object on each scrape. The per-GPU block is rendered
once per sample (the daemon's fast loop) and cached until the next ``set_gpus``; per-GPU label
strings are built once per inventory. ``bench/bench_agent.py`` measures it against
prometheus_client's ``generate_latest``. The collector still implements ``Collector.collect()``
from the same series definitions, for any other registry that wants it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agents.exporter import dcgm, switchyard
from agents.exporter.dcgm import DCGM_FAMILIES, NvlinkBandwidth
from agents.exporter.series import GpuFamily, GpuView
from agents.exporter.switchyard import SWITCHYARD_FAMILIES, AgentFamily, AgentState, SpoolStats
from agents.exporter.text import escape_help, escape_label, format_value, label_text
from agents.gpu.base import GpuBackend, GpuProfile, ProfileSource
from agents.protocol import GpuInventory, GpuTelemetry

log = logging.getLogger(__name__)

GPU_FAMILIES: tuple[GpuFamily, ...] = DCGM_FAMILIES + SWITCHYARD_FAMILIES

SpoolStatsProvider = Callable[[], SpoolStats | None]


@dataclass(frozen=True)
class _GpuLabels:
    index: int
    dcgm_text: str  # 'gpu="0",UUID="...",...' without braces
    dcgm: dict[str, str]
    ours_text: str
    ours: dict[str, str]


class AgentCollector(Collector):
    """Holds the daemon's latest view and renders it; the GPU block is cached per sample."""

    def __init__(
        self,
        hostname: str,
        *,
        spool_stats: SpoolStatsProvider | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lock = threading.Lock()
        self._state = AgentState(hostname=hostname)
        self._spool_stats = spool_stats
        self._clock = clock
        self._labels: dict[str, _GpuLabels] = {}
        self._gpu_text: str | None = None
        self._driver_version: str | None = None
        self._profile_source: ProfileSource | None = None
        self._profiles: dict[str, GpuProfile] = {}
        self._nvlink = NvlinkBandwidth()
        self._nvlink_bandwidth: dict[str, int] = {}

    # -- updates from the daemon --------------------------------------------------------------

    def attach_backend(self, backend: GpuBackend) -> None:
        """What the exporter takes from the GPU backend itself rather than from samples: the
        driver version (dcgm-exporter's ``DCGM_FI_DRIVER_VERSION`` label) and, for a
        ``ProfileSource``, the profiling readings fetched at each ``set_gpus``."""
        driver_version = backend.driver_version()
        with self._lock:
            self._driver_version = driver_version or None
            self._profile_source = backend if isinstance(backend, ProfileSource) else None
            self._labels.clear()
            self._gpu_text = None

    def set_inventory(self, gpus: Iterable[GpuInventory], reserved_mib: Mapping[str, float]) -> None:
        with self._lock:
            self._state.inventory = {gpu.uuid: gpu for gpu in gpus}
            self._state.reserved_mib = dict(reserved_mib)
            self._labels.clear()
            self._gpu_text = None

    def set_gpus(self, samples: Sequence[GpuTelemetry], *, profiles: Mapping[str, GpuProfile] | None = None) -> None:
        """A new sample. ``profiles`` default: read from the attached ``ProfileSource`` now
        (right after the backend's ``sample()``, on the caller's thread)."""
        if profiles is None:
            profiles = self._read_profiles()
        at = self._clock()
        with self._lock:
            self._state.gpus = sorted(samples, key=lambda g: g.index)
            self._profiles = dict(profiles)
            self._nvlink_bandwidth = self._nvlink.update(self._state.gpus, at)
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
                lines.append(f"# HELP {name} {escape_help(help_text)}\n# TYPE {name} {typ}")
                for sample, labels, value in samples:
                    text = f"{{{label_text(labels)}}}" if labels else ""
                    lines.append(f"{sample}{text} {format_value(value)}")
        agent_text = "\n".join(lines) + "\n" if lines else ""
        return (gpu_text + agent_text).encode()

    def _views(self) -> list[tuple[GpuView, _GpuLabels]]:
        state = self._state
        return [
            (
                GpuView(
                    gpu,
                    state.reserved_mib.get(gpu.uuid),
                    self._profiles.get(gpu.uuid),
                    self._nvlink_bandwidth.get(gpu.uuid),
                ),
                self._gpu_labels(gpu),
            )
            for gpu in state.gpus
        ]

    def _render_gpus(self) -> str:
        views = self._views()
        out: list[str] = []
        for family in GPU_FAMILIES:
            body: list[str] = []
            for view, labels in views:
                base = labels.dcgm_text if family.dcgm else labels.ours_text
                for extra, value in family.rows(view):
                    if extra:
                        more = ",".join(f'{k}="{escape_label(v)}"' for k, v in extra)
                        body.append(f"{family.name}{{{base},{more}}} {format_value(value)}")
                    else:
                        body.append(f"{family.name}{{{base}}} {format_value(value)}")
            if body:
                out.append(f"# HELP {family.name} {escape_help(family.help)}\n# TYPE {family.name} {family.type}")
                out.extend(body)
        return "\n".join(out) + "\n" if out else ""

    def _gpu_labels(self, gpu: GpuTelemetry) -> _GpuLabels:
        cached = self._labels.get(gpu.uuid)
        if cached is not None and cached.index == gpu.index:
            return cached
        inv = self._state.inventory.get(gpu.uuid)
        theirs = dcgm.labels(gpu, inv, self._state.hostname, self._driver_version)
        ours = switchyard.labels(theirs)
        labels = _GpuLabels(gpu.index, label_text(theirs), theirs, label_text(ours), ours)
        self._labels[gpu.uuid] = labels
        return labels

    def _agent_families(self) -> list[AgentFamily]:
        return switchyard.agent_families(self._state, self._read_spool())

    def _read_spool(self) -> SpoolStats | None:
        if self._spool_stats is None:
            return None
        try:
            return self._spool_stats()
        except Exception:
            log.exception("the spool stats provider failed; its series are left out of this scrape")
            return None

    def _read_profiles(self) -> Mapping[str, GpuProfile]:
        with self._lock:
            source = self._profile_source
        if source is None:
            return {}
        try:
            return source.profiles()
        except Exception:
            log.exception("reading profiling metrics failed; DCGM_FI_PROF_* are left out of this sample")
            return {}

    # -- Collector ----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        """The same series as ``render()``, as prometheus_client families (for other registries;
        note prometheus_client's encoder prints a counter's TYPE line with ``_total`` added)."""
        with self._lock:
            views = self._views()
            agent = self._agent_families()
        for family in GPU_FAMILIES:
            metric = Metric(_family_name(family.name, family.type), family.help, family.type)
            for view, labels in views:
                base = labels.dcgm if family.dcgm else labels.ours
                for extra, value in family.rows(view):
                    metric.add_sample(family.name, {**base, **dict(extra)} if extra else base, value)
            yield metric
        for name, typ, help_text, samples in agent:
            metric = Metric(_family_name(name, typ), help_text, typ)
            for sample, sample_labels, value in samples:
                metric.add_sample(sample, sample_labels, value)
            yield metric


def _family_name(name: str, typ: str) -> str:
    return name[: -len("_total")] if typ == "counter" and name.endswith("_total") else name


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
        lines.append(f"# HELP {header} {escape_help(family.documentation)}")
        lines.append(f"# TYPE {header} {typ}")
        for sample in family.samples:
            labels = label_text(sample.labels)
            lines.append(
                f"{sample.name}{{{labels}}} {format_value(sample.value)}"
                if labels
                else f"{sample.name} {format_value(sample.value)}"
            )
    return ("\n".join(lines) + "\n").encode() if lines else b""


def build_exporter(
    hostname: str, *, spool_stats: SpoolStatsProvider | None = None, clock: Callable[[], float] = time.monotonic
) -> tuple[CollectorRegistry, AgentCollector]:
    """A fresh registry holding only the agent's collector (nothing on the global registry).
    ``clock`` times consecutive samples for the rates DCGM derives from counters."""
    collector = AgentCollector(hostname, spool_stats=spool_stats, clock=clock)
    return _AgentRegistry(collector), collector
