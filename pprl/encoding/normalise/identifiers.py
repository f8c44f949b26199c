"""Canonical forms of exact identifiers: PRC resident identity numbers and mobile numbers.

Every harmless variant of one number maps to one canonical string, and anything
that cannot be a valid number to ``None``; the exact-identifier PSI path and the
``cn_resident_id`` / ``cn_mobile`` normalisers share these functions. They never
log or echo the value they were given.

Design: docs/schema.md#resident-id-and-mobile-canonical-forms
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable, Sequence

from pprl.errors import DataValidationError

__all__ = [
    "IDENTIFIER_KINDS",
    "MOBILE_PATTERN",
    "normalise_mobile",
    "normalise_resident_id",
    "normalise_resident_ids",
    "normaliser_for",
    "resident_id_check_char",
]

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_RID18 = re.compile(r"[1-9][0-9]{16}[0-9X]")
_RID15 = re.compile(r"[1-9][0-9]{14}")
#: A mainland mobile number in its canonical form (11 digits).
MOBILE_PATTERN = re.compile(r"1[3-9][0-9]{9}")
_SEPARATORS = re.compile(r"[\s\-./()\u2010-\u2015]+")


def resident_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character for 17 ASCII digits."""
    if len(first17) != 17 or not (first17.isascii() and first17.isdigit()):
        raise DataValidationError("a resident ID body is exactly 17 ASCII digits")
    total = sum(int(ch) * w for ch, w in zip(first17, _WEIGHTS))
    return _CHECK_CHARS[total % 11]


def _real_date(yyyymmdd: str) -> bool:
    try:
        datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return True


def _clean(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", value))


def normalise_resident_id(value: object) -> str | None:
    """The canonical 18-character resident ID, or ``None`` if ``value`` cannot be a valid one.

    ``"110105491231002"`` -> ``"11010519491231002X"``; ``"１１０…x"`` -> upper-case half-width.
    """
    s = _clean(value)
    if s is None:
        return None
    s = s.upper()
    if len(s) == 15 and _RID15.fullmatch(s):
        body = s[:6] + "19" + s[6:]
        return body + resident_id_check_char(body) if _real_date(body[6:14]) else None
    if len(s) == 18 and _RID18.fullmatch(s):
        if not _real_date(s[6:14]) or resident_id_check_char(s[:17]) != s[17]:
            return None
        return s
    return None


_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def normalise_resident_ids(values: Sequence[str]) -> list[str | None]:
    """``[normalise_resident_id(v) for v in values]``, the common form checked in bulk.

    18 ASCII characters, 17 digits and a digit or X (either case), are checked at once with
    numpy (first digit, birth date, check character); every other value goes through
    :func:`normalise_resident_id`. The results are the same.
    """
    out: list[str | None] = [None] * len(values)
    plain: list[int] = []
    for i, v in enumerate(values):
        if len(v) == 18 and v.isascii() and v[:17].isdigit():
            plain.append(i)
        else:
            out[i] = normalise_resident_id(v)
    if not plain:
        return out
    import numpy as np  # here, not at import: `pprl --help` loads no numpy

    ids = [values[i].upper() for i in plain]
    codes = np.array(ids, dtype="U18").view(np.uint32).reshape(-1, 18).astype(np.int64)
    digits = codes[:, :17] - 48
    year = digits[:, 6:10] @ np.array([1000, 100, 10, 1])
    month = digits[:, 10] * 10 + digits[:, 11]
    day = digits[:, 12] * 10 + digits[:, 13]
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    days = np.array(_MONTH_DAYS, dtype=np.int64)[np.clip(month, 0, 12)] + ((month == 2) & leap)
    check = np.array([ord(c) for c in _CHECK_CHARS], dtype=np.int64)[(digits @ np.array(_WEIGHTS, dtype=np.int64)) % 11]
    ok = ((digits[:, 0] != 0) & (year >= datetime.MINYEAR) & (month >= 1) & (month <= 12)
          & (day >= 1) & (day <= days) & (codes[:, 17] == check))
    for i, rid, good in zip(plain, ids, ok.tolist()):
        out[i] = rid if good else None
    return out


def normalise_mobile(value: object) -> str | None:
    """The 11-digit mainland mobile number, or ``None``. ``"+86 138 0013 8000"`` -> ``"13800138000"``."""
    s = _clean(value)
    if s is None:
        return None
    if s.startswith("+86"):
        s = s[3:]
    elif s.startswith("0086"):
        s = s[4:]
    elif s.startswith("86") and len(s) == 13:
        s = s[2:]
    return s if MOBILE_PATTERN.fullmatch(s) else None


#: Identifier kinds the exact path supports, and their normalisers.
IDENTIFIER_KINDS: dict[str, Callable[[object], str | None]] = {
    "resident_id": normalise_resident_id,
    "mobile": normalise_mobile,
}


def normaliser_for(kind: str) -> Callable[[object], str | None]:
    """The normaliser for an identifier kind; DataValidationError names the kinds on offer."""
    try:
        return IDENTIFIER_KINDS[kind]
    except KeyError:
        raise DataValidationError(f"identifier kind {kind!r} must be one of {', '.join(IDENTIFIER_KINDS)}") from None
