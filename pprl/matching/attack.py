"""What a bureau can read from CLKs alone: a pattern-mining attack for deployers to run before going live.

A field hashed with few distinct values (gender; a date's century) sets the
same bit positions in every record that has that value: a *block* of bits
that are always on together. The bureau needs no key and no auxiliary data to
find it, and two or more mutually exclusive blocks covering nearly every
record give away a small-cardinality attribute (which group each record is
in); with a public frequency table (say 51% of customers are women) the
groups get their names. :func:`find_blocks` mines them; :func:`attack`
writes the report ``pprl attack`` prints.

Method: keep the bits set in 2-98% of records; correlate them (phi
coefficient, on a sample); join bits whose correlation is at least
``min_correlation`` (0.3: with half the bits set by other tokens, two bits of
one token correlate at about 0.3-0.5, unrelated bits at about 0) into blocks
(connected components); a block of at least ``min_bits`` bits is a token the
bureau can see, present in a record when every one of its bits is set. Blocks that never occur in
the same record (overlap below 1%) and together cover at least 95% of records
form an *attribute* (a field the bureau reads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pprl.errors import DataValidationError

__all__ = ["Attribute", "AttackReport", "Block", "attack", "find_blocks", "frequencies_from_rows"]

#: A block is present in a record when at least this share of its bits is set.
_PRESENT = 0.9


@dataclass(frozen=True)
class Block:
    """Bits that are set together: a token the bureau can see, and the share of records that carry it."""

    bits: tuple[int, ...]
    coverage: float


@dataclass(frozen=True)
class Attribute:
    """Mutually exclusive blocks covering (nearly) every record: a field the bureau can read.

    ``guesses`` maps each block (by position in ``blocks``) to the value of a given frequency table whose
    frequency is closest to its coverage.
    """

    blocks: tuple[Block, ...]
    coverage: float
    guesses: tuple[str, ...] = ()


@dataclass(frozen=True)
class AttackReport:
    records: int
    blocks: list[Block] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)

    @property
    def leaks(self) -> bool:
        """True when a field can be read from the CLKs (an attribute was found)."""
        return bool(self.attributes)

    def render(self) -> str:
        lines = [f"{self.records} records; {len(self.blocks)} recognisable blocks of bits; "
                 f"{len(self.attributes)} attributes readable from the CLKs alone"]
        for b in sorted(self.blocks, key=lambda b: -b.coverage):
            lines.append(f"  block of {len(b.bits)} bits set together in {b.coverage:.1%} of records")
        for a in self.attributes:
            parts = ", ".join(
                f"{b.coverage:.1%}" + (f" ({a.guesses[i]}?)" if a.guesses else "") for i, b in enumerate(a.blocks)
            )
            lines.append(f"  ATTRIBUTE: {len(a.blocks)} mutually exclusive blocks cover {a.coverage:.1%} of "
                         f"records: {parts}")
        if not self.attributes:
            lines.append("  no field can be read from the CLKs alone by this attack")
        return "\n".join(lines)


def _bits(clks: np.ndarray) -> np.ndarray:
    if clks.ndim != 2 or clks.dtype != np.uint8:
        raise DataValidationError("CLKs must be a (records, bytes) uint8 array")
    return np.unpackbits(clks, axis=1)


def find_blocks(
    clks: np.ndarray, *, min_bits: int = 6, min_correlation: float = 0.3, sample: int = 20_000, seed: int = 0
) -> list[Block]:
    """The blocks of bits that are always set together (see the module docstring)."""
    bits = _bits(clks)
    if len(bits) > sample:
        rows = np.random.default_rng(seed).choice(len(bits), sample, replace=False)
        bits = bits[rows]
    n = len(bits)
    if n < 20:
        return []
    freq = bits.mean(axis=0)
    candidates = np.flatnonzero((freq > 0.02) & (freq < 0.98))
    if len(candidates) < 2:
        return []
    x = bits[:, candidates].astype(np.float32)
    x -= x.mean(axis=0)
    x /= np.maximum(x.std(axis=0), 1e-9)
    corr = (x.T @ x) / n
    adjacent = corr >= min_correlation
    seen = np.zeros(len(candidates), dtype=bool)
    blocks = []
    for start in range(len(candidates)):
        if seen[start]:
            continue
        stack, members = [start], []
        seen[start] = True
        while stack:
            i = stack.pop()
            members.append(i)
            for j in np.flatnonzero(adjacent[i] & ~seen):
                seen[j] = True
                stack.append(int(j))
        members = _core(members, corr, min_correlation)
        if len(members) >= min_bits:
            cols = candidates[members]
            present = bits[:, cols].mean(axis=1) >= _PRESENT
            blocks.append(Block(tuple(int(c) for c in sorted(cols)), float(present.mean())))
    return blocks


def _core(members: list[int], corr: np.ndarray, threshold: float) -> list[int]:
    """Drop, one at a time, the member least correlated with the others until every one averages at least
    ``threshold``: a bit that bridges two tokens (a hash collision) would otherwise merge their blocks."""
    members = list(members)
    while len(members) > 2:
        sub = corr[np.ix_(members, members)]
        mean = (sub.sum(axis=1) - np.diag(sub)) / (len(members) - 1)
        worst = int(np.argmin(mean))
        if mean[worst] >= threshold:
            break
        members.pop(worst)
    return members


def attack(
    clks: np.ndarray, *, frequencies: Mapping[str, float] | None = None, min_bits: int = 6,
    min_correlation: float = 0.3,
) -> AttackReport:
    """Mine blocks and the attributes they give away; name the groups from ``frequencies`` if given."""
    blocks = find_blocks(clks, min_bits=min_bits, min_correlation=min_correlation)
    bits = _bits(clks)
    present = [bits[:, list(b.bits)].mean(axis=1) >= _PRESENT for b in blocks]
    attributes: list[Attribute] = []
    used: set[int] = set()
    # greedily group blocks that never co-occur into attributes
    order = sorted(range(len(blocks)), key=lambda i: -blocks[i].coverage)
    for i in order:
        if i in used:
            continue
        group = [i]
        for j in order:
            if j == i or j in used or j in group:
                continue
            if all(float((present[j] & present[k]).mean()) < 0.01 for k in group):
                group.append(j)
        covered = np.logical_or.reduce([present[k] for k in group]) if group else np.zeros(len(bits), dtype=bool)
        if len(group) >= 2 and covered.mean() >= 0.95:
            chosen = tuple(blocks[k] for k in group)
            guesses: tuple[str, ...] = ()
            if frequencies:
                guesses = tuple(_closest(frequencies, b.coverage / covered.mean()) for b in chosen)
            attributes.append(Attribute(chosen, float(covered.mean()), guesses))
            used.update(group)
    return AttackReport(len(bits), blocks, attributes)


def _closest(frequencies: Mapping[str, float], share: float) -> str:
    return min(frequencies, key=lambda v: abs(float(frequencies[v]) - share))


def frequencies_from_rows(rows: Sequence[tuple[str, str]], source: str) -> dict[str, float]:
    """A public frequency table (value, frequency) as a dict; DataValidationError naming ``source``."""
    out: dict[str, float] = {}
    for number, (value, freq) in enumerate(rows, start=1):
        try:
            f = float(freq)
        except ValueError:
            raise DataValidationError(f"{source}: row {number}: the frequency is not a number") from None
        if not 0 <= f <= 1:
            raise DataValidationError(f"{source}: row {number}: a frequency is between 0 and 1")
        out[value] = f
    if not out:
        raise DataValidationError(f"{source}: no rows")
    return out
