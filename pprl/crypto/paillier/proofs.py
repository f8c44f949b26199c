"""Proof that whoever made some Paillier ciphertexts knows what they encrypt (one proof for all of them).

The bureau adds ciphertexts of its own to the sums it releases: noise, and
masks over other records' slots. A decryptor can recompute the sums, but not
those additions; it can check that the bureau *knows* their plaintexts, which
rules out an addition derived from a platform's ciphertext (say Enc(-v_B),
which would turn a two-person sum back into one person's value): whatever the
bureau added is then independent of every platform's secret.

Each ciphertext is made as ``c_i = (1 + m_i·n) · h_s^(a_i) mod n²`` with the
key's public DJN base ``h_s`` (derived from n) and a known exponent ``a_i``.
The prover combines them with weights ``ρ_i`` (64 bits each, a hash of all the
ciphertexts): ``C = Π c_i^(ρ_i) = (1 + n)^(m*) · h_s^(a*)`` with
``m* = Σ ρ_i m_i`` and ``a* = Σ ρ_i a_i``, and proves knowledge of ``(m*, a*)``
with a Fiat–Shamir Σ-protocol over the integers (statistically zero-knowledge:
the commitments are 80 bits wider than the challenge times the secrets). A
prover who does not know some ``m_j`` cannot know ``m*`` for weights fixed only
after the ciphertexts. Verifying costs one 64-bit exponentiation per
ciphertext plus two full ones.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any

import gmpy2

from pprl.crypto.paillier.djn import djn_params, obfuscate
from pprl.crypto.paillier.keys import PaillierPublicKey
from pprl.errors import DataValidationError, DecryptionError, DocumentError

__all__ = ["encrypt_known", "prove_known", "verify_additions", "verify_known"]

_DOMAIN = b"pprl-known-plaintexts-v1"
_WEIGHT_BITS = 64
_CHALLENGE_BITS = 128
_SLACK_BITS = 80


def encrypt_known(public: PaillierPublicKey, plaintexts: Sequence[int]) -> tuple[list[int], list[int]]:
    """Fresh ciphertexts of ``plaintexts`` (in [0, n)) and the exponents that made them (keep them secret)."""
    if public.djn_hs is None:
        raise DataValidationError("proofs of known plaintexts need a key with its DJN base")
    n, n2 = public.n, public.nsquare
    params = djn_params(public, len(plaintexts), method="djn")
    if params is None:  # pragma: no cover - method="djn" always resolves to parameters
        raise DataValidationError("no DJN parameters for this key")
    exps = [secrets.randbits(params.exponent_bits) for _ in plaintexts]
    cts = [int((1 + (int(m) % n) * n) * r % n2) for m, r in zip(plaintexts, obfuscate(params, exps))]
    return cts, exps


def _weights(public: PaillierPublicKey, cts: Sequence[int], context: bytes) -> list[int]:
    width = public.ciphertext_bytes
    seed = hashlib.sha256(_DOMAIN + b"|weights|" + context + b"".join(int(c).to_bytes(width, "big") for c in cts))
    digest = hashlib.shake_256(seed.digest()).digest(len(cts) * _WEIGHT_BITS // 8)
    return [int.from_bytes(digest[i * 8 : (i + 1) * 8], "big") | 1 for i in range(len(cts))]


def _combined(public: PaillierPublicKey, cts: Sequence[int], weights: Sequence[int]) -> int:
    n2 = public.nsquare
    acc = gmpy2.mpz(1)
    for c, w in zip(cts, weights):
        acc = acc * gmpy2.powmod(c, w, n2) % n2
    return int(acc)


def _challenge(public: PaillierPublicKey, combined: int, commitment: int, context: bytes) -> int:
    width = public.ciphertext_bytes
    data = _DOMAIN + b"|challenge|" + context + combined.to_bytes(width, "big") + commitment.to_bytes(width, "big")
    return int.from_bytes(hashlib.sha256(data).digest()[: _CHALLENGE_BITS // 8], "big")


def prove_known(
    public: PaillierPublicKey, cts: Sequence[int], plaintexts: Sequence[int], exps: Sequence[int], context: bytes
) -> dict[str, Any]:
    """The proof (JSON-ready) that the maker of ``cts`` knows their plaintexts; ``context`` binds it to a release."""
    if not (len(cts) == len(plaintexts) == len(exps)) or not cts:
        raise DataValidationError("one plaintext and one exponent per ciphertext, at least one")
    n, n2, hs = public.n, public.nsquare, int(public.djn_hs or 0)
    weights = _weights(public, cts, context)
    m_star = sum(w * (int(m) % n) for w, m in zip(weights, plaintexts))
    a_star = sum(w * int(a) for w, a in zip(weights, exps))
    x1 = secrets.randbits(m_star.bit_length() + _CHALLENGE_BITS + _SLACK_BITS)
    x2 = secrets.randbits(a_star.bit_length() + _CHALLENGE_BITS + _SLACK_BITS)
    commitment = int((1 + (x1 % n) * n) * gmpy2.powmod(hs, x2, n2) % n2)
    e = _challenge(public, _combined(public, cts, weights), commitment, context)
    return {"scheme": "pprl-known-plaintexts", "version": 1, "commitment": str(commitment),
            "z1": str(x1 + e * m_star), "z2": str(x2 + e * a_star)}


def verify_known(public: PaillierPublicKey, cts: Sequence[int], proof: Any, context: bytes, *, source: str) -> None:
    """DecryptionError unless ``proof`` shows the maker of ``cts`` knows their plaintexts."""
    if not isinstance(proof, dict) or proof.get("scheme") != "pprl-known-plaintexts" or proof.get("version") != 1:
        raise DocumentError(f"{source}: carries no proof of what the bureau added to its sums")
    if public.djn_hs is None:
        raise DocumentError(f"{source}: a proof of known plaintexts needs the key's DJN base")
    try:
        commitment, z1, z2 = int(proof["commitment"]), int(proof["z1"]), int(proof["z2"])
    except (KeyError, TypeError, ValueError):
        raise DocumentError(f"{source}: malformed proof of what the bureau added") from None
    n, n2, hs = public.n, public.nsquare, public.djn_hs
    if not (0 < commitment < n2) or z1 < 0 or z2 < 0 or not cts:
        raise DecryptionError(f"{source}: the proof of what the bureau added does not verify")
    weights = _weights(public, cts, context)
    combined = _combined(public, cts, weights)
    e = _challenge(public, combined, commitment, context)
    left = (1 + (z1 % n) * n) * gmpy2.powmod(hs, z2, n2) % n2
    right = commitment * gmpy2.powmod(combined, e, n2) % n2
    if left != right:
        raise DecryptionError(f"{source}: the proof of what the bureau added does not verify "
                              "(an addition it does not know, e.g. one made from a platform's ciphertext)")


def verify_additions(
    public: PaillierPublicKey, given: bytes, recomputed: bytes, proof: Any, context: bytes, *, source: str
) -> None:
    """Check what was added to each recomputed sum: ``given_i / recomputed_i`` (fixed-width ciphertexts,
    concatenated) must be ciphertexts whose maker proves, with ``proof``, that it knows their plaintexts."""
    width, n2 = public.ciphertext_bytes, public.nsquare
    added = [
        int(gmpy2.mpz(int.from_bytes(given[i : i + width], "big"))
            * gmpy2.invert(int.from_bytes(recomputed[i : i + width], "big"), n2) % n2)
        for i in range(0, len(recomputed), width)
    ]
    verify_known(public, added, proof, context, source=source)
