"""The fake's GPM controls (its ``GPM (Hopper/Blackwell profiling)`` section), kept apart from
``control.py``: GPM state is not cleared by ``FakeNvml.reset()``, so use the ``fake_gpm``
fixture, which clears it before and after each test.

    from fakes.nvml.fixtures import fake_nvml, fake_nvml_cache, fake_nvml_path  # noqa: F401
    from fakes.nvml.gpm import fake_gpm  # noqa: F401
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import pytest

from .control import FakeNvml

# nvml.h's metric ids (NVML_GPM_METRIC_*) the tests use.
GRAPHICS_UTIL = 1
SM_UTIL = 2
SM_OCCUPANCY = 3
ANY_TENSOR_UTIL = 5
DRAM_BW_UTIL = 10
PCIE_TX_PER_SEC = 20
PCIE_RX_PER_SEC = 21
NVLINK_TOTAL_RX_PER_SEC = 60
NVLINK_TOTAL_TX_PER_SEC = 61


class FakeGpm:
    def __init__(self, fake: FakeNvml) -> None:
        self.fake = fake
        lib = fake.lib
        i, u, d = ctypes.c_int, ctypes.c_uint, ctypes.c_double
        for name, restype, argtypes in (
            ("fake_nvml_gpm_reset", None, []),
            ("fake_nvml_gpm_set_supported", i, [i, i]),
            ("fake_nvml_gpm_set", i, [i, u, d]),
            ("fake_nvml_gpm_fail", i, [i, u, i]),
            ("fake_nvml_gpm_set_clock", None, [d]),
            ("fake_nvml_set_codec_util", i, [i, u, u]),
            ("fake_nvml_gpm_live_samples", ctypes.c_long, []),
        ):
            fn = getattr(lib, name)
            fn.restype = restype
            fn.argtypes = argtypes
        self._lib = lib

    def reset(self) -> None:
        self._lib.fake_nvml_gpm_reset()

    def set_supported(self, gpu: int, supported: bool) -> None:
        _ok(self._lib.fake_nvml_gpm_set_supported(gpu, int(supported)))

    def set(self, gpu: int, metric: int, value: float) -> None:
        """The metric's level over the next interval (percent, or MiB/s for bandwidths)."""
        _ok(self._lib.fake_nvml_gpm_set(gpu, metric, value))

    def fail(self, gpu: int, metric: int, ret: int) -> None:
        _ok(self._lib.fake_nvml_gpm_fail(gpu, metric, ret))

    def set_clock(self, seconds: float) -> None:
        """Pin the GPM sample clock (negative: back to CLOCK_MONOTONIC)."""
        self._lib.fake_nvml_gpm_set_clock(seconds)

    def set_codec_util(self, gpu: int, encoder: int, decoder: int) -> None:
        _ok(self._lib.fake_nvml_set_codec_util(gpu, encoder, decoder))

    def live_samples(self) -> int:
        return int(self._lib.fake_nvml_gpm_live_samples())


def _ok(code: int) -> None:
    if code != 0:
        raise ValueError(f"fake NVML GPM control: bad argument ({code})")


@pytest.fixture
def fake_gpm(fake_nvml: FakeNvml) -> Iterator[FakeGpm]:
    gpm = FakeGpm(fake_nvml)
    gpm.reset()
    yield gpm
    gpm.reset()
