"""A 4-GPU tray with every field present, served over HTTP and linted by the real promtool.

dcgm-exporter's own output does not lint clean: its counters have no lower-case ``_total``
suffix and ``modelName`` is camel case. We copy both on purpose (dashboards select them), so
the test pins promtool's findings to exactly those, on DCGM_* families only, and requires the
Switchyard series to lint clean on their own. A parse error (promtool exit 1) always fails.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from agents.exporter import AgentCollector, MetricsServer, SpoolStats, build_exporter, render_text
from agents.gpu.sim import SimBackend
from agents.protocol import GpuHealthState, GpuTelemetry, HealthAction

PROMTOOL = "/usr/bin/promtool"
DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
OUR_GPU_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "Hostname"]
# dcgm-exporter's counters, whose names promtool wants to end in "_total".
DCGM_COUNTERS = {
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
}
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def promtool(text: str) -> tuple[int, list[str]]:
    if not shutil.which(PROMTOOL):
        pytest.fail(f"{PROMTOOL} is required (Debian package 'prometheus'); this test is not skipped")
    done = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    problems = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode, problems


@pytest.fixture
def tray() -> Iterator[tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]]]:
    now = [1_760_000_000.0]
    backend = SimBackend(4, node_index=15, clock=lambda: now[0], seed=3)
    gpus = backend.inventory()
    backend.set_load(gpus[0].uuid, 1.0, 200_000.0)
    backend.set_processes(gpus[0].uuid, [4242, 4243])
    backend.set_load(gpus[1].uuid, 0.5, 50_000.0)
    backend.set_processes(gpus[1].uuid, [5151])
    backend.inject_xid(gpus[1].uuid, 13)
    backend.inject_xid(gpus[1].uuid, 13)
    backend.inject_double_bit_error(gpus[2].uuid)
    backend.set_nvlink_links_up(gpus[3].uuid, 17)
    backend.set_recovery_action(gpus[3].uuid, 1)
    for _ in range(5):
        now[0] += 1.0
        samples = backend.sample()
    # The agent's health policy fills these; here, by hand.
    samples[2] = samples[2].model_copy(
        update={
            "health": GpuHealthState.UNHEALTHY,
            "health_action": HealthAction.RESET_GPU,
            "health_reasons": ["XID 48: double-bit ECC error"],
        }
    )
    registry, collector = build_exporter("tray-15", spool_stats=lambda: SpoolStats(depth=3, dropped=1))
    collector.set_inventory(gpus, backend.memory_reserved_mib())
    collector.set_gpus(samples)
    collector.record_report(7, ok=True, at=1_760_000_005.5)
    collector.set_assignments(1, {gpus[0].uuid: "wl-a", gpus[1].uuid: "wl-b"})
    server = MetricsServer(registry, host="127.0.0.1", port=0).start()
    yield server, collector, backend, samples
    server.close()


def parse(text: str) -> tuple[dict[str, str], list[tuple[str, list[tuple[str, str]], str]]]:
    types: dict[str, str] = {}
    samples = []
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            types[name] = typ
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            labels = re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or "")
            samples.append((match["name"], labels, match["value"]))
    return types, samples


def test_every_field_is_present_in_the_sample(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    _, _, _, samples = tray
    for gpu in samples:
        assert [k for k, v in gpu.model_dump().items() if v is None] == []


def test_promtool_finds_only_the_dcgm_compatibility_deviations(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    server, _, _, _ = tray
    response = httpx.get(server.url, timeout=5.0)
    assert response.status_code == 200
    code, problems = promtool(response.text)
    assert code in (0, 3), problems  # 3: lint findings; 1 would be a parse error
    types, _ = parse(response.text)
    dcgm_families = {name for name in types if name.startswith("DCGM_")}
    assert len(dcgm_families) == 25
    expected = {f"{name} label names should be written in 'snake_case' not 'camelCase'" for name in dcgm_families}
    expected |= {f'{name} counter metrics should have "_total" suffix' for name in DCGM_COUNTERS}
    expected.add("DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'")
    assert set(problems) == expected
    assert not [p for p in problems if not p.startswith("DCGM_")]


def test_switchyard_series_lint_clean_on_their_own(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    server, _, _, _ = tray
    text = httpx.get(server.url, timeout=5.0).text
    ours = "".join(line + "\n" for line in text.splitlines() if "DCGM_" not in line)
    assert "switchyard_gpu_xid_total" in ours and "switchyard_agent_spool_depth" in ours
    assert promtool(ours) == (0, [])


def test_dcgm_names_types_and_labels_for_all_four_gpus(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    server, _, backend, _ = tray
    text = httpx.get(server.url, timeout=5.0).text
    types, samples = parse(text)
    inventory = {g.uuid: g for g in backend.inventory()}
    for name, labels, _ in samples:
        keys = [k for k, _ in labels]
        values = dict(labels)
        if name.startswith("DCGM_"):
            assert keys == DCGM_LABELS, name
            assert values["modelName"] == "NVIDIA GB300"
        elif name.startswith("switchyard_gpu_") and name != "switchyard_gpu_owner_info":
            assert keys[:5] == OUR_GPU_LABELS, name
        if "UUID" in values and "gpu" in values:
            gpu = inventory[values["UUID"]]
            assert values["gpu"] == str(gpu.index)
            assert values["pci_bus_id"] == gpu.pci_bus_id
            assert values["device"] == f"nvidia{gpu.index}"
            assert values["Hostname"] == "tray-15"
    per_gpu = {n for n, labels, _ in samples if n.startswith("DCGM_") and dict(labels)["gpu"] == "3"}
    assert per_gpu == {n for n in types if n.startswith("DCGM_")}  # every DCGM family for every GPU
    assert {dict(labels)["gpu"] for n, labels, _ in samples if n == "DCGM_FI_DEV_GPU_TEMP"} == {"0", "1", "2", "3"}
    assert [k for k in types if k.startswith("DCGM_FI_PROF_")] == []  # no value, no series


def test_switchyard_values(tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]]) -> None:
    server, _, backend, samples = tray
    text = httpx.get(server.url, timeout=5.0).text
    types, parsed = parse(text)
    uuids = [g.uuid for g in backend.inventory()]

    def value(name: str, gpu: int | None = None, **extra: str) -> str:
        found = [
            v
            for n, labels, v in parsed
            if n == name
            and (gpu is None or dict(labels).get("gpu") == str(gpu))
            and all(dict(labels).get(k) == x for k, x in extra.items())
        ]
        assert len(found) == 1, (name, gpu, extra, found)
        return found[0]

    assert types["switchyard_gpu_xid_total"] == "counter"
    assert value("switchyard_gpu_xid_total", 1, xid="13") == "2"
    assert value("switchyard_gpu_xid_total", 2, xid="48") == "1"
    assert value("switchyard_gpu_xid_total", 3, xid="154") == "1"
    assert value("DCGM_FI_DEV_XID_ERRORS", 1) == "13"
    assert value("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 2) == "1"
    assert value("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 2) == "1"
    assert value("DCGM_FI_DEV_ROW_REMAP_PENDING", 2) == "1"
    assert value("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 0) == "4"  # SW power cap at full load
    assert value("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", 2) == "1"  # idle
    # DCGM's first reading of NVLink bandwidth is 0: a rate needs two (tests/unit/test_dcgm_parity.py).
    assert value("DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL", 0) == "0"
    assert value("DCGM_FI_DEV_POWER_MGMT_LIMIT", 0) == "1400"
    assert value("switchyard_gpu_health", 2) == "2"
    assert value("switchyard_gpu_health", 0) == "0"
    assert value("switchyard_gpu_health_action", 2, action="reset_gpu") == "1"
    assert value("switchyard_gpu_health_action", 0, action="none") == "1"
    assert value("switchyard_gpu_recovery_action", 3) == "1"
    assert value("switchyard_gpu_nvlink_links_up", 3) == "17"
    assert value("switchyard_gpu_fabric_healthy", 3) == "0"
    assert value("switchyard_gpu_fabric_state", 3, state="completed") == "1"
    assert value("switchyard_gpu_processes", 0) == "2"
    assert float(value("switchyard_gpu_module_power_watts", 0)) > float(value("DCGM_FI_DEV_POWER_USAGE", 0))
    assert value("switchyard_gpu_owner_info", UUID=uuids[0], workload_id="wl-a") == "1"
    assert value("switchyard_agent_spool_depth") == "3"
    assert value("switchyard_agent_spool_dropped_total") == "1"
    assert value("switchyard_agent_gpus") == "4"
    # The owner is an info series, never a label on the GPU series.
    assert {n for n, labels, _ in parsed if "workload_id" in dict(labels)} == {"switchyard_gpu_owner_info"}


def test_collect_gives_the_same_series_as_the_text(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    """The cached hand-built text and Collector.collect() come from the same definitions."""
    server, collector, _, _ = tray
    text = httpx.get(server.url, timeout=5.0).text
    plain = CollectorRegistry(auto_describe=False)
    plain.register(collector)
    assert render_text(plain).decode() == text
    assert {f.name for f in text_string_to_metric_families(text)} >= {"DCGM_FI_DEV_POWER_USAGE", "switchyard_gpu_xid"}


def test_a_new_sample_replaces_the_cached_text_and_a_failing_spool_provider_costs_only_its_series(
    tray: tuple[MetricsServer, AgentCollector, SimBackend, list[GpuTelemetry]],
) -> None:
    server, collector, _, samples = tray
    first = httpx.get(server.url, timeout=5.0).text
    assert httpx.get(server.url, timeout=5.0).text == first  # cached, identical
    collector.set_gpus([samples[0].model_copy(update={"temperature_gpu_c": 77.0})])
    second = httpx.get(server.url, timeout=5.0).text
    assert 'DCGM_FI_DEV_GPU_TEMP{gpu="0"' in second and "} 77\n" in second
    assert 'gpu="1"' not in second

    def broken() -> SpoolStats:
        raise RuntimeError("spool is gone")

    collector.set_spool_stats_provider(broken)
    response = httpx.get(server.url, timeout=5.0)
    assert response.status_code == 200
    assert "switchyard_agent_spool" not in response.text
    assert "DCGM_FI_DEV_GPU_TEMP" in response.text
