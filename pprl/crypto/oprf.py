"""An oblivious PRF on the prime-order subgroup of Curve25519: pseudonyms nobody can compute alone.

The 2HashDH construction of RFC 9497 (OPRF mode) with X25519 as the group
operation: ``F(k, x) = SHA-256(tag || x || H(x)^k)`` with ``H`` the RFC 9380
hash to the group (:mod:`pprl.crypto.hash_to_curve`). The holder of ``k``
evaluates blinded inputs ``H(x)^r`` without learning ``x``; the requester
removes ``r`` and finalises. X25519 clamps its scalars, so an unblinding
scalar ``1/r`` is only usable when some clamped value is congruent to it
modulo the group order; the requester draws ``r`` until that holds (about
half of all draws), so every exponentiation is libsodium's constant-time
X25519. Design: docs/registry.md#pseudonyms.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from pprl.crypto.exchange import hkdf_sha256
from pprl.crypto.hash_to_curve import ORDER
from pprl.crypto.psi import ELEMENT_BYTES, PSIKey, hash_to_group, make_domain, reblind, split_elements
from pprl.errors import DataValidationError, KeyFormatError

__all__ = [
    "PSEUDONYM_BYTES",
    "Blinding",
    "OprfKey",
    "blind_inputs",
    "derive_key",
    "evaluate",
    "finalize",
    "pseudonyms",
]

PSEUDONYM_BYTES = 32
_TAG = b"pprl-pseudonym-v1"


@dataclass(frozen=True)
class OprfKey:
    """The platforms' shared pseudonym key ``k`` (derived from the linkage secret; never leaves a platform)."""

    key: PSIKey = field(repr=False)
    kind: str

    def __repr__(self) -> str:
        return f"OprfKey(kind={self.kind!r}, <secret>)"


def derive_key(linkage_secret: bytes, kind: str) -> OprfKey:
    """The pseudonym key for identifier ``kind``, the same at every platform holding the linkage secret."""
    if len(linkage_secret) < 16:
        raise KeyFormatError("the linkage secret is too short to derive a pseudonym key")
    raw = hkdf_sha256(linkage_secret, 32, salt=b"pprl-pseudonym-key-v1", info=kind.encode("utf-8"))
    return OprfKey(PSIKey(raw), kind)


def _domain(kind: str) -> bytes:
    return make_domain("pprl-pseudonym", kind)


def _clamp(raw: bytes) -> int:
    b = bytearray(raw)
    b[0] &= 248
    b[31] &= 127
    b[31] |= 64
    return int.from_bytes(b, "little")


def _clamped_form(d: int) -> bytes | None:
    """32 bytes whose X25519-clamped value is congruent to ``d`` mod the group order, if one exists."""
    low, high = 1 << 254, 1 << 255
    inverse_order = pow(ORDER, -1, 8)
    j = (-d * inverse_order) % 8  # d + j*ORDER must be a multiple of 8
    first = -(-(low - d) // ORDER)  # smallest j with d + j*ORDER >= 2^254
    j += ((first - j) + 7) // 8 * 8
    v = d + j * ORDER
    if not (low <= v < high and v % 8 == 0):
        return None
    return v.to_bytes(32, "little")


@dataclass(frozen=True)
class Blinding:
    """A requester's blinded inputs and the scalars that undo them (kept by the requester only)."""

    elements: bytes = field(repr=False)
    unblind: tuple[bytes, ...] = field(repr=False)
    kind: str

    def __repr__(self) -> str:
        return f"Blinding(kind={self.kind!r}, inputs={len(self.unblind)})"


def blind_inputs(inputs: Sequence[str], kind: str) -> Blinding:
    """``H(x)^r`` for each normalised identifier, with a fresh ``r`` each and its unblinding scalar."""
    points = split_elements(hash_to_group(list(inputs), _domain(kind)))
    blinded, unblind = bytearray(), []
    for point in points:
        while True:
            r = secrets.token_bytes(32)
            inverse = _clamped_form(pow(_clamp(r) % ORDER, -1, ORDER))
            if inverse is not None:
                break
        blinded += reblind(PSIKey(r), point, workers=1)
        unblind.append(inverse)
    return Blinding(bytes(blinded), tuple(unblind), kind)


def evaluate(key: OprfKey, blinded: bytes, *, workers: int | None = 1) -> bytes:
    """The key holder's step: ``B^k`` for every blinded element (refuses anything not in the group)."""
    if len(blinded) % ELEMENT_BYTES:
        raise DataValidationError("blinded elements must be 32 bytes each")
    return reblind(key.key, blinded, workers=workers, what="blinded elements")


def finalize(blinding: Blinding, inputs: Sequence[str], evaluated: bytes) -> list[bytes]:
    """The requester's step: remove ``r`` and hash, giving each input's pseudonym."""
    if len(evaluated) != ELEMENT_BYTES * len(inputs) or len(inputs) != len(blinding.unblind):
        raise DataValidationError("the evaluation does not answer these inputs")
    out = []
    for x, inverse, element in zip(inputs, blinding.unblind, split_elements(evaluated)):
        point = reblind(PSIKey(inverse), element, workers=1, what="evaluated elements")
        out.append(_final(blinding.kind, x, point))
    return out


def pseudonyms(key: OprfKey, inputs: Sequence[str], *, workers: int | None = 1) -> list[bytes]:
    """What a key holder computes directly for its own records: ``F(k, x)`` for each input."""
    points = split_elements(reblind(key.key, hash_to_group(list(inputs), _domain(key.kind)), workers=workers))
    return [_final(key.kind, x, p) for x, p in zip(inputs, points)]


def _final(kind: str, x: str, point: bytes) -> bytes:
    raw = x.encode("utf-8")
    h = hashlib.sha256(_TAG)
    for part in (kind.encode("utf-8"), raw, point):
        h.update(len(part).to_bytes(4, "big") + part)
    return h.digest()
