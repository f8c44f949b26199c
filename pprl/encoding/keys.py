"""Derive the per-feature hashing keys from the linkage secret, as clkhash does.

Why: clkhash (``clkhash.key_derivation.generate_key_lists``) runs one HKDF
(RFC 5869) over the secret and cuts the output into two ``keySize``-byte keys
per schema feature, in feature order and counting ignored features too. The
first key of a feature keys blakeHash (and the SHA-1 HMAC of doubleHash), the
second keys doubleHash's MD5 HMAC. Reproducing this exactly is what makes our
CLKs bit-identical; it is small enough to write with ``hmac`` rather than pull
in the ``cryptography`` package clkhash uses.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "HASH_ALGORITHMS",
    "KEYS_PER_FEATURE",
    "derive_feature_keys",
    "hkdf",
    "max_hkdf_length",
    "run_secret",
    "secret_bytes",
]

HASH_ALGORITHMS = {"SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
KEYS_PER_FEATURE = 2  # clkhash's DEFAULT_NUM_HASHING_METHODS


def max_hkdf_length(hash_name: str) -> int:
    """RFC 5869 limit on output length: 255 blocks of the hash's digest size."""
    return 255 * HASH_ALGORITHMS[hash_name]().digest_size


def hkdf(secret: bytes, length: int, hash_name: str = "SHA256",
         salt: bytes | None = None, info: bytes | None = None) -> bytes:
    """HKDF extract-and-expand; ``salt=None`` means a zero block, ``info=None`` means empty."""
    algo = HASH_ALGORITHMS[hash_name]
    size = algo().digest_size
    if not 0 < length <= 255 * size:
        raise ValueError(f"HKDF-{hash_name} cannot produce {length} bytes")
    prk = hmac.new(salt if salt is not None else bytes(size), secret, algo).digest()
    info = info or b""
    out = bytearray()
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), algo).digest()
        out += block
        counter += 1
    return bytes(out[:length])


def secret_bytes(secret: bytes | bytearray | memoryview | str) -> bytes:
    """The secret as bytes; a str is UTF-8 encoded exactly as clkhash does."""
    if isinstance(secret, str):
        return secret.encode("utf-8")
    if isinstance(secret, (bytes, bytearray, memoryview)):
        return bytes(secret)
    raise TypeError(f"secret must be bytes or str, not {type(secret).__name__}")


def derive_feature_keys(secret: bytes, num_features: int, *, hash_name: str = "SHA256",
                        salt: bytes | None = None, info: bytes | None = None,
                        key_size: int = 64) -> tuple[tuple[bytes, bytes], ...]:
    """Two keys per feature (ignored ones included), exactly as clkhash derives them."""
    total = KEYS_PER_FEATURE * num_features
    block = hkdf(secret, total * key_size, hash_name, salt, info)
    keys = [block[i * key_size:(i + 1) * key_size] for i in range(total)]
    return tuple((keys[2 * j], keys[2 * j + 1]) for j in range(num_features))


def run_secret(secret: bytes, run: str) -> bytes:
    """The secret one run encodes with under a rotating schema (``clkConfig.rotate``, a pprl extension).

    HKDF-SHA256 of the linkage secret with the run id as its info: every platform of a run derives the
    same key, and CLKs of two runs share nothing the bureau could compare.
    """
    if not isinstance(run, str) or not run:
        raise ValueError("a run id is a non-empty string")
    return hkdf(secret, 32, "SHA256", salt=b"pprl-run-rotation-v1", info=run.encode("utf-8"))
