"""Exact fixed-point encoding of decimal scores into Paillier plaintext integers.

A score ``v`` with ``decimals = d`` becomes the integer ``round(v · 10^d)``,
rounded half-to-even, computed with integer arithmetic on the decimal digits
(never binary floating point, never a context-limited Decimal operation), so
``"1532.40"`` is exactly 153240 and ``"-0.015"`` at d = 2 is exactly -2.
Floats are first written with ``str()`` (the shortest repr that round-trips),
so ``0.1`` means the decimal 0.1, not the binary fraction nearest to it.

Validation errors name the 1-based position of the offending value but never
the value itself: scores are personal data and error messages end up in logs.
"""

from __future__ import annotations

import decimal
import math
import numbers
import re
from collections.abc import Sequence

import numpy as np

from pprl.errors import DataValidationError

__all__ = ["encode_fixed", "decode_fixed", "MAX_DECIMALS"]

#: Upper bound on ``decimals``; far beyond any real score precision.
MAX_DECIMALS = 100
#: Encoded integers with more digits than this are refused (far above any key's n/3).
_MAX_DIGITS = 2000

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _check_decimals(decimals: object) -> int:
    if isinstance(decimals, bool) or not isinstance(decimals, numbers.Integral):
        raise DataValidationError("decimals must be an integer")
    if not 0 <= int(decimals) <= MAX_DECIMALS:
        raise DataValidationError(f"decimals must be between 0 and {MAX_DECIMALS}")
    return int(decimals)


def _to_decimal(value: object, position: int) -> decimal.Decimal:
    """Parse one score; DataValidationError naming only its position."""
    if isinstance(value, bool):
        raise DataValidationError(f"score at position {position} is not a number")
    if isinstance(value, decimal.Decimal):
        dec = value
    elif isinstance(value, numbers.Integral):
        return decimal.Decimal(int(value))
    elif isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise DataValidationError(f"score at position {position} is not a finite number")
        # str() is the shortest text that round-trips at the value's own precision
        # (numpy's too, e.g. float32(0.1) -> "0.1"), so "0.1" means decimal 0.1.
        dec = decimal.Decimal(str(value))
    elif isinstance(value, str):
        text = value.strip()
        if not _NUMBER.fullmatch(text):
            lowered = text.lower().lstrip("+-")
            if lowered in {"nan", "snan", "inf", "infinity"}:
                raise DataValidationError(f"score at position {position} is not a finite number")
            raise DataValidationError(f"score at position {position} is not a number")
        dec = decimal.Decimal(text)
    else:
        raise DataValidationError(f"score at position {position} is not a number")
    if not dec.is_finite():
        raise DataValidationError(f"score at position {position} is not a finite number")
    return dec


def _scale_half_even(dec: decimal.Decimal, decimals: int, position: int) -> int:
    """round_half_even(dec · 10^decimals), exactly, with integers only."""
    sign, digits, exponent = dec.as_tuple()
    if not isinstance(exponent, int):  # NaN/inf: already refused by the caller
        raise DataValidationError(f"score at position {position} is not a finite number")
    shift = exponent + decimals
    if len(digits) > _MAX_DIGITS or len(digits) + shift > _MAX_DIGITS:
        raise DataValidationError(f"score at position {position} is out of range")
    coeff = int("".join(map(str, digits))) if digits else 0
    if shift >= 0:
        result = coeff * 10**shift
    elif -shift > len(digits):
        result = 0  # |coeff| < 10^len(digits) <= 10^(-shift-1): below one half unit
    else:
        q, r = divmod(coeff, 10**-shift)
        twice = 2 * r
        half_unit = 10**-shift
        if twice > half_unit or (twice == half_unit and q % 2 == 1):
            q += 1
        result = q
    return -result if sign else result


def encode_fixed(values: Sequence[str | float | int | decimal.Decimal], decimals: int) -> list[int]:
    """Scores -> integers ``round_half_even(v · 10^decimals)``, exactly.

    Accepts decimal strings (optional sign, digits, point, exponent; ASCII
    whitespace around is ignored), ints, floats and :class:`decimal.Decimal`.
    Non-numeric, NaN and infinite values raise DataValidationError naming
    the 1-based position, not the value.
    """
    d = _check_decimals(decimals)
    return [
        _scale_half_even(_to_decimal(v, pos), d, pos) for pos, v in enumerate(values, start=1)
    ]


def decode_fixed(values: Sequence[int], decimals: int) -> list[decimal.Decimal]:
    """Integers -> Decimals ``v · 10^-decimals``, exact (``153240, 2 -> 1532.40``)."""
    d = _check_decimals(decimals)
    out: list[decimal.Decimal] = []
    for pos, v in enumerate(values, start=1):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise DataValidationError(f"encoded value at position {pos} is not an integer")
        # Decimal(int) and a (sign, digits, exponent) tuple are both exact, whatever
        # the context precision (scaleb/quantize would round at 28 digits).
        sign, digits, _ = decimal.Decimal(int(v)).as_tuple()
        out.append(decimal.Decimal((sign, digits, -d)))
    return out
