"""The agent's /metrics, scraped over real HTTP: dcgm-exporter names, types, labels, absences."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agents.exporter import CONTENT_TYPE, AgentCollector, MetricsServer, build_exporter
from agents.gpu.sim import SimBackend
from agents.protocol import GpuTelemetry

DCGM_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
# dcgm-exporter's names and types (etc/default-counters.csv, dcp-metrics-included.csv and the
# DCGM field names for the rest).
DCGM_TYPES = {
    "DCGM_FI_DEV_SM_CLOCK": "gauge",
    "DCGM_FI_DEV_MEM_CLOCK": "gauge",
    "DCGM_FI_DEV_MEMORY_TEMP": "gauge",
    "DCGM_FI_DEV_GPU_TEMP": "gauge",
    "DCGM_FI_DEV_POWER_USAGE": "gauge",
    "DCGM_FI_DEV_POWER_MGMT_LIMIT": "gauge",
    # As dcgm-exporter exposes them: counters without the _total suffix.
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "counter",
    "DCGM_FI_DEV_GPU_UTIL": "gauge",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "gauge",
    "DCGM_FI_DEV_XID_ERRORS": "gauge",
    "DCGM_FI_DEV_CLOCKS_EVENT_REASONS": "gauge",
    "DCGM_FI_DEV_FB_FREE": "gauge",
    "DCGM_FI_DEV_FB_USED": "gauge",
    "DCGM_FI_DEV_FB_RESERVED": "gauge",
    "DCGM_FI_DEV_FB_TOTAL": "gauge",
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": "counter",
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": "counter",
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": "counter",
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": "counter",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "counter",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "counter",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "counter",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "gauge",
    "DCGM_FI_DEV_ROW_REMAP_PENDING": "gauge",
}
SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, AgentCollector, SimBackend]]:
    backend = SimBackend(2, node_index=3)
    registry, collector = build_exporter("tray-03")
    collector.set_inventory(backend.inventory(), backend.memory_reserved_mib())
    server = MetricsServer(registry, host="127.0.0.1", port=0).start()
    yield server, collector, backend
    server.close()


def scrape(
    server: MetricsServer,
) -> tuple[dict[str, str], list[tuple[str, dict[str, str], str]], httpx.Response]:
    response = httpx.get(server.url, timeout=5.0)
    types: dict[str, str] = {}
    samples = []
    for line in response.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            types[name] = typ
        elif line and not line.startswith("#"):
            match = SAMPLE.match(line)
            assert match, line
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
            samples.append((match["name"], labels, match["value"]))
    return types, samples, response


def test_dcgm_series_names_types_and_labels(served: tuple[MetricsServer, AgentCollector, SimBackend]) -> None:
    server, collector, backend = served
    assert server.port > 0
    backend.set_load(backend.inventory()[0].uuid, 0.5, 1000.0)
    collector.set_gpus(backend.sample())
    types, samples, response = scrape(server)
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert {n: t for n, t in types.items() if n.startswith("DCGM_")} == DCGM_TYPES
    assert {n: t for n, t in types.items() if not n.startswith("DCGM_")} == {
        "switchyard_gpu_module_power_watts": "gauge",
        "switchyard_gpu_processes": "gauge",
        "switchyard_gpu_nvlink_links_up": "gauge",
        "switchyard_gpu_nvlink_links": "gauge",
        "switchyard_gpu_nvlink_errors_total": "counter",
        "switchyard_gpu_recovery_action": "gauge",
        "switchyard_gpu_fabric_healthy": "gauge",
        "switchyard_gpu_fabric_state": "gauge",
        "switchyard_gpu_health": "gauge",
        "switchyard_gpu_health_action": "gauge",
        "switchyard_agent_reports_sent_total": "counter",
        "switchyard_agent_reports_failed_total": "counter",
        "switchyard_agent_running_assignments": "gauge",
        "switchyard_agent_gpus": "gauge",
    }
    inventory = backend.inventory()
    dcgm = [(n, labels, v) for n, labels, v in samples if n.startswith("DCGM_")]
    assert len(dcgm) == len(DCGM_TYPES) * 2  # the simulator fills every field dcgm-exporter has
    for name, labels, _ in dcgm:
        assert list(labels) == DCGM_LABELS, name  # dcgm-exporter's order too
        gpu = inventory[int(labels["gpu"])]
        assert labels["UUID"] == gpu.uuid
        assert labels["pci_bus_id"] == gpu.pci_bus_id
        assert labels["device"] == f"nvidia{gpu.index}"
        assert labels["modelName"] == "NVIDIA GB300"
        assert labels["Hostname"] == "tray-03"
    by_gpu0 = {n: v for n, labels, v in dcgm if labels["gpu"] == "0"}
    assert by_gpu0["DCGM_FI_DEV_GPU_UTIL"] == "50"
    assert by_gpu0["DCGM_FI_DEV_FB_USED"] == "1000"
    assert by_gpu0["DCGM_FI_DEV_FB_RESERVED"] == "947"
    assert by_gpu0["DCGM_FI_DEV_FB_FREE"] == str(284208 - 947 - 1000)
    assert by_gpu0["DCGM_FI_DEV_MEM_CLOCK"] == "3996"
    assert re.fullmatch(r"\d+", by_gpu0["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"])  # exact integer mJ
    # Prometheus' own parser accepts the exposition.
    parsed = {f.name for f in text_string_to_metric_families(response.text)}
    assert "DCGM_FI_DEV_POWER_USAGE" in parsed


def test_absent_fields_produce_no_series(served: tuple[MetricsServer, AgentCollector, SimBackend]) -> None:
    server, collector, backend = served
    full = backend.sample()[0]
    sparse = GpuTelemetry(uuid=backend.inventory()[1].uuid, index=1, temperature_gpu_c=41.0)
    collector.set_gpus([full, sparse])
    _, samples, _ = scrape(server)
    gpu1 = sorted(n for n, labels, _ in samples if labels.get("gpu") == "1")
    # FB_RESERVED is a static fact of the GPU, known even when the sample has no memory fields;
    # health always has a value (the agent's verdict), the rest is absent.
    assert gpu1 == [
        "DCGM_FI_DEV_FB_RESERVED",
        "DCGM_FI_DEV_GPU_TEMP",
        "switchyard_gpu_health",
        "switchyard_gpu_health_action",
    ]
    assert len([n for n, labels, _ in samples if labels.get("gpu") == "0" and n.startswith("DCGM_")]) == len(DCGM_TYPES)


def test_no_gpus_yet_means_no_dcgm_families(served: tuple[MetricsServer, AgentCollector, SimBackend]) -> None:
    server, _, _ = served
    types, samples, _ = scrape(server)
    assert not [name for name in types if name.startswith("DCGM_")]
    assert not [name for name, _, _ in samples if name.startswith("DCGM_")]


def test_agent_series_and_gpu_owner(served: tuple[MetricsServer, AgentCollector, SimBackend]) -> None:
    server, collector, backend = served
    uuid = backend.inventory()[1].uuid
    collector.record_report(41, ok=False, at=1000.0)
    collector.record_report(42, ok=True, at=1234.5)
    collector.record_report(43, ok=True, at=1240.0)
    collector.set_assignments(1, {uuid: "wl-7"})
    types, samples, _ = scrape(server)
    values = {(n, tuple(sorted(labels.items()))): v for n, labels, v in samples}
    assert values[("switchyard_agent_report_seq", ())] == "43"
    assert values[("switchyard_agent_reports_sent_total", ())] == "2"
    assert values[("switchyard_agent_reports_failed_total", ())] == "1"
    assert values[("switchyard_agent_last_report_success_timestamp_seconds", ())] == "1240"
    assert values[("switchyard_agent_running_assignments", ())] == "1"
    assert values[("switchyard_gpu_owner_info", (("UUID", uuid), ("workload_id", "wl-7")))] == "1"
    assert types["switchyard_gpu_owner_info"] == "gauge"
    collector.set_assignments(0, {})
    _, samples, _ = scrape(server)
    assert not [n for n, _, _ in samples if n == "switchyard_gpu_owner_info"]


def test_other_paths_are_404_and_nothing_lands_on_the_global_registry(
    served: tuple[MetricsServer, AgentCollector, SimBackend],
) -> None:
    server, collector, backend = served
    collector.set_gpus(backend.sample())
    assert httpx.get(f"http://127.0.0.1:{server.port}/nope", timeout=5.0).status_code == 404
    assert httpx.get(f"http://127.0.0.1:{server.port}/", timeout=5.0).status_code == 200
    global_text = prometheus_client.generate_latest(prometheus_client.REGISTRY).decode()
    assert "DCGM_" not in global_text and "switchyard_" not in global_text
