"""Domain types: the GPU state machine, the placement epoch, money, the enums the wire shares."""

from __future__ import annotations

from decimal import Decimal
from itertools import product
from typing import Any, cast

import pytest

from agents import protocol
from controlplane.domain.enums import GpuHealth, HealthAction, PriorityClass
from controlplane.domain.epoch import PlacementEpoch
from controlplane.domain.gpu import HELD, TRANSITIONS, GpuState, can_change, derive
from controlplane.domain.money import cents, gpu_time_cost, usd
from controlplane.domain.reasons import PendingCode

S = GpuState


def test_every_state_has_its_transitions_and_is_reachable() -> None:
    assert set(TRANSITIONS) == set(GpuState)
    reached = {S.FREE}
    frontier = [S.FREE]
    while frontier:
        for nxt in TRANSITIONS[frontier.pop()]:
            if nxt not in reached:
                reached.add(nxt)
                frontier.append(nxt)
    assert reached == set(GpuState)


def test_a_held_gpu_changes_owner_only_through_release() -> None:
    assert can_change(S.ALLOCATED, "a", S.RELEASING, "a")
    assert can_change(S.RELEASING, "a", S.FREE, None)
    assert can_change(S.FREE, None, S.ALLOCATED, "b")
    assert can_change(S.ALLOCATED, "a", S.FREE, None)  # the process ended on its own, confirmed
    assert not can_change(S.ALLOCATED, "a", S.ALLOCATED, "b")
    assert not can_change(S.RELEASING, "a", S.ALLOCATED, "b")
    assert not can_change(S.MINING, "m", S.ALLOCATED, "b")  # mining hands over through release
    assert not can_change(S.LOST, "a", S.ALLOCATED, "b")  # lost still counts its last owner
    assert can_change(S.LOST, "a", S.ALLOCATED, "a")
    assert not can_change(S.CORDONED, None, S.ALLOCATED, "a")  # a cordoned GPU admits no work
    assert not can_change(S.UNREACHABLE, None, S.ALLOCATED, "a")


def _derive(
    holder: PriorityClass | None,
    *,
    present: bool = True,
    stopping: bool = False,
    node_ready: bool = True,
    health: GpuHealth = GpuHealth.HEALTHY,
    cordoned: bool = False,
) -> GpuState:
    return derive(
        present=present, holder=holder, stopping=stopping, node_ready=node_ready, health=health, cordoned=cordoned
    )


def test_derive_puts_the_most_telling_fact_first() -> None:
    assert _derive(None) is S.FREE
    assert _derive(PriorityClass.SPOT) is S.ALLOCATED
    assert _derive(PriorityClass.MINING) is S.MINING
    assert _derive(PriorityClass.SPOT, stopping=True) is S.RELEASING
    # A held GPU stays held on an unreachable, cordoned or unhealthy node: its process may run there.
    assert _derive(PriorityClass.ON_DEMAND, node_ready=False, cordoned=True, health=GpuHealth.UNHEALTHY) is S.ALLOCATED
    assert _derive(None, node_ready=False, cordoned=True, health=GpuHealth.UNHEALTHY) is S.UNREACHABLE
    assert _derive(None, health=GpuHealth.UNHEALTHY, cordoned=True) is S.FAULTY
    assert _derive(None, health=GpuHealth.DEGRADED, cordoned=True) is S.CORDONED
    assert _derive(PriorityClass.ON_DEMAND, present=False) is S.LOST
    for present, stopping, ready, health, cordoned in product(
        (True, False), (True, False), (True, False), GpuHealth, (True, False)
    ):
        for holder in (None, *PriorityClass):
            state = _derive(
                holder,
                present=present,
                stopping=stopping and holder is not None,
                node_ready=ready,
                health=health,
                cordoned=cordoned,
            )
            assert (state in HELD) == (present and holder is not None)


def test_placement_epochs_order_by_leader_then_pass_and_round_trip() -> None:
    assert PlacementEpoch.of(2, 5).value < PlacementEpoch.of(3, 0).value
    assert PlacementEpoch.of(3, 1) > PlacementEpoch.of(2, 2**31)
    assert PlacementEpoch.of(1, 2**32 + 7) == PlacementEpoch(1, 7)  # pass numbers wrap, leaders do not
    assert PlacementEpoch.from_value(PlacementEpoch(9, 41).value) == PlacementEpoch(9, 41)
    with pytest.raises(ValueError):
        PlacementEpoch(-1, 0)
    with pytest.raises(ValueError):
        PlacementEpoch(0, 2**32)


def test_money_is_exact_and_refuses_floats() -> None:
    assert usd("3.20") == Decimal("3.20") and usd(7) == Decimal(7)
    for bad in (3.2, True):
        with pytest.raises(TypeError):
            usd(cast(Any, bad))  # the point: a caller that passes a float is refused at run time
    with pytest.raises(ValueError):
        usd("NaN")
    with pytest.raises(ValueError):
        usd("three dollars")
    assert cents(Decimal("0.125")) == Decimal("0.12") and cents(Decimal("0.135")) == Decimal("0.14")
    # 1,000 GPUs for one second at $3.60/GPU-hour: exactly one dollar.
    assert gpu_time_cost(1000, Decimal("3.60")) == Decimal(1)
    # Price the summed GPU-seconds, not each second: per-second prices of $3.10/h do not terminate.
    assert gpu_time_cost(sum(1 for _ in range(3600)), Decimal("3.10")) == Decimal("3.10")
    assert cents(sum((gpu_time_cost(1, Decimal("3.10")) for _ in range(3600)), Decimal(0))) == Decimal("3.10")


def test_the_domain_and_the_wire_spell_health_the_same() -> None:
    assert [h.value for h in GpuHealth] == [h.value for h in protocol.GpuHealthState]
    assert [a.value for a in HealthAction] == [a.value for a in protocol.HealthAction]


def test_the_schema_knows_every_pending_code() -> None:
    import importlib

    # The newest revision that changed the reason code's CHECK states every code.
    migration = importlib.import_module("controlplane.store.migrations.versions.0007_planned_starts")
    assert set(migration.PENDING_CODES) == {c.value for c in PendingCode}
    assert all(len(c.value) <= 24 for c in PendingCode)  # the column's width
