"""Dice-coefficient candidate pairs between Bloom-filter encodings (CLKs).

The bureau links platforms' users by comparing their CLKs: every pair of
records from two different platforms whose Dice coefficient
``2|A & B| / (|A| + |B|)`` reaches a threshold becomes a *candidate pair*,
and a solver (:mod:`pprl.linkage.solve`) turns candidates into entities.

Why our own implementation: the project must not depend on anonlink at run
time (its pins clash with ours), yet results must be identical to anonlink's
``find_candidate_pairs`` with ``dice_coefficient_accelerated`` so that
benchmarks and the reference tool agree.  This module is pure numpy:

* each encoding is a ``uint8`` array of shape ``(n_records, l // 8)``, one row
  per CLK in clkhash's ``bitarray.tobytes()`` layout;
* rows are viewed as 64-bit words (zero-padded to a multiple of 8 bytes) and
  the popcount of ``A & B`` is taken with ``np.bitwise_count`` (numpy >= 2)
  or a byte lookup table (older numpy), one word at a time over a small tile
  of pairs, so memory stays well under a few MB whatever the input size;
* left rows are processed in popcount order and each tile only looks at the
  right rows whose popcount can still reach the threshold (a pair can only
  reach ``t`` if ``2 min(|A|, |B|) / (|A| + |B|) >= t``);
* similarities are ``(2 * |A & B|) / (|A| + |B|)`` in float64 exactly as
  anonlink's C++ computes them, so values are bit-for-bit equal; the Dice
  coefficient of two all-zero rows is 0.0.

anonlink-compatible pruning: anonlink's C++ skips a pair when
``|pa - pb| > (uint32)(2 * pa * (1/t - 1))`` with ``pa`` the popcount of the
left record.  Floating-point rounding makes that window one short for some
thresholds (e.g. t = 0.75, pa = 30, pb = 50 and A a subset of B: Dice is
exactly 0.75 but anonlink drops the pair).  :func:`dice_pairs` is exact by
default; :func:`find_candidates` reproduces anonlink's window by default so
its output equals anonlink's.  (For thresholds below about 4e-6 anonlink's
window overflows a uint32, which is undefined behaviour in C++; we apply no
window there.)
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from pprl.errors import DataValidationError

__all__ = [
    "Candidates",
    "dice_pairs",
    "find_candidates",
    "popcounts",
]

Window = Literal["exact", "anonlink"]

# Pairs per tile.  64K pairs keep the uint64 scratch (512 KB) in L2 cache,
# which measured fastest; rows per tile are few so numpy's inner loops run
# along the long (right-hand) axis and each tile gets a tight popcount window.
_TILE_PAIRS = 65536
_TILE_ROWS = 8

_HAVE_BITWISE_COUNT = hasattr(np, "bitwise_count")
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


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


@dataclass(frozen=True)
class _Prepared:
    """One encoding array, ready for comparison."""

    lanes: np.ndarray  # (n, n_lanes) uint64 words, or uint8 bytes without bitwise_count
    lanes_t: np.ndarray  # (n_lanes, n) of the rows in popcount order
    counts: np.ndarray  # (n,) int64 popcount per row, original order
    order: np.ndarray  # (n,) row indices sorted by popcount (stable)
    sorted_counts: np.ndarray  # counts[order]
    nbytes: int


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


def _lane_popcount(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    if _HAVE_BITWISE_COUNT and x.dtype == np.uint64:
        return np.bitwise_count(x, out=out)
    return np.take(_BYTE_POPCOUNT, x, out=out)


def _prepare(x: np.ndarray) -> _Prepared:
    n, nbytes = x.shape
    if _HAVE_BITWISE_COUNT:
        n_lanes = -(-nbytes // 8)
        if nbytes == n_lanes * 8:
            padded = x
        else:
            padded = np.zeros((n, n_lanes * 8), dtype=np.uint8)
            padded[:, :nbytes] = x
        lanes = padded.view(np.uint64).reshape(n, n_lanes)
    else:
        lanes = x
    counts = _lane_popcount(lanes).sum(axis=1, dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    return _Prepared(
        lanes=lanes,
        lanes_t=np.ascontiguousarray(lanes[order].T),
        counts=counts,
        order=order,
        sorted_counts=counts[order],
        nbytes=nbytes,
    )


def popcounts(a: np.ndarray) -> np.ndarray:
    """Number of set bits in each row of a uint8 encoding array (int64)."""
    return _prepare(_check_encodings(a, "a")).counts


def _anonlink_delta(t: float) -> float | None:
    """``1/t - 1`` as anonlink computes it, or None when it applies no window."""
    if t <= 0.0:
        return None
    return 1.0 / t - 1.0


def _compare(
    pa: _Prepared,
    pb: _Prepared,
    t: float,
    *,
    chunk_rows: int,
    window: Window,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs with similarity >= t, sorted by (i, j)."""
    n, m = pa.counts.shape[0], pb.counts.shape[0]
    empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64))
    if n == 0 or m == 0:
        if on_rows is not None and n:
            on_rows(n)
        return empty
    n_lanes = pa.lanes.shape[1]
    acc_dtype = np.uint16 if pa.nbytes * 8 <= np.iinfo(np.uint16).max else np.uint32
    delta = _anonlink_delta(t) if window == "anonlink" else None
    # Stretch the exact window by a little so rounding can never prune a
    # pair the final `sim >= t` test would keep; the test itself is exact.
    lo_factor = t / (2.0 - t) * (1.0 - 1e-9)
    hi_factor = (2.0 - t) / t * (1.0 + 1e-9) if t > 0 else 0.0
    half_t = t / 2.0 * (1.0 - 1e-12)
    rows = max(1, min(chunk_rows, _TILE_ROWS))
    cols = max(1, _TILE_PAIRS // rows)
    out_i: list[np.ndarray] = []
    out_j: list[np.ndarray] = []
    out_s: list[np.ndarray] = []
    a_sorted = pa.counts[pa.order]
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        a_idx = pa.order[r0:r1]
        a_cnt = a_sorted[r0:r1]
        a_lanes = pa.lanes[a_idx]
        a_half = a_cnt * half_t
        c_min = math.floor(float(a_cnt[0]) * lo_factor)
        c_max = math.ceil(float(a_cnt[-1]) * hi_factor)
        lo = int(np.searchsorted(pb.sorted_counts, c_min, side="left"))
        hi = m if t <= 0 else int(np.searchsorted(pb.sorted_counts, c_max, side="right"))
        for c0 in range(lo, hi, cols):
            c1 = min(hi, c0 + cols)
            shape = (r1 - r0, c1 - c0)
            tmp = np.empty(shape, dtype=pa.lanes.dtype)
            cnt = np.empty(shape, dtype=np.uint8)
            inter = np.zeros(shape, dtype=acc_dtype)
            for k in range(n_lanes):
                np.bitwise_and(a_lanes[:, k, None], pb.lanes_t[k, None, c0:c1], out=tmp)
                _lane_popcount(tmp, out=cnt)
                np.add(inter, cnt, out=inter)
            # Cheap float pre-test with a little slack, then the exact
            # anonlink arithmetic on the few survivors.
            b_cnt = pb.sorted_counts[c0:c1]
            maybe = inter >= np.add.outer(a_half, b_cnt * half_t)
            if not maybe.any():
                continue
            ii, jj = np.nonzero(maybe)
            pa_k = a_cnt[ii]
            pb_k = b_cnt[jj]
            denom = (pa_k + pb_k).astype(np.float64)
            numer = 2.0 * inter[ii, jj].astype(np.float64)
            sim = np.divide(numer, denom, out=np.zeros(ii.shape[0]), where=denom > 0)
            keep = sim >= t
            if delta is not None:
                # anonlink: abs_diff(pa, pb) <= (uint32)(2 * pa * (1/t - 1)).
                limit = (2 * pa_k).astype(np.float64) * delta
                limit[limit >= 2.0**32] = np.inf  # C++ UB there; no window
                keep &= np.abs(pa_k - pb_k) <= limit
            if keep.any():
                out_i.append(a_idx[ii[keep]])
                out_j.append(pb.order[c0 + jj[keep]])
                out_s.append(sim[keep])
        if on_rows is not None:
            on_rows(r1 - r0)
    if not out_i:
        return empty
    i = np.concatenate(out_i)
    j = np.concatenate(out_j)
    s = np.concatenate(out_s)
    order = np.lexsort((j, i))
    return i[order], j[order], s[order]


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


def dice_pairs(
    a: np.ndarray,
    b: np.ndarray,
    threshold: float,
    *,
    chunk_rows: int = 2048,
    window: Window = "exact",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ``(i, j, sim)`` with ``Dice(a[i], b[j]) >= threshold``.

    ``a`` and ``b`` are uint8 arrays of CLK bytes with the same number of
    columns.  Returns int64 arrays ``i``, ``j`` and a float64 array ``sim``,
    sorted by ``(i, j)``.  ``chunk_rows`` caps how many rows of ``a`` are
    compared in one tile (a tile holds at most ~32K pairs, so memory stays
    bounded whatever the sizes).  ``window="anonlink"`` additionally drops
    the pairs anonlink's popcount window drops (see the module docstring).
    """
    t = _check_threshold(threshold)
    window = _check_window(window)
    chunk_rows = _check_chunk_rows(chunk_rows)
    a = _check_encodings(a, "a")
    b = _check_encodings(b, "b")
    if a.shape[1] != b.shape[1]:
        raise DataValidationError(
            f"encodings differ in length: {a.shape[1]} bytes vs {b.shape[1]} bytes"
        )
    return _compare(_prepare(a), _prepare(b), t, chunk_rows=chunk_rows, window=window)


def find_candidates(
    datasets: Sequence[np.ndarray],
    threshold: float,
    *,
    progress: bool = False,
    window: Window = "anonlink",
    chunk_rows: int = 2048,
) -> Candidates:
    """Candidate pairs between every two distinct datasets.

    Equivalent to anonlink's ``find_candidate_pairs(datasets,
    dice_coefficient_accelerated, threshold)`` (no blocking, no k): the same
    pairs, bit-identical similarities, and the same order (decreasing
    similarity, then dataset indices, then record indices).  Pairs always
    have ``dataset[:, 0] < dataset[:, 1]``.  ``progress`` shows a tqdm bar on
    stderr.  ``window="exact"`` keeps the few boundary pairs anonlink's
    rounded popcount window drops.
    """
    t = _check_threshold(threshold)
    window = _check_window(window)
    chunk_rows = _check_chunk_rows(chunk_rows)
    arrays = [_check_encodings(d, f"datasets[{k}]") for k, d in enumerate(datasets)]
    widths = {d.shape[1] for d in arrays}
    if len(widths) > 1:
        raise DataValidationError(
            f"datasets have encodings of different lengths (bytes: {sorted(widths)})"
        )
    prepared = [_prepare(d) for d in arrays]
    pairs = list(itertools.combinations(range(len(prepared)), 2))
    bar = None
    on_rows = None
    if progress:
        from tqdm import tqdm

        total = sum(prepared[d0].counts.shape[0] for d0, _ in pairs)
        bar = tqdm(total=total, unit="rec", desc="comparing", file=sys.stderr)
        on_rows = bar.update
    sims: list[np.ndarray] = []
    dsets: list[np.ndarray] = []
    recs: list[np.ndarray] = []
    try:
        for d0, d1 in pairs:
            i, j, s = _compare(
                prepared[d0],
                prepared[d1],
                t,
                chunk_rows=chunk_rows,
                window=window,
                on_rows=on_rows,
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
    order = np.lexsort((rec[:, 1], rec[:, 0], dset[:, 1], dset[:, 0], -sim))
    return Candidates(sim[order], dset[order], rec[order])
