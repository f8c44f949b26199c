"""Party identities: an Ed25519 signing key and an X25519 agreement key.

Each party holds one of each. The public halves go on the party's card; the
fingerprint is a short digest of both so people can compare cards out of band
(over the phone, in a contract annex) before trusting them.

Everything here is libsodium (PyNaCl): signing, verifying, agreement and the
checks of a card's public keys. An Ed25519 public key must be a canonical
encoding of a point of the prime-order subgroup (libsodium's
``crypto_core_ed25519_is_valid_point``): a small-order key would let a forged
signature verify. An X25519 public key is refused when it is one of the
small-order values after reduction (the all-zero shared secret). Where
PyNaCl's libsodium lacks the ``crypto_core`` functions (a minimal build), the
same checks run in pure Python (:func:`_ed25519_problem`), with the same answers.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing

from pprl._native import disabled
from pprl.errors import KeyFormatError, SignatureError

__all__ = ["IdentityKey", "PublicIdentity", "fingerprint", "verify_signature"]

KEY_BYTES = 32
SIGNATURE_BYTES = 64

_P = 2**255 - 19
#: The order of the prime-order subgroup of Ed25519 (RFC 8032's L).
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
#: The u-coordinates (mod p) of Curve25519's points of small order (cr.yp.to/ecdh.html#validate): a peer key
#: reducing to one of them gives an all-zero shared secret.
_X25519_SMALL_ORDER = frozenset({
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    _P - 1,
})


def fingerprint(sign_pub: bytes, agree_pub: bytes) -> str:
    """Short, human-comparable digest of a party's two public keys."""
    digest = hashlib.sha256(b"pprl-card-v1" + sign_pub + agree_pub).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True)
class PublicIdentity:
    """The public half of an identity: what a card carries."""

    sign_pub: bytes
    agree_pub: bytes

    def __post_init__(self) -> None:
        if len(self.sign_pub) != KEY_BYTES or len(self.agree_pub) != KEY_BYTES:
            raise KeyFormatError("public keys must be 32 bytes each")
        problem = _key_problem(bytes(self.sign_pub), bytes(self.agree_pub))
        if problem:
            raise KeyFormatError(f"not a valid Ed25519/X25519 public key: {problem}")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.sign_pub, self.agree_pub)

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise SignatureError unless ``signature`` is this party's over ``message``."""
        verify_signature(self.sign_pub, message, signature)


@functools.lru_cache(maxsize=256)
def _key_problem(sign_pub: bytes, agree_pub: bytes) -> str:
    """Why a card's public keys are not valid ("" when they are); remembered, as every signed request
    names its signer's card."""
    if not _ed25519_valid(sign_pub):
        return _ed25519_problem(sign_pub) or "Invalid Ed25519 public key"
    return _x25519_problem(agree_pub)


def _sodium_has_core() -> bool:
    """Whether PyNaCl's libsodium has the ``crypto_core_ed25519`` functions (not in minimal builds);
    ``PPRL_NO_SODIUM_CORE=1`` takes the pure-Python checks instead (they give the same answers)."""
    return bool(getattr(nacl.bindings, "has_crypto_core_ed25519", False)) and not disabled("PPRL_NO_SODIUM_CORE")


def _ed25519_valid(sign_pub: bytes) -> bool:
    """libsodium's ``crypto_core_ed25519_is_valid_point``: canonical, on the curve, not of small order, in the
    prime-order subgroup."""
    if _sodium_has_core():
        return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(sign_pub))
    return not _ed25519_problem(sign_pub)


def _ed25519_problem(sign_pub: bytes) -> str:
    """The pure-Python form of libsodium's check, saying what is wrong ("" for a valid key).

    Not constant-time; public keys only.
    """
    y = int.from_bytes(sign_pub, "little") & ((1 << 255) - 1)
    if y >= _P:
        return "Ed25519 public key is not canonically encoded"
    point = _ed_decode(y, sign_pub[31] >> 7)
    if point is None:
        return "Ed25519 public key is not a point of the curve"
    if _ed_is_identity(_ed_mul(8, point)):
        return "Ed25519 public key has small order (a forged signature could verify under it)"
    if not _ed_is_identity(_ed_mul(_L, point)):
        return "Ed25519 public key is not in the prime-order subgroup"
    return ""


def _ed_decode(y: int, sign: int) -> tuple[int, int, int, int] | None:
    """RFC 8032 5.1.3 point decoding, extended coordinates; None when y is on no point of the curve."""
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if (v * x * x - u) % _P:
        if (v * x * x + u) % _P:
            return None
        x = x * _SQRT_M1 % _P
    if x & 1 != sign:
        x = _P - x if x else 0  # x = 0 with the sign bit set: y = +-1, of small order, refused next
    return (x, y, 1, x * y % _P)


def _ed_add(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """RFC 8032 5.1.4 point addition (extended coordinates; complete, also for doubling)."""
    x1, y1, z1, t1 = a
    x2, y2, z2, t2 = b
    aa, bb = (y1 - x1) * (y2 - x2) % _P, (y1 + x1) * (y2 + x2) % _P
    cc, dd = t1 * 2 * _D * t2 % _P, z1 * 2 * z2 % _P
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _ed_mul(k: int, point: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    result = (0, 1, 1, 0)
    while k:
        if k & 1:
            result = _ed_add(result, point)
        point = _ed_add(point, point)
        k >>= 1
    return result


def _ed_is_identity(point: tuple[int, int, int, int]) -> bool:
    x, y, z, _ = point
    return x % _P == 0 and (y - z) % _P == 0


def _x25519_problem(agree_pub: bytes) -> str:
    """Why an X25519 public key is refused ("" when it is not): u (top bit cleared) reduced mod p is of small
    order, so the shared secret would be all zeros."""
    u = int.from_bytes(agree_pub, "little") & ((1 << 255) - 1)
    return "X25519 public key has small order (the shared secret would be zero)" if u % _P in _X25519_SMALL_ORDER else ""


def verify_signature(sign_pub: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 (RFC 8032, pure) signature; raise SignatureError if it fails.

    libsodium's (PyNaCl) verification (every service request and response is verified); it refuses
    non-canonical S and small-order keys.
    """
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != SIGNATURE_BYTES:
        raise SignatureError("signature does not verify")
    try:
        _verify_key(bytes(sign_pub)).verify(bytes(message), bytes(signature))
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, nacl.exceptions.TypeError, TypeError,
            ValueError):
        raise SignatureError("signature does not verify") from None


@functools.lru_cache(maxsize=256)
def _verify_key(sign_pub: bytes) -> nacl.signing.VerifyKey:
    return nacl.signing.VerifyKey(sign_pub)


@functools.lru_cache(maxsize=16)
def _signing_key(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


@dataclass(frozen=True)
class IdentityKey:
    """A party's private identity. Never printed: repr hides the seeds."""

    sign_seed: bytes = field(repr=False)
    agree_seed: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.sign_seed) != KEY_BYTES or len(self.agree_seed) != KEY_BYTES:
            raise KeyFormatError("private key seeds must be 32 bytes each")

    @classmethod
    def generate(cls) -> IdentityKey:
        """Fresh seeds from the operating system's CSPRNG (``secrets``): RFC 8032 and RFC 7748 private keys are
        32 random bytes each."""
        import secrets  # here: reading and checking documents needs no fresh randomness

        return cls(sign_seed=secrets.token_bytes(KEY_BYTES), agree_seed=secrets.token_bytes(KEY_BYTES))

    def public(self) -> PublicIdentity:
        return _public_of(self.sign_seed, self.agree_seed)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (RFC 8032, pure; deterministic) over ``message``."""
        return bytes(_signing_key(self.sign_seed).sign(bytes(message)).signature)

    def agree(self, peer_agree_pub: bytes) -> bytes:
        """Raw X25519 shared secret with a peer; feed it to a KDF, never use it directly.

        The peer's key is checked as :class:`PublicIdentity` checks it (libsodium refuses an all-zero
        result as well).
        """
        try:
            peer = _peer_key(bytes(peer_agree_pub))
            return bytes(nacl.bindings.crypto_scalarmult(self.agree_seed, peer))
        except (ValueError, TypeError, nacl.exceptions.CryptoError, RuntimeError):
            raise KeyFormatError("peer agreement key is not a valid X25519 public key") from None


@functools.lru_cache(maxsize=64)
def _public_of(sign_seed: bytes, agree_seed: bytes) -> PublicIdentity:
    sign_pub = bytes(_signing_key(sign_seed).verify_key)
    agree_pub = bytes(nacl.bindings.crypto_scalarmult_base(agree_seed))
    return PublicIdentity(sign_pub=sign_pub, agree_pub=agree_pub)


@functools.lru_cache(maxsize=256)
def _peer_key(peer_agree_pub: bytes) -> bytes:
    """A peer's X25519 key, refused (ValueError) when it is 32 bytes of a small-order value."""
    if len(peer_agree_pub) != KEY_BYTES or _x25519_problem(peer_agree_pub):
        raise ValueError("invalid X25519 public key")
    return peer_agree_pub
