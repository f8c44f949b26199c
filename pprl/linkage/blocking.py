"""Keyed blocking for large linkages: Hamming LSH (bit sampling) on the CLKs.

Why: comparing every record with every record costs ``n_a * n_b`` Dice
computations.  Blocking compares only the pairs that agree on all the
sampled bits of at least one *band*; a band is ``bits_per_band`` positions of
the CLK, and there are ``bands`` of them.  A pair whose encodings differ in
``h`` of their ``l`` bits agrees on a band of ``b`` distinct random positions
with probability ``q = C(l - h, b) / C(l, b)`` (about ``(1 - h/l) ** b``), and
is found with probability ``1 - (1 - q) ** L``.  For a Dice similarity ``s``
between encodings with popcounts ``|A|``, ``|B|``, ``h = (|A| + |B|)(1 - s)``,
so similar pairs are found with high probability and dissimilar ones rarely.

Why this is keyed and not plaintext blocking: block keys are bits *of the
CLKs*, never values of a field (a surname, a birth year), so no plaintext
block key exists anywhere.  The bit positions are drawn from a public
per-run seed (:func:`derive_seed`, by default the hash of the submissions
being linked) because the bureau must be able to draw them and it does not
hold the linkage secret.  That is sound: a band key is a function of one CLK
that the bureau already holds in full, so blocking tells the bureau nothing
it could not compute itself; the CLKs remain the only thing that leaks, and
their protection is the linkage secret, as before.  (Platforms could instead
submit a keyed blocking signature of their own; not needed for that reason.)

Parameters (:func:`design_lsh`): for each ``b`` in 8..64 the smallest ``L``
whose estimated pair completeness reaches the target (default 0.99), and of
those the design with the lowest estimated cost (hashing ``L`` bands of every
record plus comparing the expected number of colliding pairs, estimated from
random pairs of the data).  Pair completeness is estimated on the pairs that
matter -- the sampled best matches at or above the threshold
(:func:`pprl.linkage.thresholds.best_match_sample`, with their exact Hamming
distances) -- and, without a sample, for a worst-case pair exactly at the
threshold with 99th-percentile popcounts.  Both figures are reported.  With
``mode="auto"`` (:func:`plan_blocking`) LSH is used only when the total
number of pairs is at least :data:`MIN_PAIRS_FOR_LSH`, a design meets the
target, and its estimated time is under half the brute-force time
(measured throughputs of this module and of the Dice kernel in use); on
data whose encodings leave little room between matches and non-matches (a
low threshold, a high fill rate) no design meets the target and the bureau
compares everything.

Candidates (:func:`lsh_candidates`) are exact: every blocked pair's Dice is
computed exactly as :func:`~pprl.linkage.similarity.find_candidates` does
(the same float64 arithmetic and, by default, anonlink's popcount window),
each batch of bands compares a colliding pair once (and the result holds
each pair once), and the result is ordered like ``find_candidates``'s, so
LSH output is always a subset of brute force.  Memory is bounded by the
bits of the encodings (``length`` bytes per record) plus one batch of
colliding pairs, whatever the number of bands.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pprl.linkage import similarity
from pprl.linkage.similarity import Candidates, popcounts
from pprl.linkage.thresholds import BestMatchSample, check_datasets, keyed_choice

__all__ = [
    "BlockingPlan",
    "BlockingReport",
    "LSHDesign",
    "BITS_RANGE",
    "DEFAULT_TARGET",
    "MAX_BANDS",
    "MIN_PAIRS_FOR_LSH",
    "band_positions",
    "collision_probability",
    "derive_seed",
    "design_lsh",
    "lsh_candidates",
    "plan_blocking",
]

BlockingMode = Literal["auto", "lsh", "none"]
Window = Literal["exact", "anonlink"]

#: Pair completeness the automatic design aims for.
DEFAULT_TARGET = 0.99
#: Bits per band tried by the design.
BITS_RANGE = (8, 64)
#: Most bands a design may use.
MAX_BANDS = 2048
#: ``mode="auto"`` never blocks below this many record pairs.
MIN_PAIRS_FOR_LSH = 50_000_000

# Cost model, measured on the reference machine (2 shared cores, numpy 2.x,
# 200k x 200k schema-cn CLKs): seconds per record per band (band key, sort,
# probe, pair generation; a little more per bit), per compared pair (batch
# dedupe + exact Dice), per record once (unpacking bits), and brute-force
# pairs per second of the native and the numpy Dice kernels on both cores.
# Only the ratio of the two estimates matters for the auto decision.
_SECONDS_PER_RECORD_BAND = 3e-7
_SECONDS_PER_BIT_RECORD_BAND = 1e-8
_SECONDS_PER_PAIR = 5e-7
_SECONDS_PER_RECORD = 5e-6
_BRUTE_PAIRS_PER_SECOND = {True: 5e8, False: 5e7}
_AUTO_SPEEDUP = 2.0  # LSH must be estimated at least this much faster than brute force

_RANDOM_PAIRS = 4096  # random cross pairs per design, for the comparison estimate
_BANDS_PER_GROUP = 16
_DICE_CHUNK = 1 << 18
_FLUSH_PAIRS = 1 << 24  # band collisions buffered (and deduplicated) per batch of Dice computations


def derive_seed(*parts: bytes | str) -> bytes:
    """A 32-byte public seed from labelled parts (e.g. the submissions' hashes)."""
    h = hashlib.sha256(b"pprl lsh seed v1")
    for part in parts:
        data = part.encode() if isinstance(part, str) else bytes(part)
        h.update(len(data).to_bytes(8, "big"))
        h.update(data)
    return h.digest()


def band_positions(seed: bytes, length: int, bands: int, bits: int) -> np.ndarray:
    """``(bands, bits)`` distinct bit positions per band in ``range(length)``, from ``seed``."""
    if not 1 <= bits <= length:
        raise ValueError(f"bits per band must be in 1..{length}, got {bits}")
    if bands < 1:
        raise ValueError(f"bands must be positive, got {bands}")
    return np.stack([keyed_choice(seed, f"lsh band {k}", length, bits) for k in range(bands)])


def _log_agree(hamming: np.ndarray, length: int, max_bits: int) -> np.ndarray:
    """``log q`` for b = 1..max_bits: rows per hamming value, columns per b."""
    h = np.asarray(hamming, dtype=np.float64).reshape(-1, 1)
    k = np.arange(max_bits, dtype=np.float64).reshape(1, -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.log(np.clip(length - h - k, 0.0, None) / (length - k))
    return np.cumsum(terms, axis=1)


def collision_probability(hamming: Any, length: int, bits: int, bands: int) -> np.ndarray:
    """Probability that a pair at Hamming distance ``hamming`` shares at least one band.

    Bits of a band are ``bits`` distinct positions out of ``length``, bands
    independent: ``1 - (1 - C(length - h, bits) / C(length, bits)) ** bands``.
    """
    q = np.exp(_log_agree(np.asarray(hamming), length, bits)[:, bits - 1])
    return -np.expm1(bands * np.log1p(-np.minimum(q, 1.0 - 1e-16))) if bands else np.zeros_like(q)


@dataclass(frozen=True)
class LSHDesign:
    """Bands and bits per band, with what the model expects of them."""

    bands: int
    bits_per_band: int
    estimated_pair_completeness: float
    pair_completeness_at_threshold: float
    expected_comparisons: float
    estimated_seconds: float
    meets_target: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _min_bands(log_q: np.ndarray, target: float, max_bands: int) -> int | None:
    """Smallest L with mean(1 - (1 - q)^L) >= target, or None."""
    q = np.exp(log_q)
    log1mq = np.log1p(-np.minimum(q, 1.0 - 1e-16))

    def pc(bands: int) -> float:
        return float(np.mean(-np.expm1(bands * log1mq)))

    if pc(max_bands) < target:
        return None
    lo, hi = 1, max_bands
    while lo < hi:
        mid = (lo + hi) // 2
        if pc(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def design_lsh(
    sizes: Sequence[int],
    threshold: float,
    *,
    length: int,
    fill: float = 0.5,
    match_hamming: Any = None,
    random_hamming: Any = None,
    target: float = DEFAULT_TARGET,
    max_bands: int = MAX_BANDS,
    bits_range: tuple[int, int] = BITS_RANGE,
    best_effort: bool = False,
) -> LSHDesign | None:
    """The cheapest (bands, bits per band) whose estimated pair completeness reaches ``target``.

    ``sizes`` are the datasets' record counts, ``length`` the CLK length in
    bits, ``fill`` a high (99th-percentile) popcount / length.
    ``match_hamming``: Hamming distances of pairs that must be found (the
    sampled best matches at or above the threshold); without them, a pair
    exactly at the threshold with popcounts ``fill * length``.
    ``random_hamming``: distances of random cross pairs (for the expected
    number of comparisons); without them, independent bits at ``fill``.
    Returns None when no design reaches the target, unless ``best_effort``,
    which then returns the design with the highest estimated completeness.
    """
    t = float(threshold)
    if not 0.0 < t <= 1.0:
        raise ValueError(f"LSH needs a threshold in (0, 1], got {threshold!r}")
    if not 0.0 < target < 1.0:
        raise ValueError(f"target pair completeness must be in (0, 1), got {target!r}")
    sizes = [int(n) for n in sizes]
    lo_bits, hi_bits = bits_range
    hi_bits = min(hi_bits, length)
    h_threshold = math.ceil(2.0 * fill * length * (1.0 - t))
    must = np.array([h_threshold]) if match_hamming is None or len(match_hamming) == 0 else np.asarray(match_hamming)
    rand = (
        np.array([2.0 * fill * (1.0 - fill) * length])
        if random_hamming is None or len(random_hamming) == 0
        else np.asarray(random_hamming, dtype=np.float64)
    )
    log_must = _log_agree(must, length, hi_bits)
    log_thr = _log_agree(np.array([h_threshold]), length, hi_bits)[0]
    log_rand = _log_agree(rand, length, hi_bits)
    pair_sizes = [a * b for a, b in itertools.combinations(sizes, 2)]
    total_records = sum(sizes)
    expected_matches = sum(min(a, b) for a, b in itertools.combinations(sizes, 2))

    def evaluate(bits: int, bands: int) -> LSHDesign:
        q_r = np.exp(log_rand[:, bits - 1])
        p_rand = float(np.mean(-np.expm1(bands * np.log1p(-np.minimum(q_r, 1 - 1e-16)))))
        comparisons = sum(pair_sizes) * p_rand + expected_matches
        comparisons = min(comparisons, float(sum(pair_sizes)))
        q_m = np.exp(log_must[:, bits - 1])
        pc = float(np.mean(-np.expm1(bands * np.log1p(-np.minimum(q_m, 1 - 1e-16)))))
        q_t = math.exp(log_thr[bits - 1])
        pc_t = float(-math.expm1(bands * math.log1p(-min(q_t, 1 - 1e-16))))
        seconds = (
            bands * total_records * (_SECONDS_PER_RECORD_BAND + bits * _SECONDS_PER_BIT_RECORD_BAND)
            + comparisons * _SECONDS_PER_PAIR
            + total_records * _SECONDS_PER_RECORD
        )
        return LSHDesign(bands, bits, pc, pc_t, comparisons, seconds, pc >= target)

    best: LSHDesign | None = None
    for bits in range(lo_bits, hi_bits + 1):
        bands = _min_bands(log_must[:, bits - 1], target, max_bands)
        if bands is None:
            continue
        d = evaluate(bits, bands)
        if best is None or d.estimated_seconds < best.estimated_seconds:
            best = d
    if best is None and best_effort:
        for bits in range(lo_bits, hi_bits + 1):
            d = evaluate(bits, max_bands)
            if best is None or d.estimated_pair_completeness > best.estimated_pair_completeness:
                best = d
    return best


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


@dataclass(frozen=True)
class BlockingPlan:
    """Whether to block, and with which design; ``reason`` says why."""

    method: str
    design: LSHDesign | None
    pairs_total: int
    brute_force_seconds: float
    reason: str


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _popcount64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Set bits of each uint64 as uint8 (``np.bitwise_count`` on numpy >= 2, a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x, out=out)
    counts = _BYTE_POPCOUNT[np.ascontiguousarray(x).view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


def _lanes(x: np.ndarray) -> np.ndarray:
    n, nbytes = x.shape
    words = -(-nbytes // 8)
    if nbytes != words * 8:
        padded = np.zeros((n, words * 8), np.uint8)
        padded[:, :nbytes] = x
        x = padded
    return x.view(np.uint64).reshape(n, words)


def _popcount_rows(lanes: np.ndarray) -> np.ndarray:
    return _popcount64(lanes).sum(axis=1, dtype=np.int64)


def _keyed_ints(seed: bytes, label: str, n: int, count: int) -> np.ndarray:
    raw = np.frombuffer(hashlib.shake_256(b"pprl keyed ints\x00" + label.encode() + b"\x00" + seed).digest(8 * count), "<u8")
    return (raw % np.uint64(max(n, 1))).astype(np.int64)


def _random_hamming(arrays: list[np.ndarray], seed: bytes) -> np.ndarray:
    pairs = [(d, e) for d, e in itertools.combinations(range(len(arrays)), 2) if arrays[d].shape[0] and arrays[e].shape[0]]
    if not pairs:
        return np.empty(0)
    per = max(1, _RANDOM_PAIRS // len(pairs))
    out = []
    for d, e in pairs:
        i = _keyed_ints(seed, f"random pairs {d} {e} left", arrays[d].shape[0], per)
        j = _keyed_ints(seed, f"random pairs {d} {e} right", arrays[e].shape[0], per)
        a, b = _lanes(arrays[d][i]), _lanes(arrays[e][j])
        out.append(_popcount64(a ^ b).sum(axis=1, dtype=np.int64))
    return np.concatenate(out)


def _fill(arrays: list[np.ndarray]) -> float:
    length = arrays[0].shape[1] * 8
    counts = np.concatenate([popcounts(d) for d in arrays if d.shape[0]]) if any(d.shape[0] for d in arrays) else np.zeros(1)
    return float(np.quantile(counts, 0.99)) / length if counts.size else 0.5


def plan_blocking(
    datasets: Sequence[np.ndarray],
    threshold: float,
    *,
    mode: BlockingMode = "auto",
    seed: bytes = b"",
    sample: BestMatchSample | None = None,
    target: float = DEFAULT_TARGET,
) -> BlockingPlan:
    """Decide between LSH and comparing everything (see the module docstring)."""
    if mode not in ("auto", "lsh", "none"):
        raise ValueError(f"blocking must be 'auto', 'lsh' or 'none', got {mode!r}")
    arrays = check_datasets(datasets)
    sizes = [d.shape[0] for d in arrays]
    pairs_total = sum(a * b for a, b in itertools.combinations(sizes, 2))
    brute = pairs_total / _BRUTE_PAIRS_PER_SECOND[bool(getattr(similarity, "NATIVE", False))]
    if mode == "none":
        return BlockingPlan("none", None, pairs_total, brute, "blocking off")
    if mode == "auto" and pairs_total < MIN_PAIRS_FOR_LSH:
        return BlockingPlan("none", None, pairs_total, brute, f"{pairs_total:,} pairs: comparing all is cheap")
    if not arrays or arrays[0].shape[1] == 0 or pairs_total == 0 or threshold <= 0:
        return BlockingPlan("none", None, pairs_total, brute, "nothing to block")
    length = arrays[0].shape[1] * 8
    match_h = None
    if sample is not None and len(sample):
        match_h = sample.hamming[sample.top1 >= threshold]
    design = design_lsh(
        sizes,
        threshold,
        length=length,
        fill=_fill(arrays),
        match_hamming=match_h,
        random_hamming=_random_hamming(arrays, seed),
        target=target,
        best_effort=mode == "lsh",
    )
    if mode == "lsh" and design is not None:  # best_effort always designs
        reason = "requested" if design.meets_target else f"requested; no design reaches pair completeness {target}"
        return BlockingPlan("lsh", design, pairs_total, brute, reason)
    if design is None:
        return BlockingPlan("none", None, pairs_total, brute, f"no LSH design reaches pair completeness {target} at threshold {threshold}")
    if design.estimated_seconds * _AUTO_SPEEDUP > brute:
        return BlockingPlan("none", design, pairs_total, brute, "LSH would not be clearly faster than comparing all")
    return BlockingPlan("lsh", design, pairs_total, brute, "LSH estimated faster at the target pair completeness")


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
            _popcount64(wa, out=cnt)
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


def _estimates(
    arrays: list[np.ndarray], t: float, sample: BestMatchSample | None, bands: int, bits: int
) -> tuple[float, float]:
    """(estimated pair completeness on the sample's best matches >= t, completeness at t) for a given design."""
    length = arrays[0].shape[1] * 8
    h_t = math.ceil(2.0 * _fill(arrays) * length * (1.0 - t))
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
    :func:`~pprl.linkage.similarity.find_candidates` orders them.
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
        return Candidates.empty(), BlockingReport("lsh", int(bands), int(bits_per_band), 0, pairs_total, 1.0, seed.hex())

    lanes = [_lanes(d) for d in arrays]
    counts = [_popcount_rows(x) for x in lanes]
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

        bar = tqdm(total=int(bands), unit="band", desc="blocking", file=sys.stderr)
    try:
        for g0 in range(0, int(bands), _BANDS_PER_GROUP):
            group = positions[g0 : g0 + _BANDS_PER_GROUP]
            keys = [_band_keys(bt, group) for bt in bits_t]
            for k in range(group.shape[0]):
                orders = [np.argsort(kd[k]) for kd in keys]
                sorted_keys = [kd[k][o] for kd, o in zip(keys, orders)]
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
                    buffer[(d, e)].append(active[d][ia] * sizes[e] + active[e][jb])
                    buffered += total
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
    if design is not None:
        estimated, at_threshold = design.estimated_pair_completeness, design.pair_completeness_at_threshold
    else:
        estimated, at_threshold = _estimates(arrays, t, sample, int(bands), int(bits_per_band))
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
    if not sims:
        return Candidates.empty(), report
    sim = np.concatenate(sims)
    dset = np.concatenate(dsets)
    rec = np.concatenate(recs).reshape(-1, 2)
    order = np.lexsort((rec[:, 1], rec[:, 0], dset[:, 1], dset[:, 0], -sim))
    return Candidates(sim[order], dset[order], rec[order]), report
