"""The pure-numpy Dice kernel, used when the native one is not.

Part of the Dice candidate generation described in
:mod:`pprl.matching.dice.similarity`; it runs when the C extension cannot be
imported or ``PPRL_NO_DICE`` (``PPRL_NO_NATIVE``) is set (see :mod:`pprl.matching.dice.native`),
with results identical to the native kernel's.

Each block of left rows is compared in small tiles of pairs: the lanes of a
few left rows are AND-ed with the lanes of a run of right rows and counted
(``np.bitwise_count`` on numpy >= 2, a byte lookup table before), so memory
stays well under a few MB whatever the input size.  A cheap float pre-test
picks the few pairs that may reach the threshold; their similarity is then
computed with anonlink's exact arithmetic.
"""

from __future__ import annotations

import numpy as np

from pprl.matching.dice.rows import (
    Job,
    Triples,
    anonlink_delta,
    empty_triples,
    lane_popcount,
    occurrence,
)

__all__ = ["numpy_block", "top_k_per_row"]

# Pairs per tile.  64K pairs keep the uint64 scratch (512 KB) in L2 cache,
# which measured fastest; rows per tile are few so numpy's inner loops run
# along the long (right-hand) axis and each tile gets a tight popcount window.
_TILE_PAIRS = 65536
_TILE_ROWS = 8


def top_k_per_row(i: np.ndarray, j: np.ndarray, s: np.ndarray, k: int) -> Triples:
    """The ``k`` best pairs of each left row ``i``: highest ``s``, then lowest ``j``."""
    order = np.lexsort((j, -s, i))
    i, j, s = i[order], j[order], s[order]
    keep = occurrence(i) < k
    return i[keep], j[keep], s[keep]


def numpy_block(job: Job, r0: int, r1: int) -> Triples:
    """Pairs of sorted left rows ``r0 .. r1-1``, in tiles of a few rows by numpy."""
    pa, pb, t = job.pa, job.pb, job.t
    n_lanes = pa.lanes.shape[1]
    acc_dtype = np.uint16 if pa.nbytes * 8 <= np.iinfo(np.uint16).max else np.uint32
    delta = anonlink_delta(t) if job.window == "anonlink" else None
    half_t = t / 2.0 * (1.0 - 1e-12)
    rows = max(1, min(job.chunk_rows, _TILE_ROWS))
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
        lo, hi = int(job.lo[t0:t1].min()), int(job.hi[t0:t1].max())
        for c0 in range(lo, hi, cols):
            c1 = min(hi, c0 + cols)
            shape = (t1 - t0, c1 - c0)
            tmp = np.empty(shape, dtype=pa.lanes.dtype)
            cnt = np.empty(shape, dtype=np.uint8)
            inter = np.zeros(shape, dtype=acc_dtype)
            for k in range(n_lanes):
                np.bitwise_and(a_lanes[:, k, None], lanes_t[k, None, c0:c1], out=tmp)
                lane_popcount(tmp, out=cnt)
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
        return empty_triples()
    i, j, s = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    if job.k is not None:
        i, j, s = top_k_per_row(i, j, s, job.k)
    return i, j, s
