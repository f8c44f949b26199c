"""The modular-arithmetic kernels behind :mod:`pprl.crypto.paillier.threshold.partials`, and the
process pool that spreads them over workers.

Kernels take and return plain ints (gmpy2 inside) and are top-level
functions, so they pickle to any multiprocessing start method. None of them
draws randomness; the proof nonce is drawn in the parent process.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import gmpy2

from pprl.crypto.montexp import powmod_many
from pprl.errors import DataValidationError

__all__ = [
    "PARALLEL_THRESHOLD",
    "WEIGHT_BITS",
    "Engine",
    "multi_exp",
    "power_chunk",
    "aggregate_chunk",
    "combine_chunk",
]

#: Vectors shorter than this are processed in-process.
PARALLEL_THRESHOLD = 64
#: Size of the batching weights in the partial-decryption proof.
WEIGHT_BITS = 128


# --- kernels (top-level so they pickle to worker processes) -----------------------------


def power_chunk(arg: tuple[int, int], items: Sequence[int]) -> list[int]:
    """c^exp mod n² for each c: a holder's partial decryption (AVX-512 IFMA when available)."""
    n2, exponent = arg
    return [int(x) for x in powmod_many(items, exponent, n2)]


def multi_exp(bases: Sequence[Any], exps: Sequence[int], mod: Any, bits: int) -> Any:
    """Π bases[k]^exps[k] mod ``mod`` for exponents below 2^bits (Pippenger buckets)."""
    count = len(bases)
    if count < 32:
        acc = gmpy2.mpz(1)
        for b, e in zip(bases, exps):
            acc = acc * gmpy2.powmod(b, e, mod) % mod
        return acc
    w = max(2, min(12, count.bit_length() - 3))
    mask = (1 << w) - 1
    result = gmpy2.mpz(1)
    for shift in range((bits - 1) // w * w, -1, -w):
        for _ in range(w if shift != (bits - 1) // w * w else 0):
            result = result * result % mod
        buckets: list[Any] = [None] * (mask + 1)
        for b, e in zip(bases, exps):
            digit = (e >> shift) & mask
            if digit:
                cur = buckets[digit]
                buckets[digit] = b if cur is None else cur * b % mod
        running, total = None, None
        for digit in range(mask, 0, -1):
            if buckets[digit] is not None:
                running = buckets[digit] if running is None else running * buckets[digit] % mod
            if running is not None:
                total = running if total is None else total * running % mod
        if total is not None:
            result = result * total % mod
    return result


def aggregate_chunk(arg: int, items: Sequence[tuple[int, int, int]]) -> list[tuple[int, int]]:
    """(Π c^w, Π c_i^w) mod n² over one chunk of (c, c_i, w) triples."""
    n2 = gmpy2.mpz(arg)
    cs = [gmpy2.mpz(c) for c, _, _ in items]
    parts = [gmpy2.mpz(ci) for _, ci, _ in items]
    weights = [w for _, _, w in items]
    return [(int(multi_exp(cs, weights, n2, WEIGHT_BITS)), int(multi_exp(parts, weights, n2, WEIGHT_BITS)))]


def combine_chunk(arg: tuple[int, tuple[int, ...], int], rows: Sequence[tuple[int, ...]]) -> list[int]:
    """Raw plaintexts L(Π c_i^(2λ_i))·(4Δ²)^-1 mod n for rows of T parts."""
    n, exps, inv = arg
    nm, n2 = gmpy2.mpz(n), gmpy2.mpz(n) * n
    if not rows:
        return []
    # One exponent per holder position: raise that position of every row in one batch.
    powered = []
    for column, x in zip(zip(*rows), exps):
        bases = [gmpy2.mpz(c) if x >= 0 else gmpy2.invert(gmpy2.mpz(c), n2) for c in column]
        powered.append(powmod_many(bases, abs(x), int(n2)))
    out = []
    for factors in zip(*powered):
        acc = gmpy2.mpz(1)
        for f in factors:
            acc = acc * f % n2
        out.append(int((acc - 1) // nm * inv % nm))
    return out


# --- chunked runner ---------------------------------------------------------------------


def _workers(workers: int | None) -> int:
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataValidationError("workers must be a positive integer")
    return workers


class Engine:
    """A process pool for vectors long enough to benefit, else in-process; context manager."""

    def __init__(self, length: int, workers: int | None, progress: bool, desc: str) -> None:
        self.n_workers = _workers(workers)
        self.parallel = self.n_workers > 1 and length >= PARALLEL_THRESHOLD
        self.pool: ProcessPoolExecutor | None = None
        self.chunks = self.n_workers * 4 if self.parallel else max(1, math.ceil(length / 64))
        self.progress, self.length, self.desc = progress, length, desc
        self.bar: Any = None

    def __enter__(self) -> Engine:
        if self.parallel:
            self.pool = ProcessPoolExecutor(max_workers=self.n_workers)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def _progress(self, done: int) -> None:
        """Advance the bar, creating it on first use: after the pool has forked its
        workers, so no process is forked while tqdm's monitor thread runs."""
        if not self.progress:
            return
        if self.bar is None:
            from tqdm import tqdm
            tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

            self.bar = tqdm(total=self.length, desc=self.desc, unit="value", file=sys.stderr)
        self.bar.update(done)

    def run(
        self,
        kernel: Callable[[Any, Sequence[Any]], list[Any]],
        arg: Any,
        items: Sequence[Any],
        *,
        count: bool = False,
        whole: bool = False,
    ) -> list[Any]:
        """``kernel(arg, chunk)`` over chunks of ``items``, results in input order.

        ``whole`` uses one chunk per worker (multi-exponentiation gains from
        long chunks); ``count`` advances the progress bar.
        """
        if not items:
            return []
        chunks = (self.n_workers if self.parallel else 1) if whole else self.chunks
        size = max(1, math.ceil(len(items) / chunks))
        pieces = [list(items[i : i + size]) for i in range(0, len(items), size)]
        out: list[Any] = []
        if self.pool is None:
            for piece in pieces:
                out.extend(kernel(arg, piece))
                if count:
                    self._progress(len(piece))
            return out
        futures = [self.pool.submit(kernel, arg, piece) for piece in pieces]
        if count:
            self._progress(0)
        for piece, fut in zip(pieces, futures):
            out.extend(fut.result())
            if count:
                self._progress(len(piece))
        return out
