"""Shared text helpers of the normalisers: Unicode compatibility folding and character classes."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["CACHE_SIZE", "NOT_WORD", "SPACE", "nfkc"]

CACHE_SIZE = 1 << 16  # distinct values remembered per normaliser function

#: Everything but letters and digits (of any script): separators, punctuation, symbols.
NOT_WORD = re.compile(r"[\W_]+")
#: Whitespace, including the zero-width characters that copy-paste leaves behind.
SPACE = re.compile(r"[\s\u200b-\u200f\u2060\ufeff]+")


def nfkc(value: str) -> str:
    """NFKC: full-width letters and digits become ASCII, compatibility ideographs unified ones."""
    return unicodedata.normalize("NFKC", value)
