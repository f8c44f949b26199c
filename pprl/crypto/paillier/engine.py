"""The modular-arithmetic kernels behind :mod:`pprl.crypto.paillier.vector`, and the
chunked runner that spreads them over worker processes.

:func:`encrypt_raw` / :func:`rerandomize_raw` pick the obfuscation (DJN
h_s^a with a fixed-base table, see :mod:`pprl.crypto.paillier.djn`, or
classic r^n) and run it chunked; a DJN table is built in the parent before
the pool starts, so forked workers inherit it instead of rebuilding it.

Kernels take and return plain ints / gmpy2 ``mpz`` values only, and are
top-level functions, so they pickle to any multiprocessing start method.
Each worker draws its own randomness from the OS (:mod:`secrets`), so forked
workers never share a random state.
"""

from __future__ import annotations

import math
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import gmpy2

from pprl.crypto.montexp import powmod_many
from pprl.crypto.paillier.djn import (
    djn_encrypt_chunk,
    djn_params,
    djn_rerandomize_chunk,
    get_table,
)
from pprl.crypto.paillier.keys import CRTParams, PaillierPublicKey
from pprl.errors import DataValidationError

__all__ = [
    "PARALLEL_THRESHOLD",
    "random_unit",
    "encrypt_chunk",
    "rerandomize_chunk",
    "decrypt_chunk",
    "decrypt_chunk_mod_p",
    "encrypt_raw",
    "rerandomize_raw",
    "resolve_workers",
    "run_chunked",
]

#: Inputs shorter than this are processed in-process: a pool costs more than it saves.
PARALLEL_THRESHOLD = 256

#: Ciphertexts per powmod_many call in decryption: bounds the intermediate lists.
_POWMOD_SLICE = 1024

T = TypeVar("T")
R = TypeVar("R")


def random_unit(n: int) -> Any:
    """Uniform r in [1, n) with gcd(r, n) = 1, from the OS CSPRNG (as mpz)."""
    while True:
        r = gmpy2.mpz(secrets.randbelow(n - 1) + 1)
        if gmpy2.gcd(r, n) == 1:  # fails only if r reveals a factor of n
            return r


def encrypt_chunk(n: int, plaintexts: Sequence[int]) -> list[Any]:
    """Enc(m) = (1 + m·n) · r^n mod n² for raw plaintexts m in [0, n)."""
    nm, n2 = gmpy2.mpz(n), gmpy2.mpz(n) * n
    return [(1 + m * nm) * gmpy2.powmod(random_unit(n), nm, n2) % n2 for m in plaintexts]


def rerandomize_chunk(n: int, ciphertexts: Sequence[Any]) -> list[Any]:
    """c · r^n mod n²: same plaintext, fresh and unlinkable randomness."""
    nm, n2 = gmpy2.mpz(n), gmpy2.mpz(n) * n
    return [c * gmpy2.powmod(random_unit(n), nm, n2) % n2 for c in ciphertexts]


def decrypt_chunk(crt: CRTParams, ciphertexts: Sequence[Any]) -> list[int]:
    """CRT decryption to raw plaintexts in [0, n).

    m_p = L_p(c^(p-1) mod p²)·h_p mod p, likewise m_q, then
    m = m_p + ((m_q - m_p)·p⁻¹ mod q)·p, where L_x(u) = (u - 1) / x.
    Two half-size exponentiations instead of one mod n² (about 4× faster),
    each run for the whole chunk by :func:`pprl.crypto.montexp.powmod_many`
    (AVX-512 IFMA when the CPU has it, else gmpy2).
    """
    p, q = gmpy2.mpz(crt.p), gmpy2.mpz(crt.q)
    hp, hq, pinv = gmpy2.mpz(crt.hp), gmpy2.mpz(crt.hq), gmpy2.mpz(crt.p_inverse)
    out: list[int] = []
    for part in _chunks(ciphertexts, _POWMOD_SLICE):
        ups = powmod_many(part, crt.p - 1, crt.psquare)
        uqs = powmod_many(part, crt.q - 1, crt.qsquare)
        for up, uq in zip(ups, uqs):
            mp = (gmpy2.mpz(up) - 1) // p * hp % p
            mq = (gmpy2.mpz(uq) - 1) // q * hq % q
            out.append(int(mp + (mq - mp) * pinv % q * p))
    return out


def decrypt_chunk_mod_p(crt: CRTParams, ciphertexts: Sequence[Any]) -> list[int]:
    """m mod p only: half of CRT decryption, exact whenever the plaintext is known to be < p.

    One exponentiation mod p² instead of two. Callers must check the result
    against their bound: for a wrong or tampered ciphertext it is uniform in
    [0, p), so a bound far below p also detects garbage.
    """
    p, hp = gmpy2.mpz(crt.p), gmpy2.mpz(crt.hp)
    return [
        int((gmpy2.mpz(up) - 1) // p * hp % p)
        for part in _chunks(ciphertexts, _POWMOD_SLICE)
        for up in powmod_many(part, crt.p - 1, crt.psquare)
    ]


def encrypt_raw(
    public_key: PaillierPublicKey,
    plaintexts: Sequence[int],
    *,
    workers: int | None = None,
    progress: bool = False,
    method: str | None = None,
    exponent_bits: int | None = None,
    window: int | None = None,
    cache_dir: Any = None,
    desc: str = "encrypt",
) -> list[Any]:
    """Encrypt raw plaintexts in [0, n) (already range-checked) with fresh randomness.

    ``method``/``exponent_bits``/``window``/``cache_dir``: see
    :func:`pprl.crypto.paillier.djn.djn_params`.
    """
    params = djn_params(
        public_key, len(plaintexts), method=method, exponent_bits=exponent_bits,
        window=window, cache_dir=cache_dir,
    )
    if params is None:
        return run_chunked(
            encrypt_chunk, public_key.n, plaintexts, workers=workers, progress=progress, desc=desc
        )
    if params.use_table:
        get_table(params)  # once, here: forked workers inherit it
    return run_chunked(
        djn_encrypt_chunk, params, plaintexts, workers=workers, progress=progress, desc=desc
    )


def rerandomize_raw(
    public_key: PaillierPublicKey,
    ciphertexts: Sequence[Any],
    *,
    workers: int | None = None,
    progress: bool = False,
    method: str | None = None,
) -> list[Any]:
    """Multiply each ciphertext by a fresh obfuscator (DJN when the key has one)."""
    params = djn_params(public_key, len(ciphertexts), method=method)
    if params is None:
        return run_chunked(
            rerandomize_chunk, public_key.n, ciphertexts, workers=workers, progress=progress,
            desc="rerandomize",
        )
    if params.use_table:
        get_table(params)
    return run_chunked(
        djn_rerandomize_chunk, params, ciphertexts, workers=workers, progress=progress,
        desc="rerandomize",
    )


def resolve_workers(workers: int | None) -> int:
    """``None`` -> the machine's CPU count; otherwise a positive int."""
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataValidationError("workers must be a positive integer")
    return workers


def _chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_chunked(
    kernel: Callable[[Any, Sequence[T]], list[R]],
    arg: Any,
    items: Sequence[T],
    *,
    workers: int | None,
    progress: bool,
    desc: str,
) -> list[R]:
    """``kernel(arg, chunk)`` over chunks of ``items``, results in input order.

    Sequential for short inputs or one worker; otherwise a
    ProcessPoolExecutor. ``progress`` shows a tqdm bar on stderr, created
    only after the pool has started its workers (no fork with a live
    monitor thread).
    """
    n_workers = resolve_workers(workers)
    total = len(items)
    if total == 0:
        return []
    parallel = n_workers > 1 and total >= PARALLEL_THRESHOLD
    if parallel:
        # ~8 chunks per worker balances load; bounds keep pickling overhead low
        # and progress updates frequent.
        size = min(1024, max(16, math.ceil(total / (n_workers * 8))))
    else:
        size = 64 if progress else total
    chunks = _chunks(items, size)
    results: list[list[R]] = [[] for _ in chunks]
    bar = None
    try:
        if not parallel:
            bar = _make_bar(progress, total, desc)
            for i, chunk in enumerate(chunks):
                results[i] = kernel(arg, chunk)
                if bar is not None:
                    bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(max_workers=min(n_workers, len(chunks))) as pool:
                futures: dict[Future[list[R]], int] = {}
                try:
                    for i, chunk in enumerate(chunks):
                        futures[pool.submit(kernel, arg, list(chunk))] = i
                    bar = _make_bar(progress, total, desc)
                    for fut in as_completed(futures):
                        i = futures[fut]
                        results[i] = fut.result()
                        if bar is not None:
                            bar.update(len(chunks[i]))
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        if bar is not None:
            bar.close()
    return [r for chunk_result in results for r in chunk_result]


def _make_bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    from tqdm import tqdm
    tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

    return tqdm(total=total, desc=desc, unit="value", file=sys.stderr)
