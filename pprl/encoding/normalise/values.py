"""Dates, gender codes and free text (addresses) in one canonical form each.

Why: ``1990-03-07``, ``1990/3/7``, ``19900307`` and ``1990年3月7日`` are one
date, 男 and ``M`` one gender, and ``北京市 朝陽區，建國路1號`` one address;
without normalising, each variant loses similarity it should keep. Values that
cannot be read are None (missing), never guessed: a day-first date is not
reordered, an unknown gender code is not mapped.
"""

from __future__ import annotations

import datetime
import re
from functools import lru_cache

from pprl.encoding.normalise.chinese import fold, simplify
from pprl.encoding.normalise.text import CACHE_SIZE, NOT_WORD, SPACE, nfkc
from pprl.errors import SchemaError

__all__ = ["normalise_date", "normalise_gender", "normalise_text"]

_TIME = re.compile(r"(?:[T\s]+|(?<=日))\d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?$")
_DATE_SEPARATED = re.compile(r"(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_DATE_ISO = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}", re.ASCII)  # the common case, fast
_MALE = frozenset({"男", "男性", "m", "male"})
_FEMALE = frozenset({"女", "女性", "f", "female"})


@lru_cache(maxsize=CACHE_SIZE)
def normalise_date(value: str, output: str = "iso") -> str | None:
    """A year-first date as ``YYYY-MM-DD`` (``"iso"``) or ``YYYYMMDD`` (``"compact"``), or None.

    ``"1990/3/7"``, ``"1990.3.7"``, ``"19900307"``, ``"1990年3月7日"`` (full-width
    too, a trailing ``HH:MM[:SS]`` dropped) -> ``"1990-03-07"``. Day-first or
    month-first forms are never guessed; a date that does not exist is None.
    """
    if output not in ("iso", "compact"):
        raise SchemaError(f"output must be 'iso' or 'compact', not {output!r}")
    if _DATE_ISO.fullmatch(value):
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            return None
        return value if output == "iso" else value.replace("-", "")
    s = SPACE.sub("", _TIME.sub("", nfkc(value).strip()))
    m = _DATE_SEPARATED.fullmatch(s) or _DATE_COMPACT.fullmatch(s)
    if m is None:
        return None
    try:
        day = datetime.date(int(m[1]), int(m[2]), int(m[3]))
    except ValueError:
        return None
    return day.strftime("%Y-%m-%d" if output == "iso" else "%Y%m%d")


@lru_cache(maxsize=CACHE_SIZE)
def normalise_gender(value: str) -> str | None:
    """``"M"`` for 男/男性/M/male, ``"F"`` for 女/女性/F/female (any case or width), else None."""
    s = NOT_WORD.sub("", nfkc(value).casefold())
    if s in _MALE:
        return "M"
    if s in _FEMALE:
        return "F"
    return None


@lru_cache(maxsize=CACHE_SIZE)
def normalise_text(value: str, simplify_chars: bool = True, lower: bool = True,
                   strip: str = "punctuation") -> str | None:
    """Free text in canonical form, or None if nothing is left.

    NFKC; traditional -> simplified (``simplify_chars``); lower case
    (``lower``); ``strip``: ``"punctuation"`` keeps only letters and digits,
    ``"space"`` drops whitespace only, ``"none"`` keeps everything.
    """
    if strip not in ("punctuation", "space", "none"):
        raise SchemaError(f"strip must be 'punctuation', 'space' or 'none', not {strip!r}")
    if simplify_chars and lower and strip == "punctuation":  # the default: the same chain
        return fold(value) or None
    s = nfkc(value)
    if simplify_chars:
        s = simplify(s)
    if lower:
        s = s.casefold()
    s = nfkc(s)
    if strip == "punctuation":
        s = NOT_WORD.sub("", s)
    elif strip == "space":
        s = SPACE.sub("", s)
    return s if s.strip() else None
