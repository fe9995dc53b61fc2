"""Energy per metering interval from a GPU's cumulative NVML energy counter: exact, in integers.

NVML's ``nvmlDeviceGetTotalEnergyConsumption`` is mJ since the driver loaded: a counter, so a
missed or late report loses nothing, the next reading holds it. The energy of any span between two
readings is their difference, to the millijoule; splitting a span over the metering intervals it
crosses (1 minute by default) interpolates the counter linearly between the two readings, in
integers (microseconds, millijoules, floors of exact products), so the intervals of a span add up
to its difference exactly and the same readings always give the same split.

What the readings may be, and what is made of them:

- **Reordered, duplicated, spooled for hours**: readings are taken in time order whatever order
  they arrived in; two readings of one instant are one (the smaller counter, deterministically).
- **A counter reset** (a GPU reset or a driver reload zeroes it): the counter falls. Its value
  after the fall is the energy since the reset; what the GPU used between the last reading before
  it and the reset is lost to the counter. Where both readings carry a power sample, the span is
  filled from them instead if that is more (trapezoid), and flagged ``estimated``; the span is
  flagged ``reset`` either way. A reset after which the counter has already climbed past its
  value before it cannot be told from use (NVML says nothing more); a rise faster than
  ``MAX_GPU_W`` can be drawn is taken as such a reset.
- **No counter** (a GPU without one, or a reading that had none): the spans that no two counter
  readings bracket are filled from power samples (trapezoid between two samples, the one sample
  held where only one side has one) and flagged ``estimated``. Counter readings are the backbone:
  power-only readings between two counter readings change nothing.
- Before the first reading and after the last, nothing is known: no energy. An interval whose end
  no reading has reached yet is ``complete=False``; a later report completes it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

# More than any GPU module draws (a GB300 module's limit is 1,400 W): a counter rising faster
# between two readings was reset in between.
MAX_GPU_W = 5_000
US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class Reading:
    """One sample of a GPU: when (unix microseconds), its counter (mJ), its power (W)."""

    at_us: int
    energy_mj: int | None
    power_w: float | None = None


@dataclass(frozen=True, slots=True)
class Point:
    """A point of a GPU's energy curve: mJ used since its first reading, resets bridged."""

    at_us: int
    total_mj: int
    estimated: bool = False  # the span ending here came (partly) from power samples
    reset: bool = False  # the counter was reset in the span ending here


@dataclass(frozen=True, slots=True)
class IntervalEnergy:
    start_us: int
    end_us: int
    energy_mj: int
    estimated: bool
    reset: bool
    complete: bool  # a reading at or after its end exists: later readings cannot change it


def readings_in_order(readings: Iterable[Reading]) -> list[Reading]:
    """By time; one reading per instant (the one with a counter, the smaller counter first)."""
    ordered = sorted(
        readings,
        key=lambda r: (r.at_us, r.energy_mj is None, r.energy_mj or 0, r.power_w is None, r.power_w or 0.0),
    )
    out: list[Reading] = []
    for r in ordered:
        if out and out[-1].at_us == r.at_us:
            continue
        out.append(r)
    return out


def _power_mj(a: Reading, b: Reading) -> int | None:
    """Energy of [a, b] from power samples: trapezoid, or the one sample held; None with none."""
    known = [w for w in (a.power_w, b.power_w) if w is not None]
    if not known:
        return None
    watts = sum(known) / len(known)
    return max(0, round(watts * (b.at_us - a.at_us) / 1000.0))  # W x us / 1000 = mJ


def _span(a: Reading, b: Reading) -> tuple[int, bool, bool]:
    """(mJ, estimated, reset) of the span between two consecutive readings."""
    if a.energy_mj is not None and b.energy_mj is not None:
        rise = b.energy_mj - a.energy_mj
        if rise >= 0 and rise * 1000 <= MAX_GPU_W * (b.at_us - a.at_us):
            return rise, False, False
        # Reset in between: the counter holds only what was used since.
        since = b.energy_mj
        filled = _power_mj(a, b)
        if filled is not None and filled > since:
            return filled, True, True
        return since, False, True
    filled = _power_mj(a, b)
    return (filled or 0), True, False


def energy_curve(readings: Iterable[Reading]) -> list[Point]:
    """The GPU's cumulative energy at each reading, from 0 at the first.

    Between two counter readings the counter decides (power-only readings in between are
    skipped); elsewhere consecutive readings are joined by their power samples."""
    rs = readings_in_order(readings)
    if not rs:
        return []
    counted = [i for i, r in enumerate(rs) if r.energy_mj is not None]
    lo, hi = (counted[0], counted[-1]) if counted else (len(rs), len(rs))
    keep = [r for i, r in enumerate(rs) if i <= lo or i >= hi or r.energy_mj is not None]
    points = [Point(keep[0].at_us, 0)]
    total = 0
    for a, b in zip(keep, keep[1:], strict=False):
        mj, estimated, reset = _span(a, b)
        total += mj
        points.append(Point(b.at_us, total, estimated, reset))
    return points


def total_at(points: list[Point], at_us: int, *, times: list[int] | None = None) -> int:
    """The curve at ``at_us``: linear between its points, in integers (floor); flat outside."""
    if not points:
        return 0
    ts = times if times is not None else [p.at_us for p in points]
    i = bisect_right(ts, at_us)
    if i == 0:
        return points[0].total_mj
    if i == len(points):
        return points[-1].total_mj
    a, b = points[i - 1], points[i]
    return a.total_mj + (b.total_mj - a.total_mj) * (at_us - a.at_us) // (b.at_us - a.at_us)


def split(points: list[Point], start_us: int, end_us: int, interval_us: int = 60 * US_PER_S) -> list[IntervalEnergy]:
    """Energy of [start_us, end_us) per interval of the grid ``interval_us`` (aligned to the unix
    epoch), clipped to the span: what one allocation of the GPU used, interval by interval. The
    parts add up to ``total_at(end) - total_at(start)`` exactly."""
    if interval_us <= 0:
        raise ValueError(f"interval_us must be positive, got {interval_us}")
    if end_us <= start_us:
        return []
    times = [p.at_us for p in points]
    last = times[-1] if times else None
    out: list[IntervalEnergy] = []
    edge = start_us - start_us % interval_us
    below = total_at(points, start_us, times=times)
    while edge < end_us:
        lo, hi = max(edge, start_us), min(edge + interval_us, end_us)
        above = total_at(points, hi, times=times)
        # Flags of every span that overlaps [lo, hi): points after lo up to the first at or past hi.
        i = bisect_right(times, lo)
        estimated = reset = False
        while i < len(points):
            p = points[i]
            estimated |= p.estimated
            reset |= p.reset
            if p.at_us >= hi:
                break
            i += 1
        out.append(IntervalEnergy(lo, hi, above - below, estimated, reset, last is not None and last >= hi))
        below = above
        edge += interval_us
    return out
