"""The figures' scripts still run: the commit and ledger benchmarks end to end, small, on real
PostgreSQL. Regression: after money became Decimal the benchmark still seeded prices as floats
and died at its first insert, unnoticed until the figures were re-measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_commit_benchmark_runs_on_the_demo_rack(tmp_path: Path) -> None:
    out = tmp_path / "commit.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/bench_scheduler_commit.py",
            "--site",
            "demo-rack",
            "--pending",
            "60",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["gpus"] == 72 and result["ours_committed"]["gpus_placed"] > 0


def test_the_ledger_benchmark_runs_small(tmp_path: Path) -> None:
    """Five GPUs for five minutes: 25 rows, written once and replayed as duplicates."""
    out = tmp_path / "ledger.json"
    done = subprocess.run(
        [sys.executable, "bench/bench_ledger.py", "--gpus", "5", "--minutes", "5", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 25 and result["insert_rows_per_s"] > 0
