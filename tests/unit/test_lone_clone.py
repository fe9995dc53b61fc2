"""A user clones the repository alone: nothing may reach outside it for its inputs.

``.ci/run`` proves the whole thing by running the unit tests from a fresh clone with nothing
beside it; these tests catch the cause early (a path that climbs out of the repository, a
scenario file the package does not ship).
"""

from __future__ import annotations

import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import benchmods

from controlplane import scenarios

ROOT = Path(__file__).resolve().parents[2]
TEXT_SUFFIXES = {
    ".c",
    ".h",
    ".py",
    ".md",
    ".toml",
    ".sh",
    ".cfg",
    ".ini",
    ".json",
    ".yaml",
    ".yml",
    ".txt",
    ".mako",
    "",
}


def _tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_no_file_refers_to_material_outside_the_repository() -> None:
    # Spelt in pieces, so that this file holds no reference it forbids.
    shared, work = "sha" + "red", "/wo" + "rk/"
    needles = (f"../{shared}", f"{shared}/scenarios", f"{shared}/reference", f'"{shared}" / "scenarios"', work)
    offenders = []
    for path in _tracked_files():
        if path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for n, line in enumerate(text.splitlines(), start=1):
            if any(needle in line for needle in needles):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:100]}")
    assert not offenders, "files that reach outside the repository:\n" + "\n".join(offenders)


def test_the_package_ships_every_scenario_file_it_reads() -> None:
    for path in (scenarios.sites_file(), scenarios.day_workloads_file(), scenarios.day_prices_file()):
        assert path.is_file(), path
        assert ROOT in path.parents, f"{path} is not inside the repository"
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "controlplane"
    ]
    for path in scenarios.PACKAGED.iterdir():
        if path.name.startswith("__") or path.suffix == ".py":
            continue
        rel = f"scenarios/{path.name}"
        assert any(fnmatch(rel, pattern) for pattern in patterns), f"{rel} would be left out of an install"


def test_the_day_replay_reads_the_packaged_day() -> None:
    module = benchmods.load("replay_day")
    assert scenarios.day_workloads_file() == module.WORKLOADS
    assert len(module.load_workloads()) == 3084
