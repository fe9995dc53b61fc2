"""The scenario files the project runs on, shipped inside the package.

``sites.json`` (the demo rack, the 18 MW reference site, the 300 MW campus), one day of tenant
workloads for ``site-18mw`` (and a generated overloaded variant of it) and one day of power prices
and hashprice. The demo, the tests and the benchmarks all read them from here, so a lone clone (or
a ``pip install``) has everything it runs on. An operator with sites of their own points
``SWITCHYARD_SCENARIOS_DIR`` (or ``switchyard admin create-site --sites-file``) at their own
``sites.json``.
"""

from __future__ import annotations

from pathlib import Path

PACKAGED = Path(__file__).resolve().parent

SITES = "sites.json"
DAY_WORKLOADS = "day-workloads.jsonl"
OVERLOADED_DAY_WORKLOADS = "day-workloads-overloaded.jsonl"
DAY_PRICES = "day-prices.csv"


def scenarios_dir(override: Path | None = None) -> Path:
    return override if override is not None else PACKAGED


def sites_file(override: Path | None = None) -> Path:
    return scenarios_dir(override) / SITES


def day_workloads_file() -> Path:
    return PACKAGED / DAY_WORKLOADS


def overloaded_day_workloads_file() -> Path:
    """The same kinds of work as the scenario day with 1.6x its arrivals (``bench/gen_overloaded_day.py``)."""
    return PACKAGED / OVERLOADED_DAY_WORKLOADS


def day_prices_file() -> Path:
    return PACKAGED / DAY_PRICES
