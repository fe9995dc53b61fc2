"""Money is ``Decimal`` US dollars, never a float: an invoice must add up to the cent, the same
twice. Amounts come in as strings, ints or Decimals (a float is refused: it is already rounded
wrong), and are rounded half-even to the cent only where a figure is shown or billed.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

CENT = Decimal("0.01")
ZERO = Decimal(0)
SECONDS_PER_HOUR = Decimal(3600)


def usd(value: Decimal | int | str) -> Decimal:
    """A dollar amount from its exact form; floats are refused."""
    if isinstance(value, bool | float):
        raise TypeError(f"money must not be a float or bool: {value!r}")
    try:
        out = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"not an amount of money: {value!r}") from exc
    if not out.is_finite():
        raise ValueError(f"not an amount of money: {value!r}")
    return out


def cents(amount: Decimal) -> Decimal:
    """Rounded to the cent, half to even (banker's rounding, as ledgers do)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def canonical(amount: Decimal) -> Decimal:
    """One spelling per amount, whatever the database padded it to: at least cents, no trailing
    zeros beyond (``12.500000`` -> ``12.50``, ``3.199999`` stays, ``100`` -> ``100.00``)."""
    tidy = amount.normalize()
    exponent = tidy.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        return amount.quantize(CENT)
    return tidy


def gpu_time_cost(gpu_seconds: Decimal | int, price_per_gpu_hour: Decimal) -> Decimal:
    """What ``gpu_seconds`` of GPU time cost at an hourly rate, unrounded."""
    return Decimal(gpu_seconds) * price_per_gpu_hour / SECONDS_PER_HOUR
