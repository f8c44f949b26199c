"""RFC 9380 hash_to_curve for the suite curve25519_XMD:SHA-512_ELL2_RO_.

``hash_to_group(messages, dst)`` maps each message to a point of the prime-order
subgroup of Curve25519 and returns its Montgomery u-coordinate (32 bytes
little-endian), ready for X25519. The fast path is the C extension
``pprl.crypto._h2c`` (constant time); the plain-integer reference here follows
the RFC line by line and is the fallback (slow, not constant time), used when the
extension is not built or ``PPRL_NO_H2C`` is set (read at every call: :mod:`pprl._native`). Test
vectors: ``tests/vectors/rfc9380.json``.

The same extension holds pprl's batched X25519 (:func:`x25519`,
:func:`hash_to_group_x25519`: libsodium's bytes, a portable radix-2^51 ladder
an AVX2 one with four ladders per vector and an AVX-512 IFMA one with eight,
chosen at run time; switches ``PPRL_NO_X25519`` (libsodium), ``PPRL_NO_IFMA`` or
``PPRL_NO_AVX512`` (not IFMA) and ``PPRL_NO_AVX2`` (not AVX2), or
:func:`force_x25519_isa`; with no vector path libsodium runs, see :func:`x25519_isa`).
Tests: ``tests/test_x25519.py``.

Design: docs/psi.md#hash-to-group
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from types import ModuleType

from pprl._native import disabled, load
from pprl.errors import DataValidationError

__all__ = [
    "HAVE_C",
    "HAVE_H2C",
    "HAVE_X25519",
    "X25519_ISAS",
    "ORDER",
    "P",
    "expand_message_xmd",
    "force_x25519_isa",
    "field_bytes",
    "h2c_enabled",
    "hash_to_curve_reference",
    "hash_to_field",
    "hash_to_group",
    "hash_to_group_reference",
    "hash_to_group_x25519",
    "in_prime_order_subgroup",
    "make_dst",
    "map_field_elements",
    "map_to_curve",
    "on_curve",
    "x25519",
    "x25519_isa",
    "x25519_isas",
]

#: The field prime 2^255 - 19.
P = (1 << 255) - 19
#: Order of the prime-order subgroup.
ORDER = (1 << 252) + 27742317777372353535851937790883648493
#: Curve25519: v^2 = u^3 + A u^2 + u.
A = 486662
#: Elligator 2's non-square constant for this suite.
Z = 2
#: Bytes per field element in hash_to_field (ceil((255 + 128) / 8)).
L = 48
_SQRT_M1 = pow(2, (P - 1) // 4, P)  # a square root of -1 (2 is a non-square)

#: The environment switch that sends :func:`hash_to_group` to the Python reference (read at every call).
SWITCH = "PPRL_NO_H2C"

# The extension, None when it was not built (it is optional).
_h2c: ModuleType | None = load("pprl.crypto._h2c")

#: True when the C extension is built (it runs on any CPU it builds for).
HAVE_H2C: bool = _h2c is not None
#: The older name of :data:`HAVE_H2C`.
HAVE_C = HAVE_H2C


def h2c_enabled() -> bool:
    """True when :func:`hash_to_group` runs in C now (built, and ``PPRL_NO_H2C`` not set)."""
    return _h2c is not None and not disabled(SWITCH)


# ------------------------------------------------------------------ X25519 in batches (same extension)

#: pprl's X25519 paths, slowest first: ``portable`` (radix 2^51, any 64-bit CPU), ``avx2`` (four
#: ladders per 256-bit vector, radix 2^25.5), ``ifma`` (AVX-512 IFMA, eight per 512-bit vector).
#: All give libsodium's bytes.
X25519_ISAS = ("portable", "avx2", "ifma")
#: Sends X25519 back to libsodium (``crypto_scalarmult`` one element at a time); read at every call.
X25519_SWITCH = "PPRL_NO_X25519"
# Keep the automatic choice off one path (the switches the Dice kernel and Paillier's IFMA code use).
_X25519_ISA_SWITCHES = {"avx2": ("PPRL_NO_AVX2",), "ifma": ("PPRL_NO_IFMA", "PPRL_NO_AVX512")}
#: True when the extension has the batched X25519 (it always does when built).
HAVE_X25519: bool = _h2c is not None and hasattr(_h2c, "x25519")
_FORCED_ISA: str | None = None
# What this CPU runs does not change while the process lives: asked once.
_CPU_ISA: int = int(_h2c.cpu_isa()) if _h2c is not None and HAVE_X25519 else -1


def x25519_isas() -> tuple[str, ...]:
    """The X25519 paths this build and CPU run, best last (empty when the extension is not built)."""
    return X25519_ISAS[: _CPU_ISA + 1]


def force_x25519_isa(name: str | None) -> None:
    """Run every later X25519 batch on path ``name`` (None: the automatic choice again).

    Overrides the ``PPRL_NO_<ISA>`` switches (not ``PPRL_NO_X25519``); raises
    ValueError, changing nothing, when this CPU or build lacks the path.
    """
    global _FORCED_ISA
    if name is not None and name not in x25519_isas():
        raise ValueError(f"X25519 path {name!r} is not available here (available: {', '.join(x25519_isas()) or 'none'})")
    _FORCED_ISA = name


def x25519_isa() -> str | None:
    """The path the next X25519 batch takes; None means libsodium.

    libsodium runs when the extension is not built, with ``PPRL_NO_X25519``,
    and when no vector path is usable (no AVX2, or switched off): the portable
    ladder gives the same bytes but measured ~6% slower than libsodium's
    ``crypto_scalarmult`` here, so it runs only when forced
    (:func:`force_x25519_isa`; the tests check it like the others).
    """
    if not HAVE_X25519 or disabled(X25519_SWITCH):
        return None
    if _FORCED_ISA is not None:
        return _FORCED_ISA
    usable = [n for n in x25519_isas() if not any(disabled(s) for s in _X25519_ISA_SWITCHES.get(n, ()))]
    return usable[-1] if usable[-1] != "portable" else None


def x25519(key: bytes, points: bytes, isa: str | None = None) -> bytes:
    """libsodium's ``crypto_scalarmult(key, u)`` for every 32-byte u of ``points``, concatenated.

    Where libsodium refuses (the result would be all zero: a point of small
    order) the output holds 32 zero bytes; callers refuse those. ``isa``
    (default: :func:`x25519_isa`) picks the path; results are identical.
    """
    path = isa or x25519_isa() or "portable"
    if _h2c is None or not HAVE_X25519:
        raise RuntimeError("the X25519 extension is not built")
    return bytes(_h2c.x25519(key, points, X25519_ISAS.index(path)))


def hash_to_group_x25519(messages: Sequence[bytes], dst: bytes, key: bytes, isa: str | None = None) -> bytes:
    """``x25519(key, hash_to_group(messages, dst))`` in one C call (hash, ladder, encoding; GIL released).

    Refuses, like :func:`hash_to_group`, an identifier that hashed to the
    neutral element (the only way a blinded hash comes out all zero).
    """
    path = isa or x25519_isa() or "portable"
    if _h2c is None or not HAVE_X25519:
        raise RuntimeError("the X25519 extension is not built")
    out: bytes = _h2c.hash_to_u_x25519(messages, dst, key, X25519_ISAS.index(path))
    if _has_zero_element(out):
        raise DataValidationError("an identifier hashed to the neutral element; cannot blind it")
    return out

Point = tuple[int, int] | None  # affine (u, v) on Curve25519; None is the point at infinity


# ------------------------------------------------------------------ hashing


def make_dst(tag: bytes) -> bytes:
    """A domain-separation tag of at most 255 bytes: long tags are hashed (RFC 9380 5.3.3)."""
    tag = bytes(tag)
    if len(tag) > 255:
        return hashlib.sha512(b"H2C-OVERSIZE-DST-" + tag).digest()
    if not tag:
        raise DataValidationError("a hash-to-curve DST must not be empty")
    return tag


def _xmd_prefix(dst: bytes, len_in_bytes: int) -> tuple[object, bytes]:
    """The SHA-512 state after its 128-byte zero block, and the suffix I2OSP(len, 2) || 0 || DST'."""
    if len(dst) > 255:
        raise DataValidationError("a DST longer than 255 bytes must be hashed first (make_dst)")
    dst_prime = dst + bytes([len(dst)])
    return hashlib.sha512(bytes(128)), len_in_bytes.to_bytes(2, "big") + b"\x00" + dst_prime


def expand_message_xmd(msg: bytes, dst: bytes, len_in_bytes: int) -> bytes:
    """RFC 9380 5.3.1 with SHA-512 (b_in_bytes = 64, s_in_bytes = 128)."""
    ell = -(-len_in_bytes // 64)
    if ell > 255 or len_in_bytes > 65535:
        raise DataValidationError("expand_message_xmd: requested length too large")
    state, suffix = _xmd_prefix(dst, len_in_bytes)
    dst_prime = dst + bytes([len(dst)])
    h = state.copy()  # type: ignore[attr-defined]
    h.update(msg + suffix)
    b0 = h.digest()
    b = hashlib.sha512(b0 + b"\x01" + dst_prime).digest()
    out = [b]
    for i in range(2, ell + 1):
        b = hashlib.sha512(bytes(x ^ y for x, y in zip(b0, b)) + bytes([i]) + dst_prime).digest()
        out.append(b)
    return b"".join(out)[:len_in_bytes]


def hash_to_field(msg: bytes, dst: bytes, count: int = 2) -> list[int]:
    """``count`` elements of GF(p), each a 48-byte big-endian integer reduced mod p."""
    uniform = expand_message_xmd(msg, dst, count * L)
    return [int.from_bytes(uniform[i * L : (i + 1) * L], "big") % P for i in range(count)]


# ------------------------------------------------------------------ field and curve (reference)


def _inv(x: int) -> int:
    return pow(x, P - 2, P)


def _is_square(x: int) -> bool:
    return pow(x, (P - 1) // 2, P) in (0, 1)


def _sqrt(x: int) -> int:
    """A square root of a square x (p = 5 mod 8: x^((p+3)/8), times sqrt(-1) if needed)."""
    r = pow(x, (P + 3) // 8, P)
    if r * r % P != x % P:
        r = r * _SQRT_M1 % P
    if r * r % P != x % P:
        raise ValueError("not a square")
    return r


def _sgn0(x: int) -> int:
    return x % P & 1


def _g(x: int) -> int:
    return (x * x % P * x + A * x * x + x) % P


def map_to_curve(u: int) -> tuple[int, int]:
    """map_to_curve_elligator2 (RFC 9380 6.7.1, K = 1, J = A, Z = 2) -> affine (s, t)."""
    tv = (1 + Z * u * u) % P
    x1 = -A * _inv(tv) % P if tv else -A % P  # inv0(0) = 0 gives x1 = 0, then step 2 sets -A
    if x1 == 0:
        x1 = -A % P
    gx1 = _g(x1)
    x2 = (-x1 - A) % P
    gx2 = _g(x2)
    if _is_square(gx1):
        x, y = x1, _sqrt(gx1)
        if _sgn0(y) != 1:
            y = -y % P
    else:
        x, y = x2, _sqrt(gx2)
        if _sgn0(y) != 0:
            y = -y % P
    return x, y


def _add(p1: Point, p2: Point) -> Point:
    """Affine addition on v^2 = u^3 + A u^2 + u (chord and tangent)."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2:
        if (y1 + y2) % P == 0:
            return None  # P + (-P), including doubling a point of order 2
        lam = (3 * x1 * x1 + 2 * A * x1 + 1) * _inv(2 * y1) % P
    else:
        lam = (y2 - y1) * _inv(x2 - x1) % P
    x3 = (lam * lam - A - x1 - x2) % P
    return x3, (lam * (x1 - x3) - y1) % P


def _mul(k: int, pt: Point) -> Point:
    """k * pt by double-and-add (reference only: not constant time)."""
    out: Point = None
    while k:
        if k & 1:
            out = _add(out, pt)
        pt = _add(pt, pt)
        k >>= 1
    return out


def on_curve(pt: tuple[int, int]) -> bool:
    """Whether affine (u, v) satisfies v^2 = u^3 + A u^2 + u."""
    return pt[1] * pt[1] % P == _g(pt[0])


def in_prime_order_subgroup(pt: Point) -> bool:
    """ORDER * pt is the identity (and pt is not the identity)."""
    return pt is not None and _mul(ORDER, pt) is None


def map_field_elements(u0: int, u1: int) -> Point:
    """clear_cofactor(map_to_curve(u0) + map_to_curve(u1)), with h_eff = 8."""
    r = _add(map_to_curve(u0), map_to_curve(u1))
    for _ in range(3):
        r = _add(r, r)
    return r


def hash_to_curve_reference(msg: bytes, dst: bytes) -> Point:
    """The whole RFC 9380 hash_to_curve, affine (u, v); reference implementation."""
    u0, u1 = hash_to_field(msg, dst)
    return map_field_elements(u0, u1)


def hash_to_group_reference(messages: Sequence[bytes], dst: bytes) -> bytes:
    """Concatenated 32-byte little-endian u-coordinates, in pure Python."""
    out = bytearray()
    for m in messages:
        pt = hash_to_curve_reference(m, dst)
        if pt is None:  # probability about 2^-252 per message
            raise DataValidationError("an identifier hashed to the neutral element; cannot blind it")
        out += pt[0].to_bytes(32, "little")
    return bytes(out)


# ------------------------------------------------------------------ fast path


def field_bytes(messages: Sequence[bytes], dst: bytes) -> bytes:
    """expand_message_xmd(msg, dst, 96) for every message, concatenated: ``_h2c.map_to_u``'s input.

    For tests and measurements; :func:`hash_to_group` does this step in C.
    """
    state, suffix = _xmd_prefix(dst, 2 * L)
    dst_prime = dst + bytes([len(dst)])
    sha512 = hashlib.sha512
    tail1 = b"\x01" + dst_prime
    tail2 = b"\x02" + dst_prime
    parts = []
    for m in messages:
        h = state.copy()  # type: ignore[attr-defined]
        h.update(m + suffix)
        b0 = h.digest()
        b1 = sha512(b0 + tail1).digest()
        x = (int.from_bytes(b0, "little") ^ int.from_bytes(b1, "little")).to_bytes(64, "little")
        parts.append(b1)
        parts.append(sha512(x + tail2).digest()[:32])
    return b"".join(parts)


def hash_to_group(messages: Sequence[bytes], dst: bytes) -> bytes:
    """H(m) for every message (``bytes``) as concatenated 32-byte u-coordinates.

    The C extension does everything (SHA-512, maps, batch inversion) with the
    GIL released; without it the pure-Python reference runs. ``dst`` must
    already be 1 to 255 bytes (see :func:`make_dst`).
    """
    if _h2c is None or not h2c_enabled():
        return hash_to_group_reference(messages, dst)
    out: bytes = _h2c.hash_to_u(messages, dst)
    if _has_zero_element(out):
        raise DataValidationError("an identifier hashed to the neutral element; cannot blind it")
    return out


def _has_zero_element(blob: bytes) -> bool:
    zero = bytes(32)
    return any(blob[i : i + 32] == zero for i in range(0, len(blob), 32)) if zero in blob else False
