"""Price plans and invoices (``controlplane.metering.pricing`` / ``invoice``): amounts computed by
hand to the cent, the most specific GPU-hour rate, time-of-use energy on facility energy,
contracted kW, take-or-pay, and the same invoice byte for byte from the rows in any order."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from controlplane.domain.enums import PriorityClass
from controlplane.metering.invoice import LedgerEntry, build_invoice, invoice_csv, invoice_json
from controlplane.metering.pricing import EnergyBasis, EnergyRate, GpuHourRate, PricePlan, TimeOfUse

GB = "NVIDIA GB300"
DEC = datetime(2026, 12, 1, tzinfo=UTC)
JAN = datetime(2027, 1, 1, tzinfo=UTC)
H = 3_600_000_000  # microseconds in an hour
MWH = 3_600_000_000_000  # millijoules in a MWh
T0 = int(DEC.timestamp()) * 1_000_000

GPU_PLAN = PricePlan(
    "gpu-2026",
    gpu_hour=(
        GpuHourRate(Decimal("3.00")),
        GpuHourRate(Decimal("2.40"), PriorityClass.ON_DEMAND, GB),
        GpuHourRate(Decimal("1.20"), PriorityClass.SPOT),
    ),
    energy=EnergyRate(Decimal("60"), bands=(TimeOfUse(14, 20, Decimal("95")),)),
)
COLO = PricePlan("colo-140kw", contracted_kw=Decimal(140), usd_per_kw_month=Decimal(155))


def entry(n: int, priority: PriorityClass, gpu_us: int, facility_mj: int, hour: int = 0) -> LedgerEntry:
    return LedgerEntry(f"u/{n}", "wl-1", priority, GB, T0 + hour * H, gpu_us, facility_mj * 4 // 5, facility_mj, 0)


ROWS = [
    entry(1, PriorityClass.ON_DEMAND, 5 * H, MWH // 4),
    entry(2, PriorityClass.ON_DEMAND, 5 * H + 1_000_000, MWH // 4),  # one second more
    entry(3, PriorityClass.SPOT, 5 * H // 2, 0),
    entry(4, PriorityClass.RESERVED, H, MWH // 4, hour=15),  # in the 14-20 h band
]


def test_an_invoice_to_the_cent_by_hand() -> None:
    """GPU time: on_demand 10 h 1 s x $2.40 = $24.0007 -> $24.00; spot 2.5 h x $1.20 = $3.00;
    reserved 1 h at the plan's any-class rate $3.00. Energy (facility): 0.5 MWh at $60 = $30.00,
    0.25 MWh in the afternoon band at $95 = $23.75. Colocation: 140 kW x $155 = $21,700.00.
    Total $21,783.75."""
    inv = build_invoice("acme", DEC, JAN, ROWS, [GPU_PLAN, COLO])
    got = [(line.kind, line.description, str(line.quantity), str(line.amount)) for line in inv.lines]
    assert got == [
        ("gpu_time", "NVIDIA GB300 GPU time, on_demand", "10.000278", "24.00"),
        ("gpu_time", "NVIDIA GB300 GPU time, reserved", "1.000000", "3.00"),
        ("gpu_time", "NVIDIA GB300 GPU time, spot", "2.500000", "3.00"),
        ("energy", "energy (facility) at 60 $/MWh", "0.500000", "30.00"),
        ("energy", "energy (facility) at 95 $/MWh", "0.250000", "23.75"),
        ("contracted_kw", "contracted capacity, 140 kW x 1 month(s)", "140", "21700.00"),
    ]
    assert inv.total == Decimal("21783.75") and inv.rows == 4 and inv.estimated_rows == 0


def test_energy_on_it_energy_and_take_or_pay() -> None:
    """On IT energy (4/5 of facility here) 0.75 MWh x 0.8 = 0.6 MWh at a flat $50 = $30.00; GPU
    time $24.00 + $1.20 (reserved at the any-class $1.20) + $3.00; a $100 monthly minimum bills
    the $41.80 short of the $58.20 used."""
    plan = PricePlan(
        "top",
        gpu_hour=(GpuHourRate(Decimal("2.40"), PriorityClass.ON_DEMAND), GpuHourRate(Decimal("1.20"))),
        energy=EnergyRate(Decimal("50"), basis=EnergyBasis.IT),
        minimum_usd_month=Decimal(100),
    )
    inv = build_invoice("acme", DEC, JAN, ROWS, [plan])
    assert [(line.kind, str(line.amount)) for line in inv.lines] == [
        ("gpu_time", "24.00"),
        ("gpu_time", "1.20"),
        ("gpu_time", "3.00"),
        ("energy", "30.00"),
        ("minimum_commitment", "41.80"),
    ]
    assert inv.total == Decimal("100.00")


def test_gpu_time_no_plan_prices_is_shown_not_billed() -> None:
    inv = build_invoice("acme", DEC, JAN, ROWS, [COLO])
    assert inv.unpriced_gpu_hours == Decimal("13.500278") and inv.total == Decimal("21700.00")


def test_the_same_rows_in_any_order_give_the_same_bytes() -> None:
    rnd = random.Random(1)
    many = [
        entry(i, rnd.choice(list(PriorityClass)), rnd.randrange(H), rnd.randrange(MWH // 100), rnd.randrange(24))
        for i in range(500)
    ]
    first = build_invoice("acme", DEC, JAN, many, [GPU_PLAN, COLO])
    shuffled = list(many)
    rnd.shuffle(shuffled)
    again = build_invoice("acme", DEC, JAN, shuffled, [GPU_PLAN, COLO])
    assert invoice_json(first) == invoice_json(again) and invoice_csv(first) == invoice_csv(again)
    lines = invoice_csv(first).splitlines()
    assert lines[0].startswith("tenant_id,period_start") and lines[-1].endswith(f",total,,,,,,{first.total}")
    assert f'"total": "{first.total}"' in invoice_json(first)


def test_overlapping_time_of_use_bands_are_refused() -> None:
    with pytest.raises(ValueError, match="overlap"):
        EnergyRate(Decimal(1), bands=(TimeOfUse(8, 12, Decimal(2)), TimeOfUse(11, 14, Decimal(3))))
    with pytest.raises(ValueError, match="0-24"):
        TimeOfUse(20, 25, Decimal(1))
