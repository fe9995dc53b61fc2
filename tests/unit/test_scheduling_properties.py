"""Property tests of the scheduling core on random fleets, running work, power and queues."""

from __future__ import annotations

from collections import Counter, defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.domain.enums import NvlinkPolicy, PriorityClass
from controlplane.power.model import PowerModel
from controlplane.scheduling.core import schedule
from controlplane.scheduling.preemption import victim_classes
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

MODELS = ("NVIDIA GB300", "NVIDIA H100")
CLASSES = tuple(PriorityClass)
IDLE, LIMIT, OVERHEAD, TRAYS = 180.0, 1400.0, 1100.0, 3600.0


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[FleetSnapshot, list[WorkloadRequest]]:
    n_doms = draw(st.integers(1, 4))
    nodes: list[NodeView] = []
    for d in range(n_doms + 1):  # the last "domain" is nodes without one
        domain = f"d{d}" if d < n_doms else None
        model = MODELS[0] if d % 3 != 2 else MODELS[1]
        draining = domain is not None and draw(st.booleans()) and draw(st.booleans())
        for t in range(draw(st.integers(0 if domain is None else 1, 5))):
            name = f"n{d}-{t}"
            gpus = tuple(
                GpuSlot(f"{name}-g{i}", i, model, draw(st.integers(0, 9)) > 0, draw(st.integers(0, 2)) == 0)
                for i in range(4)
            )
            state = draw(st.sampled_from(["", "", "", "", "cordoned", "unreachable", "draining"]))
            nodes.append(NodeView(name, domain, state, gpus, nvlink_draining=draining))
    # Running work over the allocated GPUs, in random groups and classes.
    allocated = [(n.node_id, g.gpu_id, g.model) for n in nodes for g in n.gpus if g.allocated]
    running: list[RunningWorkload] = []
    i = 0
    while i < len(allocated):
        size = draw(st.integers(1, 6))
        group = [a for a in allocated[i : i + size] if a[2] == allocated[i][2]]
        i += len(group)
        running.append(
            RunningWorkload(
                f"run{len(running)}",
                draw(st.sampled_from(["t1", "t2"])),
                draw(st.sampled_from(CLASSES)),
                tuple((n, g) for n, g, _ in group),
                float(draw(st.integers(0, 100))),
                group[0][2],
                preempting=draw(st.integers(0, 4)) == 0,
            )
        )
    n_gpus = sum(len(n.gpus) for n in nodes)
    it = sum(OVERHEAD + sum(LIMIT if g.allocated else IDLE for g in n.gpus) for n in nodes) + TRAYS * (n_doms + 1)
    power = None
    mining = None
    if draw(st.booleans()):
        pue = draw(st.sampled_from([1.0, 1.25]))
        slack = draw(st.floats(0, (LIMIT - IDLE) * n_gpus * pue))
        rack_cap = {f"d{d}": draw(st.floats(40_000, 130_000)) for d in range(n_doms) if draw(st.booleans())}
        mining_w = draw(st.floats(0, 50_000))
        power = PowerModel(it * pue + mining_w + slack, pue, IDLE, LIMIT, OVERHEAD, TRAYS, rack_cap)
        mining = MiningBlock(mining_w, min_w=draw(st.floats(0, mining_w)))
    tenants = {
        "t1": TenantPolicy("t1", reserved_gpus=draw(st.integers(0, 24)), max_gpus=draw(st.none() | st.integers(0, 60))),
        "t2": TenantPolicy("t2"),
    }
    queue = [
        WorkloadRequest(
            f"w{j}",
            draw(st.sampled_from([1, 1, 2, 3, 4, 4, 6, 8, 12, 16, 24])),
            draw(st.sampled_from(MODELS)),
            draw(st.sampled_from(list(NvlinkPolicy))),
            draw(st.sampled_from(CLASSES)),
            float(draw(st.integers(0, 50))),
            tenant_id=draw(st.sampled_from(["t1", "t2", "t3"])),
        )
        for j in range(draw(st.integers(0, 12)))
    ]
    snap = FleetSnapshot(tuple(nodes), tuple(running), tenants, power, mining, now=1000.0)
    return snap, queue


def rack_draw(snap: FleetSnapshot, placed: set[str]) -> tuple[dict[str | None, float], float]:
    racks: dict[str | None, float] = defaultdict(float)
    for n in snap.nodes:
        racks[n.domain] += OVERHEAD + sum(LIMIT if g.allocated or g.gpu_id in placed else IDLE for g in n.gpus)
    it = sum(racks.values()) + TRAYS * len([r for r in racks if r is not None])
    for r in racks:
        if r is not None:
            racks[r] += TRAYS
    return racks, it


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_core_invariants(case: tuple[FleetSnapshot, list[WorkloadRequest]]) -> None:
    snap, queue = case
    out: list[Decision] = schedule(snap, queue)
    by_req = {w.workload_id: w for w in queue}
    nodes = {n.node_id: n for n in snap.nodes}
    gpu = {(n.node_id, g.gpu_id): g for n in snap.nodes for g in n.gpus}

    # Every request gets exactly one Placement or Unplaced, and every pending one a reason.
    final = [d for d in out if isinstance(d, Placement | Unplaced)]
    assert sorted(d.workload_id for d in final) == sorted(by_req)
    assert all(d.reason.strip() for d in final if isinstance(d, Unplaced))

    seen: set[str] = set()
    for p in (d for d in out if isinstance(d, Placement)):
        w = by_req[p.workload_id]
        ids = [g for r in p.ranks for g in r.gpu_ids]
        assert len(ids) == w.gpu_count  # gang whole
        assert not seen & set(ids)  # no GPU shared
        seen |= set(ids)
        for r in p.ranks:
            node = nodes[r.node_id]
            assert node.unschedulable == "" and r.gpu_ids
            for g in r.gpu_ids:
                slot = gpu[(r.node_id, g)]
                assert slot.healthy and not slot.allocated and slot.model == w.gpu_model
        domains = {nodes[r.node_id].domain for r in p.ranks}
        if w.nvlink is NvlinkPolicy.REQUIRED and w.gpu_count > 1:
            assert not any(nodes[r.node_id].nvlink_draining for r in p.ranks)
            if len(p.ranks) > 1:
                assert None not in domains
                size = Counter(n.domain for n in snap.nodes for g in n.gpus if g.model == w.gpu_model)
                if w.gpu_count <= max(size[d] for d in size if d is not None):
                    assert len(domains) == 1  # `required` stays in one NVLink domain
                else:  # larger than any domain: whole domains plus one remainder
                    used = Counter(nodes[r.node_id].domain for r in p.ranks for _ in r.gpu_ids)
                    assert sum(used[d] < size[d] for d in used) <= 1

    # Preemption: reserved never a victim, nobody twice, nobody already under notice, rights respected.
    running = {r.workload_id: r for r in snap.running}
    victims = [d for d in out if isinstance(d, Preempt)]
    assert len({v.victim_id for v in victims}) == len(victims)
    for v in victims:
        run = running[v.victim_id]
        assert run.priority is not PriorityClass.RESERVED and not run.preempting
        preemptor = by_req[v.for_workload_id]
        assert run.priority in victim_classes(preemptor.priority, within_reservation=True)
        if preemptor.priority is not PriorityClass.RESERVED:
            assert run.priority in victim_classes(preemptor.priority, within_reservation=False)
        assert v.grace_s == (0.0 if run.priority is PriorityClass.MINING else snap.stop_grace_s)
        assert isinstance(next(d for d in final if d.workload_id == v.for_workload_id), Unplaced)

    # Power: each rack a placement touched stays under its cap, the site under its limit.
    if snap.power is not None:
        racks, it = rack_draw(snap, seen)
        touched = {nodes[r.node_id].domain for d in out if isinstance(d, Placement) for r in d.ranks}
        for rack in touched:
            cap = snap.power.rack_cap_w.get(rack) if rack is not None else None
            if cap is not None:
                assert racks[rack] <= cap + 1e-6
        shed = sum(d.watts for d in out if isinstance(d, ShedMining))
        assert snap.mining is not None
        assert snap.mining.power_w - shed >= snap.mining.min_w - 1e-6
        if seen:
            site = it * snap.power.pue + snap.mining.power_w - shed
            assert site <= snap.power.site_cap_w - snap.power.safety_margin_w + 1e-3
    else:
        assert not any(isinstance(d, ShedMining) for d in out)
