"""Pairwise authenticated encryption between two parties' identities.

Static-static X25519 gives both sides the same shared secret; HKDF-SHA256
turns it into an AES-256-GCM key bound to a context string and to both
parties' names, so a blob wrapped for (A -> B, purpose P) opens only as
exactly that. A fresh 96-bit nonce is drawn per message. Failure to open is
one opaque DecryptionError: no oracle for which step failed.
"""

from __future__ import annotations

import secrets

from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from pprl.crypto.identity import IdentityKey
from pprl.errors import DecryptionError

__all__ = ["wrap", "unwrap", "hkdf_sha256"]

NONCE_BYTES = 12
TAG_BYTES = 16


def hkdf_sha256(ikm: bytes, length: int, salt: bytes, info: bytes) -> bytes:
    """HKDF (RFC 5869) with SHA-256."""
    return HKDF(ikm, length, salt, SHA256, context=info)


def _binding(context: bytes, sender: str, recipient: str) -> bytes:
    parts = [context, sender.encode("utf-8"), recipient.encode("utf-8")]
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def _key(me: IdentityKey, peer_agree_pub: bytes, binding: bytes) -> bytes:
    shared = me.agree(peer_agree_pub)
    return hkdf_sha256(shared, 32, salt=b"pprl-exchange-v1", info=binding)


def wrap(
    me: IdentityKey,
    my_name: str,
    peer_agree_pub: bytes,
    peer_name: str,
    plaintext: bytes,
    context: bytes,
) -> bytes:
    """Encrypt ``plaintext`` from ``my_name`` to ``peer_name``: nonce || ciphertext || tag."""
    binding = _binding(context, my_name, peer_name)
    nonce = secrets.token_bytes(NONCE_BYTES)
    cipher = AES.new(_key(me, peer_agree_pub, binding), AES.MODE_GCM, nonce=nonce)
    cipher.update(binding)
    body, tag = cipher.encrypt_and_digest(plaintext)
    return nonce + body + tag


def unwrap(
    me: IdentityKey,
    my_name: str,
    peer_agree_pub: bytes,
    peer_name: str,
    blob: bytes,
    context: bytes,
) -> bytes:
    """Open a blob that ``peer_name`` wrapped for ``my_name``; DecryptionError otherwise."""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError("cannot open: not addressed to this key, or tampered")
    binding = _binding(context, peer_name, my_name)
    nonce, body, tag = blob[:NONCE_BYTES], blob[NONCE_BYTES:-TAG_BYTES], blob[-TAG_BYTES:]
    cipher = AES.new(_key(me, peer_agree_pub, binding), AES.MODE_GCM, nonce=nonce)
    cipher.update(binding)
    try:
        return cipher.decrypt_and_verify(body, tag)
    except ValueError:
        raise DecryptionError("cannot open: not addressed to this key, or tampered") from None
