"""Encoding arrays prepared for a Dice comparison, and the popcount windows of a comparison.

Part of the Dice candidate generation (:mod:`pprl.matching.dice.similarity`):
:func:`prepare` counts and sorts an array's rows by popcount and builds each
kernel's layout on first use; a :class:`Job` pairs two prepared arrays. The
helpers the kernels and the public API share (:func:`anonlink_delta`,
:func:`occurrence`, :func:`empty_triples`) live here too.

Design: docs/design.md#dice-similarity
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

__all__ = [
    "Job",
    "NativeRows",
    "Prepared",
    "Triples",
    "Window",
    "aligned_zeros",
    "anonlink_delta",
    "empty_triples",
    "lane_popcount",
    "occurrence",
    "prepare",
]

Window = Literal["exact", "anonlink"]
Triples = tuple[np.ndarray, np.ndarray, np.ndarray]

# Tests set it to False to run the byte-table path on numpy 2.
_HAVE_BITWISE_COUNT = hasattr(np, "bitwise_count")
_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class NativeRows:
    """One encoding array laid out for the C kernel, rows in popcount order."""

    words: np.ndarray  # (n, nwords) uint64, zero-padded, 64-byte aligned
    counts: np.ndarray  # (n,) uint32 popcounts
    rest: np.ndarray  # (n,) uint32 popcounts of words nwords // 2 onwards
    index: np.ndarray  # (n,) int64 original row numbers
    nwords: int


@dataclass(frozen=True)
class Prepared:
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
    def native(self) -> NativeRows:
        """Native path: aligned 64-bit words in popcount order."""
        n = self.data.shape[0]
        nwords = max(1, -(-self.nbytes // 8))
        words = aligned_zeros(n, nwords)
        words.view(np.uint8)[:, : self.nbytes] = self.data[self.order]
        rest = lane_popcount(words[:, nwords // 2 :]).sum(axis=1, dtype=np.uint32)
        return NativeRows(
            words=words,
            counts=self.sorted_counts.astype(np.uint32),
            rest=rest,
            index=np.ascontiguousarray(self.order, dtype=np.int64),
            nwords=nwords,
        )


def aligned_zeros(rows: int, cols: int) -> np.ndarray:
    """A zeroed ``(rows, cols)`` uint64 array starting on a 64-byte boundary.

    Rows of 1024-bit CLKs then never straddle cache lines in the kernel.
    """
    buf = np.zeros(rows * cols + 8, dtype=np.uint64)
    offset = (-(buf.ctypes.data // 8)) % 8
    return buf[offset : offset + rows * cols].reshape(rows, cols)


def lane_popcount(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Popcount of each element of a uint64 or uint8 array."""
    if x.dtype == np.uint64:
        if _HAVE_BITWISE_COUNT:
            return np.bitwise_count(x, out=out)
        x = x.view(np.uint8).reshape(*x.shape[:-1], -1)  # without numpy 2: bytes
    return np.take(_BYTE_POPCOUNT, x, out=out)


def prepare(x: np.ndarray) -> Prepared:
    """Popcounts and popcount order of a checked, C-contiguous uint8 encoding array."""
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
    counts = lane_popcount(lanes).sum(axis=1, dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    return Prepared(
        data=x,
        lanes=lanes,
        counts=counts,
        order=order,
        sorted_counts=counts[order],
        nbytes=nbytes,
    )


def anonlink_delta(t: float) -> float | None:
    """``1/t - 1`` as anonlink computes it, or None when it applies no window."""
    if t <= 0.0:
        return None
    return 1.0 / t - 1.0


def empty_triples() -> Triples:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)


def occurrence(*keys: np.ndarray) -> np.ndarray:
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


@dataclass(frozen=True)
class Job:
    """One comparison of two prepared arrays, split into blocks of left rows."""

    pa: Prepared
    pb: Prepared
    t: float
    window: Window
    k: int | None
    chunk_rows: int
    lo: np.ndarray  # (n,) int64: first right row (popcount order) per sorted left row
    hi: np.ndarray  # (n,) int64: one past the last

    @classmethod
    def create(
        cls, pa: Prepared, pb: Prepared, t: float, window: Window, k: int | None, chunk_rows: int
    ) -> Job:
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
