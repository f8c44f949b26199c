"""Party identities: an Ed25519 signing key and an X25519 agreement key.

Each party holds one of each. The public halves go on the party's card; the
fingerprint is a short digest of both so people can compare cards out of band
(over the phone, in a contract annex) before trusting them.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import nacl.bindings
import nacl.exceptions
import nacl.signing
from Crypto.Protocol import DH
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from pprl.errors import KeyFormatError, SignatureError

__all__ = ["IdentityKey", "PublicIdentity", "fingerprint", "verify_signature"]

KEY_BYTES = 32
SIGNATURE_BYTES = 64


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
    """Why a card's public keys are not valid points ("" when they are); remembered, as every signed request
    names its signer's card."""
    try:
        eddsa.import_public_key(sign_pub)
        DH.import_x25519_public_key(agree_pub)
    except ValueError as exc:
        return str(exc) or "invalid point"
    return ""


def verify_signature(sign_pub: bytes, message: bytes, signature: bytes) -> None:
    """Verify an Ed25519 (RFC 8032, pure) signature; raise SignatureError if it fails.

    libsodium's (PyNaCl) verification, about 6x faster than pycryptodome's (every service request and
    response is verified); it refuses the same signatures (non-canonical S, small-order keys included).
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
        """Fresh keys from the library's CSPRNG."""
        sign = ECC.generate(curve="Ed25519")
        agree = ECC.generate(curve="Curve25519")
        return cls(sign_seed=sign.seed, agree_seed=agree.seed)

    def public(self) -> PublicIdentity:
        return _public_of(self.sign_seed, self.agree_seed)

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature (RFC 8032, pure) over ``message`` (deterministic: libsodium and pycryptodome give
        the same bytes; libsodium's is about 9x faster)."""
        return bytes(_signing_key(self.sign_seed).sign(bytes(message)).signature)

    def agree(self, peer_agree_pub: bytes) -> bytes:
        """Raw X25519 shared secret with a peer; feed it to a KDF, never use it directly.

        The peer's key is checked as :class:`PublicIdentity` checks it; the product is libsodium's (the same
        RFC 7748 function as pycryptodome's, several times faster: a service wraps every answer this way).
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
    """A peer's X25519 key, refused (ValueError) where pycryptodome's import refuses it."""
    DH.import_x25519_public_key(peer_agree_pub)
    return peer_agree_pub
