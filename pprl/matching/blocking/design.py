"""Keyed LSH design for blocking: bit positions from a public seed, and how many bands of how many bits.

:func:`collision_probability`, :func:`derive_seed` and :func:`band_positions`,
:func:`design_lsh` (bands and bits per band for a target pair completeness at
the lowest estimated cost) and :func:`plan_blocking` (whether LSH pays at all).
The 64-bit lanes and popcounts used here (:func:`as_lanes`,
:func:`popcount64`) serve :mod:`pprl.matching.blocking.candidates` too.

Design: docs/design.md#lsh-blocking
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from pprl.matching.dice import similarity
from pprl.matching.dice.similarity import popcounts
from pprl.matching.thresholds import BestMatchSample, check_datasets, keyed_choice

__all__ = [
    "BITS_RANGE",
    "DEFAULT_TARGET",
    "MAX_BANDS",
    "MIN_PAIRS_FOR_LSH",
    "BlockingMode",
    "BlockingPlan",
    "LSHDesign",
    "as_lanes",
    "band_positions",
    "collision_probability",
    "derive_seed",
    "design_lsh",
    "high_fill",
    "plan_blocking",
    "popcount64",
    "popcount_rows",
]

BlockingMode = Literal["auto", "lsh", "none"]

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
class BlockingPlan:
    """Whether to block, and with which design; ``reason`` says why."""

    method: str
    design: LSHDesign | None
    pairs_total: int
    brute_force_seconds: float
    reason: str


_BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Set bits of each uint64 as uint8 (``np.bitwise_count`` on numpy >= 2, a byte table before)."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x, out=out)
    counts = _BYTE_POPCOUNT[np.ascontiguousarray(x).view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)
    if out is None:
        return counts
    out[...] = counts
    return out


def as_lanes(x: np.ndarray) -> np.ndarray:
    """``(n, words)`` uint64 view of uint8 encodings ``(n, bytes)``, zero-padded to whole words."""
    n, nbytes = x.shape
    words = -(-nbytes // 8)
    if nbytes != words * 8:
        padded = np.zeros((n, words * 8), np.uint8)
        padded[:, :nbytes] = x
        x = padded
    return x.view(np.uint64).reshape(n, words)


def popcount_rows(lanes: np.ndarray) -> np.ndarray:
    return popcount64(lanes).sum(axis=1, dtype=np.int64)


def _keyed_ints(seed: bytes, label: str, n: int, count: int) -> np.ndarray:
    raw = np.frombuffer(hashlib.shake_256(b"pprl keyed ints\x00" + label.encode() + b"\x00" + seed).digest(8 * count), "<u8")
    return (raw % np.uint64(max(n, 1))).astype(np.int64)


def _random_hamming(arrays: list[np.ndarray], seed: bytes) -> np.ndarray:
    pairs = [
        (d, e) for d, e in itertools.combinations(range(len(arrays)), 2) if arrays[d].shape[0] and arrays[e].shape[0]
    ]
    if not pairs:
        return np.empty(0)
    per = max(1, _RANDOM_PAIRS // len(pairs))
    out = []
    for d, e in pairs:
        i = _keyed_ints(seed, f"random pairs {d} {e} left", arrays[d].shape[0], per)
        j = _keyed_ints(seed, f"random pairs {d} {e} right", arrays[e].shape[0], per)
        a, b = as_lanes(arrays[d][i]), as_lanes(arrays[e][j])
        out.append(popcount64(a ^ b).sum(axis=1, dtype=np.int64))
    return np.concatenate(out)


def high_fill(arrays: list[np.ndarray]) -> float:
    """The 99th-percentile popcount of the records, as a fraction of the CLK length in bits."""
    length = arrays[0].shape[1] * 8
    counts = (
        np.concatenate([popcounts(d) for d in arrays if d.shape[0]]) if any(d.shape[0] for d in arrays) else np.zeros(1)
    )
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
        fill=high_fill(arrays),
        match_hamming=match_h,
        random_hamming=_random_hamming(arrays, seed),
        target=target,
        best_effort=mode == "lsh",
    )
    if mode == "lsh" and design is not None:  # best_effort always designs
        reason = "requested" if design.meets_target else f"requested; no design reaches pair completeness {target}"
        return BlockingPlan("lsh", design, pairs_total, brute, reason)
    if design is None:
        return BlockingPlan(
            "none",
            None,
            pairs_total,
            brute,
            f"no LSH design reaches pair completeness {target} at threshold {threshold}",
        )
    if design.estimated_seconds * _AUTO_SPEEDUP > brute:
        return BlockingPlan("none", design, pairs_total, brute, "LSH would not be clearly faster than comparing all")
    return BlockingPlan("lsh", design, pairs_total, brute, "LSH estimated faster at the target pair completeness")
