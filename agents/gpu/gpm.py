"""Profiling metrics from NVML's GPM (GPU Performance Monitoring, Hopper and later).

DCGM's profiling fields (``DCGM_FI_PROF_*``) need DCGM's host engine; on Hopper and Blackwell
DCGM itself computes them from NVML's GPM API (``DcgmGpmManager``), and so does this module,
with DCGM's mapping and scaling (``DcgmFieldIdToNvmlGpmMetricId`` in DCGM's dcgm_fields.cpp):

==============================  ==========================  =======================
DCGM field                      GPM metric                  scaling
==============================  ==========================  =======================
PROF_GR_ENGINE_ACTIVE           GRAPHICS_UTIL (1)           percent / 100
PROF_SM_ACTIVE                  SM_UTIL (2)                 percent / 100
PROF_SM_OCCUPANCY               SM_OCCUPANCY (3)            percent / 100
PROF_PIPE_TENSOR_ACTIVE         ANY_TENSOR_UTIL (5)         percent / 100
PROF_DRAM_ACTIVE                DRAM_BW_UTIL (10)           percent / 100
PROF_PCIE_TX_BYTES / RX         PCIE_TX/RX_PER_SEC (20/21)  MiB/s x 2**20 = bytes/s
PROF_NVLINK_TX_BYTES / RX       NVLINK_TOTAL_TX/RX (61/60)  MiB/s x 2**20 = bytes/s
==============================  ==========================  =======================

How GPM works (nvml.h): the caller allocates sample buffers (``nvmlGpmSampleAlloc``), fills one
per reading (``nvmlGpmSampleGet``) and asks for metrics over the interval between two of them
(``nvmlGpmMetricsGet``), each metric with its own ``nvmlReturn``. Samples should be more than
100 ms apart. So each GPU keeps two buffers and alternates: every ``read()`` takes a sample and
computes the interval since the previous one; the first read of a GPU has no interval yet.

Where GPM is unsupported (before Hopper, ``isSupportedDevice`` 0, a driver or pynvml without the
functions) the profile has no GPM fields and the exporter shows no ``DCGM_FI_PROF_*`` series.
Support is probed again every ``REPROBE_S`` (it can depend on state, e.g. MIG).

``DCGM_FI_DEV_ENC_UTIL`` / ``DEC_UTIL`` are not GPM: DCGM reads them with
``nvmlDeviceGetEncoderUtilization`` / ``nvmlDeviceGetDecoderUtilization``, and so do we, here,
since they also end up in the profile.

The NVML backend calls ``GpmReader.read`` from its ``profiles()`` hook (the only GPM line in
``agents/gpu/nvml.py``); like the rest of the backend it runs on the daemon's report thread.
"""

from __future__ import annotations

import ctypes
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import pynvml

from agents.gpu.base import GpuProfile

__all__ = ["METRICS", "GpmReader", "GpuProfile"]

log = logging.getLogger(__name__)

Handle = Any  # pynvml's device pointer
MIB: Final = 1024 * 1024
MIN_INTERVAL_S: Final = 0.1  # nvml.h: samples closer than 100 ms are not meaningful
REPROBE_S: Final = 300.0

# (GpuProfile field, GPM metric id, True for a percentage: / 100 as DCGM does; else MiB/s x 2**20)
METRICS: Final[tuple[tuple[str, int, bool], ...]] = (
    ("gr_engine_active", 1, True),  # NVML_GPM_METRIC_GRAPHICS_UTIL
    ("sm_active", 2, True),  # SM_UTIL
    ("sm_occupancy", 3, True),  # SM_OCCUPANCY
    ("pipe_tensor_active", 5, True),  # ANY_TENSOR_UTIL
    ("dram_active", 10, True),  # DRAM_BW_UTIL
    ("pcie_tx_bytes", 20, False),  # PCIE_TX_PER_SEC
    ("pcie_rx_bytes", 21, False),  # PCIE_RX_PER_SEC
    ("nvlink_rx_bytes", 60, False),  # NVLINK_TOTAL_RX_PER_SEC
    ("nvlink_tx_bytes", 61, False),  # NVLINK_TOTAL_TX_PER_SEC
)
_GPM_FUNCTIONS: Final = ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleGet", "nvmlGpmMetricsGet")
# Errors that say "not here" rather than "not now".
_UNSUPPORTED: Final = frozenset(
    {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_NO_PERMISSION}
)


def _address(handle: Handle) -> int | None:
    try:
        return ctypes.cast(handle, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return id(handle)


@dataclass
class _GpmGpu:
    uuid: str
    handle: Handle
    supported: bool | None = None  # None: not probed yet
    reprobe_at: float = 0.0
    buffers: list[Any] = field(default_factory=list)  # [baseline, next]
    baseline_at: float | None = None  # when buffers[0] was filled
    last: dict[str, float | None] = field(default_factory=dict)
    codec_unsupported: set[str] = field(default_factory=set)
    warned: set[tuple[str, int]] = field(default_factory=set)


class GpmReader:
    """GPM state of a node's GPUs (two sample buffers each); ``close()`` frees the buffers."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._gpus: dict[str, _GpmGpu] = {}
        self._available = all(hasattr(pynvml, name) for name in _GPM_FUNCTIONS)
        self._request: Any = None  # one c_nvmlGpmMetricsGet_t (~19 KB), reused

    def read(self, devices: Iterable[tuple[str, Handle]]) -> dict[str, GpuProfile]:
        """One GPM sample per GPU and the metrics since the previous one, by UUID."""
        present = dict(devices)
        stale = [u for u, g in self._gpus.items() if u not in present or _address(present[u]) != _address(g.handle)]
        for uuid in stale:
            self._forget(uuid)  # gone, or back with a new handle: start over
        out: dict[str, GpuProfile] = {}
        now = self._clock()
        for uuid, handle in present.items():
            gpu = self._gpus.get(uuid)
            if gpu is None:
                gpu = self._gpus[uuid] = _GpmGpu(uuid, handle)
            values = self._gpm(gpu, now)
            values.update(self._codecs(gpu))
            if any(v is not None for v in values.values()):
                out[uuid] = GpuProfile(**values)
        return out

    def close(self) -> None:
        for uuid in list(self._gpus):
            self._forget(uuid)

    # -- GPM ------------------------------------------------------------------------------------

    def _gpm(self, gpu: _GpmGpu, now: float) -> dict[str, float | None]:
        if not self._supported(gpu, now):
            return {}
        try:
            if not gpu.buffers:
                gpu.buffers = [pynvml.nvmlGpmSampleAlloc(), pynvml.nvmlGpmSampleAlloc()]
            if gpu.baseline_at is not None and now - gpu.baseline_at < MIN_INTERVAL_S:
                return dict(gpu.last)  # too soon for a new interval: the last one stands
            target = gpu.buffers[1] if gpu.baseline_at is not None else gpu.buffers[0]
            pynvml.nvmlGpmSampleGet(gpu.handle, target)
        except pynvml.NVMLError as exc:
            self._failed(gpu, "GPM sample", exc, now)
            return {}
        if gpu.baseline_at is None:  # the first sample: no interval yet
            gpu.baseline_at = now
            return {}
        values = self._metrics(gpu)
        gpu.buffers.reverse()  # the new sample is the next interval's baseline
        gpu.baseline_at = now
        gpu.last = values
        return dict(values)

    def _metrics(self, gpu: _GpmGpu) -> dict[str, float | None]:
        request = self._metrics_request()
        request.sample1 = gpu.buffers[0]
        request.sample2 = gpu.buffers[1]
        for i, (_, metric_id, _) in enumerate(METRICS):
            request.metrics[i].metricId = metric_id
            request.metrics[i].nvmlReturn = 0
            request.metrics[i].value = 0.0
        try:
            pynvml.nvmlGpmMetricsGet(request)
        except pynvml.NVMLError as exc:
            self._warn(gpu, "GPM metrics", int(exc.value))
            return {}
        out: dict[str, float | None] = {}
        for i, (name, _, percent) in enumerate(METRICS):
            entry = request.metrics[i]
            value = float(entry.value)
            if int(entry.nvmlReturn) != pynvml.NVML_SUCCESS:
                self._warn(gpu, f"GPM metric {name}", int(entry.nvmlReturn))
                out[name] = None
            elif not math.isfinite(value) or value < 0:
                out[name] = None
            else:
                out[name] = value / 100.0 if percent else value * MIB
        return out

    def _metrics_request(self) -> Any:
        if self._request is None:
            self._request = pynvml.c_nvmlGpmMetricsGet_t()
            self._request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
            self._request.numMetrics = len(METRICS)
        return self._request

    def _supported(self, gpu: _GpmGpu, now: float) -> bool:
        if not self._available:
            return False
        if gpu.supported is False and now >= gpu.reprobe_at:
            gpu.supported = None
        if gpu.supported is None:
            try:
                support = pynvml.nvmlGpmQueryDeviceSupport(gpu.handle)
            except pynvml.NVMLError as exc:
                self._failed(gpu, "GPM support query", exc, now)
                return False
            gpu.supported = bool(support.isSupportedDevice)
            if not gpu.supported:
                self._unsupported(gpu, now, "the device does not support GPM")
        return gpu.supported

    def _failed(self, gpu: _GpmGpu, what: str, exc: pynvml.NVMLError, now: float) -> None:
        code = int(exc.value)
        if code in _UNSUPPORTED:
            self._unsupported(gpu, now, f"{what}: NVML error {code}")
        else:  # transient (or GPU_IS_LOST, which the backend's own reads act on): next read retries
            self._warn(gpu, what, code)

    def _unsupported(self, gpu: _GpmGpu, now: float, why: str) -> None:
        level = logging.INFO if gpu.reprobe_at == 0.0 else logging.DEBUG  # once per GPU, then quiet
        log.log(level, "GPU %s: no GPM profiling metrics (%s); asked again every %.0f s", gpu.uuid, why, REPROBE_S)
        gpu.supported = False
        gpu.reprobe_at = now + REPROBE_S
        gpu.baseline_at = None
        gpu.last = {}

    @staticmethod
    def _warn(gpu: _GpmGpu, what: str, code: int) -> None:
        if (what, code) not in gpu.warned:
            gpu.warned.add((what, code))
            log.warning("GPU %s: %s failed (NVML error %d); left out of /metrics", gpu.uuid, what, code)

    def _forget(self, uuid: str) -> None:
        gpu = self._gpus.pop(uuid)
        for buffer in gpu.buffers:
            try:
                pynvml.nvmlGpmSampleFree(buffer)
            except pynvml.NVMLError as exc:
                log.debug("GPU %s: nvmlGpmSampleFree failed: %s", uuid, exc)

    # -- encoder / decoder ------------------------------------------------------------------------

    def _codecs(self, gpu: _GpmGpu) -> dict[str, float | None]:
        return {
            "enc_util_pct": self._codec(gpu, "encoder", "nvmlDeviceGetEncoderUtilization"),
            "dec_util_pct": self._codec(gpu, "decoder", "nvmlDeviceGetDecoderUtilization"),
        }

    def _codec(self, gpu: _GpmGpu, what: str, function: str) -> float | None:
        if what in gpu.codec_unsupported:
            return None
        try:
            util, _period_us = getattr(pynvml, function)(gpu.handle)
        except pynvml.NVMLError as exc:
            code = int(exc.value)
            if code in _UNSUPPORTED:
                gpu.codec_unsupported.add(what)
            else:
                self._warn(gpu, f"{what} utilisation", code)
            return None
        value = float(util)
        return value if 0.0 <= value <= 100.0 else None
