"""Fast Paillier obfuscation in the Damgård–Jurik–Nielsen (DJN) form, with fixed-base tables.

Encryption is ``c = (1 + m·n) · h_s^a mod n²`` with ``h_s`` (field ``djn_hs``)
from the signed public key and a fresh exponent a of ℓ = |n|/2 bits by default;
the result is an ordinary Paillier ciphertext. Fixed-base window tables, sized
to a memory budget, cached per process and on disk only when asked
(``cache_dir=``, ``PPRL_CACHE_DIR``), make ``h_s^a`` one product per window, in
Montgomery form on AVX-512 IFMA (``PPRL_NO_IFMA=1`` selects gmpy2).

Design and security argument: docs/design.md#djn-encryption
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import secrets
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import gmpy2

from pprl.crypto.paillier.fixed_base_table import FixedBaseTable
from pprl.crypto.paillier.keys import PaillierPublicKey
from pprl.errors import DataValidationError, PolicyError

__all__ = [
    "LARGE_JOB",
    "LARGE_TABLE_MEMORY_BUDGET",
    "TABLE_MEMORY_BUDGET",
    "TABLE_THRESHOLD",
    "DJNParams",
    "FixedBaseTable",
    "security_bits",
    "default_exponent_bits",
    "min_exponent_bits",
    "default_window",
    "resolve_cache_dir",
    "djn_params",
    "obfuscate",
    "get_table",
    "has_cached_table",
    "clear_memory_cache",
    "djn_encrypt_chunk",
    "djn_rerandomize_chunk",
]

#: Largest table (entries × entry bytes) the default window may produce. Entries are
#: counted as plain ciphertext-size integers (512 bytes at 2048 bits); the IFMA
#: Montgomery form is 640 bytes plus one entry per row, so it comes out ~25% larger
#: (67.5 MB at w = 10, 225 MB at w = 12): the window, and so the speed, is the same
#: on both paths.
TABLE_MEMORY_BUDGET = 64 * 2**20
#: From this many exponentiations on, the default window may use :data:`LARGE_TABLE_MEMORY_BUDGET`.
LARGE_JOB = 20_000
LARGE_TABLE_MEMORY_BUDGET = 256 * 2**20
#: From this many exponentiations on, building a table pays for itself.
TABLE_THRESHOLD = 128
_MAX_DEFAULT_WINDOW = 12
_MEMO: OrderedDict[tuple[int, int, int, int], FixedBaseTable] = OrderedDict()
_MEMO_SIZE = 4
# Free tables (up to hundreds of MB of mpz) while gmpy2 is still fully alive.
atexit.register(_MEMO.clear)


def security_bits(n_bits: int) -> int:
    """Security level κ of an RSA-type modulus of ``n_bits`` (NIST SP 800-57 Part 1)."""
    for limit, kappa in ((2048, 80), (3072, 112), (7680, 128), (15360, 192)):
        if n_bits < limit:
            return kappa
    return 256


def default_exponent_bits(n_bits: int) -> int:
    """ℓ = |n|/2, the full-length DJN exponent (1024 bits at 2048-bit n)."""
    return n_bits // 2


def min_exponent_bits(n_bits: int) -> int:
    """Shortest exponent accepted: 2κ (DJN), capped at |n|/2 for toy test keys."""
    return min(2 * security_bits(n_bits), n_bits // 2)


def default_window(entry_bytes: int, exponent_bits: int, budget: int = TABLE_MEMORY_BUDGET) -> int:
    """Largest w ≤ 12 with ⌈ℓ/w⌉·(2^w - 1)·entry_bytes ≤ ``budget`` bytes."""
    for w in range(_MAX_DEFAULT_WINDOW, 1, -1):
        if -(-exponent_bits // w) * ((1 << w) - 1) * entry_bytes <= budget:
            return w
    return 1


class DJNParams(NamedTuple):
    """Everything a worker needs to encrypt under one key; plain values, cheap to pickle."""

    n: int
    hs: int
    exponent_bits: int
    window: int
    fingerprint: str
    cache_dir: str | None
    use_table: bool


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | bool | None) -> str | None:
    """Where tables go on disk: a path; ``True`` = $PPRL_CACHE_DIR or ~/.cache/pprl;
    ``False`` = nowhere; ``None`` = $PPRL_CACHE_DIR if set, else nowhere."""
    env = os.environ.get("PPRL_CACHE_DIR") or None
    if cache_dir is None:
        return env
    if cache_dir is True:
        return env or str(Path.home() / ".cache" / "pprl")
    if cache_dir is False:
        return None
    return os.fspath(cache_dir)


def djn_params(
    public_key: PaillierPublicKey,
    count: int,
    *,
    method: str | None = None,
    exponent_bits: int | None = None,
    window: int | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> DJNParams | None:
    """Resolve the obfuscation method for ``count`` values; None means classic r^n.

    ``method``: None picks "djn" when the key carries ``djn_hs``, else
    "plain"; "djn" on a key without it raises DataValidationError. A table
    is used from :data:`TABLE_THRESHOLD` values on, or whenever this process
    already holds one. PolicyError for an exponent shorter than
    :func:`min_exponent_bits`.
    """
    if method is None:
        method = "djn" if public_key.djn_hs is not None else "plain"
    if method not in ("djn", "plain"):
        raise DataValidationError("method must be 'djn' or 'plain'")
    if method == "plain":
        return None
    if public_key.djn_hs is None:
        raise DataValidationError(
            "this Paillier key has no DJN base (djn_hs): use method='plain', or a key from "
            "generate_keypair / PaillierPrivateKey.with_djn()"
        )
    n_bits = public_key.bits
    ell = default_exponent_bits(n_bits) if exponent_bits is None else exponent_bits
    if isinstance(ell, bool) or not isinstance(ell, int) or ell > 2 * n_bits:
        raise DataValidationError("exponent_bits must be an integer no larger than 2·|n|")
    if ell < min_exponent_bits(n_bits):
        raise PolicyError(
            f"a {ell}-bit DJN exponent is too short for a {n_bits}-bit key "
            f"(minimum {min_exponent_bits(n_bits)} bits = twice the security level)"
        )
    budget = LARGE_TABLE_MEMORY_BUDGET if count >= LARGE_JOB else TABLE_MEMORY_BUDGET
    w = default_window(public_key.ciphertext_bytes, ell, budget) if window is None else window
    if isinstance(w, bool) or not isinstance(w, int) or not 1 <= w <= 16:
        raise DataValidationError("window must be an integer from 1 to 16")
    params = DJNParams(
        public_key.n, public_key.djn_hs, ell, w, public_key.fingerprint,
        resolve_cache_dir(cache_dir), False,
    )
    return params._replace(use_table=count >= TABLE_THRESHOLD or has_cached_table(params))


def _cache_path(params: DJNParams) -> Path:
    width = (2 * params.n.bit_length() + 7) // 8
    hs_id = hashlib.sha256(params.hs.to_bytes(width, "big")).hexdigest()[:16]
    name = f"djn-{params.fingerprint}-{hs_id}-e{params.exponent_bits}-w{params.window}.table"
    return Path(params.cache_dir or ".") / name


def _write_atomic(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".table")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_table(params: DJNParams) -> FixedBaseTable:
    """The table for these parameters: from memory, else a verified cache file, else built.

    Built on IFMA in Montgomery form when possible (:meth:`FixedBaseTable.build_fast`),
    and a table loaded from disk is read straight into that form.
    A built table is written to the cache directory when one is configured;
    an unwritable cache directory is ignored (the table is still returned).
    """
    key = (params.n, params.hs, params.exponent_bits, params.window)
    table = _MEMO.get(key)
    if table is not None:
        _MEMO.move_to_end(key)
        return table
    n2 = params.n * params.n
    args = {"base": params.hs, "modulus": n2, "exponent_bits": params.exponent_bits, "window": params.window}
    path = _cache_path(params) if params.cache_dir else None
    if path is not None:
        try:
            table = FixedBaseTable.from_bytes(
                path.read_bytes(), fingerprint=params.fingerprint, montgomery=True, **args
            )
        except OSError:
            table = None
    if table is None:
        table = FixedBaseTable.build_fast(params.hs, n2, params.exponent_bits, params.window)
        if path is not None:
            with contextlib.suppress(OSError):  # a read-only or full cache directory only costs speed
                _write_atomic(path, table.to_bytes(params.fingerprint, params.hs))
    _MEMO[key] = table
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return table


def clear_memory_cache() -> None:
    """Forget every table held in this process (the disk cache is untouched)."""
    _MEMO.clear()


def has_cached_table(params: DJNParams) -> bool:
    """True if this process already holds the table (loading a 54 MB file does not pay
    for a handful of values, so a file on disk alone does not count)."""
    return (params.n, params.hs, params.exponent_bits, params.window) in _MEMO


def obfuscate(params: DJNParams, exponents: Sequence[int]) -> list[Any]:
    """h_s^a mod n² for each given exponent a (the fixed-base table when ``params.use_table``)."""
    if params.use_table:
        return get_table(params).pow_many(list(exponents))
    hs, n2 = gmpy2.mpz(params.hs), gmpy2.mpz(params.n) ** 2
    return [gmpy2.powmod(hs, a, n2) for a in exponents]


def _obfuscators(params: DJNParams, count: int) -> list[Any]:
    """``count`` fresh h_s^a mod n² with a uniform in [0, 2^ℓ) from the OS CSPRNG."""
    return obfuscate(params, [secrets.randbits(params.exponent_bits) for _ in range(count)])


def djn_encrypt_chunk(params: DJNParams, plaintexts: Sequence[int]) -> list[Any]:
    """Enc(m) = (1 + m·n) · h_s^a mod n² for raw plaintexts m in [0, n)."""
    nm = gmpy2.mpz(params.n)
    n2 = nm * nm
    obf = _obfuscators(params, len(plaintexts))
    return [(1 + m * nm) * r % n2 for m, r in zip(plaintexts, obf)]


def djn_rerandomize_chunk(params: DJNParams, ciphertexts: Sequence[Any]) -> list[Any]:
    """c · h_s^a mod n²: same plaintext, fresh randomness."""
    n2 = gmpy2.mpz(params.n) ** 2
    obf = _obfuscators(params, len(ciphertexts))
    return [c * r % n2 for c, r in zip(ciphertexts, obf)]
