"""T-of-ℓ threshold Paillier decryption: no single party can decrypt.

:func:`partial_decrypt` (one holder's part with a batched proof of correct
partial decryption), :func:`verify_partial` and :func:`combine_partials`; keys
are in :mod:`pprl.crypto.paillier.threshold.keys`, re-exported here. Anything
made by ``encrypt_vector`` and summed by the bureau decrypts here unchanged.
Nothing here prints or logs a share, a plaintext or a ciphertext.

Design and proofs: docs/threshold.md#partial-decryption-and-proofs
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import gmpy2

from pprl.crypto.paillier.threshold.engine import WEIGHT_BITS, Engine, aggregate_chunk, combine_chunk, power_chunk
from pprl.crypto.paillier.threshold.keys import (
    MAX_HOLDERS,
    PRIME_ROUNDS,
    ThresholdKeyShare,
    ThresholdPublicKey,
    deal,
    generate_safe_prime,
)
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey, decode_signed
from pprl.errors import DataValidationError, DecryptionError, KeyMismatchError, PolicyError

__all__ = [
    "MAX_HOLDERS",
    "PRIME_ROUNDS",
    "ThresholdPublicKey",
    "ThresholdKeyShare",
    "PartialProof",
    "PartialDecryption",
    "generate_safe_prime",
    "deal",
    "partial_decrypt",
    "verify_partial",
    "combine_partials",
]

_DOMAIN_TRANSCRIPT = b"pprl-threshold-paillier-v1/transcript"
_DOMAIN_WEIGHTS = b"pprl-threshold-paillier-v1/weights"
_DOMAIN_CHALLENGE = b"pprl-threshold-paillier-v1/challenge"
CHALLENGE_BITS = 256
HIDING_BITS = 128


def _is_int(x: object) -> bool:
    return isinstance(x, int | gmpy2.mpz) and not isinstance(x, bool)


def _nonce_bits(pk: ThresholdPublicKey) -> int:
    """Bit length of the proof nonce r: covers e·Δ·s_i with 128 bits to spare."""
    return pk.delta.bit_length() + pk.public.nsquare.bit_length() + CHALLENGE_BITS + HIDING_BITS


@dataclass(frozen=True)
class PartialProof:
    """Non-interactive proof (e, z) that a part was computed with the holder's share."""

    e: int
    z: int

    def to_dict(self) -> dict[str, str]:
        """``{"e": base64, "z": base64}`` of minimal big-endian bytes (at least one byte)."""
        return {"e": _b64_int(self.e), "z": _b64_int(self.z)}

    @classmethod
    def from_dict(cls, d: object) -> PartialProof:
        """Parse :meth:`to_dict`; DecryptionError if malformed (sizes are checked on verify)."""
        if not isinstance(d, dict) or set(d) != {"e", "z"}:
            raise DecryptionError("proof must be an object with fields 'e' and 'z'")
        return cls(_int_b64(d["e"]), _int_b64(d["z"]))


def _b64_int(x: int) -> str:
    x = int(x)
    return base64.b64encode(x.to_bytes(max(1, (x.bit_length() + 7) // 8), "big")).decode("ascii")


def _int_b64(text: object) -> int:
    if not isinstance(text, str) or not text:
        raise DecryptionError("proof field is not base64")
    try:
        return int.from_bytes(base64.b64decode(text.encode("ascii"), validate=True), "big")
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise DecryptionError("proof field is not base64") from None


@dataclass(frozen=True)
class PartialDecryption:
    """Holder ``index``'s part for one vector: c_k^(2Δ·s_i) per element, plus its proof."""

    index: int
    values: tuple[int, ...]
    proof: PartialProof

    def __repr__(self) -> str:
        return f"PartialDecryption(index={self.index}, len={len(self.values)})"

    def values_to_bytes(self, public: PaillierPublicKey) -> bytes:
        """Concatenated fixed-width big-endian values (``ciphertext_bytes`` each)."""
        width = public.ciphertext_bytes
        return b"".join(int(c).to_bytes(width, "big") for c in self.values)

    @classmethod
    def from_bytes(
        cls, public: PaillierPublicKey, index: int, data: bytes, proof: PartialProof
    ) -> PartialDecryption:
        """Parse :meth:`values_to_bytes`; DecryptionError naming the holder if malformed."""
        width = public.ciphertext_bytes
        if not isinstance(data, bytes | bytearray) or len(data) % width:
            raise DecryptionError(f"part from holder {index} has a malformed length")
        data = bytes(data)
        values = tuple(int.from_bytes(data[i : i + width], "big") for i in range(0, len(data), width))
        return cls(index, values, proof)


# --- proof ------------------------------------------------------------------------------


def _to_bytes(x: int, width: int) -> bytes:
    return int(x).to_bytes(width, "big")


def _transcript(
    pk: ThresholdPublicKey, index: int, cts: Sequence[int], parts: Sequence[int], context: bytes
) -> bytes:
    """SHA-256 over everything the proof is about; seeds the weights and the challenge."""
    width = pk.element_bytes
    h = hashlib.sha256(_DOMAIN_TRANSCRIPT)
    h.update(_to_bytes(pk.public.n, pk.public.modulus_bytes))
    h.update(_to_bytes(pk.verification_base, width))
    h.update(_to_bytes(pk.verification_key(index), width))
    h.update(index.to_bytes(4, "big") + len(context).to_bytes(8, "big") + context)
    h.update(len(cts).to_bytes(8, "big"))
    for c in cts:
        h.update(_to_bytes(c, width))
    for c in parts:
        h.update(_to_bytes(c, width))
    return h.digest()


def _weights(transcript: bytes, count: int) -> list[int]:
    step = WEIGHT_BITS // 8
    stream = hashlib.shake_256(_DOMAIN_WEIGHTS + transcript).digest(step * count) if count else b""
    return [int.from_bytes(stream[i : i + step], "big") for i in range(0, step * count, step)]


def _challenge(pk: ThresholdPublicKey, transcript: bytes, *elements: int) -> int:
    width = pk.element_bytes
    h = hashlib.sha256(_DOMAIN_CHALLENGE + transcript)
    for x in elements:
        h.update(_to_bytes(x, width))
    return int.from_bytes(h.digest(), "big")


def _bases(
    engine: Engine, pk: ThresholdPublicKey, transcript: bytes, cts: Sequence[int], parts: Sequence[int]
) -> tuple[int, int]:
    """(C^4, C_i^2) for the transcript's weights."""
    n2 = pk.public.nsquare
    triples = list(zip(cts, parts, _weights(transcript, len(cts))))
    c_acc, p_acc = gmpy2.mpz(1), gmpy2.mpz(1)
    for c_part, p_part in engine.run(aggregate_chunk, n2, triples, whole=True):
        c_acc, p_acc = c_acc * c_part % n2, p_acc * p_part % n2
    return int(gmpy2.powmod(c_acc, 4, n2)), int(gmpy2.powmod(p_acc, 2, n2))


def _check_vector(pk: ThresholdPublicKey, enc: object) -> list[int]:
    if not isinstance(enc, EncryptedVector):
        raise DataValidationError("threshold decryption needs an EncryptedVector")
    if enc.public_key != pk.public:
        raise KeyMismatchError("ciphertexts are not under this threshold key's public key")
    return enc.ciphertexts


def _check_context(context: object) -> bytes:
    if not isinstance(context, bytes):
        raise DataValidationError("proof context must be bytes")
    return context


def partial_decrypt(
    share: ThresholdKeyShare,
    enc: EncryptedVector,
    *,
    context: bytes = b"",
    workers: int | None = None,
    progress: bool = False,
) -> PartialDecryption:
    """Holder ``share.index``'s part of every element of ``enc``, with a proof.

    ``context`` is bound into the proof (the verifier must pass the same);
    ``workers=None`` uses every CPU for vectors of 64 or more; ``progress``
    shows a tqdm bar on stderr. KeyMismatchError if ``enc`` is under another key.
    """
    if not isinstance(share, ThresholdKeyShare):
        raise DataValidationError("partial_decrypt needs a ThresholdKeyShare")
    pk = share.public
    cts = _check_vector(pk, enc)
    context = _check_context(context)
    n2 = pk.public.nsquare
    x = pk.delta * share.value
    with Engine(len(cts), workers, progress, "partial decrypt") as engine:
        parts = engine.run(power_chunk, (n2, 2 * x), cts, count=True)
        transcript = _transcript(pk, share.index, cts, parts, context)
        base, image = _bases(engine, pk, transcript, cts, parts)
    r = secrets.randbits(_nonce_bits(pk))
    a = gmpy2.powmod(base, r, n2)
    b = gmpy2.powmod(pk.verification_base, r, n2)
    e = _challenge(pk, transcript, base, image, a, b)
    return PartialDecryption(share.index, tuple(parts), PartialProof(e, r + e * x))


def _check_shape(pk: ThresholdPublicKey, part: PartialDecryption, count: int) -> None:
    """One value per ciphertext, each a unit below n²; DecryptionError naming the holder."""
    index = part.index
    if not _is_int(index) or not 1 <= index <= pk.holders:
        raise DecryptionError(f"part names holder {index!r}, not one of 1..{pk.holders}")
    if len(part.values) != count:
        raise DecryptionError(f"part from holder {index} has {len(part.values)} values for {count} ciphertexts")
    n, n2 = pk.public.n, pk.public.nsquare
    for c in part.values:
        if not _is_int(c) or not 0 < c < n2 or gmpy2.gcd(c, n) != 1:
            raise DecryptionError(f"part from holder {index} holds a value that is not a unit mod n²")


def _verify(engine: Engine, pk: ThresholdPublicKey, part: object, cts: Sequence[int], context: bytes) -> None:
    if not isinstance(part, PartialDecryption):
        raise DataValidationError("expected a PartialDecryption")
    index = part.index
    _check_shape(pk, part, len(cts))
    if not isinstance(part.proof, PartialProof):
        raise DecryptionError(f"part from holder {index} carries no proof")
    n2 = pk.public.nsquare
    e, z = part.proof.e, part.proof.z
    if not (_is_int(e) and _is_int(z) and 0 <= e < (1 << CHALLENGE_BITS) and 0 <= z < (1 << (_nonce_bits(pk) + 1))):
        raise DecryptionError(f"part from holder {index} has a malformed proof")
    transcript = _transcript(pk, index, cts, part.values, context)
    base, image = _bases(engine, pk, transcript, cts, part.values)
    vi = pk.verification_key(index)
    a = gmpy2.powmod(base, z, n2) * gmpy2.powmod(gmpy2.invert(image, n2), e, n2) % n2
    b = gmpy2.powmod(pk.verification_base, z, n2) * gmpy2.powmod(gmpy2.invert(vi, n2), e, n2) % n2
    if _challenge(pk, transcript, base, image, a, b) != e:
        raise DecryptionError(
            f"part from holder {index} fails its proof: not made with holder {index}'s share "
            "for these ciphertexts (forged, altered, or for another release)"
        )


def verify_partial(
    public: ThresholdPublicKey,
    part: PartialDecryption,
    enc: EncryptedVector,
    *,
    context: bytes = b"",
    workers: int | None = None,
) -> None:
    """Check ``part``'s proof against ``enc`` and the holder's verification key.

    The verification keys live in ``public`` (v_i = public.verification_key(i)).
    Raises DecryptionError naming the holder index on any bad or foreign part.
    """
    if not isinstance(public, ThresholdPublicKey):
        raise DataValidationError("verify_partial needs a ThresholdPublicKey")
    cts = _check_vector(public, enc)
    with Engine(len(cts), workers, False, "verify") as engine:
        _verify(engine, public, part, cts, _check_context(context))


def _lagrange(indices: Sequence[int], delta: int) -> list[int]:
    """λ_i = Δ·Π_{j≠i} j/(j-i) at 0, exact integers because Δ = ℓ!."""
    out = []
    for i in indices:
        num, den = delta, 1
        for j in indices:
            if j != i:
                num *= j
                den *= j - i
        if num % den:
            raise DecryptionError("Lagrange coefficient is not an integer (holder indices out of range)")
        out.append(num // den)
    return out


def combine_partials(
    public: ThresholdPublicKey,
    parts: Sequence[PartialDecryption],
    enc: EncryptedVector,
    *,
    verify: bool = True,
    context: bytes = b"",
    workers: int | None = None,
    progress: bool = False,
    signed: bool = True,
) -> list[int]:
    """Signed plaintexts of ``enc`` from at least T parts of distinct holders (raw ones in [0, n) when not
    ``signed``: masked values).

    PolicyError "need T parts, got k" with too few; DataValidationError if a
    holder appears twice; with ``verify`` (the default) every given part's
    proof is checked first (DecryptionError naming the holder). The T parts
    with the lowest indices are combined. Decoding matches ``decrypt_vector``:
    DecryptionError naming the 1-based position on an overflow.
    """
    if not isinstance(public, ThresholdPublicKey):
        raise DataValidationError("combine_partials needs a ThresholdPublicKey")
    cts = _check_vector(public, enc)
    context = _check_context(context)
    parts = list(parts)
    seen: set[int] = set()
    for part in parts:
        if not isinstance(part, PartialDecryption):
            raise DataValidationError("combine_partials needs PartialDecryption objects")
        if part.index in seen:
            raise DataValidationError(f"holder {part.index} gave more than one part")
        seen.add(part.index)
    if len(parts) < public.threshold:
        raise PolicyError(
            f"need {public.threshold} parts of the {public.holders} holders to decrypt, got {len(parts)}"
        )
    n = public.public.n
    with Engine(len(cts), workers, progress, "combine") as engine:
        for part in parts:
            if verify:
                _verify(engine, public, part, cts, context)
            else:
                _check_shape(public, part, len(cts))
        used = sorted(parts, key=lambda p: p.index)[: public.threshold]
        exps = tuple(2 * lam for lam in _lagrange([p.index for p in used], public.delta))
        inv = int(gmpy2.invert(4 * public.delta * public.delta, n))
        rows = list(zip(*(p.values for p in used)))
        raw = engine.run(combine_chunk, (n, exps, inv), rows, count=True)
    return decode_signed(public.public, raw) if signed else [int(m) for m in raw]
