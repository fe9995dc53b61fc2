"""Energy per interval from NVML energy counters (``controlplane.metering.counters``): exact sums,
order and duplicates changing nothing, resets, missing counters, and the GB300 simulator's own
integral."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.gpu.sim import SimBackend
from controlplane.metering.counters import (
    US_PER_S,
    IntervalEnergy,
    Reading,
    energy_curve,
    split,
    total_at,
)

MIN = 60 * US_PER_S


def _sum(parts: list[IntervalEnergy]) -> int:
    return sum(p.energy_mj for p in parts)


@st.composite
def counter_readings(draw: st.DrawFn) -> list[Reading]:
    """A GPU's readings: increasing times (1 ms to 20 min apart), a counter rising at 0-1,500 W."""
    n = draw(st.integers(min_value=1, max_value=40))
    t = draw(st.integers(min_value=1_700_000_000 * US_PER_S, max_value=1_800_000_000 * US_PER_S))
    e = draw(st.integers(min_value=0, max_value=10**12))
    out = [Reading(t, e, None)]
    for _ in range(n - 1):
        dt = draw(st.integers(min_value=1_000, max_value=20 * MIN))
        watts = draw(st.integers(min_value=0, max_value=1_500))
        t, e = t + dt, e + watts * dt // 1000
        out.append(Reading(t, e, float(watts)))
    return out


@settings(max_examples=300, deadline=None)
@given(counter_readings(), st.sampled_from([MIN, 15 * MIN, 7 * US_PER_S]), st.randoms(use_true_random=False))
def test_intervals_add_up_to_the_counter_difference_in_any_order(
    readings: list[Reading], interval: int, rnd: random.Random
) -> None:
    """Over the readings' span the intervals add up to last - first to the millijoule, none is
    negative, they tile the span, and the same readings shuffled and partly duplicated (a
    replayed spool, a retried report) split the same."""
    points = energy_curve(readings)
    first, last = readings[0], readings[-1]
    assert last.energy_mj is not None and first.energy_mj is not None
    parts = split(points, first.at_us, last.at_us + 1, interval)
    assert _sum(parts) == last.energy_mj - first.energy_mj
    assert all(p.energy_mj >= 0 and not p.estimated and not p.reset for p in parts)
    assert all(a.end_us == b.start_us for a, b in zip(parts, parts[1:], strict=False))
    assert all(p.complete for p in parts[:-1])
    noisy = readings + rnd.sample(readings, k=len(readings) // 2)
    rnd.shuffle(noisy)
    assert split(energy_curve(noisy), first.at_us, last.at_us + 1, interval) == parts


@settings(max_examples=200, deadline=None)
@given(counter_readings(), st.data())
def test_an_allocation_of_the_gpu_gets_the_curve_between_its_ends(readings: list[Reading], data: st.DataObject) -> None:
    """Any [start, end): the intervals add up to the curve's difference between the two ends,
    and two adjacent allocations of one GPU share its energy without a millijoule twice."""
    points = energy_curve(readings)
    lo, hi = readings[0].at_us - MIN, readings[-1].at_us + MIN
    a, b, c = sorted(data.draw(st.integers(min_value=lo, max_value=hi)) for _ in range(3))
    whole, left, right = split(points, a, c), split(points, a, b), split(points, b, c)
    assert _sum(whole) == total_at(points, c) - total_at(points, a) == _sum(left) + _sum(right)


def test_a_counter_reset_counts_what_was_used_since_and_is_flagged() -> None:
    """1,000 -> 5,000 mJ, then a GPU reset: 300, then 900. Used: 4,000 + 300 + 600. With power
    samples saying more was used over the reset's span, that span is filled from them (estimated)."""
    t0 = 1_750_000_000 * US_PER_S
    rs = [
        Reading(t0, 1_000),
        Reading(t0 + US_PER_S, 5_000),
        Reading(t0 + 2 * US_PER_S, 300),
        Reading(t0 + 3 * US_PER_S, 900),
    ]
    points = energy_curve(rs)
    assert [p.total_mj for p in points] == [0, 4_000, 4_300, 4_900]
    assert [p.reset for p in points] == [False, False, True, False]
    # Two readings of one instant that disagree (a buggy or hostile agent) are one: the smaller.
    assert energy_curve([*rs, Reading(rs[1].at_us, 9_000_000)]) == points
    (part,) = split(points, t0, t0 + 3 * US_PER_S, MIN)
    assert part.energy_mj == 4_900 and part.reset and not part.estimated
    # 1 s at 1,000 W is 1,000,000 mJ: more than the 300 counted since the reset.
    powered = [Reading(r.at_us, r.energy_mj, 1_000.0) for r in rs]
    assert [p.total_mj for p in energy_curve(powered)] == [0, 4_000, 1_004_000, 1_004_600]
    assert [p.estimated for p in energy_curve(powered)] == [False, False, True, False]


def test_a_rise_faster_than_any_gpu_draws_is_a_reset() -> None:
    """In 1 s the counter rose by 10 MJ (10 MW): it was reset and climbed past its old value."""
    t0 = 1_750_000_000 * US_PER_S
    rs = [Reading(t0, 1_000), Reading(t0 + US_PER_S, 10_000_000_000)]
    (_, p) = energy_curve(rs)
    assert p.reset and p.total_mj == 10_000_000_000  # what the counter holds since the reset


def test_without_a_counter_power_samples_fill_in_and_say_so() -> None:
    """No counter at all: trapezoid between power samples, flagged estimated. Power-only readings
    between two counter readings change nothing; a span beyond the last counter is estimated."""
    t0 = 1_750_000_000 * US_PER_S
    rs = [Reading(t0, None, 100.0), Reading(t0 + 10 * US_PER_S, None, 300.0)]
    (part,) = split(energy_curve(rs), t0, t0 + 10 * US_PER_S, MIN)
    assert part.energy_mj == 2_000_000 and part.estimated  # 200 W x 10 s
    mixed = [
        Reading(t0, 0, 100.0),
        Reading(t0 + 5 * US_PER_S, None, 9_999.0),
        Reading(t0 + 10 * US_PER_S, 1_500_000, 100.0),
    ]
    assert [p.total_mj for p in energy_curve(mixed)] == [0, 1_500_000]
    tail = [*mixed, Reading(t0 + 20 * US_PER_S, None, 300.0)]
    points = energy_curve(tail)
    assert points[-1].total_mj == 1_500_000 + 2_000_000 and points[-1].estimated


def test_intervals_past_the_last_reading_are_incomplete_and_empty() -> None:
    """Readings at t0 (20 s past a minute) and t0 + 30 s: an allocation of [t0, t0 + 150 s) gets
    the 30,000 mJ in its first interval; nothing is known after t0 + 30 s, so no interval is
    complete yet, and the later ones are empty until a report arrives."""
    t0 = (1_750_000_000 // 60 * 60 + 20) * US_PER_S
    rs = [Reading(t0, 0), Reading(t0 + 30 * US_PER_S, 30_000)]
    parts = split(energy_curve(rs), t0, t0 + 150 * US_PER_S, MIN)
    assert [((p.start_us - t0) // US_PER_S, (p.end_us - t0) // US_PER_S) for p in parts] == [
        (0, 40),
        (40, 100),
        (100, 150),
    ]
    assert [p.energy_mj for p in parts] == [30_000, 0, 0]
    assert [p.complete for p in parts] == [False, False, False]
    later = [*rs, Reading(t0 + 100 * US_PER_S, 100_000)]
    parts = split(energy_curve(later), t0, t0 + 150 * US_PER_S, MIN)
    assert [p.energy_mj for p in parts] == [40_000, 60_000, 0] and [p.complete for p in parts] == [True, True, False]


def test_the_metered_energy_is_the_simulators_integral_over_a_day() -> None:
    """A simulated GB300 tray (4 GPUs, load changing every ~3 min) sampled every 5 s for a day,
    its readings shuffled: per GPU the day's 1-minute intervals add up to the simulator's exact
    integral within 1 mJ (the counter reports its floor). GPU 0 is reset at noon, mid-span: its
    day is right within what power samples cannot know of that one 5 s span (the simulator holds
    each sample's power to the next; the fill is their trapezoid)."""
    now = [1_750_000_000.0]
    sim = SimBackend(4, clock=lambda: now[0], seed=7)
    rnd = random.Random(3)
    uuids = [g.uuid for g in sim.inventory()]
    gpus = {u: sim._gpu(u) for u in uuids}
    readings: dict[str, list[Reading]] = {u: [] for u in uuids}
    start = now[0]
    before_reset = 0.0
    steps = 24 * 3600 // 5
    for step in range(steps + 1):
        if step % 37 == 0:
            for u in uuids:
                sim.set_load(u, rnd.random(), 1000.0)
        for g in sim.sample():
            readings[g.uuid].append(Reading(round(now[0] * US_PER_S), g.energy_mj, g.power_w))
        if step == steps // 2:
            g0 = gpus[uuids[0]]
            now[0] += 2.5
            before_reset = g0.energy_acc_mj + g0.power_mw * 2.5  # what the reset zeroes
            sim.reset_gpu(uuids[0])
            now[0] += 2.5
        elif step < steps:
            now[0] += 5.0
    day_us = (round(start * US_PER_S), round(now[0] * US_PER_S) + 1)
    for u in uuids:
        rs = list(readings[u])
        rnd.shuffle(rs)
        parts = split(energy_curve(rs), *day_us)
        assert len(parts) == 24 * 60 + 1
        true_mj = gpus[u].energy_acc_mj + (before_reset if u == uuids[0] else 0.0)
        if u != uuids[0]:
            assert abs(_sum(parts) - true_mj) <= 1, (u, _sum(parts), true_mj)
            assert not any(p.estimated or p.reset for p in parts)
            continue
        noon = readings[u][steps // 2 : steps // 2 + 2]
        assert noon[0].power_w is not None and noon[1].power_w is not None
        unknowable = abs(noon[1].power_w - noon[0].power_w) / 2 * 5.0 * 1000  # mJ
        assert abs(_sum(parts) - true_mj) <= unknowable + 2, (_sum(parts), true_mj, unknowable)
        assert sum(p.reset for p in parts) == 1 and sum(p.estimated for p in parts) == 1
