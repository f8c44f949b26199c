"""ECDH private set intersection: hash identifiers into a prime-order group and blind them.

The group is the prime-order subgroup of Curve25519, exponentiation is X25519:
pprl's batched Montgomery ladder in C (:func:`pprl.crypto.hash_to_curve.x25519`,
byte-identical to libsodium's ``crypto_scalarmult``; four ladders per AVX2
vector, eight per AVX-512 IFMA vector, one inversion per batch, hashing fused
in the same call when blinding), or libsodium through PyNaCl where no vector
path runs, with ``PPRL_NO_X25519`` set, or without the extension
(:func:`pprl.crypto.hash_to_curve.x25519_isa`). Identifiers are hashed with RFC 9380 hash_to_curve
(:mod:`pprl.crypto.hash_to_curve`) under a session-specific DST, blinded with a
fresh per-session key and re-blinded by every other party. Nothing here writes
files, prints, or logs a key, an identifier or a point.

Design: docs/psi.md#group
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings as sodium
import nacl.exceptions
import numpy as np

from pprl.crypto.hash_to_curve import h2c_enabled, make_dst, x25519_isa
from pprl.crypto.hash_to_curve import hash_to_group as _hash_to_curve
from pprl.crypto.hash_to_curve import hash_to_group_x25519 as _hash_and_blind
from pprl.crypto.hash_to_curve import x25519 as _x25519_batch
from pprl.crypto.shuffle import random_permutation
from pprl.errors import DataValidationError, KeyFormatError

__all__ = [
    "ELEMENT_BYTES",
    "SUITE",
    "PSIKey",
    "PsiClient",
    "PsiServer",
    "blind",
    "check_elements",
    "hash_dst",
    "hash_to_group",
    "make_domain",
    "random_permutation",
    "reblind",
    "split_elements",
]

#: Bytes per group element (a Montgomery u-coordinate).
ELEMENT_BYTES = 32
#: Names the protocol version and the RFC 9380 suite; the start of every DST,
#: so a change of construction can never collide with this one (v1 was
#: ``pprl-psi-h2g-v1``).
SUITE = b"pprl-psi-v2-curve25519_XMD:SHA-512_ELL2_RO_"

#: Elements per batch: amortises the one constant-time inversion per batch and
#: keeps threads evenly loaded.
_BATCH = 2048
#: Below this many elements threads cost more than they save.
_PARALLEL_THRESHOLD = 4096


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


def hash_dst(domain: bytes) -> bytes:
    """The RFC 9380 DST for a session domain: SUITE || 2-byte length || domain (hashed if > 255 bytes)."""
    if not isinstance(domain, bytes | bytearray) or len(domain) > 0xFFFF:
        raise DataValidationError("the hash domain must be bytes, at most 65535 long")
    return make_dst(SUITE + len(domain).to_bytes(2, "big") + bytes(domain))


def _as_bytes(item: str | bytes, position: int) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    raise DataValidationError(f"identifier at position {position} is not text or bytes")


def _load_raw_scalarmult() -> tuple[Any, Any] | None:
    """PyNaCl's cffi handle on libsodium's ``crypto_scalarmult``, or None to use the wrapper.

    Calling it directly into one output buffer skips the wrapper's per-call
    checks and allocations (~1 us of the ~31 us per X25519); the function is
    the same libsodium one either way.
    """
    try:
        from nacl._sodium import ffi, lib
    except ImportError:  # pragma: no cover - PyNaCl reorganised; the public wrapper still works
        return None
    return (ffi, lib) if hasattr(lib, "crypto_scalarmult") else None


_RAW_SCALARMULT = _load_raw_scalarmult()


def _items_as_bytes(identifiers: Sequence[str | bytes]) -> list[bytes]:
    """Every identifier as bytes (text as UTF-8); one C-level pass when they are all ``str``."""
    try:
        return [str.encode(x, "utf-8") for x in identifiers]  # type: ignore[arg-type]  # TypeError: per item
    except TypeError:  # bytes, or something that is neither: per item, with its position in the error
        return [_as_bytes(x, i) for i, x in enumerate(identifiers, start=1)]


def _invalid(position: int) -> DataValidationError:
    return DataValidationError(f"element at position {position} is not a valid group element")


def _first_zero(blob: bytes) -> int | None:
    """Index of the first all-zero 32-byte element of ``blob``, or None (a C-speed scan when there is none)."""
    zero = bytes(ELEMENT_BYTES)
    if zero not in blob:
        return None
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, ELEMENT_BYTES)
    hits = np.flatnonzero(~arr.any(axis=1))
    return int(hits[0]) if hits.size else None


def _exponentiate(key: bytes, blob: bytes, offset: int) -> bytes:
    """X25519(key, e) for each 32-byte element e of ``blob``; ``offset`` numbers positions in errors.

    pprl's batched ladder (:func:`pprl.crypto.hash_to_curve.x25519`: the same
    bytes as libsodium's) when :func:`pprl.crypto.hash_to_curve.x25519_isa`
    names a path; otherwise libsodium, one element at a time.
    """
    isa = x25519_isa()
    if isa is not None:
        done = _x25519_batch(key, blob, isa)
        bad = _first_zero(done)  # libsodium refuses exactly these: an all-zero result
        if bad is not None:
            raise _invalid(offset + bad + 1)
        return done
    count = len(blob) // ELEMENT_BYTES
    if _RAW_SCALARMULT is None:
        out = bytearray()
        for i in range(count):
            try:
                out += sodium.crypto_scalarmult(key, blob[i * ELEMENT_BYTES : (i + 1) * ELEMENT_BYTES])
            except nacl.exceptions.RuntimeError:
                raise _invalid(offset + i + 1) from None
        return bytes(out)
    ffi, lib = _RAW_SCALARMULT
    mult = lib.crypto_scalarmult
    buf = ffi.new("unsigned char[]", max(1, count * ELEMENT_BYTES))
    src = ffi.from_buffer(blob)
    for i in range(count):
        at = i * ELEMENT_BYTES
        if mult(buf + at, key, src + at) != 0:  # libsodium refuses an all-zero (small-order) result
            raise _invalid(offset + i + 1)
    return bytes(ffi.buffer(buf, count * ELEMENT_BYTES))


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
        tqdm.monitor_interval = 0  # no monitor thread: it would make a later fork unsafe

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
    dst = hash_dst(domain)
    items = _items_as_bytes(identifiers)
    return _run(lambda a, b: _hash_to_curve(items[a:b], dst), len(items), workers, progress, "hash")


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
    if not isinstance(key, PSIKey):
        raise KeyFormatError("blind needs a PSIKey")
    dst = hash_dst(domain)
    items = _items_as_bytes(identifiers)
    k = key.secret

    def task(a: int, b: int) -> bytes:
        isa = x25519_isa()
        if isa is not None and h2c_enabled():
            return _hash_and_blind(items[a:b], dst, k, isa)  # one C call per batch
        return _exponentiate(k, _hash_to_curve(items[a:b], dst), a)

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
    if not isinstance(key, PSIKey):
        raise KeyFormatError("reblind needs a PSIKey")
    n = check_elements(elements, what)
    blob = bytes(elements)
    k = key.secret
    w = ELEMENT_BYTES
    try:
        return _run(lambda a, b: _exponentiate(k, blob[a * w : b * w], a), n, workers, progress, "reblind")
    except DataValidationError as exc:
        raise DataValidationError(f"{what}: {exc}") from None


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
