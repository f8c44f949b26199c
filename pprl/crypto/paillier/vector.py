"""Paillier encryption of score vectors: what platforms, the bureau and the authority share.

:class:`EncryptedVector` (fixed-width ciphertexts that add and scale like an
array), :func:`encrypt_vector` / :func:`decrypt_vector` and the fixed-point
helpers; keys are re-exported from :mod:`pprl.crypto.paillier.keys`. phe's
conventions (g = n + 1, signed values below n//3), DJN or plain randomness, CRT
decryption. Results are not re-randomised automatically
(:meth:`EncryptedVector.rerandomize`). Nothing here prints or logs a plaintext,
a ciphertext or a key.

Design: docs/design.md#paillier-scheme
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any, SupportsIndex, cast

import gmpy2
import numpy as np

from pprl.crypto.paillier.engine import (
    decrypt_chunk,
    encrypt_raw,
    rerandomize_raw,
    run_chunked,
)
from pprl.crypto.paillier.fixedpoint import decode_fixed, encode_fixed
from pprl.crypto.paillier.keys import (
    MIN_KEY_BITS,
    PaillierPrivateKey,
    PaillierPublicKey,
    generate_keypair,
    raw_encrypt,
)
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    DocumentError,
    KeyMismatchError,
)

__all__ = [
    "decode_signed",
    "MIN_KEY_BITS",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "EncryptedVector",
    "generate_keypair",
    "raw_encrypt",
    "encrypt_vector",
    "decrypt_raw",
    "decrypt_vector",
    "encode_fixed",
    "decode_fixed",
]


def _is_index(x: object) -> bool:
    """An integer usable as an index or scalar (Python, numpy or gmpy2), not a bool."""
    return isinstance(x, int | np.integer | gmpy2.mpz) and not isinstance(x, bool | np.bool_)


def _check_units(values: Sequence[Any], n: Any, block: int = 4096) -> None:
    """DocumentError naming the first ciphertext that shares a factor with n.

    A ciphertext is a unit mod n² iff it is one mod n, and a product mod n
    of units is a unit, so one gcd per block of products replaces a gcd per
    value (a modular multiplication costs a tenth of a gcd); a failing
    block is rescanned value by value to name the position.
    """
    for start in range(0, len(values), block):
        chunk = values[start : start + block]
        acc = gmpy2.mpz(1)
        for c in chunk:
            acc = acc * c % n
        if gmpy2.gcd(acc, n) != 1:
            for pos, c in enumerate(chunk, start=start + 1):
                if gmpy2.gcd(c, n) != 1:
                    raise DocumentError(f"ciphertext at position {pos} is not valid for this key")


class EncryptedVector:
    """Ciphertexts under one key, adding like a numpy array.

    ``a + b`` adds elementwise (KeyMismatchError across keys,
    DataValidationError across lengths); ``sum(vectors)`` works; ``k * a``
    multiplies every plaintext by the integer ``k`` (or elementwise by a
    sequence of integers); ``-a`` and ``a - b`` follow. Indexing with an int
    gives a vector of length 1, with a slice, an int list/array or a boolean
    mask a sub-vector. Instances are immutable.
    """

    __slots__ = ("_public_key", "_c")
    __array_ufunc__ = None  # make numpy defer: np.int64(3) * vec -> vec.__rmul__

    def __init__(self, public_key: PaillierPublicKey, ciphertexts: Sequence[int]) -> None:
        """Wrap existing ciphertexts, checking each is a unit below n² (DocumentError if not)."""
        if not isinstance(public_key, PaillierPublicKey):
            raise DocumentError("an EncryptedVector needs a PaillierPublicKey")
        n, nsquare = public_key.n, public_key.nsquare
        values = []
        for pos, c in enumerate(ciphertexts, start=1):
            m = gmpy2.mpz(int(c)) if _is_index(c) else None
            if m is None or not 0 < m < nsquare:
                raise DocumentError(f"ciphertext at position {pos} is not valid for this key")
            values.append(m)
        _check_units(values, gmpy2.mpz(n))
        self._public_key = public_key
        self._c: tuple[Any, ...] = tuple(values)

    @classmethod
    def _trusted(cls, public_key: PaillierPublicKey, ciphertexts: Sequence[Any]) -> EncryptedVector:
        """Internal constructor for values this module computed itself: no checks."""
        obj = cls.__new__(cls)
        obj._public_key = public_key
        obj._c = tuple(ciphertexts)
        return obj

    @property
    def public_key(self) -> PaillierPublicKey:
        """The key every ciphertext in this vector is under."""
        return self._public_key

    @property
    def ciphertexts(self) -> list[int]:
        """The raw ciphertexts as Python ints (e.g. for phe.EncryptedNumber)."""
        return [int(c) for c in self._c]

    def __len__(self) -> int:
        return len(self._c)

    def __iter__(self) -> Iterator[EncryptedVector]:
        for c in self._c:
            yield EncryptedVector._trusted(self._public_key, (c,))

    def __repr__(self) -> str:
        return f"EncryptedVector(len={len(self)}, key={self._public_key.fingerprint})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncryptedVector):
            return NotImplemented
        return self._public_key == other._public_key and self._c == other._c

    def __hash__(self) -> int:
        return hash((self._public_key.n, self._c))

    def __getitem__(self, index: Any) -> EncryptedVector:
        if _is_index(index):
            i = int(index)
            if not -len(self._c) <= i < len(self._c):
                raise IndexError("EncryptedVector index out of range")
            return EncryptedVector._trusted(self._public_key, (self._c[i],))
        if isinstance(index, slice):
            return EncryptedVector._trusted(self._public_key, self._c[index])
        if isinstance(index, np.ndarray) and index.dtype == np.bool_:
            if index.shape != (len(self._c),):
                raise IndexError("boolean mask must have the vector's length")
            index = np.flatnonzero(index)
        if isinstance(index, np.ndarray | Sequence) and not isinstance(index, str | bytes):
            picked = []
            for i in index:
                if not _is_index(i):
                    raise IndexError("EncryptedVector indices must be integers")
                if not -len(self._c) <= int(i) < len(self._c):
                    raise IndexError("EncryptedVector index out of range")
                picked.append(self._c[int(i)])
            return EncryptedVector._trusted(self._public_key, picked)
        raise TypeError("EncryptedVector indices must be ints, slices, int arrays or masks")

    def _check_compatible(self, other: EncryptedVector) -> None:
        if other._public_key != self._public_key:
            raise KeyMismatchError("encrypted vectors are under different Paillier keys")
        if len(other) != len(self):
            raise DataValidationError(
                f"encrypted vectors have different lengths ({len(self)} and {len(other)})"
            )

    def __add__(self, other: object) -> EncryptedVector:
        """Elementwise homomorphic addition: Dec(a + b)[i] = Dec(a)[i] + Dec(b)[i]."""
        if _is_index(other) and other == 0:
            return self  # the start value of sum()
        if not isinstance(other, EncryptedVector):
            return NotImplemented
        self._check_compatible(other)
        n2 = gmpy2.mpz(self._public_key.nsquare)
        return EncryptedVector._trusted(
            self._public_key, [a * b % n2 for a, b in zip(self._c, other._c)]
        )

    def __radd__(self, other: object) -> EncryptedVector:
        return self.__add__(other)

    def __mul__(self, k: object) -> EncryptedVector:
        """Plaintext times a public integer: c^k mod n² (k < 0 via modular inverse).

        ``k`` may also be a sequence / 1-D array of integers of the same length.
        """
        n2 = gmpy2.mpz(self._public_key.nsquare)
        if _is_index(k):
            kk = gmpy2.mpz(int(cast(SupportsIndex, k)))
            return EncryptedVector._trusted(
                self._public_key, [gmpy2.powmod(c, kk, n2) for c in self._c]
            )
        if isinstance(k, np.ndarray | Sequence) and not isinstance(k, str | bytes):
            ks = list(k)
            if len(ks) != len(self._c):
                raise DataValidationError(
                    f"scalar vector has length {len(ks)}, encrypted vector {len(self._c)}"
                )
            if not all(_is_index(x) for x in ks):
                raise DataValidationError("scalar multipliers must be integers")
            return EncryptedVector._trusted(
                self._public_key,
                [gmpy2.powmod(c, gmpy2.mpz(int(x)), n2) for c, x in zip(self._c, ks)],
            )
        return NotImplemented

    def __rmul__(self, k: object) -> EncryptedVector:
        return self.__mul__(k)

    def __neg__(self) -> EncryptedVector:
        return self * -1

    def __sub__(self, other: object) -> EncryptedVector:
        if not isinstance(other, EncryptedVector):
            return NotImplemented
        return self + (-other)

    def to_bytes(self) -> bytes:
        """Concatenated fixed-width big-endian ciphertexts, ``ciphertext_bytes`` each."""
        width = self._public_key.ciphertext_bytes
        return b"".join(int(c).to_bytes(width, "big") for c in self._c)

    @classmethod
    def from_bytes(cls, public_key: PaillierPublicKey, data: bytes) -> EncryptedVector:
        """Parse :meth:`to_bytes` output; DocumentError on a bad length or bad ciphertext."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DocumentError("encrypted vector data must be bytes")
        data = bytes(data)
        width = public_key.ciphertext_bytes
        if len(data) % width:
            raise DocumentError(
                f"encrypted vector is {len(data)} bytes, not a multiple of {width}"
            )
        return cls(
            public_key,
            [int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width)],
        )

    @classmethod
    def concat(cls, vectors: Sequence[EncryptedVector]) -> EncryptedVector:
        """One vector of all elements, in order; all inputs must share a key."""
        vectors = list(vectors)
        if not vectors:
            raise DataValidationError("cannot concatenate zero encrypted vectors")
        if not all(isinstance(v, EncryptedVector) for v in vectors):
            raise DataValidationError("can only concatenate EncryptedVector objects")
        key = vectors[0]._public_key
        if any(v._public_key != key for v in vectors):
            raise KeyMismatchError("encrypted vectors are under different Paillier keys")
        return cls._trusted(key, [c for v in vectors for c in v._c])

    def sum_groups(self, groups: Sequence[Sequence[int]]) -> EncryptedVector:
        """One ciphertext per group: the homomorphic sum of the listed indices.

        Indices are 0-based and non-negative; a repeated index within a group
        is refused (it would silently double-count a score). An empty group
        yields the deterministic encryption of 0 (ciphertext 1). Results are
        not re-randomised: see :meth:`rerandomize`.
        """
        n2 = gmpy2.mpz(self._public_key.nsquare)
        size = len(self._c)
        out = []
        for g_pos, group in enumerate(groups, start=1):
            acc = gmpy2.mpz(1)
            seen: set[int] = set()
            for i in group:
                if not _is_index(i) or not 0 <= int(i) < size:
                    raise DataValidationError(
                        f"group {g_pos} has an index outside 0..{size - 1}"
                    )
                ii = int(i)
                if ii in seen:
                    raise DataValidationError(f"group {g_pos} lists an index twice")
                seen.add(ii)
                acc = acc * self._c[ii] % n2
            out.append(acc)
        return EncryptedVector._trusted(self._public_key, out)

    def rerandomize(
        self, *, workers: int | None = None, progress: bool = False, method: str | None = None
    ) -> EncryptedVector:
        """Same plaintexts, fresh randomness: multiply each by a new h_s^a (or r^n, ``method="plain"``)."""
        out = rerandomize_raw(
            self._public_key, self._c, workers=workers, progress=progress, method=method
        )
        return EncryptedVector._trusted(self._public_key, out)


def _plaintexts(public_key: PaillierPublicKey, values: Sequence[int] | np.ndarray) -> list[int]:
    """Signed ints -> raw plaintexts m mod n, refusing anything not an int or out of range."""
    if hasattr(values, "to_numpy") and not isinstance(values, np.ndarray):  # pandas Series
        values = values.to_numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise DataValidationError("values to encrypt must be a 1-D sequence")
        if values.dtype.kind not in "iuO":
            raise DataValidationError(
                "values to encrypt must be integers (use encode_fixed for decimals)"
            )
        values = values.tolist()
    n, max_int = public_key.n, public_key.max_int
    out = []
    for pos, v in enumerate(values, start=1):
        if not _is_index(v):
            raise DataValidationError(
                f"value at position {pos} is not an integer (use encode_fixed for decimals)"
            )
        m = int(v)
        if not -max_int <= m <= max_int:
            raise DataValidationError(
                f"value at position {pos} exceeds the key's plaintext range (|m| < n//3)"
            )
        out.append(m % n)
    return out


def encrypt_vector(
    public_key: PaillierPublicKey,
    values: Sequence[int] | np.ndarray,
    *,
    workers: int | None = None,
    progress: bool = False,
    method: str | None = None,
    exponent_bits: int | None = None,
    window: int | None = None,
    cache_dir: str | os.PathLike[str] | bool | None = None,
) -> EncryptedVector:
    """Encrypt signed integers (|m| < n//3) with fresh randomness each.

    ``values``: a sequence, 1-D integer numpy array or pandas Series.
    ``workers=None`` uses every CPU; inputs shorter than 256 run in-process.
    ``progress`` shows a tqdm bar on stderr. ``method``: "djn" (default when
    the key has ``djn_hs``) or "plain" (phe-style r^n); ``exponent_bits``
    (default |n|/2), ``window`` and ``cache_dir`` tune the DJN table, see
    :func:`pprl.crypto.paillier.djn.djn_params`.
    """
    if not isinstance(public_key, PaillierPublicKey):
        raise DataValidationError("encrypt_vector needs a PaillierPublicKey")
    plain = _plaintexts(public_key, values)
    out = encrypt_raw(
        public_key, plain, workers=workers, progress=progress, method=method,
        exponent_bits=exponent_bits, window=window, cache_dir=cache_dir,
    )
    return EncryptedVector._trusted(public_key, out)


def decrypt_vector(
    private_key: PaillierPrivateKey,
    enc: EncryptedVector,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> list[int]:
    """CRT-decrypt and sign-decode every element.

    KeyMismatchError if ``enc`` is under another key; DecryptionError (naming
    the 1-based position only) if a result lies in the overflow band
    [n//3, n - n//3], i.e. a sum overflowed or the ciphertext was not made
    for this key.
    """
    return decode_signed(private_key.public_key, decrypt_raw(private_key, enc, workers=workers, progress=progress))


def decrypt_raw(
    private_key: PaillierPrivateKey, enc: EncryptedVector, *, workers: int | None = None, progress: bool = False
) -> list[int]:
    """CRT-decrypt every element to its plaintext in [0, n), without sign decoding (what a masked sum gives)."""
    if not isinstance(private_key, PaillierPrivateKey):
        raise DataValidationError("decrypt_vector needs a PaillierPrivateKey")
    if not isinstance(enc, EncryptedVector):
        raise DataValidationError("decrypt_vector needs an EncryptedVector")
    if enc.public_key != private_key.public_key:
        raise KeyMismatchError("ciphertexts are not under this private key's public key")
    raw = run_chunked(
        decrypt_chunk, private_key.crt, enc._c, workers=workers, progress=progress, desc="decrypt"
    )
    return [int(x) for x in raw]


def decode_signed(public_key: PaillierPublicKey, raw: Sequence[int]) -> list[int]:
    """Map raw plaintexts in [0, n) to signed values; the middle third is an overflow (DecryptionError)."""
    n, max_int = public_key.n, public_key.max_int
    out = []
    for pos, m in enumerate(raw, start=1):
        if m <= max_int:
            out.append(m)
        elif m >= n - max_int:
            out.append(m - n)
        else:
            raise DecryptionError(
                f"decrypted value at position {pos} is outside the signed range: "
                "a sum overflowed n//3, or the ciphertext was not made under this key"
            )
    return out
