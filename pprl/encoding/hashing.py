"""The ``hashing`` block of a clkhash schema feature: how a value's tokens enter the filter.

Why: besides the comparison (which tokens; see ``tokens``), each hashed
feature says how many bits every token sets (``strategy``: ``bitsPerToken``,
or ``bitsPerFeature`` spread over the value's tokens exactly as clkhash's
``BitsPerFeatureStrategy`` does), which hash picks the bits (``blakeHash`` or
``doubleHash`` with optional ``prevent_singularity``), and which sentinel
marks a missing value (``missingValue``). Parsing collects every problem
instead of stopping at the first, so ``load_schema`` can report them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pprl.encoding.tokens import Comparison, parse_comparison

__all__ = ["HASH_TYPES", "STRATEGIES", "Hashing", "MissingValue", "parse_hashing"]

HASH_TYPES = ("blakeHash", "doubleHash")
STRATEGIES = ("bitsPerToken", "bitsPerFeature")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class MissingValue:
    """``missingValue``: a value equal to ``sentinel`` skips format checks and is
    hashed as ``replace_with`` (``replaceWith`` defaults to the sentinel)."""

    sentinel: str
    replace_with: str


@dataclass(frozen=True)
class Hashing:
    """A feature's ``hashing`` block."""

    comparison: Comparison
    strategy: str  # "bitsPerToken" or "bitsPerFeature"
    bits: int
    hash_type: str = "blakeHash"
    prevent_singularity: bool = False
    missing_value: MissingValue | None = None

    def bits_per_token(self, num_tokens: int) -> tuple[int, ...]:
        """How many bits each of ``num_tokens`` tokens sets (clkhash's StrategySpec)."""
        if self.strategy == "bitsPerToken":
            return (self.bits,) * num_tokens
        k, residue = divmod(self.bits, num_tokens)
        return (k + 1,) * residue + (k,) * (num_tokens - residue)


def parse_hashing(obj: Any, problems: list[str]) -> Hashing | None:
    """Parse a feature's ``hashing`` block; append every problem found to ``problems``."""
    if not isinstance(obj, dict):
        problems.append("hashing must be an object")
        return None
    before = len(problems)
    for key in sorted(set(obj) - {"comparison", "strategy", "hash", "missingValue"}):
        problems.append(f"hashing has unknown key {key!r}")
    comparison = None
    if "comparison" not in obj:
        problems.append("hashing.comparison is missing")
    else:
        comparison = parse_comparison(obj["comparison"], problems)

    strategy, bits = "", 0
    raw_strategy = obj.get("strategy")
    if not isinstance(raw_strategy, dict):
        problems.append("hashing.strategy is missing" if raw_strategy is None
                        else "hashing.strategy must be an object")
    elif len(raw_strategy) != 1 or next(iter(raw_strategy)) not in STRATEGIES:
        problems.append("hashing.strategy must have exactly one key, bitsPerToken or bitsPerFeature")
    else:
        strategy, bits = next(iter(raw_strategy.items()))
        if not _is_int(bits) or bits < 1:
            problems.append(f"hashing.strategy.{strategy} must be an integer >= 1")

    hash_type: Any = "blakeHash"  # a str once the checks below pass
    singular = False
    raw_hash = obj.get("hash", {"type": "blakeHash"})
    if not isinstance(raw_hash, dict):
        problems.append("hashing.hash must be an object")
    else:
        for key in sorted(set(raw_hash) - {"type", "prevent_singularity"}):
            problems.append(f"hashing.hash has unknown key {key!r}")
        hash_type = raw_hash.get("type")
        if hash_type not in HASH_TYPES:
            problems.append(f"hashing.hash.type {hash_type!r} is not one of {', '.join(HASH_TYPES)}")
        if "prevent_singularity" in raw_hash:
            singular = raw_hash["prevent_singularity"]
            if hash_type != "doubleHash":
                problems.append("hashing.hash.prevent_singularity is only allowed with doubleHash")
            elif not isinstance(singular, bool):
                problems.append("hashing.hash.prevent_singularity must be true or false")

    missing = None
    if "missingValue" in obj:
        raw_missing = obj["missingValue"]
        if not isinstance(raw_missing, dict):
            problems.append("hashing.missingValue must be an object")
        else:
            for key in sorted(set(raw_missing) - {"sentinel", "replaceWith"}):
                problems.append(f"hashing.missingValue has unknown key {key!r}")
            sentinel = raw_missing.get("sentinel")
            replace = raw_missing.get("replaceWith", sentinel)
            if not isinstance(sentinel, str):
                problems.append("hashing.missingValue.sentinel must be a string")
            elif not isinstance(replace, str):
                problems.append("hashing.missingValue.replaceWith must be a string")
            else:
                missing = MissingValue(sentinel, replace)

    if len(problems) > before or comparison is None:
        return None
    return Hashing(comparison, strategy, bits, hash_type, bool(singular), missing)
