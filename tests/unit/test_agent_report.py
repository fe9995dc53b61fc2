"""The daemon's report path: health folded into telemetry, XID events and inventory on the wire,
and the spool when the control plane is away (a real AgentClient over an httpx mock transport)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

import httpx
import pytest

from agents.client import AgentClient
from agents.config import AgentConfig
from agents.daemon import (
    FINAL_DRAIN_S,
    MAX_HEALTH_REASONS,
    SYSTEM_CLOCK,
    XID_EVENTS_PER_REPORT,
    Agent,
    Clock,
    judge_health,
)
from agents.exporter import AgentCollector
from agents.gpu.base import GpuBackend
from agents.gpu.sim import SimBackend
from agents.health import GpuHealthTracker
from agents.protocol import (
    MAX_BATCH_REPORTS,
    BatchedResult,
    DesiredState,
    GpuHealthState,
    GpuInventory,
    GpuTelemetry,
    HealthAction,
    RegisterResponse,
    ReportBatch,
    ReportBatchResponse,
    ReportRequest,
    ReportResponse,
    XidEvent,
)
from agents.runtime.processes import ProcessRunner
from agents.spool import Spool
from agents.state import FinishedLedger, SeqAllocator

H, A = GpuHealthState, HealthAction


# -- judge_health: plain objects -------------------------------------------------------------------


def telemetry(uuid: str = "GPU-0", **fields: object) -> GpuTelemetry:
    return GpuTelemetry.model_validate({"uuid": uuid, "index": 0, **fields})


def xid(code: int, at: float = 100.0, uuid: str = "GPU-0") -> XidEvent:
    return XidEvent(uuid=uuid, xid=code, at=at)


def test_events_and_readings_become_each_gpus_health() -> None:
    trackers: dict[str, GpuHealthTracker] = {}
    samples = [telemetry("GPU-0", energy_mj=10), telemetry("GPU-1", energy_mj=10, remapped_rows_pending=True)]
    judged = judge_health(trackers, samples, [xid(79)], now=100.0)
    assert (judged[0].health, judged[0].health_action) == (H.UNHEALTHY, A.REBOOT_NODE)
    assert judged[0].health_reasons == ["XID 79: GPU fell off the bus: reboot the node"]
    assert (judged[1].health, judged[1].health_action) == (H.UNHEALTHY, A.RESET_GPU)
    assert judged[0].energy_mj == 10 and judged[0].uuid == "GPU-0"  # the rest of the sample is untouched
    # The next report has no new events: the condition is remembered until what clears it happens.
    again = judge_health(trackers, [telemetry("GPU-0", energy_mj=20), telemetry("GPU-1", energy_mj=20)], [], now=105)
    assert again[0].health is H.UNHEALTHY
    assert again[1].health is H.UNHEALTHY  # remapped_rows_pending None: cannot read it, keep what we knew
    cleared = judge_health(
        trackers,
        [telemetry("GPU-0", energy_mj=5), telemetry("GPU-1", energy_mj=30, remapped_rows_pending=False)],
        [],
        now=110,
    )
    assert [g.health for g in cleared] == [H.HEALTHY, H.HEALTHY]  # a GPU reset (energy went back); remap done


def test_a_double_bit_ecc_count_that_grows_makes_the_gpu_unhealthy() -> None:
    trackers: dict[str, GpuHealthTracker] = {}
    judge_health(trackers, [telemetry(ecc_volatile_dbe=0)], [], now=1)
    judged = judge_health(trackers, [telemetry(ecc_volatile_dbe=1)], [], now=2)
    assert (judged[0].health, judged[0].health_action) == (H.UNHEALTHY, A.RESET_GPU)


def test_events_of_a_gpu_that_is_not_sampled_reach_its_tracker() -> None:
    trackers: dict[str, GpuHealthTracker] = {}
    judge_health(trackers, [telemetry("GPU-0")], [xid(79, uuid="GPU-9")], now=1)
    back = judge_health(trackers, [telemetry("GPU-0"), telemetry("GPU-9")], [], now=2)
    assert back[1].health is H.UNHEALTHY


def test_health_reasons_stay_within_the_wire_limit() -> None:
    events = [xid(1000 + i) for i in range(MAX_HEALTH_REASONS + 4)]  # unknown XIDs: one condition each
    judged = judge_health({}, [telemetry()], events, now=100)
    reasons = judged[0].health_reasons
    assert len(reasons) == MAX_HEALTH_REASONS and reasons[-1] == "... and 5 more"
    ReportRequest.model_validate_json(
        ReportRequest(protocol_version=1, seq=1, sent_at=0, gpus=judged).model_dump_json()
    )  # the control plane would accept it


# -- the report path of a running Agent ------------------------------------------------------------


class FakeBackend:
    """A GpuBackend with XID events and inventory changes, driven by the test."""

    name = "sim"

    def __init__(self) -> None:
        self.gpus = [
            GpuInventory(index=i, uuid=f"GPU-{i}", name="NVIDIA GB300", memory_total_mib=1000) for i in range(2)
        ]
        self.events: list[XidEvent] = []
        self.changed = False
        self.energy = 0

    def driver_version(self) -> str | None:
        return "580.82.07"

    def inventory(self) -> list[GpuInventory]:
        return list(self.gpus)

    def sample(self) -> list[GpuTelemetry]:
        self.energy += 1000
        return [GpuTelemetry(uuid=g.uuid, index=g.index, energy_mj=self.energy) for g in self.gpus]

    def memory_reserved_mib(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass

    def drain_events(self) -> list[XidEvent]:
        events, self.events = self.events, []
        return events

    def inventory_changed(self) -> bool:
        changed, self.changed = self.changed, False
        return changed


class FakeControlPlane:
    """The report endpoints' contract: dedup by seq, 4xx for what the test refuses, down on demand;
    a batch folds its reports in order as single ones (``batches=False``: a control plane without
    the batch route, which answers it 404)."""

    def __init__(self, *, batches: bool = True) -> None:
        self.batches = batches
        self.requests: list[tuple[str, int]] = []  # ("single" | "batch", reports carried)
        self.on_request: Callable[[], None] | None = None  # e.g. time passing on the test's clock
        self.up = True
        self.refuse: dict[int, int] = {}  # seq -> HTTP status
        self.refuse_all: int | None = None
        self.received: list[ReportRequest] = []
        self.last_seq = -1

    @property
    def seqs(self) -> list[int]:
        return [r.seq for r in self.received]

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.on_request is not None:
            self.on_request()
        if not self.up:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path.endswith("/reports/batch"):
            if not self.batches:
                self.requests.append(("batch refused", 0))
                return httpx.Response(404, json={"detail": "Not Found"})
            if self.refuse_all is not None:
                return httpx.Response(self.refuse_all, json={"detail": "refused"})
            batch = ReportBatch.model_validate_json(request.content)
            self.requests.append(("batch", len(batch.reports)))
            results = []
            for report in batch.reports:
                status = self.refuse.get(report.seq)
                if status is not None:
                    detail = f"report {report.seq} is bad"
                    results.append(
                        BatchedResult(seq=report.seq, accepted=False, refused_status=status, refused_detail=detail)
                    )
                    continue
                duplicate = self._fold(report)
                results.append(BatchedResult(seq=report.seq, accepted=not duplicate, duplicate=duplicate))
            return httpx.Response(200, content=ReportBatchResponse(results=results, generation=0).model_dump_json())
        if not request.url.path.endswith("/reports"):
            return httpx.Response(200, content=DesiredState(node_id="n1", generation=0).model_dump_json())
        report = ReportRequest.model_validate_json(request.content)
        self.requests.append(("single", 1))
        status = self.refuse_all or self.refuse.get(report.seq)
        if status is not None:
            return httpx.Response(status, json={"detail": f"report {report.seq} is bad"})
        duplicate = self._fold(report)
        return httpx.Response(
            200, content=ReportResponse(accepted=not duplicate, duplicate=duplicate, generation=0).model_dump_json()
        )

    def _fold(self, report: ReportRequest) -> bool:
        duplicate = report.seq <= self.last_seq
        if not duplicate:
            self.received.append(report)
            self.last_seq = report.seq
        return duplicate


BackendT = TypeVar("BackendT", bound=GpuBackend)


class Node(Generic[BackendT]):
    def __init__(
        self,
        state_dir: Path,
        backend: BackendT,
        control_plane: FakeControlPlane,
        *,
        metrics_url: str | None = None,
        spool_max_bytes: int | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.backend = backend
        bound = {} if spool_max_bytes is None else {"max_bytes": spool_max_bytes}
        self.spool = Spool(state_dir / "spool", **bound)
        self.client = AgentClient("http://cp", credential="c", transport=httpx.MockTransport(control_plane.handle))
        cfg = AgentConfig(
            server="http://cp",
            state_dir=state_dir,
            backend="sim",
            hostname="tray01",
            advertise_addr="10.0.0.1",
            metrics_addr="127.0.0.1",
            metrics_port=0,
            log_level="INFO",
        )
        self.agent = Agent(
            cfg,
            registration=RegisterResponse(
                node_id="n1", credential="c", report_interval_s=5, watch_timeout_s=1, lease_ttl_s=30
            ),
            backend=backend,
            runner=ProcessRunner(state_dir / "logs"),
            client=self.client,
            collector=AgentCollector("tray01"),
            seqs=SeqAllocator(state_dir / "seq.json", block=10),
            finished=FinishedLedger(state_dir / "finished.json"),
            spool=self.spool,
            stop=threading.Event(),
            metrics_url=metrics_url,
            clock=clock,
        )


@pytest.fixture
def cp() -> FakeControlPlane:
    return FakeControlPlane()


@pytest.fixture
def node(tmp_path: Path, cp: FakeControlPlane) -> Iterator[Node[FakeBackend]]:
    made = Node(tmp_path, FakeBackend(), cp)
    yield made
    made.client.close()


def test_reports_wait_in_the_spool_and_reach_the_control_plane_in_order(
    node: Node[FakeBackend], cp: FakeControlPlane
) -> None:
    node.agent.report_once()
    assert cp.seqs == [1] and len(node.spool) == 0
    cp.up = False
    for _ in range(3):
        node.agent.report_once()
    assert cp.seqs == [1] and len(node.spool) == 3
    cp.up = True
    node.agent.report_once()  # the spooled ones first, then the new one behind them
    assert cp.seqs == [1, 2, 3, 4, 5]
    assert len(node.spool) == 0 and node.spool.stats().spooled_bytes == 0
    energy = [e for r in cp.received if (e := r.gpus[0].energy_mj) is not None]
    assert len(energy) == 5 and energy == sorted(energy)  # cumulative counters arrive as they were sampled


def test_a_refused_spooled_report_is_dropped_and_the_rest_still_go(
    node: Node[FakeBackend], cp: FakeControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    cp.up = False
    for _ in range(3):
        node.agent.report_once()  # seqs 1, 2, 3
    cp.up, cp.refuse[2] = True, 422
    with caplog.at_level(logging.ERROR, logger="agents.daemon"):
        node.agent.report_once()
    assert cp.seqs == [1, 3, 4]
    assert "refused report 2 (HTTP 422): report 2 is bad; dropping it" in caplog.text
    assert node.spool.stats().rejected == 1 and len(node.spool) == 0


def test_a_refused_credential_does_not_empty_the_spool(node: Node[FakeBackend], cp: FakeControlPlane) -> None:
    cp.refuse_all = 401
    node.agent.report_once()
    node.agent.report_once()
    assert len(node.spool) == 2 and node.spool.stats().rejected == 0
    cp.refuse_all = None
    node.agent.report_once()
    assert cp.seqs == [1, 2, 3]


def test_a_restarted_agent_sends_the_previous_ones_spooled_reports_first(
    tmp_path: Path, node: Node[FakeBackend], cp: FakeControlPlane
) -> None:
    cp.up = False
    node.agent.report_once()
    node.agent.report_once()
    cp.up = True
    restarted = Node(tmp_path, FakeBackend(), cp)  # same state dir: spool and seq file
    try:
        restarted.agent.report_once()
    finally:
        restarted.client.close()
    assert cp.seqs[:2] == [1, 2] and cp.seqs[2] > 2 and len(cp.seqs) == 3


def test_the_final_report_at_shutdown_drains_for_a_bounded_time(node: Node[FakeBackend], cp: FakeControlPlane) -> None:
    cp.up = False
    node.agent.report_once()
    cp.up = True
    node.agent._stop.set()  # shutting down: the loop's drain stops, the final one still sends
    node.agent.report_once()
    assert cp.seqs == [] and len(node.spool) == 2
    node.agent.report_once(final=True)
    assert cp.seqs == [1, 2, 3]


def test_xid_events_go_on_the_wire_once_and_set_the_gpus_health(node: Node[FakeBackend], cp: FakeControlPlane) -> None:
    node.backend.events = [xid(79, uuid="GPU-1")]
    node.agent.report_once()
    node.agent.report_once()
    first, second = cp.received
    assert first.xid_events == [xid(79, uuid="GPU-1")] and second.xid_events == []
    for report in (first, second):
        assert [g.health for g in report.gpus] == [H.HEALTHY, H.UNHEALTHY]
        assert report.gpus[1].health_action is A.REBOOT_NODE


def test_an_xid_storm_is_spread_over_reports_within_the_wire_limit(
    node: Node[FakeBackend], cp: FakeControlPlane
) -> None:
    node.backend.events = [xid(13, at=float(i)) for i in range(XID_EVENTS_PER_REPORT + 100)]
    node.agent.report_once()
    node.agent.report_once()
    assert [len(r.xid_events) for r in cp.received] == [XID_EVENTS_PER_REPORT, 100]
    assert [e.at for r in cp.received for e in r.xid_events] == [float(i) for i in range(XID_EVENTS_PER_REPORT + 100)]


def test_the_inventory_goes_with_the_first_report_and_after_each_change(
    node: Node[FakeBackend], cp: FakeControlPlane
) -> None:
    node.agent.report_once()
    node.agent.report_once()
    node.backend.gpus = node.backend.gpus[:1]  # GPU-1 fell off the bus
    node.backend.changed = True
    node.agent.report_once()
    inventories = [r.inventory for r in cp.received]
    assert inventories[1] is None
    assert inventories[0] is not None and [g.uuid for g in inventories[0].gpus] == ["GPU-0", "GPU-1"]
    assert inventories[2] is not None and [g.uuid for g in inventories[2].gpus] == ["GPU-0"]
    assert (inventories[2].hostname, inventories[2].address, inventories[2].driver_version) == (
        "tray01",
        "10.0.0.1",
        "580.82.07",
    )


def test_a_report_carrying_events_survives_a_full_spool(tmp_path: Path, cp: FakeControlPlane) -> None:
    backend = FakeBackend()
    node = Node(tmp_path, backend, cp, spool_max_bytes=6000)
    try:
        cp.up = False
        for i in range(40):
            if i == 5:
                backend.events = [xid(48, uuid="GPU-0")]
            node.agent.report_once()
        assert node.spool.stats().dropped > 0
        cp.up = True
        node.agent.report_once()
    finally:
        node.client.close()
    assert cp.seqs[0] == 1 and cp.seqs[-1] == 41 and cp.seqs == sorted(cp.seqs)
    assert cp.received[0].inventory is not None  # the first report after a start: never dropped
    assert any(r.xid_events for r in cp.received)
    assert 6 in cp.seqs


def test_the_simulators_xids_reach_the_wire_with_a_verdict(tmp_path: Path, cp: FakeControlPlane) -> None:
    backend = SimBackend(2, node_index=1)
    node = Node(tmp_path, backend, cp)
    try:
        node.agent.report_once()
        sick = backend.inventory()[0].uuid
        backend.inject_xid(sick, 79)
        node.agent.report_once()
    finally:
        node.client.close()
    report = cp.received[1]
    assert [(e.uuid, e.xid) for e in report.xid_events] == [(sick, 79)]
    assert [(g.health, g.health_action) for g in report.gpus] == [(H.UNHEALTHY, A.REBOOT_NODE), (H.HEALTHY, A.NONE)]


# -- issue 9: batched replay, durable health, the metrics URL ----------------------------------------


def test_a_long_outage_is_replayed_in_batches_in_order(node: Node[FakeBackend], cp: FakeControlPlane) -> None:
    cp.up = False
    for _ in range(100):
        node.agent.report_once()
    assert len(node.spool) == 100
    cp.up = True
    node.agent.report_once()  # spooled behind the 100, then all 101 go
    assert cp.seqs == list(range(1, 102)) and len(node.spool) == 0
    assert cp.requests == [("batch", MAX_BATCH_REPORTS), ("batch", 101 - MAX_BATCH_REPORTS)]
    node.agent.report_once()  # nothing spooled: a live report goes alone
    assert cp.requests[-1] == ("single", 1) and cp.seqs[-1] == 102


def test_an_older_control_plane_gets_the_spooled_reports_one_by_one(tmp_path: Path) -> None:
    cp = FakeControlPlane(batches=False)
    node = Node(tmp_path, FakeBackend(), cp)
    try:
        cp.up = False
        for _ in range(3):
            node.agent.report_once()
        cp.up = True
        node.agent.report_once()
        cp.up = False
        node.agent.report_once()
        cp.up = True
        node.agent.report_once()
    finally:
        node.client.close()
    assert cp.seqs == [1, 2, 3, 4, 5, 6] and len(node.spool) == 0
    # The batch route is asked for once; the client then knows it is not there.
    assert cp.requests == [("batch refused", 0)] + [("single", 1)] * 6


def test_a_gpus_health_survives_an_agent_restart(tmp_path: Path, cp: FakeControlPlane) -> None:
    first = Node(tmp_path, FakeBackend(), cp)
    try:
        first.backend.energy = 5_000_000
        first.backend.events = [xid(79, uuid="GPU-1")]  # fell off the bus: unhealthy until a reset
        first.agent.report_once()
        first.agent.shutdown()
    finally:
        first.client.close()
    assert cp.received[-1].gpus[1].health is H.UNHEALTHY

    backend = FakeBackend()
    backend.energy = 6_000_000  # no reset while the agent was down: the counter went on
    second = Node(tmp_path, backend, cp)
    try:
        second.agent.report_once()
        assert [g.health for g in cp.received[-1].gpus] == [H.HEALTHY, H.UNHEALTHY]
        assert cp.received[-1].gpus[1].health_action is A.REBOOT_NODE
        second.agent.shutdown()
    finally:
        second.client.close()

    rebooted = FakeBackend()
    rebooted.energy = 10  # the energy counter went back: the node was rebooted while the agent was down
    third = Node(tmp_path, rebooted, cp)
    try:
        third.agent.report_once()
    finally:
        third.client.close()
    assert [g.health for g in cp.received[-1].gpus] == [H.HEALTHY, H.HEALTHY]


def test_a_corrupt_health_file_is_logged_and_ignored(
    tmp_path: Path, cp: FakeControlPlane, caplog: pytest.LogCaptureFixture
) -> None:
    for garbage in (b"{not json", b'{"version": 1, "gpus": {"GPU-1": {"conditions": 7}}}', b"\xff\xfe"):
        (tmp_path / "health.json").write_bytes(garbage)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="agents.state"):
            node = Node(tmp_path, FakeBackend(), cp)
        try:
            assert "health state" in caplog.text and "corrupt" in caplog.text, garbage
            node.agent.report_once()
        finally:
            node.client.close()
        assert [g.health for g in cp.received[-1].gpus] == [H.HEALTHY, H.HEALTHY]


def test_the_health_file_is_written_atomically_when_a_condition_changes(
    tmp_path: Path, node: Node[FakeBackend], cp: FakeControlPlane
) -> None:
    path = tmp_path / "health.json"
    node.agent.report_once()
    before = path.read_bytes()
    node.backend.events = [xid(79, uuid="GPU-0")]
    node.agent.report_once()
    after = path.read_bytes()
    assert before != after and b"xid:79" in after
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert not list(tmp_path.glob(".health.json.*"))  # no temporary file left behind


def test_reports_carry_the_agents_metrics_url(tmp_path: Path, cp: FakeControlPlane) -> None:
    node = Node(tmp_path, FakeBackend(), cp, metrics_url="http://10.0.0.1:9400/metrics")
    try:
        node.agent.report_once()
    finally:
        node.client.close()
    assert cp.received[-1].metrics_url == "http://10.0.0.1:9400/metrics"


@pytest.mark.parametrize(
    ("listen", "advertise", "url"),
    [
        ("127.0.0.1", "10.0.0.1", "http://127.0.0.1:9400/metrics"),
        ("0.0.0.0", "10.0.0.1", "http://10.0.0.1:9400/metrics"),
        ("::", "fd00::7", "http://[fd00::7]:9400/metrics"),
        ("::1", "10.0.0.1", "http://[::1]:9400/metrics"),
    ],
)
def test_the_metrics_url_is_one_others_can_reach(listen: str, advertise: str, url: str) -> None:
    cfg = AgentConfig(
        server="http://cp",
        state_dir=Path("/nonexistent"),
        backend="sim",
        hostname="tray01",
        advertise_addr=advertise,
        metrics_addr=listen,
        metrics_port=0,
        log_level="INFO",
    )
    assert cfg.metrics_url(9400) == url


class SetClock:
    """A clock the test sets (an implementation of ``agents.daemon.Clock``, not a patch)."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.mono = 1000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono


def test_the_agent_reads_time_from_the_clock_it_is_given(tmp_path: Path, cp: FakeControlPlane) -> None:
    clock = SetClock(1_800_000_000.0)
    node = Node(tmp_path, FakeBackend(), cp, clock=clock)
    try:
        node.backend.events = [xid(13, at=1_800_000_000.0, uuid="GPU-1")]  # an application error: quiet clears
        node.agent.report_once()
        assert cp.received[-1].sent_at == 1_800_000_000.0
        assert [g.health_action for g in cp.received[-1].gpus] == [A.NONE, A.NOTIFY_TENANT]
        clock.now += 599.0
        node.agent.report_once()
        assert cp.received[-1].sent_at == 1_800_000_599.0
        assert [g.health_action for g in cp.received[-1].gpus] == [
            A.NONE,
            A.NOTIFY_TENANT,
        ]  # still within the quiet window
        clock.now += 1.0
        node.agent.report_once()
        assert [g.health_action for g in cp.received[-1].gpus] == [
            A.NONE,
            A.NONE,
        ]  # 600 s of this clock without a recurrence
    finally:
        node.client.close()


def test_the_final_drain_is_bounded_by_the_clocks_monotonic_time(tmp_path: Path, cp: FakeControlPlane) -> None:
    clock = SetClock(1_800_000_000.0)
    node = Node(tmp_path, FakeBackend(), cp, clock=clock)
    try:
        cp.up = False
        for _ in range(99):
            node.agent.report_once()
        cp.up = True
        node.agent._stop.set()  # shutting down: only the final report drains, for FINAL_DRAIN_S

        def slow() -> None:
            clock.mono += FINAL_DRAIN_S + 1  # this exchange takes longer than the whole final drain may

        cp.on_request = slow
        node.agent.report_once(final=True)
    finally:
        node.client.close()
    assert cp.seqs == list(range(1, MAX_BATCH_REPORTS + 1))  # one batch went, then the deadline had passed
    assert len(node.spool) == 100 - MAX_BATCH_REPORTS


def test_only_the_clock_module_reads_the_hosts_clocks() -> None:
    import ast

    import agents.daemon

    package = Path(agents.daemon.__file__).parent
    modules = sorted(package.glob("*.py"))
    assert len(modules) > 5
    for module in modules:
        if module.name == "clock.py":
            continue
        tree = ast.parse(module.read_text())
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "time"
            and node.attr in {"time", "monotonic", "perf_counter"}
        ]
        assert not calls, f"{module.name} reads the host's clock at line {calls[0].lineno}"
