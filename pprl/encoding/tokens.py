"""Comparisons of a clkhash linkage schema: turn one normalised value into tokens.

Why: which tokens a value yields decides which bits it sets, so these must be
exactly clkhash 0.18's comparators (``clkhash.comparators``): n-grams padded
with ``n - 1`` spaces on both sides (optionally prefixed by their 1-based
position), the whole value as one token, or Vatsalan-Christen numeric
neighbourhoods. Duplicated n-grams are kept, in order, because the
``bitsPerFeature`` strategy gives tokens different weights by position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

__all__ = [
    "COMPARISON_TYPES",
    "Comparison",
    "ExactComparison",
    "NgramComparison",
    "NumericComparison",
    "parse_comparison",
]

COMPARISON_TYPES = ("ngram", "exact", "numeric")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class NgramComparison:
    """``{"type": "ngram", "n": 2, "positional": false}``."""

    n: int
    positional: bool = False
    type: ClassVar[str] = "ngram"

    def tokenize(self, word: str) -> list[str]:
        """The n-grams of ``word`` in order, duplicates kept; none for ``''``."""
        if not word:
            return []
        n = self.n
        if n > 1:
            pad = " " * (n - 1)
            word = pad + word + pad
        count = len(word) - n + 1
        if self.positional:
            return [f"{i + 1} {word[i:i + n]}" for i in range(count)]
        if n == 1:
            return list(word)
        return [word[i:i + n] for i in range(count)]

    @property
    def tokenizer(self) -> Callable[[str], list[str]]:
        """``tokenize`` itself, or an equivalent plain function for the common bigrams."""
        if self.n == 2 and not self.positional:
            return _bigrams
        return self.tokenize


def _bigrams(word: str) -> list[str]:
    """``NgramComparison(2).tokenize`` without the attribute lookups (the encoder's hot path)."""
    if not word:
        return []
    word = f" {word} "
    return [word[i:i + 2] for i in range(len(word) - 1)]


@dataclass(frozen=True)
class ExactComparison:
    """``{"type": "exact"}``: the whole value is one token."""

    type: ClassVar[str] = "exact"

    def tokenize(self, word: str) -> list[str]:
        """``[word]``, or no token for ``''``."""
        return [word] if word else []


@dataclass(frozen=True)
class NumericComparison:
    """``{"type": "numeric", "thresholdDistance": d, "resolution": r, "fractional_precision": p}``.

    ``tokenize`` raises ValueError (or OverflowError) for a value that is not a
    finite number; the encoder reports that as a data error.
    """

    threshold_distance: float
    resolution: int
    fractional_precision: int = 0
    type: ClassVar[str] = "numeric"
    distance_interval: int = field(default=0, init=False, compare=False)

    def __post_init__(self) -> None:
        interval = round(self.threshold_distance * pow(10, self.fractional_precision))
        object.__setattr__(self, "distance_interval", interval)

    def tokenize(self, word: str) -> list[str]:
        """The ``2 * resolution + 1`` neighbourhood tokens of the number ``word``."""
        if not word:
            return []
        precision = self.fractional_precision
        try:
            v = int(word, 10)
            if precision > 0:
                v *= pow(10, precision)
        except ValueError:
            v_float = float(word)
            if precision > 0:
                v = round(v_float * pow(10, precision))
            else:
                v = int(v_float)
        v = v * 2 * self.resolution
        interval = self.distance_interval
        residue = v % interval
        if residue == 0:
            pass
        elif residue < interval / 2:
            v = v - residue
        else:
            v = v + (interval - residue)
        return [str(v + i * interval) for i in range(-self.resolution, self.resolution + 1)]


Comparison = NgramComparison | ExactComparison | NumericComparison

_ALLOWED_KEYS = {
    "ngram": {"type", "n", "positional"},
    "exact": {"type"},
    "numeric": {"type", "thresholdDistance", "resolution", "fractional_precision"},
}


def parse_comparison(obj: Any, problems: list[str]) -> Comparison | None:
    """Parse ``hashing.comparison``; append every problem found to ``problems``."""
    where = "hashing.comparison"
    if not isinstance(obj, dict):
        problems.append(f"{where} must be an object")
        return None
    ctype = obj.get("type")
    if not isinstance(ctype, str) or ctype not in _ALLOWED_KEYS:
        if "type" not in obj:
            problems.append(f"{where}.type is missing")
        else:
            problems.append(f"{where}.type {ctype!r} is not one of {', '.join(COMPARISON_TYPES)}")
        return None
    before = len(problems)
    for key in sorted(set(obj) - _ALLOWED_KEYS[ctype]):
        problems.append(f"{where} has unknown key {key!r} for type {ctype!r}")

    if ctype == "ngram":
        n = obj.get("n")
        if n is None:
            problems.append(f"{where}.n is missing")
        elif not _is_int(n) or n < 1:
            problems.append(f"{where}.n must be an integer >= 1")
        positional = obj.get("positional", False)
        if not isinstance(positional, bool):
            problems.append(f"{where}.positional must be true or false")
        if len(problems) > before:
            return None
        return NgramComparison(cast(int, n), positional)  # checked above

    if ctype == "exact":
        return None if len(problems) > before else ExactComparison()

    threshold = obj.get("thresholdDistance")
    resolution = obj.get("resolution")
    precision = obj.get("fractional_precision", 0)
    if threshold is None:
        problems.append(f"{where}.thresholdDistance is missing")
    elif isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold > 0:
        problems.append(f"{where}.thresholdDistance must be a number > 0")
    if resolution is None:
        problems.append(f"{where}.resolution is missing")
    elif not _is_int(resolution) or resolution < 1:
        problems.append(f"{where}.resolution must be an integer >= 1")
    if not _is_int(precision) or precision < 0:
        problems.append(f"{where}.fractional_precision must be an integer >= 0")
    if len(problems) > before:
        return None
    try:
        comparison = NumericComparison(cast(float, threshold), cast(int, resolution), precision)  # checked above
    except OverflowError:
        problems.append(f"{where}.thresholdDistance is too large")
        return None
    if comparison.distance_interval == 0:
        problems.append(f"{where}.thresholdDistance rounds to 0 at fractional_precision {precision}")
        return None
    return comparison
