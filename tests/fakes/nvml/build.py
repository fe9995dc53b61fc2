"""Compile the fake ``libnvidia-ml.so.1`` with the system C compiler.

Built in the test session rather than checked in, so the fake always matches its source and
needs nothing but ``cc``. The output is cached by a hash of the sources and flags: a session
compiles each variant once, and variants with symbols left out (``omit``) live side by side.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "fake_nvml.c", HERE / "layout.h")
SONAME = "libnvidia-ml.so.1"
# Only NVML and fake_nvml_* symbols are exported (-fvisibility=hidden); an omitted symbol can
# leave its static helpers unused, which is not an error.
CFLAGS = (
    "-shared",
    "-fPIC",
    "-O2",
    "-fvisibility=hidden",
    "-pthread",
    "-Wall",
    "-Wextra",
    "-Werror",
    "-Wno-unused-function",
)


class FakeNvmlBuildError(RuntimeError):
    """cc is missing or rejected the fake's source; the message carries the compiler output."""


def default_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"switchyard-fake-nvml-{os.getuid()}"


def build_fake_nvml(cache_dir: Path | None = None, *, omit: Iterable[str] = ()) -> Path:
    """Return the absolute path of a compiled fake, building it if this variant is not cached.

    ``omit`` names NVML symbols (``"nvmlDeviceGetTemperatureV"``) to leave out of the library,
    so pynvml raises ``NVMLError_FunctionNotFound`` for them as with an older driver.
    """
    omitted = sorted(set(omit))
    flags = [*CFLAGS, *(f"-DFAKE_NVML_OMIT_{name}" for name in omitted)]
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update("\0".join(flags).encode())
    out_dir = (cache_dir or default_cache_dir()) / digest.hexdigest()[:16]
    target = (out_dir / SONAME).resolve()
    if target.exists():
        return target
    compiler = shutil.which("cc")
    if compiler is None:
        raise FakeNvmlBuildError("no C compiler: the fake NVML library needs `cc` on PATH")
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f"{SONAME}.{os.getpid()}.tmp"
    cmd = [compiler, *flags, f"-I{HERE}", f"-Wl,-soname,{SONAME}", "-o", str(partial), str(SOURCES[0])]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FakeNvmlBuildError(f"cc failed building the fake NVML ({' '.join(cmd)}):\n{result.stderr}")
    partial.replace(target)  # atomic: a parallel session never loads a half-written library
    return target


def find_real_nvml_header() -> Path | None:
    """nvml.h from the ``nvidia-nvml-dev`` wheel (a dev dependency), wherever it installed it."""
    try:
        import nvidia  # namespace package shared by NVIDIA's wheels
    except ImportError:
        return None
    for root in nvidia.__path__:
        for header in sorted(Path(root).glob("*/include/nvml.h")):
            return header
    return None


def real_nvml_layout(header: Path, cache_dir: Path) -> dict[str, int]:
    """sizeof/offsetof of every layout.h entry, compiled against the real ``header``."""
    compiler = shutil.which("cc")
    if compiler is None:
        raise FakeNvmlBuildError("no C compiler: the layout probe needs `cc` on PATH")
    cache_dir.mkdir(parents=True, exist_ok=True)
    exe = cache_dir / f"layout_probe.{os.getpid()}"
    cmd = [compiler, f"-I{header.parent}", f"-I{HERE}", "-o", str(exe), str(HERE / "layout_probe.c")]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FakeNvmlBuildError(f"cc failed building the layout probe ({' '.join(cmd)}):\n{result.stderr}")
    output = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {name: int(value) for name, value in (line.split() for line in output.splitlines())}
