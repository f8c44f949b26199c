"""Pairwise linkage quality: precision, recall and F1 against a known truth.

:func:`evaluate_groups` (pairwise measures from group sizes only),
:func:`pair_completeness` (share of true pairs among candidate pairs) and
:func:`threshold_curve` (precision, recall and F1 over a range of thresholds).

Design: docs/design.md#measuring-a-linkage
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pprl.errors import DataValidationError

__all__ = [
    "CurvePoint",
    "LinkageQuality",
    "PairCompleteness",
    "evaluate_groups",
    "pair_completeness",
    "threshold_curve",
]


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
    groups: Iterable[Iterable[Hashable]], truth: Mapping[Any, Hashable]
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


@dataclass(frozen=True)
class PairCompleteness:
    """Share of the true pairs found among candidate pairs."""

    value: float
    found: int
    true_pairs: int
    candidate_pairs: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-ready)."""
        return asdict(self)


def pair_completeness(
    pairs: Iterable[tuple[Hashable, Hashable]], truth: Mapping[Any, Hashable]
) -> PairCompleteness:
    """Fraction of true pairs (as in :func:`evaluate_groups`) that appear in ``pairs``.

    ``pairs`` are candidate pairs of record keys in either order; a pair
    listed twice counts once, a pair of one key with itself never.  The value
    is 1.0 when there is nothing to find.
    """
    true_pairs = sum(_pairs(n) for n in Counter(truth.values()).values())
    seen: set[frozenset[Hashable]] = set()
    found = 0
    missing = object()
    for a, b in pairs:
        if a == b:
            continue
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        ta = truth.get(a, missing)
        if ta is not missing and ta == truth.get(b, missing):
            found += 1
    return PairCompleteness(
        value=found / true_pairs if true_pairs else 1.0,
        found=found,
        true_pairs=true_pairs,
        candidate_pairs=len(seen),
    )


@dataclass(frozen=True)
class CurvePoint:
    """Quality of the links kept at one threshold."""

    threshold: float
    precision: float
    recall: float
    f1: float
    predicted: int
    correct: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict of all fields (JSON-ready)."""
        return asdict(self)


def threshold_curve(
    scores: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    positives: int,
    thresholds: Sequence[float] | np.ndarray,
) -> list[CurvePoint]:
    """Precision, recall and F1 when every link with ``score >= threshold`` is kept.

    ``scores[k]`` is a link's similarity, ``correct[k]`` whether it is right,
    ``positives`` how many right links there are to find.  Conventions as in
    :func:`evaluate_groups` (precision 1.0 when nothing is kept, recall 1.0
    when there is nothing to find).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    c = np.asarray(correct, dtype=bool).ravel()
    if s.shape != c.shape:
        raise DataValidationError("scores and correct flags must have the same length")
    if positives < 0:
        raise DataValidationError("the number of positives cannot be negative")
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    cum_correct = np.concatenate([[0], np.cumsum(c[order])])
    out = []
    for t in np.asarray(thresholds, dtype=np.float64).ravel():
        kept = int(np.searchsorted(-s_sorted, -t, side="right"))
        right = int(cum_correct[kept])
        precision = right / kept if kept else 1.0
        recall = right / positives if positives else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append(CurvePoint(float(t), precision, recall, f1, kept, right))
    return out
