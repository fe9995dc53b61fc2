"""A tenant's invoice for a period, from its ledger rows and price plans: the same rows (in any
order) and plans give the same invoice, byte for byte, as JSON and as CSV.

Lines, each rounded to the cent once (half-even) from exact sums:
- GPU time per (priority class, GPU model, rate): GPU-hours x $/GPU-hour;
- energy per price (a time-of-use band prices the intervals starting in it): MWh x $/MWh, on
  facility or IT energy as the plan says;
- per plan, contracted kW x $/kW-month (one line per calendar month of the period);
- per plan with a monthly minimum (take-or-pay), the shortfall of the usage lines below it.
The total is the sum of the lines.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from controlplane.domain.enums import PriorityClass
from controlplane.domain.money import ZERO, cents
from controlplane.metering.pricing import MJ_PER_MWH, US_PER_HOUR, EnergyBasis, PricePlan, energy_plan, gpu_rate

QUANTITY = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """What an invoice reads of a usage row, or of the rows of one hour summed (``rows`` of them)."""

    key: str
    workload_id: str
    priority: PriorityClass
    gpu_model: str
    start_us: int
    gpu_us: int
    it_mj: int
    facility_mj: int
    estimated_rows: int  # of them, (partly) from power samples
    rows: int = 1


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    kind: str  # gpu_time | energy | contracted_kw | minimum_commitment
    plan_id: str
    description: str
    quantity: Decimal
    unit: str
    unit_price: Decimal
    amount: Decimal  # to the cent


@dataclass(frozen=True, slots=True)
class Invoice:
    tenant_id: str
    period_start: datetime
    period_end: datetime
    lines: tuple[InvoiceLine, ...]
    total: Decimal
    rows: int  # ledger rows read
    estimated_rows: int  # of which (partly) from power samples, not counters
    unpriced_gpu_hours: Decimal  # GPU time no plan prices (shown, not billed)
    status: str = "open"  # "final" once the period and its grace window are over


def _months(start: datetime, end: datetime) -> int:
    """Calendar months the period [start, end) spans (start on the first of a month)."""
    return max(1, (end.year - start.year) * 12 + end.month - start.month)


def build_invoice(
    tenant_id: str,
    period_start: datetime,
    period_end: datetime,
    entries: Iterable[LedgerEntry],
    plans: Sequence[PricePlan],
) -> Invoice:
    rows = sorted(entries, key=lambda e: e.key)
    gpu: dict[tuple[str, str, str, Decimal], int] = {}  # (plan, class, model, rate) -> GPU-us
    unpriced_us = 0
    energy: dict[tuple[str, Decimal], int] = {}  # (plan, $/MWh) -> mJ
    priced_energy = energy_plan(plans)
    for e in rows:
        found = gpu_rate(plans, e.priority, e.gpu_model)
        if found is None:
            unpriced_us += e.gpu_us
        else:
            plan_id, rate = found
            k = (plan_id, e.priority.value, e.gpu_model, rate.usd_per_gpu_hour)
            gpu[k] = gpu.get(k, 0) + e.gpu_us
        if priced_energy is not None:
            plan_id, erate = priced_energy
            mj = e.facility_mj if erate.basis is EnergyBasis.FACILITY else e.it_mj
            ek = (plan_id, erate.at(e.start_us))
            energy[ek] = energy.get(ek, 0) + mj
    lines: list[InvoiceLine] = []
    for (plan_id, cls, model, price), us in sorted(gpu.items()):
        hours = Decimal(us) / US_PER_HOUR
        lines.append(
            InvoiceLine(
                "gpu_time",
                plan_id,
                f"{model} GPU time, {cls}",
                hours.quantize(QUANTITY),
                "GPU-hour",
                price,
                cents(hours * price),
            )
        )
    if priced_energy is not None:
        basis = priced_energy[1].basis.value
        for (plan_id, price), mj in sorted(energy.items()):
            mwh = Decimal(mj) / MJ_PER_MWH
            lines.append(
                InvoiceLine(
                    "energy",
                    plan_id,
                    f"energy ({basis}) at {price} $/MWh",
                    mwh.quantize(QUANTITY),
                    "MWh",
                    price,
                    cents(mwh * price),
                )
            )
    usage = sum((line.amount for line in lines), ZERO)
    months = _months(period_start, period_end)
    for plan in plans:
        if plan.contracted_kw > 0:
            kw_months = plan.contracted_kw * months
            lines.append(
                InvoiceLine(
                    "contracted_kw",
                    plan.plan_id,
                    f"contracted capacity, {plan.contracted_kw} kW x {months} month(s)",
                    kw_months,
                    "kW-month",
                    plan.usd_per_kw_month,
                    cents(kw_months * plan.usd_per_kw_month),
                )
            )
    for plan in plans:
        floor = plan.minimum_usd_month * months
        if floor > usage:
            lines.append(
                InvoiceLine(
                    "minimum_commitment",
                    plan.plan_id,
                    f"minimum commitment {plan.minimum_usd_month} $/month, usage {usage}",
                    Decimal(months),
                    "month",
                    plan.minimum_usd_month,
                    cents(floor - usage),
                )
            )
            usage = floor
    return Invoice(
        tenant_id,
        period_start,
        period_end,
        tuple(lines),
        sum((line.amount for line in lines), ZERO),
        sum(e.rows for e in rows),
        sum(e.estimated_rows for e in rows),
        (Decimal(unpriced_us) / US_PER_HOUR).quantize(QUANTITY),
    )


def invoice_json(invoice: Invoice) -> str:
    """The invoice as JSON: keys sorted, amounts as strings, one trailing newline."""
    doc = {
        "tenant_id": invoice.tenant_id,
        "status": invoice.status,
        "currency": "USD",
        "period": {"start": invoice.period_start.isoformat(), "end": invoice.period_end.isoformat()},
        "lines": [
            {
                "kind": line.kind,
                "plan_id": line.plan_id,
                "description": line.description,
                "quantity": str(line.quantity),
                "unit": line.unit,
                "unit_price": str(line.unit_price),
                "amount": str(line.amount),
            }
            for line in invoice.lines
        ],
        "total": str(invoice.total),
        "ledger_rows": invoice.rows,
        "estimated_rows": invoice.estimated_rows,
        "unpriced_gpu_hours": str(invoice.unpriced_gpu_hours),
    }
    return json.dumps(doc, sort_keys=True, indent=2) + "\n"


def invoice_csv(invoice: Invoice) -> str:
    """The invoice's lines as CSV (a header row, then a line per row, then the total)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(
        [
            "tenant_id",
            "period_start",
            "period_end",
            "kind",
            "plan_id",
            "description",
            "quantity",
            "unit",
            "unit_price",
            "amount",
        ]
    )
    head = [invoice.tenant_id, invoice.period_start.isoformat(), invoice.period_end.isoformat()]
    for line in invoice.lines:
        w.writerow(
            [*head, line.kind, line.plan_id, line.description, line.quantity, line.unit, line.unit_price, line.amount]
        )
    w.writerow([*head, "total", "", "", "", "", "", invoice.total])
    return out.getvalue()
