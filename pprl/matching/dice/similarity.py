"""Dice-coefficient candidate pairs between Bloom-filter encodings (CLKs).

The public API and its argument checks: :func:`find_candidates` (equal to
anonlink's ``find_candidate_pairs`` with ``dice_coefficient_accelerated``,
popcount window included) and :func:`dice_pairs` (exact window). The native C
kernel or the numpy fallback computes the blocks (:data:`NATIVE` says which;
``PPRL_NO_DICE``, alias ``PPRL_NO_NATIVE``, forces the fallback: :mod:`pprl._native`).

Design: docs/design.md#dice-similarity
"""

from __future__ import annotations

import itertools
import numbers
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pprl.errors import DataValidationError
from pprl.matching.dice import native as _dice_native
from pprl.matching.dice.compare import compare
from pprl.matching.dice.rows import Window, occurrence, prepare

__all__ = [
    "NATIVE",
    "Candidates",
    "dice_pairs",
    "find_candidates",
    "popcounts",
]

NATIVE: bool  # provided by __getattr__, read on access: True when the native kernel is in use now


def __getattr__(name: str) -> object:
    """``NATIVE``: :func:`pprl.matching.dice.native.dice_enabled`, evaluated on access (the switch may change)."""
    if name == "NATIVE":
        return _dice_native.dice_enabled()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Candidates:
    """Candidate pairs across datasets.

    ``similarity[k]`` is the Dice coefficient of record ``record[k, 0]`` of
    dataset ``dataset[k, 0]`` and record ``record[k, 1]`` of dataset
    ``dataset[k, 1]``.  :func:`find_candidates` returns them in anonlink's
    order: decreasing similarity, then increasing
    ``(dataset[k, 0], dataset[k, 1], record[k, 0], record[k, 1])``.
    """

    similarity: np.ndarray
    dataset: np.ndarray
    record: np.ndarray

    def __post_init__(self) -> None:
        try:
            sim = np.ascontiguousarray(self.similarity, dtype=np.float64)
            dset = np.ascontiguousarray(self.dataset, dtype=np.int64)
            rec = np.ascontiguousarray(self.record, dtype=np.int64)
        except (TypeError, ValueError):
            raise DataValidationError("candidates must be numeric arrays") from None
        if sim.ndim != 1:
            raise DataValidationError("candidate similarities must be one-dimensional")
        m = sim.shape[0]
        if m == 0:
            dset = dset.reshape(0, 2) if dset.size == 0 else dset
            rec = rec.reshape(0, 2) if rec.size == 0 else rec
        if dset.shape != (m, 2) or rec.shape != (m, 2):
            raise DataValidationError(
                f"candidate index arrays must have shape ({m}, 2), "
                f"got {dset.shape} and {rec.shape}"
            )
        if m and (dset.min() < 0 or rec.min() < 0):
            raise DataValidationError("candidate indices must be non-negative")
        object.__setattr__(self, "similarity", sim)
        object.__setattr__(self, "dataset", dset)
        object.__setattr__(self, "record", rec)

    def __len__(self) -> int:
        return int(self.similarity.shape[0])

    @classmethod
    def empty(cls) -> Candidates:
        """No candidates."""
        return cls(
            np.empty(0, np.float64), np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
        )


def _check_threshold(threshold: float) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise ValueError(f"threshold must be a number in [0, 1], got {threshold!r}")
    t = float(threshold)
    if not 0.0 <= t <= 1.0:  # also rejects NaN
        raise ValueError(f"threshold must be in [0, 1], got {t!r}")
    return t


def _check_encodings(x: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise DataValidationError(f"{name} must be a numpy array of uint8 CLK bytes")
    if x.dtype != np.uint8 or x.ndim != 2:
        raise DataValidationError(
            f"{name} must be a 2-D uint8 array (records x bytes), "
            f"got dtype {x.dtype} with {x.ndim} dimension(s)"
        )
    return np.ascontiguousarray(x)


def _check_window(window: str) -> Window:
    if window not in ("exact", "anonlink"):
        raise ValueError(f"window must be 'exact' or 'anonlink', got {window!r}")
    return window  # type: ignore[return-value]


def _check_chunk_rows(chunk_rows: int) -> int:
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, numbers.Integral):
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    return int(chunk_rows)


def _check_k(k: int | None) -> int | None:
    if k is None:
        return None
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"k must be None or a non-negative integer, got {k!r}")
    return int(k)


def _check_workers(workers: int | None) -> int:
    """Threads to use; None means every CPU this process may run on."""
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, numbers.Integral) or workers < 1:
        raise ValueError(f"workers must be None or a positive integer, got {workers!r}")
    return int(workers)


def popcounts(a: np.ndarray) -> np.ndarray:
    """Number of set bits in each row of a uint8 encoding array (int64)."""
    return prepare(_check_encodings(a, "a")).counts


def dice_pairs(
    a: np.ndarray,
    b: np.ndarray,
    threshold: float,
    *,
    chunk_rows: int = 2048,
    window: Window = "exact",
    k: int | None = None,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(i, j, sim)`` with ``Dice(a[i], b[j]) >= threshold``.

    ``a`` and ``b`` are uint8 arrays of CLK bytes with the same number of
    columns.  Returns int64 arrays ``i``, ``j`` and a float64 array ``sim``,
    sorted by ``(i, j)``.  ``chunk_rows`` caps how many rows of ``a`` one
    block (one unit of work for a thread) holds; memory beyond the pairs
    found stays bounded whatever the sizes.  ``window="anonlink"``
    additionally drops the pairs anonlink's popcount window drops (see the
    module docstring).  ``k`` keeps only the ``k`` best pairs of each row of
    ``a`` (highest similarity, ties to the lower ``j``).  ``workers`` is the
    number of threads (None: every available CPU); results do not depend on it.
    """
    t = _check_threshold(threshold)
    window = _check_window(window)
    chunk_rows = _check_chunk_rows(chunk_rows)
    k = _check_k(k)
    n_workers = _check_workers(workers)
    a = _check_encodings(a, "a")
    b = _check_encodings(b, "b")
    if a.shape[1] != b.shape[1]:
        raise DataValidationError(
            f"encodings differ in length: {a.shape[1]} bytes vs {b.shape[1]} bytes"
        )
    return compare(
        prepare(a),
        prepare(b),
        t,
        chunk_rows=chunk_rows,
        window=window,
        k=k,
        workers=n_workers,
    )


def find_candidates(
    datasets: Sequence[np.ndarray],
    threshold: float,
    *,
    progress: bool = False,
    window: Window = "anonlink",
    chunk_rows: int = 2048,
    k: int | None = None,
    workers: int | None = None,
) -> Candidates:
    """Candidate pairs between every two distinct datasets.

    Equivalent to anonlink's ``find_candidate_pairs(datasets,
    dice_coefficient_accelerated, threshold, k)`` (no blocking): the same
    pairs, bit-identical similarities, and the same order (decreasing
    similarity, then dataset indices, then record indices).  Pairs always
    have ``dataset[:, 0] < dataset[:, 1]``.  ``progress`` shows a tqdm bar on
    stderr.  ``window="exact"`` keeps the few boundary pairs anonlink's
    rounded popcount window drops.  ``k`` follows anonlink: each record of the
    first dataset of a pair keeps its ``k`` best matches in the second, then,
    in the final order, a pair is kept only while neither of its records has
    been seen in ``k`` earlier pairs of the same two datasets.  ``workers``
    is the number of threads (None: every available CPU).
    """
    t = _check_threshold(threshold)
    window = _check_window(window)
    chunk_rows = _check_chunk_rows(chunk_rows)
    k = _check_k(k)
    n_workers = _check_workers(workers)
    arrays = [_check_encodings(d, f"datasets[{n}]") for n, d in enumerate(datasets)]
    widths = {d.shape[1] for d in arrays}
    if len(widths) > 1:
        raise DataValidationError(
            f"datasets have encodings of different lengths (bytes: {sorted(widths)})"
        )
    prepared = [prepare(d) for d in arrays]
    pairs = list(itertools.combinations(range(len(prepared)), 2))
    bar = None
    on_rows = None
    if progress:
        from tqdm import tqdm
        tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

        total = sum(prepared[d0].counts.shape[0] for d0, _ in pairs)
        bar = tqdm(total=total, unit="rec", desc="comparing", file=sys.stderr)
        on_rows = bar.update
    sims: list[np.ndarray] = []
    dsets: list[np.ndarray] = []
    recs: list[np.ndarray] = []
    try:
        for d0, d1 in pairs:
            i, j, s = compare(
                prepared[d0],
                prepared[d1],
                t,
                chunk_rows=chunk_rows,
                window=window,
                k=k,
                workers=n_workers,
                on_rows=on_rows,
                ordered=False,
            )
            sims.append(s)
            dsets.append(np.broadcast_to(np.array([d0, d1], np.int64), (s.shape[0], 2)))
            recs.append(np.stack([i, j], axis=1))
    finally:
        if bar is not None:
            bar.close()
    if not sims:
        return Candidates.empty()
    sim = np.concatenate(sims)
    dset = np.concatenate(dsets)
    rec = np.concatenate(recs).reshape(-1, 2)
    if len(pairs) == 1:  # one pair of datasets: its indices are the same on every row
        order = np.lexsort((rec[:, 1], rec[:, 0], -sim))
    else:
        order = np.lexsort((rec[:, 1], rec[:, 0], dset[:, 1], dset[:, 0], -sim))
    sim, dset, rec = sim[order], dset[order], rec[order]
    if k is not None:
        # anonlink's _enforce_k: walking the sorted pairs, every pair counts
        # against both of its records (per dataset pair), kept or not.
        keep = (occurrence(dset[:, 0], dset[:, 1], rec[:, 1]) < k) & (
            occurrence(dset[:, 0], dset[:, 1], rec[:, 0]) < k
        )
        sim, dset, rec = sim[keep], dset[keep], rec[keep]
    return Candidates(sim, dset, rec)
