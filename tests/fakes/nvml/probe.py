"""Run NvmlBackend against a fake variant in a fresh process and print what it saw as JSON.

A process holds one ``libnvidia-ml.so.1``, so tests of variants built with symbols left out
(``build_fake_nvml(omit=...)``) run this as ``python -m fakes.nvml.probe <library|none>``.
With ``none`` nothing is loaded first, as on a host without the NVIDIA driver.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def probe(library: str) -> dict[str, Any]:
    if library != "none":
        from .control import load_fake_nvml

        load_fake_nvml(Path(library))
    from agents.gpu.nvml import NvmlBackend, NvmlUnavailableError

    try:
        backend = NvmlBackend(event_poll_ms=20)
    except NvmlUnavailableError as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    try:
        first = backend.sample()
        second = backend.sample()  # a second pass must not trip over what the first remembered
        return {
            "driver_version": backend.driver_version(),
            "inventory": [gpu.model_dump(mode="json") for gpu in backend.inventory()],
            "samples": [gpu.model_dump(mode="json") for gpu in first],
            "second_count": len(second),
        }
    finally:
        backend.close()


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1])))
