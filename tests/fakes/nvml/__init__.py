"""A fake ``libnvidia-ml.so.1`` (C) that the real pynvml loads, so NVML code runs without a GPU.

``build.build_fake_nvml()`` compiles it, ``control.load_fake_nvml()`` loads it where pynvml
finds it and returns the ``FakeNvml`` controls; ``fixtures`` has the pytest fixtures.
"""

from .build import FakeNvmlBuildError, build_fake_nvml
from .control import FakeNvml, load_fake_nvml

__all__ = ["FakeNvml", "FakeNvmlBuildError", "build_fake_nvml", "load_fake_nvml"]
