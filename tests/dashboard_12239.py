"""The panel queries of NVIDIA's "NVIDIA DCGM Exporter Dashboard" (grafana.com id 12239).

Authored here as data from the dashboard's published JSON ("gnetId": 12239, the Grafana 6.7
revision that copies of it carry, e.g. the one GPU-operator guides embed in a ConfigMap; there
is no network to grafana.com here). Every panel, in the JSON's order, with its PromQL as written
there; the two template variables are the dashboard's own queries. ``tests/e2e/test_prometheus_dashboard.py``
substitutes the variables the way Grafana does for "All" on a multi-value variable (a regex
alternation of every value) and runs each query against a real Prometheus.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Panel:
    title: str
    expr: str
    instant: bool = False  # the panel asks for one value (a gauge), else a time series


# templating.list: name -> query (both "label_values", includeAll and multi on).
VARIABLES: dict[str, tuple[str, str]] = {
    "instance": ("DCGM_FI_DEV_GPU_TEMP", "instance"),  # label_values(DCGM_FI_DEV_GPU_TEMP, instance)
    "gpu": ("DCGM_FI_DEV_GPU_TEMP", "gpu"),  # label_values(DCGM_FI_DEV_GPU_TEMP, gpu)
}

PANELS: tuple[Panel, ...] = (
    # panel id 12, graph "GPU Temperature"
    Panel("GPU Temperature", 'DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"}'),
    # panel id 14, gauge "GPU Avg. Temp"
    Panel("GPU Avg. Temp", 'avg(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"})'),
    # panel id 10, graph "GPU Power Usage"
    Panel("GPU Power Usage", 'DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"}'),
    # panel id 16, gauge "GPU Power Total" (its target is instant)
    Panel("GPU Power Total", 'sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"})', instant=True),
    # panel id 2, graph "GPU SM Clocks" (MHz to Hz for the hertz axis)
    Panel("GPU SM Clocks", 'DCGM_FI_DEV_SM_CLOCK{instance=~"$instance", gpu=~"$gpu"} * 1000000'),
    # panel id 6, graph "GPU Utilization"
    Panel("GPU Utilization", 'DCGM_FI_DEV_GPU_UTIL{instance=~"$instance", gpu=~"$gpu"}'),
    # panel id 18, graph "GPU Framebuffer Mem Used"
    Panel("GPU Framebuffer Mem Used", 'DCGM_FI_DEV_FB_USED{instance=~"$instance", gpu=~"$gpu"}'),
    # panel id 4, graph "Tensor Core Utilization" (percentunit axis, 0..1: DCGM's ratio)
    Panel("Tensor Core Utilization", 'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{instance=~"$instance", gpu=~"$gpu"}'),
)
