"""The overloaded day's generator (bench/gen_overloaded_day.py) and the declared-limits rule it shares
with the replay (controlplane.scenarios.limits)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import benchmods
import pytest

from controlplane.scenarios import day_workloads_file, overloaded_day_workloads_file
from controlplane.scenarios.limits import declared

gen = benchmods.load("gen_overloaded_day")


@pytest.fixture(scope="module")
def scenario() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = gen.load(day_workloads_file())
    return rows


@pytest.fixture(scope="module")
def overloaded(scenario: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = gen.generate(scenario)
    return rows


def test_the_committed_day_is_the_generators_output_with_its_seed(overloaded: list[dict[str, Any]]) -> None:
    assert overloaded_day_workloads_file().read_text() == gen.dumps(overloaded)


def test_the_same_seed_gives_the_same_day_and_another_seed_another(scenario: list[dict[str, Any]]) -> None:
    assert gen.generate(scenario, seed=3) == gen.generate(scenario, seed=3)
    assert gen.generate(scenario, seed=3) != gen.generate(scenario, seed=4)
    # The scenario file's line order does not matter, only its rows.
    assert gen.generate(list(reversed(scenario)), seed=3) == gen.generate(scenario, seed=3)


def test_arrivals_are_1_6x_overall_and_hour_by_hour(
    scenario: list[dict[str, Any]], overloaded: list[dict[str, Any]]
) -> None:
    assert len(overloaded) / len(scenario) == pytest.approx(1.6, abs=0.05)
    base, over = gen.hourly_arrivals(scenario), gen.hourly_arrivals(overloaded)
    assert sum(over) == len(overloaded)  # nothing outside the day
    for h, (n, m) in enumerate(zip(base, over, strict=True)):
        # Poisson with mean 1.6 n: within 4 standard deviations in every hour.
        assert abs(m - 1.6 * n) <= 4 * (1.6 * n) ** 0.5, f"hour {h}: {m} arrivals against 1.6 x {n}"
    assert [w["submit_s"] for w in overloaded] == sorted(w["submit_s"] for w in overloaded)
    assert [w["id"] for w in overloaded] == [f"o{i:05d}" for i in range(1, len(overloaded) + 1)]


def test_the_kinds_of_work_are_the_scenarios(scenario: list[dict[str, Any]], overloaded: list[dict[str, Any]]) -> None:
    kinds = {tuple(w[k] for k in gen.FIELDS) for w in scenario}
    assert all(tuple(w[k] for k in gen.FIELDS) in kinds for w in overloaded), "a row the scenario never had"
    for key in ("tenant", "priority", "gpus", "nvlink"):
        a, b = Counter(w[key] for w in scenario), Counter(w[key] for w in overloaded)
        assert set(a) == set(b), key
        for value, n in a.items():
            assert b[value] / len(overloaded) == pytest.approx(n / len(scenario), abs=0.03), (key, value)
    a_d = sorted(w["duration_s"] for w in scenario)
    b_d = sorted(w["duration_s"] for w in overloaded)
    for q in (0.25, 0.5, 0.75, 0.9):
        assert b_d[int(q * len(b_d))] == pytest.approx(a_d[int(q * len(a_d))], rel=0.15), q


def test_the_overload_is_over_the_fleet(scenario: list[dict[str, Any]], overloaded: list[dict[str, Any]]) -> None:
    fleet_h = gen.fleet_gpus() * 24.0
    assert gen.gpu_hours(scenario) / fleet_h == pytest.approx(0.767, abs=0.01)
    assert 1.2 <= gen.gpu_hours(overloaded) / fleet_h <= 1.45


def test_declared_limits_follow_the_rule(overloaded: list[dict[str, Any]], scenario: list[dict[str, Any]]) -> None:
    for w in overloaded:
        limits = declared(w["id"], w["duration_s"])
        assert (w["max_duration_s"], w["checkpoint_interval_s"]) == (
            limits.max_duration_s,
            limits.checkpoint_interval_s,
        )
    for w in scenario + overloaded:
        limits = declared(w["id"], w["duration_s"])
        assert limits.max_duration_s % 900 == 0
        assert 1.1 * w["duration_s"] <= limits.max_duration_s < 3.0 * w["duration_s"] + 900
        if w["duration_s"] <= 1800:
            assert limits.checkpoint_interval_s is None
        else:
            assert limits.checkpoint_interval_s in (None, 900.0, 1800.0, 3600.0)
    long = [w for w in scenario if w["duration_s"] > 1800]
    share = sum(declared(w["id"], w["duration_s"]).checkpoint_interval_s is not None for w in long) / len(long)
    assert share == pytest.approx(0.7, abs=0.04)
    intervals = Counter(declared(w["id"], w["duration_s"]).checkpoint_interval_s for w in long)
    assert min(intervals[x] for x in (900.0, 1800.0, 3600.0)) > 0.2 * len(long)
    # Deterministic from the id: the same id and duration give the same limits, another id others.
    assert declared("w00001", 9096.0) == declared("w00001", 9096.0)
    assert len({declared(f"w{i:05d}", 9096.0).max_duration_s for i in range(50)}) > 10
