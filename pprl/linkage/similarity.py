"""Dice-coefficient candidate pairs between Bloom-filter encodings (CLKs).

The bureau links platforms' users by comparing their CLKs: every pair of
records from two different platforms whose Dice coefficient
``2|A & B| / (|A| + |B|)`` reaches a threshold becomes a *candidate pair*,
and a solver (:mod:`pprl.linkage.solve`) turns candidates into entities.

Why our own implementation: the project must not depend on anonlink at run
time (its pins clash with ours), yet results must be identical to anonlink's
``find_candidate_pairs`` with ``dice_coefficient_accelerated`` so that
benchmarks and the reference tool agree.

* each encoding is a ``uint8`` array of shape ``(n_records, l // 8)``, one row
  per CLK in clkhash's ``bitarray.tobytes()`` layout;
* both sides are sorted by popcount and each left row only looks at the right
  rows whose popcount can still reach the threshold (a pair can only reach
  ``t`` if ``2 min(|A|, |B|) / (|A| + |B|) >= t``);
* left rows are cut into blocks which run on ``workers`` threads;
* similarities are ``(2 * |A & B|) / (|A| + |B|)`` in float64 exactly as
  anonlink's C++ computes them, so values are bit-for-bit equal; the Dice
  coefficient of two all-zero rows is 0.0.

Two interchangeable kernels compute the blocks, with identical results:

* the native kernel, the C extension ``pprl.linkage._dice`` built with the
  package: 64-bit words, hardware popcount (AVX-512 VPOPCNTDQ or POPCNT,
  chosen at run time; portable code elsewhere), four left rows per pass over
  the right rows, the GIL released so blocks run on all cores;
* a pure-numpy fallback, used when the extension cannot be imported or the
  environment variable ``PPRL_NO_NATIVE`` is set (to anything but ``0``):
  ``np.bitwise_count`` (numpy >= 2) or a byte lookup table over small tiles of
  pairs, so memory stays well under a few MB whatever the input size.

:data:`NATIVE` says which one is in use.  Memory stays bounded either way:
each block holds at most ``chunk_rows`` left rows, and its scratch space
(with ``k``, four heaps of ``k`` pairs) is freed when the block is done;
only the pairs found are kept.

anonlink-compatible pruning: anonlink's C++ skips a pair when
``|pa - pb| > (uint32)(2 * pa * (1/t - 1))`` with ``pa`` the popcount of the
left record.  Floating-point rounding makes that window one short for some
thresholds (e.g. t = 0.75, pa = 30, pb = 50 and A a subset of B: Dice is
exactly 0.75 but anonlink drops the pair).  :func:`dice_pairs` is exact by
default; :func:`find_candidates` reproduces anonlink's window by default so
its output equals anonlink's.  (For thresholds below about 4e-6 anonlink's
window overflows a uint32, which is undefined behaviour in C++; we apply no
window there.)

Top-k: ``k`` keeps, for each left record, its ``k`` best pairs (highest
similarity, ties to the lower right index), as anonlink's
``dice_coefficient_accelerated(..., k=k)`` does; :func:`find_candidates`
then also applies anonlink's ``find_candidate_pairs`` rule of at most ``k``
pairs per record per dataset pair on both sides.
"""

from __future__ import annotations

import itertools
import numbers
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cached_property
from types import ModuleType
from typing import Literal

import numpy as np

from pprl.errors import DataValidationError

__all__ = [
    "NATIVE",
    "Candidates",
    "dice_pairs",
    "find_candidates",
    "popcounts",
]

Window = Literal["exact", "anonlink"]
Triples = tuple[np.ndarray, np.ndarray, np.ndarray]


def _load_native() -> ModuleType | None:
    """The C kernel, or None when it is missing or ``PPRL_NO_NATIVE`` is set."""
    if os.environ.get("PPRL_NO_NATIVE", "").strip() not in ("", "0"):
        return None
    try:
        from pprl.linkage import _dice
    except ImportError:
        return None
    return _dice


# The kernel in use; tests set it to None to run the numpy path.
_native: ModuleType | None = _load_native()

#: True when the native kernel is in use, False for the numpy fallback.
NATIVE: bool = _native is not None


def _kernel() -> ModuleType:
    """The native kernel; only called on the native path."""
    if _native is None:
        raise RuntimeError("the native Dice kernel is not loaded")
    return _native


# Force one native variant ("generic", "popcnt", "avx512"); None picks the
# fastest this CPU supports.  For tests and benchmarks.
_ISA: str | None = None
_ISA_CODES = {"generic": 0, "popcnt": 1, "avx512": 2}
_AVX512_MAX_WORDS = 1023  # the AVX-512 kernel packs counts into 16 bits

# numpy path: pairs per tile.  64K pairs keep the uint64 scratch (512 KB) in
# L2 cache, which measured fastest; rows per tile are few so numpy's inner
# loops run along the long (right-hand) axis and each tile gets a tight
# popcount window.
_TILE_PAIRS = 65536
_TILE_ROWS = 8

# Blocks of left rows: enough per worker that threads finish together (blocks
# differ in work because their popcount windows differ), but not so small
# that per-call overhead shows.
_BLOCKS_PER_WORKER = 8
_MIN_BLOCK_ROWS = 64

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
class _NativeRows:
    """One encoding array laid out for the C kernel, rows in popcount order."""

    words: np.ndarray  # (n, nwords) uint64, zero-padded, 64-byte aligned
    counts: np.ndarray  # (n,) uint32 popcounts
    rest: np.ndarray  # (n,) uint32 popcounts of words nwords // 2 onwards
    index: np.ndarray  # (n,) int64 original row numbers
    nwords: int


@dataclass(frozen=True)
class _Prepared:
    """One encoding array, ready for comparison.

    The layouts each kernel needs are built on first use, so an array only
    pays for the kernel that compares it.
    """

    data: np.ndarray  # (n, nbytes) uint8, C-contiguous
    lanes: np.ndarray  # (n, n_lanes) uint64 words, or uint8 bytes without bitwise_count
    counts: np.ndarray  # (n,) int64 popcount per row, original order
    order: np.ndarray  # (n,) row indices sorted by popcount (stable)
    sorted_counts: np.ndarray  # counts[order]
    nbytes: int

    @cached_property
    def lanes_t(self) -> np.ndarray:
        """numpy path: ``(n_lanes, n)`` lanes of the rows in popcount order."""
        return np.ascontiguousarray(self.lanes[self.order].T)

    @cached_property
    def native(self) -> _NativeRows:
        """Native path: aligned 64-bit words in popcount order."""
        n = self.data.shape[0]
        nwords = max(1, -(-self.nbytes // 8))
        words = _aligned_zeros(n, nwords)
        words.view(np.uint8)[:, : self.nbytes] = self.data[self.order]
        rest = _lane_popcount(words[:, nwords // 2 :]).sum(axis=1, dtype=np.uint32)
        return _NativeRows(
            words=words,
            counts=self.sorted_counts.astype(np.uint32),
            rest=rest,
            index=np.ascontiguousarray(self.order, dtype=np.int64),
            nwords=nwords,
        )


def _aligned_zeros(rows: int, cols: int) -> np.ndarray:
    """A zeroed ``(rows, cols)`` uint64 array starting on a 64-byte boundary.

    Rows of 1024-bit CLKs then never straddle cache lines in the kernel.
    """
    buf = np.zeros(rows * cols + 8, dtype=np.uint64)
    offset = (-(buf.ctypes.data // 8)) % 8
    return buf[offset : offset + rows * cols].reshape(rows, cols)


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


def _lane_popcount(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Popcount of each element of a uint64 or uint8 array."""
    if x.dtype == np.uint64:
        if _HAVE_BITWISE_COUNT:
            return np.bitwise_count(x, out=out)
        x = x.view(np.uint8).reshape(*x.shape[:-1], -1)  # without numpy 2: bytes
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
        data=x,
        lanes=lanes,
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


def _empty_triples() -> Triples:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


def _occurrence(*keys: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows share all its ``keys`` (0-based)."""
    n = keys[0].shape[0]
    if n == 0:
        return np.empty(0, np.int64)
    position = np.arange(n)
    order = np.lexsort((position, *reversed(keys)))
    same_as_previous = np.zeros(n, dtype=bool)
    same_as_previous[1:] = True
    for key in keys:
        ks = key[order]
        same_as_previous[1:] &= ks[1:] == ks[:-1]
    starts = np.flatnonzero(~same_as_previous)
    sizes = np.diff(np.append(starts, n))
    rank = position - np.repeat(starts, sizes)
    out = np.empty(n, dtype=np.int64)
    out[order] = rank
    return out


def _top_k_per_row(i: np.ndarray, j: np.ndarray, s: np.ndarray, k: int) -> Triples:
    """The ``k`` best pairs of each left row ``i``: highest ``s``, then lowest ``j``."""
    order = np.lexsort((j, -s, i))
    i, j, s = i[order], j[order], s[order]
    keep = _occurrence(i) < k
    return i[keep], j[keep], s[keep]


@dataclass(frozen=True)
class _Job:
    """One comparison of two prepared arrays, split into blocks of left rows."""

    pa: _Prepared
    pb: _Prepared
    t: float
    window: Window
    k: int | None
    chunk_rows: int
    lo: np.ndarray  # (n,) int64: first right row (popcount order) per sorted left row
    hi: np.ndarray  # (n,) int64: one past the last

    @classmethod
    def create(
        cls, pa: _Prepared, pb: _Prepared, t: float, window: Window, k: int | None, chunk_rows: int
    ) -> _Job:
        # Stretch the exact window by a little so rounding can never prune a
        # pair the final `sim >= t` test would keep; the test itself is exact.
        lo_factor = t / (2.0 - t) * (1.0 - 1e-9)
        c_min = np.floor(pa.sorted_counts * lo_factor)
        lo = np.searchsorted(pb.sorted_counts, c_min, side="left").astype(np.int64)
        if t <= 0:
            hi = np.full(lo.shape, pb.sorted_counts.shape[0], dtype=np.int64)
        else:
            hi_factor = (2.0 - t) / t * (1.0 + 1e-9)
            c_max = np.ceil(pa.sorted_counts * hi_factor)
            hi = np.searchsorted(pb.sorted_counts, c_max, side="right").astype(np.int64)
        return cls(pa, pb, t, window, k, chunk_rows, lo, hi)

    # --- native kernel ---------------------------------------------------------

    @cached_property
    def _need(self) -> bytes:
        return _kernel().need_table(self.t, 64 * self.pa.native.nwords)

    @cached_property
    def _isa(self) -> int:
        available = _kernel().isas()
        if _ISA is not None:
            if _ISA not in available:
                raise ValueError(f"kernel variant {_ISA!r} is not available here: {available}")
            return _ISA_CODES[_ISA]
        usable = [
            name
            for name in available
            if name != "avx512" or self.pa.native.nwords <= _AVX512_MAX_WORDS
        ]
        return _ISA_CODES[usable[-1]]

    def native_block(self, r0: int, r1: int) -> Triples:
        """Pairs of sorted left rows ``r0 .. r1-1``, by the C kernel (GIL released)."""
        a, b = self.pa.native, self.pb.native
        delta = _anonlink_delta(self.t) if self.window == "anonlink" else None
        bi, bj, bs = _kernel().pairs(
            a.words,
            a.counts,
            a.index,
            b.words,
            b.counts,
            b.rest,
            b.index,
            self.lo,
            self.hi,
            self._need,
            a.nwords,
            r0,
            r1,
            -1.0 if delta is None else delta,
            -1 if self.k is None else self.k,
            self._isa,
        )
        return (
            np.frombuffer(bi, dtype=np.int64),
            np.frombuffer(bj, dtype=np.int64),
            np.frombuffer(bs, dtype=np.float64),
        )

    def prepare_native(self) -> None:
        """Build the native layouts up front, before threads share the job."""
        _ = self.pa.native, self.pb.native, self._need, self._isa

    # --- numpy kernel ----------------------------------------------------------

    def numpy_block(self, r0: int, r1: int) -> Triples:
        """Pairs of sorted left rows ``r0 .. r1-1``, in tiles of a few rows by numpy."""
        pa, pb, t = self.pa, self.pb, self.t
        n_lanes = pa.lanes.shape[1]
        acc_dtype = np.uint16 if pa.nbytes * 8 <= np.iinfo(np.uint16).max else np.uint32
        delta = _anonlink_delta(t) if self.window == "anonlink" else None
        half_t = t / 2.0 * (1.0 - 1e-12)
        rows = max(1, min(self.chunk_rows, _TILE_ROWS))
        cols = max(1, _TILE_PAIRS // rows)
        lanes_t = pb.lanes_t
        out_i: list[np.ndarray] = []
        out_j: list[np.ndarray] = []
        out_s: list[np.ndarray] = []
        for t0 in range(r0, r1, rows):
            t1 = min(r1, t0 + rows)
            a_idx = pa.order[t0:t1]
            a_cnt = pa.sorted_counts[t0:t1]
            a_lanes = pa.lanes[a_idx]
            a_half = a_cnt * half_t
            lo, hi = int(self.lo[t0:t1].min()), int(self.hi[t0:t1].max())
            for c0 in range(lo, hi, cols):
                c1 = min(hi, c0 + cols)
                shape = (t1 - t0, c1 - c0)
                tmp = np.empty(shape, dtype=pa.lanes.dtype)
                cnt = np.empty(shape, dtype=np.uint8)
                inter = np.zeros(shape, dtype=acc_dtype)
                for k in range(n_lanes):
                    np.bitwise_and(a_lanes[:, k, None], lanes_t[k, None, c0:c1], out=tmp)
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
        if not out_i:
            return _empty_triples()
        i, j, s = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
        if self.k is not None:
            i, j, s = _top_k_per_row(i, j, s, self.k)
        return i, j, s


def _row_blocks(n: int, chunk_rows: int, workers: int) -> list[tuple[int, int]]:
    """Split ``n`` sorted left rows into blocks of at most ``chunk_rows``."""
    size = min(chunk_rows, max(_MIN_BLOCK_ROWS, -(-n // (workers * _BLOCKS_PER_WORKER))))
    if size < chunk_rows and size % 4:
        size = min(chunk_rows, size + 4 - size % 4)  # whole groups of four
    return [(r0, min(n, r0 + size)) for r0 in range(0, n, size)]


def _compare(
    pa: _Prepared,
    pb: _Prepared,
    t: float,
    *,
    chunk_rows: int,
    window: Window,
    k: int | None = None,
    workers: int = 1,
    on_rows: Callable[[int], None] | None = None,
) -> Triples:
    """All pairs with similarity >= t (at most k per left row), sorted by (i, j)."""
    n, m = pa.counts.shape[0], pb.counts.shape[0]
    if n == 0 or m == 0 or k == 0:
        if on_rows is not None and n:
            on_rows(n)
        return _empty_triples()
    job = _Job.create(pa, pb, t, window, k, chunk_rows)
    if _native is not None:
        job.prepare_native()
        run = job.native_block
    else:
        run = job.numpy_block
    blocks = _row_blocks(n, chunk_rows, workers)
    parts: list[Triples | None] = [None] * len(blocks)
    if workers == 1 or len(blocks) == 1:
        for b, (r0, r1) in enumerate(blocks):
            parts[b] = run(r0, r1)
            if on_rows is not None:
                on_rows(r1 - r0)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(blocks))) as pool:
            futures = {pool.submit(run, r0, r1): b for b, (r0, r1) in enumerate(blocks)}
            try:
                for future in as_completed(futures):
                    b = futures[future]
                    parts[b] = future.result()
                    if on_rows is not None:
                        on_rows(blocks[b][1] - blocks[b][0])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    done = [p for p in parts if p is not None and p[0].shape[0]]
    if not done:
        return _empty_triples()
    i = np.concatenate([p[0] for p in done])
    j = np.concatenate([p[1] for p in done])
    s = np.concatenate([p[2] for p in done])
    order = np.lexsort((j, i))
    return i[order], j[order], s[order]


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
    return _compare(
        _prepare(a),
        _prepare(b),
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
                k=k,
                workers=n_workers,
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
    sim, dset, rec = sim[order], dset[order], rec[order]
    if k is not None:
        # anonlink's _enforce_k: walking the sorted pairs, every pair counts
        # against both of its records (per dataset pair), kept or not.
        keep = (_occurrence(dset[:, 0], dset[:, 1], rec[:, 1]) < k) & (
            _occurrence(dset[:, 0], dset[:, 1], rec[:, 0]) < k
        )
        sim, dset, rec = sim[keep], dset[keep], rec[keep]
    return Candidates(sim, dset, rec)
