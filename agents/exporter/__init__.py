"""The agent's /metrics: dcgm-exporter-compatible GPU series plus what only Switchyard knows.

By concern:

- ``dcgm``: the per-GPU series that copy dcgm-exporter (names, types, help, labels with the
  driver version, DCGM's semantics for the profiling and NVLink bandwidth fields);
- ``switchyard``: ``switchyard_gpu_*`` and the agent-wide series;
- ``series``: what a per-GPU family is (rows from one GPU's view);
- ``registry``: the collector holding the daemon's view, the cached text rendering, the
  registry; ``text``: the exposition format; ``server``: the HTTP listener.

A field the sample (or the profile) does not have produces no series; nothing is made up.
"""

from agents.exporter.registry import GPU_FAMILIES, AgentCollector, SpoolStatsProvider, build_exporter, render_text
from agents.exporter.series import GpuFamily, GpuView
from agents.exporter.server import MetricsServer
from agents.exporter.switchyard import HEALTH_CODES, AgentState, SpoolStats
from agents.exporter.text import CONTENT_TYPE

__all__ = [
    "CONTENT_TYPE",
    "GPU_FAMILIES",
    "HEALTH_CODES",
    "AgentCollector",
    "AgentState",
    "GpuFamily",
    "GpuView",
    "MetricsServer",
    "SpoolStats",
    "SpoolStatsProvider",
    "build_exporter",
    "render_text",
]
