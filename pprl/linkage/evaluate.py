"""Pairwise linkage quality: precision, recall and F1 against a known truth.

Linkage can only be measured where the true entities are known (synthetic
populations, benchmarks).  We use the standard pairwise measures: every
unordered pair of records placed in one predicted entity is a predicted
link, every unordered pair of records that share a true entity is a true
link.  This counts a three-record entity as three links, so partially
correct groups earn partial credit.  Counting uses group sizes only
(``n * (n - 1) / 2`` per group), never the quadratic list of pairs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from pprl.errors import DataValidationError

__all__ = ["LinkageQuality", "evaluate_groups"]


@dataclass(frozen=True)
class LinkageQuality:
    """Pairwise quality of a predicted linkage."""

    precision: float
    recall: float
    f1: float
    true_pairs: int
    predicted_pairs: int
    correct_pairs: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-ready)."""
        return asdict(self)


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def evaluate_groups(
    groups: Iterable[Iterable[Hashable]], truth: Mapping[Hashable, Hashable]
) -> LinkageQuality:
    """Compare predicted entities with the true ones, pair by pair.

    ``groups`` are the predicted entities, each an iterable of record keys
    (any hashable, e.g. ``("platform_1", "u42")``); singletons are allowed
    and predict nothing.  ``truth`` maps every record key to its true entity
    id; the true pairs are all pairs of keys in ``truth`` sharing an entity.
    A predicted key missing from ``truth`` is simply never part of a correct
    pair.  A key appearing twice in ``groups`` is an error
    (:class:`~pprl.errors.DataValidationError`): entities must be disjoint.

    Precision is ``correct / predicted`` (1.0 when nothing is predicted),
    recall ``correct / true`` (1.0 when there is nothing to find), F1 their
    harmonic mean (0.0 when both are 0).
    """
    true_pairs = sum(_pairs(n) for n in Counter(truth.values()).values())
    seen: set[Hashable] = set()
    predicted = 0
    correct = 0
    missing = object()
    for group in groups:
        keys = list(group)
        for key in keys:
            if key in seen:
                raise DataValidationError(
                    "a record key appears more than once in the predicted groups"
                )
            seen.add(key)
        predicted += _pairs(len(keys))
        by_entity = Counter(truth.get(key, missing) for key in keys)
        by_entity.pop(missing, None)
        correct += sum(_pairs(n) for n in by_entity.values())
    precision = correct / predicted if predicted else 1.0
    recall = correct / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return LinkageQuality(
        precision=precision,
        recall=recall,
        f1=f1,
        true_pairs=true_pairs,
        predicted_pairs=predicted,
        correct_pairs=correct,
    )
