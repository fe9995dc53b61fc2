"""One NVML sampling pass of a 4-GPU GB300 tray, through the real pynvml, on the fake library.

There is no GPU here, so the fake libnvidia-ml.so.1 (tests/fakes/nvml) answers in nanoseconds
where a real driver takes ~0.1-0.4 ms per query (FACTS.md). The figure is therefore split in
two: the Python/pynvml cost we control, measured, and the number of NVML calls per pass,
counted in the fake, which times the real per-call cost gives the expected pass on hardware.
Side by side in the same run: the fast pass (every report) and the fast+slow pass (every
slow interval). Writes bench/results/nvml_sample.json.

    .venv/bin/python bench/bench_nvml.py [--passes 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passes", type=int, default=2000)
    args = parser.parse_args()
    from fakes.nvml.build import build_fake_nvml
    from fakes.nvml.control import load_fake_nvml

    fake = load_fake_nvml(build_fake_nvml())
    from agents.gpu.nvml import NvmlBackend

    now = [0.0]
    backend = NvmlBackend(slow_interval_s=30.0, clock=lambda: now[0], watch_events=False)
    try:
        backend.sample()  # first pass reads the slow fields too; not timed

        def run(slow: bool) -> tuple[list[float], int]:
            names = [n for n in _call_names() if fake.calls(n) >= 0]
            before = sum(fake.calls(n) for n in names)
            times = []
            for _ in range(args.passes):
                if slow:
                    now[0] += 31.0  # every pass is a slow one
                start = time.perf_counter()
                backend.sample()
                times.append((time.perf_counter() - start) * 1000)
            calls = (sum(fake.calls(n) for n in names) - before) / args.passes
            return times, round(calls)

        fast, fast_calls = run(slow=False)
        slow, slow_calls = run(slow=True)
    finally:
        backend.close()

    def summary(times: list[float], calls: int) -> dict[str, float | str]:
        return {
            "median_ms": round(statistics.median(times), 4),
            "p99_ms": round(percentile(times, 0.99), 4),
            "nvml_calls_per_pass": calls,
            "expected_on_hardware_ms": f"{calls * 0.1:.1f}-{calls * 0.4:.1f}",
        }

    result = {
        "what": "NvmlBackend.sample() for 4 GPUs via the real pynvml against the fake libnvidia-ml.so.1",
        "passes": args.passes,
        "fast_pass": summary(fast, fast_calls),
        "fast_plus_slow_pass": summary(slow, slow_calls),
        "note": "expected_on_hardware = NVML calls x 0.1-0.4 ms per call (FACTS.md); the fake answers in ns",
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out = ROOT / "bench" / "results" / "nvml_sample.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def _call_names() -> list[str]:
    """Every NVML entry point the fake counts (the symbols it exports)."""
    source = (ROOT / "tests" / "fakes" / "nvml" / "fake_nvml.c").read_text()
    import re

    return sorted(set(re.findall(r"\b(nvml[A-Z][A-Za-z0-9_]*)\s*\(", source)))


if __name__ == "__main__":
    sys.exit(main())
