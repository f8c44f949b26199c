"""ECDH private set intersection: hash identifiers into a prime-order group and blind them.

Group
    The prime-order subgroup (order L = 2^252 + 27742317777372353535851937790883648493)
    of Curve25519, written as 32-byte little-endian Montgomery u-coordinates and
    exponentiated with X25519 (libsodium's constant-time ``crypto_scalarmult``,
    reached through PyNaCl). A u-coordinate names the pair {P, -P}; for hashed
    points a clash between P and -Q has probability about 2^-252, so equal
    u-coordinates mean equal identifiers.

    Why not ristretto255: PyNaCl's bindings (up to 1.6.2) expose no
    ristretto255 function, and the libsodium bundled in its wheels exports
    none either (checked with ``nm -D``); pycryptodome has no hash-to-curve
    at all. Ristretto255 is a quotient encoding of this same prime-order
    group, so security is the same, and X25519 is about three times faster
    here than ``crypto_scalarmult_ed25519`` (30 us against 90 us; the latter
    re-checks subgroup membership on every call).

Hash to group (domain separated, constant time, no try-and-increment)
    ``h = SHA-512("pprl-psi-h2g-v1" || len(domain) as 2 bytes big-endian ||
    domain || identifier)``; ``P = E(h[0:32]) + E(h[32:64])`` where E is
    libsodium's ``crypto_core_ed25519_from_uniform``: Elligator 2 (a
    straight-line map, no retries), then multiplication by the cofactor 8, so
    P lies in the prime-order subgroup. Adding two independent maps is the
    random-oracle construction of RFC 9380 (``hash_to_curve``, as opposed to
    the non-uniform ``encode_to_curve``), which the ECDH-PSI security argument
    assumes. P (Edwards form) becomes its Montgomery u = (1 + y) / (1 - y)
    mod 2^255 - 19; the inverses of a batch are computed with one
    ``gmpy2.powmod_sec`` (GMP's side-channel-silent exponentiation) and
    Montgomery's batch-inversion trick. The curve operations run in
    libsodium's constant-time C; the conversion runs on gmpy2 integers with
    no value-dependent branch in our code, though Python's integer handling
    is not formally constant time.

Keys and blinding
    A blinding key is 32 fresh random bytes (``secrets``), one per party per
    session; X25519 clamps it to 8·k' + 2^254, a nonzero multiple of 8 mod L.
    Blinding is ``H(x)^k`` = X25519(k, u(H(x))); re-blinding another party's
    element is X25519(k, element). Scalar multiplication commutes, so after
    every party has applied its key each element is H(x)^(k_1···k_K) whatever
    the order, and equal values mean equal identifiers. Elements received from
    a peer are checked for length and canonical encoding (u < 2^255 - 19);
    X25519's clamping makes small-subgroup inputs harmless, and libsodium's
    refusal of an all-zero result is reported as an invalid element.

Speed
    Every group operation is one libsodium call. cffi releases the GIL for the
    call's duration, so large inputs are split over threads (one per core):
    1.7x on 2 cores without pickling or forking. Inputs are handled in
    batches so the batch inversion amortises.

Nothing here writes files, prints, or logs a key, an identifier or a point.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gmpy2
import nacl.bindings as sodium
import nacl.exceptions
import numpy as np

from pprl.errors import DataValidationError, KeyFormatError

__all__ = [
    "ELEMENT_BYTES",
    "SUITE",
    "PSIKey",
    "PsiClient",
    "PsiServer",
    "blind",
    "check_elements",
    "hash_to_group",
    "make_domain",
    "random_permutation",
    "reblind",
    "split_elements",
]

#: Bytes per group element (a Montgomery u-coordinate).
ELEMENT_BYTES = 32
#: Names the group, hash and encoding; part of every hash input, so a future
#: change of construction can never collide with this one.
SUITE = b"pprl-psi-h2g-v1"

_P = (1 << 255) - 19
_MPZ_P = gmpy2.mpz(_P)
_MPZ_P_MINUS_2 = gmpy2.mpz(_P - 2)
_Y_MASK = (1 << 255) - 1
#: Elements per batch: amortises the one constant-time inversion per batch and
#: keeps threads evenly loaded.
_BATCH = 2048
#: Below this many elements threads cost more than they save.
_PARALLEL_THRESHOLD = 4096


def _require_sodium() -> None:
    if not hasattr(sodium, "crypto_core_ed25519_from_uniform"):
        raise KeyFormatError("PSI needs PyNaCl 1.6 or later (crypto_core_ed25519_from_uniform)")
    if not getattr(sodium, "has_crypto_core_ed25519", False):
        raise KeyFormatError(
            "this PyNaCl is built on a minimal libsodium without edwards25519 operations; "
            "install a PyNaCl wheel from PyPI"
        )


@dataclass(frozen=True)
class PSIKey:
    """A party's secret blinding key for one session: 32 random bytes (X25519 clamps them).

    ``repr`` never shows the key; only :meth:`to_bytes` does, for the party's
    own 0600 state file.
    """

    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) != 32:
            raise KeyFormatError("a PSI key is exactly 32 bytes")

    @classmethod
    def generate(cls) -> PSIKey:
        """A fresh key from the OS CSPRNG; use a new one for every session."""
        return cls(secrets.token_bytes(32))

    def to_bytes(self) -> bytes:
        return self.secret

    def __repr__(self) -> str:
        return "PSIKey(<secret>)"


def make_domain(*parts: str | bytes) -> bytes:
    """An unambiguous domain string from parts, each prefixed by its 2-byte length.

    The parties use (purpose, identifier kind, session id), so the same
    identifier hashes to unrelated points in different sessions or for
    different identifier kinds.
    """
    out = bytearray()
    for part in parts:
        raw = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        if len(raw) > 0xFFFF:
            raise DataValidationError("a domain part is longer than 65535 bytes")
        out += len(raw).to_bytes(2, "big") + raw
    return bytes(out)


def _hash_prefix(domain: bytes) -> Any:
    if not isinstance(domain, bytes | bytearray) or len(domain) > 0xFFFF:
        raise DataValidationError("the hash domain must be bytes, at most 65535 long")
    h = hashlib.sha512(SUITE)
    h.update(len(domain).to_bytes(2, "big"))
    h.update(bytes(domain))
    return h


def _as_bytes(item: str | bytes, position: int) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    raise DataValidationError(f"identifier at position {position} is not text or bytes")


def _edwards_to_montgomery(points: Sequence[bytes]) -> list[bytes]:
    """u = (1 + y) / (1 - y) mod p for compressed Edwards points, with one inversion per batch."""
    ys = [gmpy2.mpz(int.from_bytes(pt, "little") & _Y_MASK) for pt in points]
    dens = [(1 - y) % _MPZ_P for y in ys]
    prefix = []
    acc = gmpy2.mpz(1)
    for d in dens:
        acc = acc * d % _MPZ_P
        prefix.append(acc)
    if acc == 0:
        # y = 1 is the neutral element: probability about 2^-252 per identifier.
        raise DataValidationError("an identifier hashed to the neutral element; cannot blind it")
    inv = gmpy2.powmod_sec(acc, _MPZ_P_MINUS_2, _MPZ_P)
    out: list[bytes] = [b""] * len(points)
    for i in range(len(points) - 1, -1, -1):
        inv_i = inv * prefix[i - 1] % _MPZ_P if i else inv
        inv = inv * dens[i] % _MPZ_P
        out[i] = int((1 + ys[i]) * inv_i % _MPZ_P).to_bytes(32, "little")
    return out


def _hash_chunk(prefix: Any, items: Sequence[bytes]) -> list[bytes]:
    from_uniform, add = sodium.crypto_core_ed25519_from_uniform, sodium.crypto_core_ed25519_add
    points = []
    for x in items:
        h = prefix.copy()
        h.update(x)
        d = h.digest()
        points.append(add(from_uniform(d[:32]), from_uniform(d[32:])))
    return _edwards_to_montgomery(points)


def _exponentiate(key: bytes, elements: Sequence[bytes], offset: int) -> bytes:
    mult = sodium.crypto_scalarmult
    out = bytearray()
    for i, e in enumerate(elements):
        try:
            out += mult(key, e)
        except nacl.exceptions.RuntimeError:
            raise DataValidationError(
                f"element at position {offset + i + 1} is not a valid group element"
            ) from None
    return bytes(out)


def _workers(workers: int | None) -> int:
    if workers is None:
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DataValidationError("workers must be a positive integer")
    return workers


def _batches(total: int) -> list[tuple[int, int]]:
    return [(s, min(total, s + _BATCH)) for s in range(0, total, _BATCH)]


def _run(
    task: Callable[[int, int], bytes], total: int, workers: int | None, progress: bool, desc: str
) -> bytes:
    """``task(start, stop)`` over batches, in order; threads when the input is large."""
    n_workers = _workers(workers)
    batches = _batches(total)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, unit="element", file=sys.stderr)
    try:
        parts: list[bytes] = []
        if n_workers > 1 and total >= _PARALLEL_THRESHOLD:
            with ThreadPoolExecutor(max_workers=n_workers) as pool:
                for (start, stop), part in zip(batches, pool.map(lambda b: task(*b), batches)):
                    parts.append(part)
                    if bar is not None:
                        bar.update(stop - start)
        else:
            for start, stop in batches:
                parts.append(task(start, stop))
                if bar is not None:
                    bar.update(stop - start)
        return b"".join(parts)
    finally:
        if bar is not None:
            bar.close()


def hash_to_group(
    identifiers: Sequence[str | bytes], domain: bytes, *, workers: int | None = 1, progress: bool = False
) -> bytes:
    """H(x) for every identifier, as concatenated 32-byte u-coordinates (never sent anywhere).

    Exposed for tests and audits of the construction; parties only ever
    send blinded values (:func:`blind`).
    """
    _require_sodium()
    prefix = _hash_prefix(domain)
    items = [_as_bytes(x, i) for i, x in enumerate(identifiers, start=1)]
    return _run(lambda a, b: b"".join(_hash_chunk(prefix, items[a:b])), len(items), workers, progress, "hash")


def blind(
    key: PSIKey,
    identifiers: Sequence[str | bytes],
    domain: bytes,
    *,
    workers: int | None = None,
    progress: bool = False,
) -> bytes:
    """H(x)^k for every identifier, in input order, as concatenated 32-byte elements.

    ``workers=None`` uses every CPU (threads; see the module notes).
    """
    _require_sodium()
    if not isinstance(key, PSIKey):
        raise KeyFormatError("blind needs a PSIKey")
    prefix = _hash_prefix(domain)
    items = [_as_bytes(x, i) for i, x in enumerate(identifiers, start=1)]
    k = key.secret

    def task(a: int, b: int) -> bytes:
        return _exponentiate(k, _hash_chunk(prefix, items[a:b]), a)

    return _run(task, len(items), workers, progress, "blind")


def check_elements(blob: bytes, what: str = "elements") -> int:
    """Refuse a blob that is not whole, canonical 32-byte u-coordinates; return the count.

    Vectorised (numpy): a canonical u is below 2^255 - 19, so the top bit is
    clear and the value is not in [2^255 - 19, 2^255). The all-zero element
    (a point of small order) is refused too.
    """
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise DataValidationError(f"{what} must be bytes")
    if len(blob) % ELEMENT_BYTES:
        raise DataValidationError(f"{what}: {len(blob)} bytes is not a whole number of {ELEMENT_BYTES}-byte elements")
    arr = np.frombuffer(bytes(blob), dtype=np.uint8).reshape(-1, ELEMENT_BYTES)
    top = arr[:, 31]
    bad = top > 0x7F
    bad |= (top == 0x7F) & (arr[:, 1:31] == 0xFF).all(axis=1) & (arr[:, 0] >= 0xED)
    bad |= ~arr.any(axis=1)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0]) + 1
        raise DataValidationError(f"{what}: element at position {pos} is not a canonical group element")
    return int(arr.shape[0])


def split_elements(blob: bytes) -> list[bytes]:
    """Concatenated elements -> a list of 32-byte values."""
    return [bytes(blob[i : i + ELEMENT_BYTES]) for i in range(0, len(blob), ELEMENT_BYTES)]


def reblind(
    key: PSIKey, elements: bytes, *, workers: int | None = None, progress: bool = False, what: str = "elements"
) -> bytes:
    """e^k for every element of a peer's blob (concatenated 32-byte elements), order kept."""
    _require_sodium()
    if not isinstance(key, PSIKey):
        raise KeyFormatError("reblind needs a PSIKey")
    n = check_elements(elements, what)
    items = split_elements(bytes(elements))
    k = key.secret
    try:
        return _run(lambda a, b: _exponentiate(k, items[a:b], a), n, workers, progress, "reblind")
    except DataValidationError as exc:
        raise DataValidationError(f"{what}: {exc}") from None


def random_permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of range(n) from the OS CSPRNG (not numpy's PRNG)."""
    order = list(range(n))
    secrets.SystemRandom().shuffle(order)
    return np.asarray(order, dtype=np.int64)


def _permute(blob: bytes, order: np.ndarray, width: int) -> bytes:
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, width)
    return np.ascontiguousarray(arr[order]).tobytes()


class PsiServer:
    """The server of plain two-party ECDH PSI (what ``benchmarks/bench_psi.py`` times).

    Flow, as in OpenMined's PSI: the client sends its blinded set (request);
    the server answers with its own blinded set (setup, shuffled) and the
    request re-blinded with its key (response: same order if the client may
    learn the intersection, shuffled if only its size).
    """

    def __init__(self, domain: bytes, *, reveal_intersection: bool = False, key: PSIKey | None = None) -> None:
        self.domain = domain
        self.reveal_intersection = reveal_intersection
        self._key = key or PSIKey.generate()

    def setup(self, items: Sequence[str | bytes], *, workers: int | None = None) -> bytes:
        """The server's own elements, blinded and shuffled."""
        blob = blind(self._key, items, self.domain, workers=workers)
        return _permute(blob, random_permutation(len(blob) // ELEMENT_BYTES), ELEMENT_BYTES)

    def process_request(self, request: bytes, *, workers: int | None = None) -> bytes:
        """The client's elements with the server's key applied as well."""
        out = reblind(self._key, request, workers=workers, what="request")
        if not self.reveal_intersection:
            out = _permute(out, random_permutation(len(out) // ELEMENT_BYTES), ELEMENT_BYTES)
        return out


class PsiClient:
    """The client of plain two-party ECDH PSI; learns the intersection size (or the intersection)."""

    def __init__(self, domain: bytes, *, key: PSIKey | None = None) -> None:
        self.domain = domain
        self._key = key or PSIKey.generate()

    def create_request(self, items: Sequence[str | bytes], *, workers: int | None = None) -> bytes:
        """The client's elements, blinded, in input order."""
        return blind(self._key, items, self.domain, workers=workers)

    def _server_doubly_blinded(self, setup: bytes, workers: int | None) -> set[bytes]:
        return set(split_elements(reblind(self._key, setup, workers=workers, what="setup")))

    def intersection_size(self, setup: bytes, response: bytes, *, workers: int | None = None) -> int:
        """How many of the client's items the server also holds."""
        theirs = self._server_doubly_blinded(setup, workers)
        check_elements(response, "response")
        return sum(1 for e in split_elements(response) if e in theirs)

    def intersection(self, setup: bytes, response: bytes, *, workers: int | None = None) -> list[int]:
        """0-based positions (in the client's request order) of the items the server also holds.

        Only meaningful if the server kept the response in request order
        (``reveal_intersection=True``).
        """
        theirs = self._server_doubly_blinded(setup, workers)
        check_elements(response, "response")
        return [i for i, e in enumerate(split_elements(response)) if e in theirs]
