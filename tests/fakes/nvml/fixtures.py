"""pytest fixtures for the fake NVML. Import them into a test module:

    from fakes.nvml.fixtures import fake_nvml, fake_nvml_cache, fake_nvml_path  # noqa: F401

``fake_nvml`` hands each test a freshly reset default tray (4 GB300) in this process;
``nvml_backend`` (with ``manual_clock``) an NvmlBackend on it. Tests that need a build variant
use ``build_fake_nvml(cache_dir, omit=...)`` in a subprocess (see ``probe.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agents.gpu.nvml import NvmlBackend
from agents.protocol import XidEvent

from .build import build_fake_nvml
from .control import FakeNvml, load_fake_nvml


@pytest.fixture(scope="session")
def fake_nvml_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where this session's builds go. One fixed directory per session: every test module that
    imports these fixtures gets its own copy of them, and they must agree on one library."""
    path = tmp_path_factory.getbasetemp() / "fake-nvml"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def fake_nvml_path(fake_nvml_cache: Path) -> Path:
    return build_fake_nvml(fake_nvml_cache)


@pytest.fixture
def fake_nvml(fake_nvml_path: Path) -> Iterator[FakeNvml]:
    fake = load_fake_nvml(fake_nvml_path)
    fake.reset()
    yield fake
    fake.reset()


WALL_CLOCK = 1_750_000_000.0  # what XidEvent.at reads in tests


class ManualClock:
    """The backend's slow-loop clock, moved by the test instead of by time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def manual_clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def nvml_backend(fake_nvml: FakeNvml, manual_clock: ManualClock) -> Iterator[NvmlBackend]:
    """An NvmlBackend on the default fake tray; slow loop every 30 s of ``manual_clock``."""
    backend = make_backend(manual_clock)
    yield backend
    backend.close()


def make_backend(clock: ManualClock, **kwargs: Any) -> NvmlBackend:
    options: dict[str, Any] = {"slow_interval_s": 30.0, "wall_clock": lambda: WALL_CLOCK, "event_poll_ms": 20}
    return NvmlBackend(clock=clock, **(options | kwargs))


def wait_for_events(backend: NvmlBackend, count: int, deadline_s: float = 10.0) -> list[XidEvent]:
    """Drain until ``count`` events arrived from the event thread. The deadline only stops a
    broken test from hanging; nothing is measured."""
    events: list[XidEvent] = []
    end = time.monotonic() + deadline_s
    while len(events) < count and time.monotonic() < end:
        events += backend.drain_events()
        if len(events) < count:
            time.sleep(0.005)
    return events
