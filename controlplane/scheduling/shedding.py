"""Which running work to shed for X MW at the least lost revenue (for the dispatch issue).

When the site cap falls (a curtailment), the dispatcher asks the core for ``watts`` of planned
grid draw back. Candidates, each with the draw it gives back and what it earns per hour:

- the ASIC fleet (``snapshot.mining``) down to its minimum, at hashprice (``mining_usd_per_mwh``);
- running GPU work of the classes that may be shed (spot and on_demand by default; reserved work
  is a contract and only with ``include_reserved``), each GPU giving back its planned draw above
  idle x PUE, and losing ``price x GPUs`` per hour plus the work since its last checkpoint.

The choice is a greedy knapsack by revenue lost per watt, then pruned: the most valuable pieces
taken are put back while what remains still covers the target. Mining is divisible (any number
of watts); GPU work is shed whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from controlplane.domain.enums import PriorityClass
from controlplane.scheduling.preemption.candidates import lost_work
from controlplane.scheduling.snapshot import FleetSnapshot

SHEDDABLE = frozenset({PriorityClass.SPOT, PriorityClass.ON_DEMAND})


@dataclass(frozen=True, slots=True)
class ShedPiece:
    workload_id: str  # "" for the ASIC fleet
    watts: float  # planned grid draw given back
    usd_per_hour: Decimal  # revenue lost per hour while shed
    lost_gpu_s: float = 0.0  # work lost since the last checkpoint (GPU-seconds)


@dataclass(frozen=True, slots=True)
class ShedPlan:
    pieces: tuple[ShedPiece, ...]
    watts: float  # what the pieces give back in all
    usd_per_hour: Decimal
    enough: bool  # whether they cover the target


def plan_shed(
    snapshot: FleetSnapshot,
    watts: float,
    *,
    mining_usd_per_mwh: Decimal,
    include_reserved: bool = False,
) -> ShedPlan:
    """The pieces to shed for ``watts`` of planned grid draw, at the least revenue lost."""
    if watts <= 0:
        return ShedPlan((), 0.0, Decimal(0), True)
    power = snapshot.power
    pue = power.pue if power is not None else 1.0
    per_gpu_w = (power.marginal_gpu_w if power is not None else 0.0) * pue
    classes = SHEDDABLE | {PriorityClass.RESERVED} if include_reserved else SHEDDABLE
    pieces: list[tuple[Decimal, ShedPiece]] = []
    mining = snapshot.mining
    if mining is not None and mining.power_w > mining.min_w:
        w = mining.power_w - mining.min_w
        usd = mining_usd_per_mwh * Decimal(str(w)) / Decimal(1_000_000)
        pieces.append((usd / Decimal(str(w)), ShedPiece("", w, usd)))
    if per_gpu_w > 0:
        for run in snapshot.running:
            if run.preempting or run.priority not in classes or not run.gpus:
                continue
            w = run.gpu_count * per_gpu_w
            usd = run.price_usd_per_gpu_hour * run.gpu_count
            lost = lost_work(run, snapshot.now)
            # Lost work is charged at the workload's own price, as if re-run.
            cost = usd + run.price_usd_per_gpu_hour * Decimal(str(lost / 3600))
            pieces.append((cost / Decimal(str(w)), ShedPiece(run.workload_id, w, usd, lost)))
    pieces.sort(key=lambda t: (t[0], t[1].workload_id))
    chosen: list[ShedPiece] = []
    got = 0.0
    for _, piece in pieces:
        if got >= watts:
            break
        if not piece.workload_id and got + piece.watts > watts:
            need = watts - got  # mining is divisible: only what is needed
            share = Decimal(str(need / piece.watts))
            piece = ShedPiece("", need, (piece.usd_per_hour * share).quantize(Decimal("0.000001")))
        chosen.append(piece)
        got += piece.watts
    # Put back the most valuable whole pieces while the rest still covers the target.
    for piece in sorted(chosen, key=lambda p: p.usd_per_hour, reverse=True):
        if piece.workload_id and got - piece.watts >= watts:
            chosen.remove(piece)
            got -= piece.watts
    usd_total = sum((p.usd_per_hour for p in chosen), Decimal(0))
    return ShedPlan(tuple(chosen), got, usd_total, got >= watts)
