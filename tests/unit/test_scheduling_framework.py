"""Extension points: filters and permits are named plugins in a profile, not branches of decide().

Curtailment and GPU-mining admission will arrive this way; here two plugins of that shape (one
that holds spot work during a curtailment window, one that caps the GPUs a pass may start) run
inside the real core and their reasons reach the pending workloads with a bounded code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.scheduling.core import schedule
from controlplane.scheduling.framework import ALLOW, DEFAULT_PROFILE, PassView, QuotaFilter, SitePowerPermit, Verdict
from controlplane.scheduling.snapshot import FleetSnapshot, GpuSlot, NodeView, Placement, Unplaced, WorkloadRequest

MODEL = "NVIDIA GB300"


def fleet(nodes: int = 4) -> FleetSnapshot:
    return FleetSnapshot(
        tuple(
            NodeView(f"n{i}", "d0", "", tuple(GpuSlot(f"n{i}-g{g}", g, MODEL, True, False) for g in range(4)))
            for i in range(nodes)
        )
    )


def req(wid: str, gpus: int, priority: PriorityClass = PriorityClass.ON_DEMAND, at: float = 0.0) -> WorkloadRequest:
    return WorkloadRequest(wid, gpus, MODEL, NvlinkPolicy.REQUIRED, priority, at)


class HoldSpotDuringCurtailment:
    name = "curtailment"
    reserves = False

    def active(self, sched: PassView) -> bool:
        return True

    def check(self, sched: PassView, req: WorkloadRequest) -> PendingReason | None:
        if req.priority is PriorityClass.SPOT:
            return PendingReason(PendingCode.FILTERED, "held: the site is curtailed until 18:00; spot work waits")
        return None

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        return None


@dataclass
class StartCap:
    """At most ``cap`` GPUs started per pass (a ramp limit); counts what it let through."""

    cap: int
    name: str = "start-cap"
    reserves: bool = True
    started: list[str] = field(default_factory=list)
    used: int = 0

    def active(self, sched: PassView) -> bool:
        return True

    def permit(self, sched: PassView, req: WorkloadRequest, gpus: int) -> Verdict:
        if self.used + gpus > self.cap:
            return Verdict(reason=PendingReason(PendingCode.FILTERED, f"held: ramp limit of {self.cap} GPUs a pass"))
        return ALLOW

    def reserve(self, sched: PassView, req: WorkloadRequest, gpus_per_rack: dict[int, int], loose: int) -> None:
        self.used += sum(gpus_per_rack.values()) + loose
        self.started.append(req.workload_id)


def test_the_default_profile_is_quota_then_topology_then_site_power() -> None:
    assert [p.name for p in DEFAULT_PROFILE.filters] == [QuotaFilter.name]
    assert [p.name for p in DEFAULT_PROFILE.permits] == [SitePowerPermit.name]


def test_a_filter_plugin_holds_requests_with_its_reason_and_code() -> None:
    profile = DEFAULT_PROFILE.with_filters(HoldSpotDuringCurtailment())
    out = schedule(fleet(), [req("a", 4), req("b", 4, PriorityClass.SPOT, at=1)], profile)
    assert isinstance(out[0], Placement)
    assert out[1] == Unplaced("b", "held: the site is curtailed until 18:00; spot work waits", PendingCode.FILTERED)
    # Without the plugin the same queue places both: the core itself has no curtailment branch.
    assert all(isinstance(d, Placement) for d in schedule(fleet(), [req("a", 4), req("b", 4, PriorityClass.SPOT, 1)]))


def test_a_permit_plugin_sees_placements_and_keeps_per_pass_state() -> None:
    cap = StartCap(cap=8)
    profile = DEFAULT_PROFILE.with_permits(cap)
    out = schedule(fleet(), [req("a", 4), req("b", 4, at=1), req("c", 4, at=2), req("d", 1, at=3)], profile)
    assert [type(d).__name__ for d in out] == ["Placement", "Placement", "Unplaced", "Unplaced"]
    assert isinstance(out[2], Unplaced) and out[2].code is PendingCode.FILTERED and "ramp limit" in out[2].reason
    assert cap.started == ["a", "b"] and cap.used == 8
