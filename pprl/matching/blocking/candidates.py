"""Candidate pairs over LSH blocks: the pairs that share a band, with their exact Dice.

Part of the blocking described in :mod:`pprl.matching.blocking`; the design
(bands, bits per band, their positions) comes from
:mod:`pprl.matching.blocking.design`.

Candidates (:func:`lsh_candidates`) are exact: every blocked pair's Dice is
computed exactly as :func:`~pprl.matching.dice.similarity.find_candidates` does
(the same float64 arithmetic and, by default, anonlink's popcount window),
each batch of bands compares a colliding pair once (and the result holds
each pair once), and the result is ordered like ``find_candidates``'s, so
LSH output is always a subset of brute force.  Memory is bounded by the
bits of the encodings (``length`` bytes per record) plus one batch of
colliding pairs, whatever the number of bands.
"""

from __future__ import annotations

import itertools
import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pprl.matching.blocking.design import (
    BITS_RANGE,
    DEFAULT_TARGET,
    as_lanes,
    band_positions,
    collision_probability,
    high_fill,
    plan_blocking,
    popcount64,
    popcount_rows,
)
from pprl.matching.dice.similarity import Candidates
from pprl.matching.thresholds import BestMatchSample, check_datasets

__all__ = ["BlockingReport", "Window", "band_collisions", "band_keys_of_lanes", "dice_of_codes", "lsh_candidates",
           "lsh_estimates", "merge_found"]

Window = Literal["exact", "anonlink"]

_BANDS_PER_GROUP = 16
_DICE_CHUNK = 1 << 18
_FLUSH_PAIRS = 1 << 24  # band collisions buffered (and deduplicated) per batch of Dice computations


@dataclass(frozen=True)
class BlockingReport:
    """What blocking did (the linkage header records it).

    ``comparisons`` counts the exact Dice computations made.  Colliding pairs
    are deduplicated within each batch of bands, not across batches, so a
    pair colliding in bands of different batches (true matches mostly) counts
    more than once: the reduction ratio ``1 - comparisons / pairs_total`` is
    a lower bound.
    """

    method: str
    bands: int
    bits_per_band: int
    comparisons: int
    pairs_total: int
    reduction_ratio: float
    seed: str = ""
    estimated_pair_completeness: float | None = None
    pair_completeness_at_threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _band_keys(bits_t: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Band keys ``(bands, n)`` from transposed unpacked bits ``(length, n)``.

    uint32 when a band has at most 32 bits (sorting is faster), else uint64.
    """
    bands, b = positions.shape
    n = bits_t.shape[1]
    sel = bits_t[positions.ravel()].reshape(bands, b, n)
    packed = np.packbits(sel, axis=1)  # (bands, ceil(b/8), n)
    width = 4 if b <= 32 else 8
    keys = np.zeros((bands, width, n), np.uint8)
    keys[:, : packed.shape[1]] = packed
    dtype = np.uint32 if width == 4 else np.uint64
    return np.ascontiguousarray(keys.transpose(0, 2, 1)).view(dtype).reshape(bands, n)


def _unpacked_t(x: np.ndarray) -> np.ndarray:
    """``(length, n)`` uint8 bits of ``x`` (n, bytes), bit-major, in clkhash's bit order."""
    return np.unpackbits(np.ascontiguousarray(x.T), axis=0)


def _sorted_unique(x: np.ndarray) -> np.ndarray:
    """np.unique by sorting (numpy's hash-based unique is far slower on int64 codes)."""
    x = np.sort(x)
    return x[np.r_[True, x[1:] != x[:-1]]] if x.shape[0] else x


def _dice_filter(
    la_t: np.ndarray, lb_t: np.ndarray, ca: np.ndarray, cb: np.ndarray, i: np.ndarray, j: np.ndarray, t: float, window: Window
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Dice of the pairs ``(i, j)``; those at or above ``t`` (and inside anonlink's window).

    ``la_t`` / ``lb_t`` are the encodings as transposed 64-bit lanes
    ``(words, n)``: gathering one lane at a time is several times faster than
    gathering whole rows.
    """
    out_i, out_j, out_s = [], [], []
    delta = 1.0 / t - 1.0 if (window == "anonlink" and t > 0) else None
    acc_dtype = np.uint16 if la_t.shape[0] * 64 <= np.iinfo(np.uint16).max else np.uint32
    for c0 in range(0, i.shape[0], _DICE_CHUNK):
        ii, jj = i[c0 : c0 + _DICE_CHUNK], j[c0 : c0 + _DICE_CHUNK]
        m = ii.shape[0]
        inter = np.zeros(m, acc_dtype)
        wa, wb = np.empty(m, np.uint64), np.empty(m, np.uint64)
        cnt = np.empty(m, np.uint8)
        for k in range(la_t.shape[0]):
            np.take(la_t[k], ii, out=wa)
            np.take(lb_t[k], jj, out=wb)
            np.bitwise_and(wa, wb, out=wa)
            popcount64(wa, out=cnt)
            np.add(inter, cnt, out=inter)
        pa, pb = ca[ii], cb[jj]
        denom = (pa + pb).astype(np.float64)
        sim = np.divide(2.0 * inter.astype(np.float64), denom, out=np.zeros(m), where=denom > 0)
        keep = sim >= t
        if delta is not None:
            limit = (2 * pa).astype(np.float64) * delta
            limit[limit >= 2.0**32] = np.inf
            keep &= np.abs(pa - pb) <= limit
        out_i.append(ii[keep])
        out_j.append(jj[keep])
        out_s.append(sim[keep])
    if not out_i:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
    return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)


def lsh_estimates(
    datasets: Sequence[np.ndarray], t: float, sample: BestMatchSample | None, bands: int, bits: int
) -> tuple[float, float]:
    """(estimated pair completeness on the sample's best matches >= t, completeness at t) for a given design."""
    arrays = check_datasets(datasets)
    length = arrays[0].shape[1] * 8
    h_t = math.ceil(2.0 * high_fill(arrays) * length * (1.0 - t))
    at_t = float(collision_probability([h_t], length, bits, bands)[0])
    if sample is None or not len(sample):
        return at_t, at_t
    h = sample.hamming[sample.top1 >= t]
    if h.shape[0] == 0:
        return at_t, at_t
    return float(np.mean(collision_probability(h, length, bits, bands))), at_t


def lsh_candidates(
    datasets: Sequence[np.ndarray],
    threshold: float,
    *,
    seed: bytes,
    bands: int | None = None,
    bits_per_band: int | None = None,
    sample: BestMatchSample | None = None,
    target: float = DEFAULT_TARGET,
    window: Window = "anonlink",
    progress: bool = False,
) -> tuple[Candidates, BlockingReport]:
    """Candidate pairs at ``threshold`` among the pairs that share an LSH band.

    ``bands`` and ``bits_per_band`` default to :func:`design_lsh`'s choice
    for these datasets (using ``sample``'s best matches when given).  The bit
    positions come from ``seed`` (:func:`band_positions`): same seed, same
    candidates.  Similarities are exact and the candidates are ordered as
    :func:`~pprl.matching.dice.similarity.find_candidates` orders them.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 < float(threshold) <= 1.0:
        raise ValueError(f"LSH needs a threshold in (0, 1], got {threshold!r}")
    if window not in ("exact", "anonlink"):
        raise ValueError(f"window must be 'exact' or 'anonlink', got {window!r}")
    if not isinstance(seed, (bytes, bytearray)):
        raise TypeError("seed must be bytes")
    t = float(threshold)
    seed = bytes(seed)
    arrays = check_datasets(datasets)
    sizes = [d.shape[0] for d in arrays]
    pairs_total = sum(a * b for a, b in itertools.combinations(sizes, 2))
    length = arrays[0].shape[1] * 8 if arrays else 0
    design = None
    if bands is None or bits_per_band is None:
        plan = plan_blocking(arrays, t, mode="lsh", seed=seed, sample=sample, target=target)
        design = plan.design
        if design is None:  # nothing to block (no pairs, zero-length encodings)
            bands, bits_per_band = bands or 1, bits_per_band or 1
        else:
            bands = design.bands if bands is None else bands
            bits_per_band = design.bits_per_band if bits_per_band is None else bits_per_band
    for name, value in (("bands", bands), ("bits_per_band", bits_per_band)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if bits_per_band > BITS_RANGE[1] or (length and bits_per_band > length):
        raise ValueError(f"bits_per_band must be at most {min(BITS_RANGE[1], length or BITS_RANGE[1])}, got {bits_per_band}")
    if pairs_total == 0 or length == 0:
        return Candidates.empty(), BlockingReport(
            "lsh", int(bands), int(bits_per_band), 0, pairs_total, 1.0, seed.hex()
        )

    lanes = [as_lanes(d) for d in arrays]
    counts = [popcount_rows(x) for x in lanes]
    lanes_t = [np.ascontiguousarray(x.T) for x in lanes]
    # Records with no bit set have Dice 0 with everything: never candidates.
    active = [np.flatnonzero(c > 0) for c in counts]
    bits_t = [_unpacked_t(d[a]) for d, a in zip(arrays, active)]
    positions = band_positions(seed, length, int(bands), int(bits_per_band))
    pairs = [(d, e) for d, e in itertools.combinations(range(len(arrays)), 2)]
    compared = {p: 0 for p in pairs}
    found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {p: [] for p in pairs}
    buffer: dict[tuple[int, int], list[np.ndarray]] = {p: [] for p in pairs}
    buffered = 0

    def flush() -> None:
        """Compare the buffered colliding pairs (each once per batch); keep those at or above t."""
        for (d, e), parts in buffer.items():
            if not parts:
                continue
            codes = _sorted_unique(np.concatenate(parts))
            parts.clear()
            compared[(d, e)] += int(codes.shape[0])
            i, j = codes // sizes[e], codes % sizes[e]
            found[(d, e)].append(_dice_filter(lanes_t[d], lanes_t[e], counts[d], counts[e], i, j, t, window))

    bar = None
    if progress:
        from tqdm import tqdm
        tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

        bar = tqdm(total=int(bands), unit="band", desc="blocking", file=sys.stderr)
    try:
        for g0 in range(0, int(bands), _BANDS_PER_GROUP):
            group = positions[g0 : g0 + _BANDS_PER_GROUP]
            keys = [_band_keys(bt, group) for bt in bits_t]
            for k in range(group.shape[0]):
                for pair, codes in band_collisions([kd[k] for kd in keys], active, sizes, pairs).items():
                    buffer[pair].append(codes)
                    buffered += int(codes.shape[0])
                if buffered >= _FLUSH_PAIRS:
                    flush()
                    buffered = 0
            if bar is not None:
                bar.update(group.shape[0])
        flush()
    finally:
        if bar is not None:
            bar.close()
    comparisons = int(sum(compared.values()))
    if design is not None:
        estimated, at_threshold = design.estimated_pair_completeness, design.pair_completeness_at_threshold
    else:
        estimated, at_threshold = lsh_estimates(arrays, t, sample, int(bands), int(bits_per_band))
    report = BlockingReport(
        method="lsh",
        bands=int(bands),
        bits_per_band=int(bits_per_band),
        comparisons=comparisons,
        pairs_total=int(pairs_total),
        reduction_ratio=1.0 - comparisons / pairs_total if pairs_total else 1.0,
        seed=seed.hex(),
        estimated_pair_completeness=estimated,
        pair_completeness_at_threshold=at_threshold,
    )
    return merge_found(found, sizes), report


def band_collisions(
    band_keys: Sequence[np.ndarray], active: Sequence[np.ndarray], sizes: Sequence[int],
    pairs: Sequence[tuple[int, int]],
) -> dict[tuple[int, int], np.ndarray]:
    """The pairs of records that share one band's key, per pair of datasets ``(d, e)``, as codes
    ``i * sizes[e] + j`` (``i``, ``j`` record numbers; ``band_keys[d]`` holds the keys of records ``active[d]``)."""
    orders = [np.argsort(kd) for kd in band_keys]
    sorted_keys = [kd[o] for kd, o in zip(band_keys, orders)]
    out = {}
    for d, e in pairs:
        if not active[d].shape[0] or not active[e].shape[0]:
            continue
        # Sorted probes into sorted keys: each run of equal keys
        # on the left meets the run of the same key on the right.
        left = np.searchsorted(sorted_keys[e], sorted_keys[d], side="left")
        right = np.searchsorted(sorted_keys[e], sorted_keys[d], side="right")
        per = right - left
        total = int(per.sum())
        if total == 0:
            continue
        ia = np.repeat(orders[d], per)
        start = np.repeat(left - (np.cumsum(per) - per), per)
        jb = orders[e][start + np.arange(total)]
        out[(d, e)] = active[d][ia] * sizes[e] + active[e][jb]
    return out


def dice_of_codes(
    lanes_t: Sequence[np.ndarray], counts: Sequence[np.ndarray], sizes: Sequence[int], pair: tuple[int, int],
    codes: np.ndarray, threshold: float, window: Window = "anonlink",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact Dice of the colliding pairs ``codes`` (each once) of datasets ``pair``: ``(i, j, similarity)`` of
    those at or above ``threshold``. ``lanes_t[d]`` is dataset d as transposed 64-bit lanes, ``counts[d]`` its
    records' set bits."""
    d, e = pair
    i, j = codes // sizes[e], codes % sizes[e]
    return _dice_filter(lanes_t[d], lanes_t[e], counts[d], counts[e], i, j, float(threshold), window)


def merge_found(
    found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]], sizes: Sequence[int]
) -> Candidates:
    """Candidates from the pairs found in batches of bands (a pair found in several batches is kept once),
    in :func:`~pprl.matching.dice.similarity.find_candidates`' order."""
    sims, dsets, recs = [], [], []
    for (d, e), parts in found.items():
        if not parts:
            continue
        i = np.concatenate([p[0] for p in parts])
        j = np.concatenate([p[1] for p in parts])
        s = np.concatenate([p[2] for p in parts])
        # A pair colliding in bands of different batches was compared (and kept) more than once.
        _, first = np.unique(i * sizes[e] + j, return_index=True)
        i, j, s = i[first], j[first], s[first]
        sims.append(s)
        dsets.append(np.broadcast_to(np.array([d, e], np.int64), (s.shape[0], 2)))
        recs.append(np.stack([i, j], axis=1))
    if not sims:
        return Candidates.empty()
    sim = np.concatenate(sims)
    dset = np.concatenate(dsets)
    rec = np.concatenate(recs).reshape(-1, 2)
    order = np.lexsort((rec[:, 1], rec[:, 0], dset[:, 1], dset[:, 0], -sim))
    return Candidates(sim[order], dset[order], rec[order])


def band_keys_of_lanes(lanes_t: np.ndarray, positions: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Band keys ``(bands, n)`` for ``positions`` (bands x bits) read straight from transposed 64-bit lanes
    (``rows``: only these records), equal to those the in-process search computes from unpacked bits: a worker
    that holds the lanes needs no unpacked copy of every bit."""
    flat = positions.ravel()
    byte = flat // 8
    lane, shift = byte // 8, (byte % 8) * 8 + (7 - flat % 8)
    # the rows' lanes gathered once (8 bytes a lane), C-contiguous (lanes_t[:, rows] is strided: 2.6x slower keys)
    source = lanes_t if rows is None else np.take(lanes_t, rows, axis=1)
    bits = np.empty((flat.shape[0], source.shape[1]), np.uint8)
    one = np.uint64(1)
    for k in range(flat.shape[0]):
        np.bitwise_and(source[lane[k]] >> np.uint64(shift[k]), one, out=bits[k], casting="unsafe")
    local = np.arange(flat.shape[0]).reshape(positions.shape)
    return _band_keys(bits, local)
