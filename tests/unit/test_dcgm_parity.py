"""Profiling metrics and dcgm parity (issue 9, finding 9).

DCGM_FI_PROF_* from NVML's GPM (the real pynvml on the fake library's GPM section) and from the
simulator, ENC/DEC utilisation, the DCGM_FI_DRIVER_VERSION label, and
DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL computed as DCGM computes it: the agent's /metrics scraped
over real HTTP.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes.nvml.build import build_fake_nvml
from fakes.nvml.control import GPU_IS_LOST, NOT_SUPPORTED, FakeNvml
from fakes.nvml.fixtures import ManualClock, fake_nvml, fake_nvml_cache, fake_nvml_path, make_backend  # noqa: F401
from fakes.nvml.gpm import (
    ANY_TENSOR_UTIL,
    DRAM_BW_UTIL,
    PCIE_RX_PER_SEC,
    PCIE_TX_PER_SEC,
    SM_OCCUPANCY,
    FakeGpm,
    fake_gpm,  # noqa: F401
)

from agents.exporter import AgentCollector, MetricsServer, build_exporter
from agents.gpu.base import GpuBackend, GpuProfile, ProfileSource
from agents.gpu.nvml import NvmlBackend
from agents.gpu.sim import SimBackend
from agents.protocol import GpuTelemetry

MIB = 1024 * 1024
TESTS = Path(__file__).resolve().parents[1]
DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"]
PROF_TYPES = {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": "gauge",
    "DCGM_FI_PROF_SM_ACTIVE": "gauge",
    "DCGM_FI_PROF_SM_OCCUPANCY": "gauge",
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": "gauge",
    "DCGM_FI_PROF_DRAM_ACTIVE": "gauge",
    "DCGM_FI_PROF_PCIE_TX_BYTES": "gauge",
    "DCGM_FI_PROF_PCIE_RX_BYTES": "gauge",
    "DCGM_FI_PROF_NVLINK_TX_BYTES": "gauge",
    "DCGM_FI_PROF_NVLINK_RX_BYTES": "gauge",
}
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")

Scrape = tuple[dict[str, str], list[tuple[str, dict[str, str], str]]]


def scrape(server: MetricsServer) -> Scrape:
    text = httpx.get(server.url, timeout=5.0).text
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            types[name] = typ
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            samples.append((match["name"], labels, match["value"]))
    return types, samples


def value(scraped: Scrape, name: str, gpu: int) -> str:
    found = [v for n, labels, v in scraped[1] if n == name and labels.get("gpu") == str(gpu)]
    assert len(found) == 1, (name, gpu, found)
    return found[0]


def names(scraped: Scrape, gpu: int) -> set[str]:
    return {n for n, labels, _ in scraped[1] if labels.get("gpu") == str(gpu)}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def nvml(fake_gpm: FakeGpm, clock: ManualClock) -> Iterator[tuple[NvmlBackend, FakeNvml, FakeGpm]]:  # noqa: F811
    fake_gpm.set_clock(1000.0)
    backend = make_backend(clock, watch_events=False)
    yield backend, fake_gpm.fake, fake_gpm
    backend.close()


def exported(
    backend: GpuBackend, clock: Callable[[], float], hostname: str = "tray-07"
) -> tuple[MetricsServer, AgentCollector]:
    registry, collector = build_exporter(hostname, clock=clock)
    collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
    collector.attach_backend(backend)
    return MetricsServer(registry, host="127.0.0.1", port=0).start(), collector


def step(backend: NvmlBackend, collector: AgentCollector, clock: ManualClock, gpm: FakeGpm, seconds: float) -> None:
    """One fast-loop pass as the daemon does it: sample, then the exporter reads the profiles."""
    clock.advance(seconds)
    gpm.set_clock(1000.0 + clock.now)
    collector.set_gpus(backend.sample())


def test_gpm_metrics_are_exported_with_dcgm_names_units_and_labels(
    nvml: tuple[NvmlBackend, FakeNvml, FakeGpm], clock: ManualClock
) -> None:
    backend, fake, gpm = nvml
    assert isinstance(backend, ProfileSource)
    fake.set(0, util_gpu=87, util_mem=41)
    gpm.set(0, ANY_TENSOR_UTIL, 62.5)
    gpm.set(0, SM_OCCUPANCY, 33.0)
    gpm.set(0, PCIE_TX_PER_SEC, 100.0)  # MiB/s
    gpm.set(0, PCIE_RX_PER_SEC, 1500.25)
    gpm.set_codec_util(0, 3, 17)
    server, collector = exported(backend, clock)
    try:
        step(backend, collector, clock, gpm, 1.0)
        first = scrape(server)
        # One GPM sample is no interval yet: no profiling series (the codecs are not GPM).
        assert not {n for n in first[0] if n.startswith("DCGM_FI_PROF_")}
        assert value(first, "DCGM_FI_DEV_ENC_UTIL", 0) == "3"
        assert value(first, "DCGM_FI_DEV_DEC_UTIL", 0) == "17"
        nvlink_tx = fake.get(0, "nvlink_tx_kib")
        fake.set(0, nvlink_tx_kib=nvlink_tx + 2 * 4096 * 1024)  # 4096 MiB/s for 2 s
        step(backend, collector, clock, gpm, 2.0)
        types, samples = scrape(server)
    finally:
        server.close()
    assert {n: t for n, t in types.items() if n.startswith("DCGM_FI_PROF_")} == PROF_TYPES
    scraped = (types, samples)
    assert value(scraped, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 0) == "0.625"  # ratio, not percent
    assert value(scraped, "DCGM_FI_PROF_GR_ENGINE_ACTIVE", 0) == "0.87"  # follows util_gpu
    assert value(scraped, "DCGM_FI_PROF_SM_ACTIVE", 0) == "0.87"
    assert value(scraped, "DCGM_FI_PROF_SM_OCCUPANCY", 0) == "0.33"
    assert value(scraped, "DCGM_FI_PROF_DRAM_ACTIVE", 0) == "0.41"
    assert value(scraped, "DCGM_FI_PROF_PCIE_TX_BYTES", 0) == str(100 * MIB)  # bytes/s
    assert value(scraped, "DCGM_FI_PROF_PCIE_RX_BYTES", 0) == str(int(1500.25 * MIB))  # truncated, as DCGM
    assert value(scraped, "DCGM_FI_PROF_NVLINK_TX_BYTES", 0) == str(4096 * MIB)
    assert value(scraped, "DCGM_FI_PROF_NVLINK_RX_BYTES", 0) == "0"
    assert value(scraped, "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", 1) == "0"  # an idle GPU reads 0, not absent
    # DCGM's NVLink bandwidth: (delta of tx + rx KiB) / seconds / 1000.
    assert value(scraped, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 0) == str(int(2 * 4096 * 1024 / 2.0 / 1000))
    assert value(scraped, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 1) == "0"
    for name, labels, _ in samples:
        if name.startswith("DCGM_"):
            assert list(labels) == DCGM_LABELS, name
            assert labels["DCGM_FI_DRIVER_VERSION"] == "580.173.02"
            assert labels["modelName"] == "NVIDIA GB300"
        elif name.startswith("switchyard_gpu_") and name != "switchyard_gpu_owner_info":
            assert "DCGM_FI_DRIVER_VERSION" not in labels and "modelName" not in labels, name


def test_no_gpm_no_profiling_series_and_one_failing_metric_costs_only_its_series(
    nvml: tuple[NvmlBackend, FakeNvml, FakeGpm], clock: ManualClock
) -> None:
    backend, _, gpm = nvml
    gpm.set_supported(1, False)  # e.g. a pre-Hopper GPU
    gpm.fail(2, DRAM_BW_UTIL, NOT_SUPPORTED)
    server, collector = exported(backend, clock)
    try:
        for _ in range(3):
            step(backend, collector, clock, gpm, 1.0)
        scraped = scrape(server)
    finally:
        server.close()
    assert {n for n in names(scraped, 0) if n.startswith("DCGM_FI_PROF_")} == set(PROF_TYPES)
    assert not {n for n in names(scraped, 1) if n.startswith("DCGM_FI_PROF_")}
    assert {"DCGM_FI_DEV_ENC_UTIL", "DCGM_FI_DEV_GPU_TEMP"} <= names(scraped, 1)  # the rest is still there
    assert {n for n in names(scraped, 2) if n.startswith("DCGM_FI_PROF_")} == set(PROF_TYPES) - {
        "DCGM_FI_PROF_DRAM_ACTIVE"
    }


def test_gpm_sample_buffers_are_freed_when_a_gpu_goes_and_on_close(
    fake_gpm: FakeGpm,  # noqa: F811
    clock: ManualClock,
) -> None:
    fake_gpm.set_clock(1000.0)
    before = fake_gpm.live_samples()
    backend = make_backend(clock, watch_events=False)
    try:
        backend.sample()
        assert set(backend.profiles()) == {g.uuid for g in backend.inventory()}  # codecs at once
        assert fake_gpm.live_samples() == before + 2 * 4  # two buffers per GPU
        fake_gpm.fake.lose_gpu(3)
        backend.sample()
        clock.advance(1.0)
        fake_gpm.set_clock(1001.0)
        assert len(backend.profiles()) == 3
        assert fake_gpm.live_samples() == before + 2 * 3
    finally:
        backend.close()
    assert fake_gpm.live_samples() == before


def test_a_lost_gpu_or_a_failing_sample_leaves_the_others(
    nvml: tuple[NvmlBackend, FakeNvml, FakeGpm], clock: ManualClock
) -> None:
    backend, fake, gpm = nvml
    fake.fail("nvmlGpmSampleGet", GPU_IS_LOST, gpu=2)
    server, collector = exported(backend, clock)
    try:
        for _ in range(2):
            step(backend, collector, clock, gpm, 1.0)
        scraped = scrape(server)
    finally:
        server.close()
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE" in names(scraped, 0)
    assert "DCGM_FI_PROF_GR_ENGINE_ACTIVE" not in names(scraped, 2)


def test_simulator_profiles_follow_the_workload_load() -> None:
    t = [1_000.0]
    backend = SimBackend(2, clock=lambda: t[0])
    uuids = [g.uuid for g in backend.inventory()]
    backend.set_load(uuids[0], 0.8, 50_000.0)
    server, collector = exported(backend, lambda: t[0], "sim-tray")
    try:
        collector.set_gpus(backend.sample())
        t[0] += 10.0
        collector.set_gpus(backend.sample())
        types, samples = scrape(server)
    finally:
        server.close()
    scraped = (types, samples)
    assert {n: t for n, t in types.items() if n.startswith("DCGM_FI_PROF_")} == PROF_TYPES
    busy = {n: float(value(scraped, n, 0)) for n in PROF_TYPES}
    idle = {n: float(value(scraped, n, 1)) for n in PROF_TYPES}
    assert busy["DCGM_FI_PROF_GR_ENGINE_ACTIVE"] == pytest.approx(0.8)
    assert 0 < busy["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"] <= busy["DCGM_FI_PROF_GR_ENGINE_ACTIVE"] <= 1
    assert all(0 <= busy[n] <= 1 for n in PROF_TYPES if "BYTES" not in n)
    assert busy["DCGM_FI_PROF_NVLINK_TX_BYTES"] > 0 and busy["DCGM_FI_PROF_PCIE_RX_BYTES"] > 0
    assert set(idle.values()) == {0.0}
    assert value(scraped, "DCGM_FI_DEV_ENC_UTIL", 0) == "0"  # no video in a training job
    assert value(scraped, "DCGM_FI_DEV_DEC_UTIL", 0) == "0"
    # NVLink bandwidth total: the counters' rate over the 10 s, in DCGM's KiB/s / 1000 ...
    nvlink = float(value(scraped, "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 0))
    assert nvlink > 0
    # ... and it agrees with GPM's view of the same traffic (bytes/s over both directions).
    both_bytes = busy["DCGM_FI_PROF_NVLINK_TX_BYTES"] + busy["DCGM_FI_PROF_NVLINK_RX_BYTES"]
    assert nvlink == int(both_bytes / 1024 / 1000)
    for name, labels, _ in samples:
        if name.startswith("DCGM_"):
            assert labels["DCGM_FI_DRIVER_VERSION"] == "580.173.02"


def test_nvlink_bandwidth_total_is_dcgms_rate_not_the_counter() -> None:
    now = [50.0]
    collector = AgentCollector("tray", clock=lambda: now[0])

    def render(tx: int, rx: int) -> str:
        uuid = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
        sample = GpuTelemetry(uuid=uuid, index=0, nvlink_tx_kib=tx, nvlink_rx_kib=rx)
        collector.set_gpus([sample], profiles={})
        line = [x for x in collector.render().decode().splitlines() if x.startswith("DCGM_FI_DEV_NVLINK_BANDWIDTH")]
        assert len(line) == 1
        return line[0].rsplit(" ", 1)[1]

    assert render(10_000_000, 10_000_000) == "0"  # the first reading
    now[0] += 4.0
    assert render(14_000_000, 12_000_000) == str(int(6_000_000 / 4.0 / 1000))  # 1500
    now[0] += 1.0
    assert render(1_000, 1_000) == "0"  # a driver reload restarted the counters
    assert render(2_000, 2_000) == "0"  # no time passed


def test_profiles_passed_by_the_caller_and_absent_fields() -> None:
    collector = AgentCollector("tray")
    sample = GpuTelemetry(uuid="GPU-bbbbbbbb-0000-0000-0000-000000000000", index=0, temperature_gpu_c=40.0)
    collector.set_gpus([sample], profiles={sample.uuid: GpuProfile(pipe_tensor_active=0.5)})
    text = collector.render().decode()
    prof = [line.split("{")[0] for line in text.splitlines() if line.startswith("DCGM_FI_PROF_")]
    assert prof == ["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"]  # the other fields are None: no series


OLD_DRIVER_SCRIPT = """
import sys, time
from pathlib import Path
from fakes.nvml.control import load_fake_nvml
load_fake_nvml(Path(sys.argv[1]))
from agents.exporter import build_exporter
from agents.gpu.nvml import NvmlBackend
backend = NvmlBackend(watch_events=False)
registry, collector = build_exporter("old-driver")
collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
collector.attach_backend(backend)
for _ in range(3):
    collector.set_gpus(backend.sample())
    time.sleep(0.15)
print(collector.render().decode())
backend.close()
"""


def test_a_driver_without_gpm_or_codec_functions_gives_no_such_series(fake_nvml_cache: Path) -> None:  # noqa: F811
    """A driver before GPM (R5xx on Ampere) has none of its symbols: pynvml raises
    FunctionNotFound on the first call, and the agent exports everything else."""
    omit = [
        "nvmlGpmQueryDeviceSupport",
        "nvmlGpmSampleAlloc",
        "nvmlGpmSampleFree",
        "nvmlGpmSampleGet",
        "nvmlGpmMigSampleGet",
        "nvmlGpmMetricsGet",
        "nvmlDeviceGetEncoderUtilization",
        "nvmlDeviceGetDecoderUtilization",
    ]
    library = build_fake_nvml(fake_nvml_cache, omit=omit)
    done = subprocess.run(
        [sys.executable, "-c", OLD_DRIVER_SCRIPT, str(library)],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    text = done.stdout
    assert "\nDCGM_FI_DEV_GPU_TEMP{" in text and "\nDCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL{" in text
    assert "DCGM_FI_PROF_" not in text and "DCGM_FI_DEV_ENC_UTIL" not in text and "DCGM_FI_DEV_DEC_UTIL" not in text
