"""The scheduling core's rules with plain objects: preemption, power, quotas, topology, reasons."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TypeVar

from controlplane.domain.enums import NvlinkPolicy, OverQuotaPolicy, PriorityClass
from controlplane.domain.reasons import PendingCode, PendingReason
from controlplane.power.model import PowerModel
from controlplane.scheduling.baseline import first_fit
from controlplane.scheduling.core import place, queue_order, schedule
from controlplane.scheduling.fragmentation import fragmentation
from controlplane.scheduling.quota import check_quota
from controlplane.scheduling.snapshot import (
    Decision,
    FleetSnapshot,
    GpuSlot,
    MiningBlock,
    NodeView,
    Placement,
    Preempt,
    RunningWorkload,
    ShedMining,
    TenantPolicy,
    Unplaced,
    WorkloadRequest,
)

D = TypeVar("D", bound=Decision)

GB300 = "NVIDIA GB300"
OD, SPOT, RES, MINING = PriorityClass.ON_DEMAND, PriorityClass.SPOT, PriorityClass.RESERVED, PriorityClass.MINING


def node(
    name: str, domain: str | None = "d1", *, allocated: int = 0, unschedulable: str = "", rack: str | None = None
) -> NodeView:
    gpus = tuple(GpuSlot(f"{name}-g{i}", i, GB300, True, i < allocated) for i in range(4))
    return NodeView(name, domain, unschedulable, gpus, rack_id=rack)


def rack(domain: str, nodes: int, *, allocated: int = 0) -> list[NodeView]:
    """``nodes`` nodes in ``domain``; the first ``allocated`` GPUs (in node order) are allocated."""
    out = []
    for i in range(nodes):
        taken = max(0, min(4, allocated - 4 * i))
        out.append(node(f"{domain}-n{i}", domain, allocated=taken))
    return out


def running(
    wid: str,
    gpus: list[tuple[str, int]],
    priority: PriorityClass = SPOT,
    *,
    at: float = 0.0,
    tenant: str = "t",
    preempting: bool = False,
) -> RunningWorkload:
    """``gpus``: (node name, GPU index) pairs."""
    return RunningWorkload(
        wid, tenant, priority, tuple((n, f"{n}-g{i}") for n, i in gpus), at, GB300, preempting=preempting
    )


def req(
    wid: str,
    gpus: int,
    priority: PriorityClass = OD,
    nvlink: NvlinkPolicy = NvlinkPolicy.REQUIRED,
    *,
    at: float = 0.0,
    tenant: str = "t",
    hours: float | None = None,
    price: Decimal = Decimal(0),
) -> WorkloadRequest:
    return WorkloadRequest(
        wid,
        gpus,
        GB300,
        nvlink,
        priority,
        at,
        tenant_id=tenant,
        max_duration_s=None if hours is None else hours * 3600,
        price_usd_per_gpu_hour=price,
    )


def whole(n: str) -> list[tuple[str, int]]:
    return [(n, i) for i in range(4)]


def of(decisions: list[Decision], kind: type[D]) -> list[D]:
    return [d for d in decisions if isinstance(d, kind)]


def full_domain_with(*runs: RunningWorkload, nodes: int = 2, domain: str = "d1") -> FleetSnapshot:
    return FleetSnapshot(tuple(rack(domain, nodes, allocated=4 * nodes)), running=runs)


# -- preemption --------------------------------------------------------------------------------------


def test_preemption_frees_the_fewest_gpus() -> None:
    snap = full_domain_with(
        running("big", whole("d1-n0")),
        running("small", [("d1-n1", 0)]),
        running("small2", [("d1-n1", i) for i in (1, 2, 3)], at=1),
    )
    out = schedule(snap, [req("w", 1)])
    assert [p.victim_id for p in of(out, Preempt)] == ["small"]
    [wait] = of(out, Unplaced)
    assert wait.reason == "waiting for 1 NVIDIA GB300 GPU: 1 being freed by preempting 1 spot workload (grace 30 s)"


def test_preemption_takes_the_lowest_class_first_and_mining_at_once() -> None:
    snap = full_domain_with(running("spot", whole("d1-n0"), SPOT), running("mine", whole("d1-n1"), MINING))
    out = schedule(snap, [req("w", 4)])
    [p] = of(out, Preempt)
    assert (p.victim_id, p.grace_s, p.gpu_count) == ("mine", 0.0, 4)
    assert "mining work (at once)" in p.reason and "workload w" in p.reason


def test_preemption_takes_the_youngest_of_equals_with_the_stop_grace() -> None:
    snap = full_domain_with(running("old", whole("d1-n0"), at=10), running("young", whole("d1-n1"), at=20))
    snap = FleetSnapshot(snap.nodes, running=snap.running, stop_grace_s=45)
    [p] = of(schedule(snap, [req("w", 4)]), Preempt)
    assert (p.victim_id, p.grace_s) == ("young", 45)


def test_reserved_work_is_never_preempted() -> None:
    snap = full_domain_with(running("r1", whole("d1-n0"), RES), running("r2", whole("d1-n1"), RES))
    snap = FleetSnapshot(snap.nodes, running=snap.running, tenants={"t": TenantPolicy("t", reserved_gpus=64)})
    out = schedule(snap, [req("w", 4, RES)])
    assert not of(out, Preempt)
    assert isinstance(out[0], Unplaced) and "0/8 free" in out[0].reason


def test_rights_by_class() -> None:
    # on_demand may preempt spot and mining, never on_demand; spot only mining; mining nothing.
    snap = full_domain_with(running("od", whole("d1-n0"), OD), running("mine", whole("d1-n1"), MINING))
    assert [p.victim_id for p in of(schedule(snap, [req("w", 8, OD)]), Preempt)] == []
    assert [p.victim_id for p in of(schedule(snap, [req("w", 4, SPOT)]), Preempt)] == ["mine"]
    assert of(schedule(snap, [req("w", 4, MINING)]), Preempt) == []
    spot = full_domain_with(running("s", whole("d1-n0"), SPOT), running("s2", whole("d1-n1"), SPOT))
    assert of(schedule(spot, [req("w", 4, SPOT)]), Preempt) == []


def test_reserved_preempts_on_demand_only_within_its_reservation() -> None:
    base = full_domain_with(running("od", whole("d1-n0"), OD), running("od2", whole("d1-n1"), OD, at=1))
    tenants = {"acme": TenantPolicy("acme", reserved_gpus=8)}
    snap = FleetSnapshot(
        base.nodes, running=base.running + (running("mine-r", [], RES, tenant="acme"),), tenants=tenants
    )
    out = schedule(snap, [req("w", 4, RES, tenant="acme")])
    [p] = of(out, Preempt)
    assert p.victim_id == "od2" and "(within its reservation)" in p.reason
    # Already holding its 8 reserved GPUs elsewhere: beyond the reservation it ranks as on_demand.
    held = running("held", [("x", 0)] * 0, RES, tenant="acme")
    busy = FleetSnapshot(
        base.nodes,
        running=base.running
        + (RunningWorkload("held", "acme", RES, tuple(("far", f"far-g{i}") for i in range(8)), 0, GB300),),
        tenants=tenants,
    )
    assert held.gpu_count == 0
    assert of(schedule(busy, [req("w", 4, RES, tenant="acme")]), Preempt) == []


def test_a_younger_reserved_request_is_not_within_while_an_older_one_waits_on_the_reservation() -> None:
    """acme's reservation is 8 GPUs and nothing of it runs. Its older 8-GPU request is within
    (the queue's age order) but cannot be placed: only 4 preemptible GPUs exist. Its younger
    4-GPU request is beyond the reservation in the queue's order; the old core still gave it
    within rights at its turn (the pass had admitted nothing), so from the on_demand part of the
    order it preempted on_demand work. One view: it waits, and on_demand work keeps its GPUs."""
    base = full_domain_with(
        running("other", whole("d1-n0") + whole("d1-n1") + whole("d1-n2"), RES, tenant="other"),
        running("od", whole("d1-n3"), OD),
        nodes=4,
    )
    tenants = {"acme": TenantPolicy("acme", reserved_gpus=8), "other": TenantPolicy("other", reserved_gpus=12)}
    snap = FleetSnapshot(base.nodes, running=base.running, tenants=tenants)
    queue = [req("older", 8, RES, NvlinkPolicy.NONE, tenant="acme"), req("younger", 4, RES, at=1, tenant="acme")]
    assert of(schedule(snap, queue), Preempt) == []
    # Alone, the younger one is within and preempts on_demand work.
    [p] = of(schedule(snap, queue[1:]), Preempt)
    assert p.victim_id == "od" and "(within its reservation)" in p.reason


def test_queue_sort_puts_reserved_within_the_reservation_before_reserved_beyond_it() -> None:
    tenants = {"acme": TenantPolicy("acme", reserved_gpus=8), "zed": TenantPolicy("zed")}
    snap = FleetSnapshot((), tenants=tenants)
    queue = [
        req("beyond", 4, RES, at=0, tenant="zed"),
        req("od", 1, OD, at=0),
        req("within-late", 8, RES, at=5, tenant="acme"),
        req("over", 8, RES, at=6, tenant="acme"),
    ]
    assert [w.workload_id for w in queue_order(queue, snap)] == ["within-late", "beyond", "over", "od"]


def test_gpus_already_being_freed_are_waited_for_and_not_counted_twice() -> None:
    snap = full_domain_with(
        running("leaving", whole("d1-n0"), SPOT, preempting=True), running("s2", whole("d1-n1"), SPOT, at=5)
    )
    out = schedule(snap, [req("a", 4, OD, at=0), req("b", 4, OD, at=1)])
    preempts = of(out, Preempt)
    # "a" waits on the GPUs already under notice; "b" cannot count them again and preempts s2.
    assert [(p.victim_id, p.for_workload_id) for p in preempts] == [("s2", "b")]
    a, b = of(out, Unplaced)
    assert "4 being freed by work already under preemption notice" in a.reason
    assert "4 being freed by preempting 1 spot workload" in b.reason
    # A third request finds nothing left to free.
    third = schedule(snap, [req("a", 4, at=0), req("b", 4, at=1), req("c", 4, at=2)])
    assert [p.victim_id for p in of(third, Preempt)] == ["s2"]


def test_victims_must_make_the_gang_fit_its_domain() -> None:
    # A spot gang spans d1 and d2; freeing it gives d1 only 4: the 8-GPU NVLink gang needs a d2 victim too.
    nodes = tuple(rack("d1", 2, allocated=8) + rack("d2", 2, allocated=8))
    runs = (
        running("span", [*whole("d1-n0"), *whole("d2-n0")], SPOT, at=3),
        running("d1-rest", whole("d1-n1"), OD),
        running("d2-rest", whole("d2-n1"), SPOT, at=1),
    )
    out = schedule(FleetSnapshot(nodes, running=runs), [req("w", 8)])
    assert sorted(p.victim_id for p in of(out, Preempt)) == ["d2-rest", "span"]


def test_a_gang_of_two_domains_preempts_spot_and_then_waits_for_it() -> None:
    # Two 8-GPU domains, each held by one spot workload; a 16-GPU NVLink gang needs both whole.
    nodes = tuple(rack("d1", 2, allocated=8) + rack("d2", 2, allocated=8))
    spots = (
        running("s1", [*whole("d1-n0"), *whole("d1-n1")], SPOT),
        running("s2", [*whole("d2-n0"), *whole("d2-n1")], SPOT, at=1),
    )
    tenants = {"acme": TenantPolicy("acme", reserved_gpus=1024)}
    for priority in (RES, OD):
        snap = FleetSnapshot(nodes, running=spots, tenants=tenants, stop_grace_s=30.0)
        out = schedule(snap, [req("g", 16, priority, tenant="acme")])
        preempts = of(out, Preempt)
        assert sorted(p.victim_id for p in preempts) == ["s1", "s2"]
        assert all(p.grace_s == 30.0 and p.for_workload_id == "g" for p in preempts)
        [wait] = of(out, Unplaced)
        assert "in 2 NVLink domains" in wait.reason and "16 being freed by preempting 2 spot workloads" in wait.reason
        # Next pass, under notice: it waits for them without preempting again, and holds them from lower work.
        noticed = tuple(
            RunningWorkload(r.workload_id, r.tenant_id, r.priority, r.gpus, r.started_at, GB300, preempting=True)
            for r in spots
        )
        later = schedule(
            FleetSnapshot(nodes, running=noticed, tenants=tenants),
            [req("g", 16, priority, tenant="acme"), req("x", 8, SPOT, at=1)],
        )
        assert not of(later, Preempt)
        g, x = of(later, Unplaced)
        assert "16 being freed by work already under preemption notice" in g.reason
        assert "preemption notice" not in x.reason
    # A third domain of 8 free GPUs: one whole domain to free and one free one, never both spots.
    three = tuple(nodes + tuple(rack("d3", 2)))
    out = schedule(FleetSnapshot(three, running=spots), [req("g", 16, OD)])
    assert [p.victim_id for p in of(out, Preempt)] == ["s2"]  # the younger of equals
    # Reserved work is never a victim: nothing to preempt.
    held = tuple(RunningWorkload(r.workload_id, "acme", RES, r.gpus, r.started_at, GB300) for r in spots)
    out = schedule(FleetSnapshot(nodes, running=held, tenants=tenants), [req("g", 16, RES, tenant="acme")])
    assert not of(out, Preempt)


def test_a_preemptor_holds_its_free_gpus_from_lower_work() -> None:
    nodes = (node("a", allocated=0), node("b", allocated=4))
    out = schedule(FleetSnapshot(nodes, running=(running("s", whole("b")),)), [req("w", 8), req("x", 1, SPOT, at=1)])
    assert [p.victim_id for p in of(out, Preempt)] == ["s"]
    assert not of(out, Placement)  # "x" may not take the 4 free GPUs "w" is waiting to use
    assert "held for a preemptor" in of(out, Unplaced)[1].reason


# -- power -------------------------------------------------------------------------------------------


def power_model(site_cap_w: float, rack_cap_w: Mapping[str, float] | None = None) -> PowerModel:
    return PowerModel(
        site_cap_w=site_cap_w,
        pue=1.25,
        gpu_idle_w=180.0,
        gpu_limit_w=1400.0,
        node_overhead_w=1100.0,
        switch_trays_w_per_rack=3600.0,
        rack_cap_w=rack_cap_w or {},
    )


def it_draw(nodes: int, allocated: int) -> float:
    return 3600 + 1100 * nodes + 1400 * allocated + 180 * (4 * nodes - allocated)


def test_mining_is_shed_before_anything_else_never_below_its_minimum() -> None:
    nodes = tuple(rack("d1", 2))  # 8 idle GPUs
    site = it_draw(2, 0) * 1.25
    power = power_model(site + 10_000 + 2 * 1220 * 1.25)  # room for 2 GPUs without shedding
    snap = FleetSnapshot(
        nodes, running=(running("mine-gpu", []),), power=power, mining=MiningBlock(10_000, min_w=4_000)
    )
    out = schedule(snap, [req("w", 4)])
    [shed] = of(out, ShedMining)
    assert abs(shed.watts - 2 * 1220 * 1.25) < 1e-6 and shed.for_workload_id == "w"
    assert not of(out, Preempt) and len(of(out, Placement)) == 1
    assert out.index(shed) < out.index(of(out, Placement)[0])
    # 8 GPUs would need 7,320 W of mining: only 6,000 can go.
    [too_big] = schedule(snap, [req("w", 8)])
    assert isinstance(too_big, Unplaced) and "waiting for site power" in too_big.reason
    assert "frees only 0.006 MW" in too_big.reason and "MW limit" in too_big.reason


def test_site_cap_without_mining_names_the_megawatts() -> None:
    nodes = tuple(rack("d1", 2))
    power = power_model(it_draw(2, 0) * 1.25 + 1220 * 1.25 * 3)
    out = schedule(FleetSnapshot(nodes, power=power), [req("a", 2), req("b", 2, at=1)])
    assert isinstance(out[0], Placement)
    assert isinstance(out[1], Unplaced) and "no mining to shed" in out[1].reason


def test_each_rack_stays_under_its_cap() -> None:
    nodes = (node("a", "d1"), node("b", "d1"), node("c", "d2"))
    caps = {"d1": it_draw(2, 0) + 1220 * 2, "d2": it_draw(1, 0) + 1220 * 4}
    power = power_model(1e9, rack_cap_w=caps)
    snap = FleetSnapshot(nodes, power=power)
    [d] = schedule(snap, [req("w", 4)])
    assert isinstance(d, Placement) and d.ranks[0].node_id == "c"  # d1 has room for 2 only
    out = schedule(snap, [req("w", 4), req("v", 4, at=1), req("u", 2, at=2), req("t", 1, at=3)])
    assert [type(x).__name__ for x in out] == ["Placement", "Unplaced", "Placement", "Unplaced"]
    assert isinstance(out[1], Unplaced)
    assert "rack power" in out[1].reason and "rack d1 at its power cap" in out[1].reason


# -- quotas ------------------------------------------------------------------------------------------


def test_check_quota_concurrent_hours_and_spend() -> None:
    p = TenantPolicy(
        "t",
        max_gpus=1024,
        gpu_hours_limit=100.0,
        gpu_hours_used=90.0,
        spend_cap_usd=Decimal("50"),
        spend_used_usd=Decimal("40"),
        over_quota=OverQuotaPolicy.REJECT,
    )
    assert check_quota(p, req("w", 16), 1016) == PendingReason(
        PendingCode.QUOTA_GPUS, "tenant over its concurrent-GPU quota (1032/1024)"
    )
    assert check_quota(p, req("w", 4, hours=3), 0) == PendingReason(
        PendingCode.QUOTA_GPU_HOURS,
        "tenant over its monthly GPU-hours quota (102.0/100.0 GPU-h with this workload's 12.0)",
    )
    spend = check_quota(p, req("w", 2, hours=1, price=Decimal("6.00")), 0)
    assert spend is not None and spend.code is PendingCode.QUOTA_SPEND and "spend cap ($52.00/$50.00" in spend.text
    assert check_quota(p, req("w", 2, hours=1, price=Decimal("4.00")), 0) is None
    assert check_quota(p, req("w", 2), 0) is None  # no duration: admitted while under the limits


def test_over_quota_work_is_held_with_the_reason() -> None:
    snap = FleetSnapshot(
        tuple(rack("d1", 3)), running=(running("r", [("far", 0)] * 0),), tenants={"t": TenantPolicy("t", max_gpus=6)}
    )
    out = schedule(snap, [req("a", 4), req("b", 4, at=1), req("c", 2, at=2)])
    assert isinstance(out[0], Placement) and isinstance(out[2], Placement)
    assert out[1] == Unplaced("b", "held: tenant over its concurrent-GPU quota (8/6)", PendingCode.QUOTA_GPUS)


# -- topology and reasons ----------------------------------------------------------------------------


def test_whole_rack_and_two_rack_gangs_take_whole_domains() -> None:
    nodes = tuple(rack("d1", 18) + rack("d2", 18, allocated=4) + rack("d3", 18) + rack("d4", 18))
    out = schedule(FleetSnapshot(nodes), [req("big", 144), req("rack", 72, at=1), req("more", 72, at=2)])
    big, whole_rack, more = out
    assert isinstance(big, Placement) and isinstance(whole_rack, Placement)
    assert {r.node_id.split("-")[0] for r in big.ranks} == {"d1", "d3"}
    assert {r.node_id.split("-")[0] for r in whole_rack.ranks} == {"d4"}
    assert isinstance(more, Unplaced) and more.reason.startswith(
        "waiting for 72 NVIDIA GB300 GPUs: 68/288 free (220 allocated)"
    )


def test_reason_counts_every_exclusion() -> None:
    nodes = (*rack("d1", 15, allocated=60), node("c1", unschedulable="cordoned"), node("c2", unschedulable="cordoned"))
    unhealthy = NodeView("u", "d1", "", tuple(GpuSlot(f"u-g{i}", i, GB300, i != 0, False) for i in range(4)))
    [d] = schedule(FleetSnapshot((*nodes, unhealthy)), [req("w", 72)])
    assert isinstance(d, Unplaced)
    assert d.reason == ("waiting for 72 NVIDIA GB300 GPUs: 3/72 free (60 allocated, 8 cordoned, 1 unhealthy)")


def test_preferred_tries_one_domain_then_spreads_and_none_still_packs() -> None:
    nodes = (*rack("d1", 2, allocated=2), *rack("d2", 2, allocated=5))
    [pref] = schedule(FleetSnapshot(nodes), [req("w", 6, nvlink=NvlinkPolicy.PREFERRED)])
    assert isinstance(pref, Placement) and {r.node_id[:2] for r in pref.ranks} == {"d1"}
    [spread] = schedule(FleetSnapshot(nodes), [req("w", 8, nvlink=NvlinkPolicy.PREFERRED)])
    assert isinstance(spread, Placement) and spread.gpu_count == 8
    [small] = schedule(FleetSnapshot(nodes), [req("w", 1, nvlink=NvlinkPolicy.NONE)])
    assert isinstance(small, Placement) and small.ranks[0].node_id == "d1-n0"  # the tightest node


def test_fragmentation_metric() -> None:
    nodes = (*rack("d1", 2), *rack("d2", 2, allocated=1))
    frag = fragmentation(FleetSnapshot(nodes))
    assert (frag.free_gpus, frag.whole_free_nodes, frag.whole_free_domains, frag.largest_free_block) == (15, 3, 1, 8)
    assert abs(frag.outside_whole_nodes - 3 / 15) < 1e-9 and abs(frag.outside_whole_domains - 7 / 15) < 1e-9
    [p] = schedule(FleetSnapshot(nodes), [req("w", 3)])
    assert isinstance(p, Placement)
    assert fragmentation(FleetSnapshot(nodes), [p]).outside_whole_nodes == 0.0  # best fit filled the partial node


def test_baseline_first_fit_takes_the_first_node_that_fits() -> None:
    nodes = (*rack("d1", 2), *rack("d2", 2, allocated=5))
    [d] = first_fit(FleetSnapshot(nodes), [req("w", 3)])
    assert isinstance(d, Placement) and d.ranks[0].node_id == "d1-n0"
    [g] = first_fit(FleetSnapshot(nodes), [req("w", 8)])
    assert isinstance(g, Placement) and {r.node_id[:2] for r in g.ranks} == {"d1"}


def test_place_refuses_to_drop_preemptions() -> None:
    snap = full_domain_with(running("s", whole("d1-n0")), running("s2", whole("d1-n1")))
    try:
        place(snap, [req("w", 4)])
    except ValueError as e:
        assert "schedule()" in str(e)
    else:
        raise AssertionError("place() dropped a preemption")
