"""Paillier key pairs: validation, fingerprints, dict form, and phe interop.

Split out of :mod:`pprl.crypto.paillier.vector` (which re-exports everything here).
Keys are frozen dataclasses holding plain ints; untrusted key material enters
through ``from_dict`` and is parsed strictly (:class:`~pprl.errors.KeyFormatError`,
:class:`~pprl.errors.KeyMismatchError`). No error message, ``repr`` or ``str``
ever shows ``p`` or ``q``. The optional DJN base ``djn_hs`` only speeds up
encryption.

Design: docs/design.md#paillier-scheme
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import secrets
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, NamedTuple

import gmpy2
import phe

from pprl.errors import DataValidationError, KeyFormatError, KeyMismatchError

__all__ = [
    "MIN_KEY_BITS",
    "PaillierPublicKey",
    "PaillierPrivateKey",
    "CRTParams",
    "generate_keypair",
    "derive_djn_hs",
    "make_djn_hs",
    "raw_encrypt",
]

#: Smallest modulus accepted from a key file (and generated) unless a caller
#: explicitly opts into toy keys for tests.
MIN_KEY_BITS = 2048
_DJN_DOMAIN = b"pprl-djn-base-v1"

_FINGERPRINT_DOMAIN = b"pprl-paillier-v1"


def _is_int(x: object) -> bool:
    """True for real integers (Python or gmpy2), but not for bools."""
    return isinstance(x, (int, gmpy2.mpz)) and not isinstance(x, bool)


def _b64_encode_int(value: int, width: int) -> str:
    return base64.b64encode(int(value).to_bytes(width, "big")).decode("ascii")


def _b64_decode_int(
    text: object, what: str, *, canonical: bool = True, width: int | None = None
) -> int:
    """Strict standard base64 -> big-endian int >= 2.

    ``canonical`` refuses a leading zero byte (n has exactly one encoding);
    p and q share one fixed width, so one of them may carry leading zeros.
    """
    if not isinstance(text, str) or not text:
        raise KeyFormatError(f"key field {what!r} must be a non-empty base64 string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise KeyFormatError(f"key field {what!r} is not valid base64") from None
    if canonical and (not raw or raw[0] == 0):
        raise KeyFormatError(f"key field {what!r} is not a canonical big-endian integer")
    if width is not None and len(raw) != width:
        raise KeyFormatError(f"key field {what!r} must be {width} bytes")
    value = int.from_bytes(raw, "big")
    if value < 2:
        raise KeyFormatError(f"key field {what!r} is out of range")
    return value


@dataclass(frozen=True)
class PaillierPublicKey:
    """A Paillier public key with ``g = n + 1``; only ``n`` is stored.

    The constructor checks structure only (an odd int > 1 that is not prime
    or a square), so toy keys can be built in known-answer tests; the size
    floor (:data:`MIN_KEY_BITS`) is enforced where keys come from outside,
    in :meth:`from_dict`, and in :func:`generate_keypair`. ``djn_hs`` is the
    optional DJN base (module docstring); it takes no part in ``==``/hash.
    """

    n: int
    djn_hs: int | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not _is_int(self.n):
            raise KeyFormatError("Paillier modulus n must be an integer")
        n = int(self.n)
        object.__setattr__(self, "n", n)
        if n < 15 or n % 2 == 0:
            raise KeyFormatError("Paillier modulus n must be an odd integer >= 15")
        if gmpy2.is_prime(n) or gmpy2.is_square(n):
            raise KeyFormatError("Paillier modulus n must be a product of two distinct primes")
        if self.djn_hs is not None:
            if not _is_int(self.djn_hs):
                raise KeyFormatError("Paillier key field 'djn_hs' must be an integer")
            hs = int(self.djn_hs)
            object.__setattr__(self, "djn_hs", hs)
            # h = ±1 would make every DJN ciphertext deterministic (hs ≡ ±1 mod n).
            if not 1 < hs < n * n or gmpy2.gcd(hs, n) != 1 or hs % n in (1, n - 1):
                raise KeyFormatError("Paillier key field 'djn_hs' is not a valid DJN base")
            if hs != derive_djn_hs(n):
                raise KeyFormatError("Paillier key field 'djn_hs' is not the base derived from n; refused "
                                     "(a chosen base could make ciphertexts predictable)")

    @property
    def has_djn(self) -> bool:
        """True when this key carries a DJN base and so supports fast encryption."""
        return self.djn_hs is not None

    def without_djn(self) -> PaillierPublicKey:
        """The same key without its DJN base (plain r^n encryption only)."""
        return PaillierPublicKey(self.n)

    def __repr__(self) -> str:
        return f"PaillierPublicKey(bits={self.bits}, fingerprint={self.fingerprint!r})"

    @cached_property
    def nsquare(self) -> int:
        """n², the ciphertext modulus."""
        return self.n * self.n

    @property
    def g(self) -> int:
        """The generator, fixed at n + 1 (so g^m = 1 + m·n mod n²)."""
        return self.n + 1

    @property
    def bits(self) -> int:
        """Bit length of n (the 'key size')."""
        return self.n.bit_length()

    @property
    def max_int(self) -> int:
        """Largest magnitude a signed plaintext (or any sum of them) may have: n//3 - 1."""
        return self.n // 3 - 1

    @property
    def modulus_bytes(self) -> int:
        """Fixed byte width of n."""
        return (self.n.bit_length() + 7) // 8

    @cached_property
    def ciphertext_bytes(self) -> int:
        """Fixed byte width of every serialised ciphertext: the byte length of n²."""
        return (self.nsquare.bit_length() + 7) // 8

    @cached_property
    def fingerprint(self) -> str:
        """32 hex chars of SHA-256 over a domain tag and n (fixed-width big-endian)."""
        data = _FINGERPRINT_DOMAIN + self.n.to_bytes(self.modulus_bytes, "big")
        return hashlib.sha256(data).hexdigest()[:32]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"n": base64(n big-endian), "bits": int}``, plus
        ``"djn_hs"`` (base64 of ``ciphertext_bytes`` fixed-width big-endian) when present."""
        d: dict[str, Any] = {"n": _b64_encode_int(self.n, self.modulus_bytes), "bits": self.bits}
        if self.djn_hs is not None:
            d["djn_hs"] = _b64_encode_int(self.djn_hs, self.ciphertext_bytes)
        return d

    @classmethod
    def from_dict(cls, d: object, *, allow_small: bool = False) -> PaillierPublicKey:
        """Parse :meth:`to_dict` output; KeyFormatError for anything malformed.

        A key read before is not checked again: the bureau reads the registry's key for every lender query,
        and the checks (a primality test of n, the DJN base derived again) cost milliseconds each time.
        """
        if not isinstance(d, dict):
            raise KeyFormatError("Paillier public key must be a JSON object")
        n_text, bits, hs_text = d.get("n"), d.get("bits"), d.get("djn_hs")
        if isinstance(n_text, str) and _is_int(bits) and (hs_text is None or isinstance(hs_text, str)) \
                and set(d) <= {"n", "bits", "djn_hs"}:
            return _parse_public(n_text, bits, hs_text, allow_small)
        return cls._from_dict(d, allow_small=allow_small)

    @classmethod
    def _from_dict(cls, d: dict, *, allow_small: bool = False) -> PaillierPublicKey:
        if "n" not in d or "bits" not in d:
            raise KeyFormatError("Paillier public key needs fields 'n' and 'bits'")
        bits = d["bits"]
        if not _is_int(bits):
            raise KeyFormatError("Paillier public key field 'bits' must be an integer")
        n = _b64_decode_int(d["n"], "n")
        if n.bit_length() != bits:
            raise KeyFormatError("Paillier public key: 'bits' does not match the modulus")
        if bits < MIN_KEY_BITS and not allow_small:
            raise KeyFormatError(
                f"Paillier modulus of {bits} bits is too small (minimum {MIN_KEY_BITS})"
            )
        hs = None
        if d.get("djn_hs") is not None:
            width = (2 * n.bit_length() + 7) // 8
            hs = _b64_decode_int(d["djn_hs"], "djn_hs", canonical=False, width=width)
        return cls(n, hs)

    def to_phe(self) -> phe.PaillierPublicKey:
        """The equivalent python-paillier key (same n, same g = n + 1; phe ignores djn_hs)."""
        return phe.PaillierPublicKey(self.n)

    @classmethod
    def from_phe(cls, key: phe.PaillierPublicKey) -> PaillierPublicKey:
        """Wrap a python-paillier public key."""
        if not isinstance(key, phe.PaillierPublicKey):
            raise KeyFormatError("expected a phe.PaillierPublicKey")
        return cls(int(key.n))


@functools.lru_cache(maxsize=32)
def _parse_public(n_text: str, bits: int, hs_text: str | None, allow_small: bool) -> PaillierPublicKey:
    """The checked key of these fields (memoised: a key is immutable; a malformed one raises every time)."""
    fields: dict[str, Any] = {"n": n_text, "bits": bits}
    if hs_text is not None:
        fields["djn_hs"] = hs_text
    return PaillierPublicKey._from_dict(fields, allow_small=allow_small)


class CRTParams(NamedTuple):
    """Per-key constants for CRT decryption (Paillier 1999, section 7).

    Plain ints so they pickle cheaply to worker processes. Never log these.
    """

    n: int
    p: int
    q: int
    psquare: int
    qsquare: int
    hp: int
    hq: int
    p_inverse: int  # p^-1 mod q

    def __repr__(self) -> str:  # a traceback or a log line must never carry the factors
        return f"CRTParams(n={self.n.bit_length()} bits, <secret>)"


@dataclass(frozen=True)
class PaillierPrivateKey:
    """The factorisation of n. ``repr``/``str`` show only the public key.

    ``p`` and ``q`` are normalised so that ``p < q`` (as phe does); they must
    be distinct primes with ``p * q == public_key.n`` (KeyMismatchError
    otherwise) and ``gcd(n, (p-1)(q-1)) == 1``.
    """

    public_key: PaillierPublicKey
    p: int = field(repr=False)
    q: int = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public_key, PaillierPublicKey):
            raise KeyFormatError("public_key must be a PaillierPublicKey")
        if not (_is_int(self.p) and _is_int(self.q)):
            raise KeyFormatError("Paillier primes p and q must be integers")
        p, q = sorted((int(self.p), int(self.q)))
        object.__setattr__(self, "p", p)
        object.__setattr__(self, "q", q)
        if p * q != self.public_key.n:
            raise KeyMismatchError("Paillier private key does not belong to this public key")
        if p == q or not (gmpy2.is_prime(p) and gmpy2.is_prime(q)):
            raise KeyFormatError("Paillier private key: p and q must be distinct primes")
        if gmpy2.gcd(self.public_key.n, (p - 1) * (q - 1)) != 1:
            raise KeyFormatError("Paillier private key: gcd(n, (p-1)(q-1)) must be 1")
        hs = self.public_key.djn_hs
        # n-th residues are exactly the units whose order divides (p-1)(q-1);
        # anything else would shift every DJN plaintext by a random amount.
        if hs is not None and (gmpy2.powmod(hs, p - 1, p * p) != 1 or gmpy2.powmod(hs, q - 1, q * q) != 1):
            raise KeyFormatError("Paillier key field 'djn_hs' is not an n-th residue")

    def with_djn(self) -> PaillierPrivateKey:
        """This key with a fresh DJN base in its public key (for keys made without one)."""
        if self.public_key.djn_hs is not None:
            return self
        public = replace(self.public_key, djn_hs=make_djn_hs(self.p, self.q))
        return PaillierPrivateKey(public, self.p, self.q)

    @cached_property
    def crt(self) -> CRTParams:
        """Decryption constants hp, hq and p^-1 mod q, derived once per key."""
        p, q, n = self.p, self.q, self.public_key.n
        psquare, qsquare = p * p, q * q

        def h(x: int, xsquare: int) -> int:
            # h(x) = L_x(g^(x-1) mod x²)^-1 mod x, with L_x(u) = (u - 1) / x.
            u = int(gmpy2.powmod(n + 1, x - 1, xsquare))
            return int(gmpy2.invert((u - 1) // x, x))

        return CRTParams(
            n=n,
            p=p,
            q=q,
            psquare=psquare,
            qsquare=qsquare,
            hp=h(p, psquare),
            hq=h(q, qsquare),
            p_inverse=int(gmpy2.invert(p, q)),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"public_key": {...}, "p": base64, "q": base64}``."""
        width = (max(self.p, self.q).bit_length() + 7) // 8
        return {
            "public_key": self.public_key.to_dict(),
            "p": _b64_encode_int(self.p, width),
            "q": _b64_encode_int(self.q, width),
        }

    @classmethod
    def from_dict(
        cls,
        d: object,
        public_key: PaillierPublicKey | None = None,
        *,
        allow_small: bool = False,
    ) -> PaillierPrivateKey:
        """Parse :meth:`to_dict` output, optionally against an expected public key.

        KeyFormatError for malformed input; KeyMismatchError when the primes
        (or the embedded public key) do not match ``public_key``.
        """
        if not isinstance(d, dict):
            raise KeyFormatError("Paillier private key must be a JSON object")
        if "p" not in d or "q" not in d:
            raise KeyFormatError("Paillier private key needs fields 'p' and 'q'")
        p = _b64_decode_int(d["p"], "p", canonical=False)
        q = _b64_decode_int(d["q"], "q", canonical=False)
        embedded = None
        if "public_key" in d:
            embedded = PaillierPublicKey.from_dict(d["public_key"], allow_small=allow_small)
        if embedded is not None:
            if public_key is not None and embedded != public_key:
                raise KeyMismatchError("Paillier private key file names a different public key")
            if public_key is None or public_key.djn_hs is None:
                public_key = embedded  # same n; keep whichever copy has the DJN base
        if public_key is None:
            n = p * q
            if n.bit_length() < MIN_KEY_BITS and not allow_small:
                raise KeyFormatError(
                    f"Paillier modulus of {n.bit_length()} bits is too small "
                    f"(minimum {MIN_KEY_BITS})"
                )
            public_key = PaillierPublicKey(n)
        return cls(public_key, p, q)

    def to_phe(self) -> phe.PaillierPrivateKey:
        """The equivalent python-paillier private key."""
        return phe.PaillierPrivateKey(self.public_key.to_phe(), self.p, self.q)

    @classmethod
    def from_phe(cls, key: phe.PaillierPrivateKey) -> PaillierPrivateKey:
        """Wrap a python-paillier private key."""
        if not isinstance(key, phe.PaillierPrivateKey):
            raise KeyFormatError("expected a phe.PaillierPrivateKey")
        return cls(PaillierPublicKey.from_phe(key.public_key), int(key.p), int(key.q))


def _random_blum_prime(bits: int) -> int:
    """Random prime ≡ 3 (mod 4), top two bits set (so p·q has exactly 2·bits bits), from
    :mod:`secrets`; gmpy2/GMP primality test (BPSW plus Miller–Rabin rounds)."""
    top = 3 << (bits - 2)
    while True:
        p = secrets.randbits(bits) | top | 3
        if gmpy2.is_prime(p, 40):
            return p


def _djn_h(n: int) -> int:
    """h = -x² mod n with x a hash of n: a DJN base nobody chooses (not the key holder, not a man in the middle)."""
    width = (n.bit_length() + 7) // 8
    counter = 0
    while True:
        digest = hashlib.shake_256(_DJN_DOMAIN + counter.to_bytes(4, "big") + n.to_bytes(width, "big"))
        x = int.from_bytes(digest.digest(width + 16), "big") % n
        if x > 1 and gmpy2.gcd(x, n) == 1:
            return int((-x * x) % n)
        counter += 1


@functools.lru_cache(maxsize=64)
def derive_djn_hs(n: int) -> int:
    """The DJN base for modulus ``n``: h_s = h^n mod n² with h = -H(n)² mod n, computable by anyone.

    A key whose ``djn_hs`` is anything else is refused: a base someone chose
    (say, of order 2) would make every DJN ciphertext predictable.
    """
    n = int(n)
    return int(gmpy2.powmod(_djn_h(n), n, n * n))


def make_djn_hs(p: int, q: int) -> int:
    """Key-holder side: :func:`derive_djn_hs` by CRT (the same value, about four times faster)."""
    n = p * q
    h = _djn_h(n)
    p2, q2 = p * p, q * q
    hp, hq = gmpy2.powmod(h, n, p2), gmpy2.powmod(h, n, q2)
    # CRT: hs ≡ hp (mod p²), hs ≡ hq (mod q²).
    return int(hp + (hq - hp) * gmpy2.invert(p2, q2) % q2 * p2)


def generate_keypair(
    bits: int = 2048, *, djn: bool = True, _allow_insecure: bool = False
) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Fresh key pair with an n of exactly ``bits`` bits (and a DJN base unless ``djn=False``).

    p and q are random primes ≡ 3 (mod 4) of ``bits/2`` bits each with
    gcd(p-1, q-1) = 2 and |p - q| > 2^(bits/2 - 4), as DJN/HEU require, so -1
    is a non-square mod p and q and h = -x² generates a large subgroup.
    ``bits`` must be even and at least :data:`MIN_KEY_BITS` (2048 or more is
    the sensible choice for real data). ``_allow_insecure`` lets tests use
    toy sizes down to 64 bits; never set it outside tests.
    """
    if not _is_int(bits) or bits % 2:
        raise DataValidationError("Paillier key size must be an even number of bits")
    floor = 64 if _allow_insecure else MIN_KEY_BITS
    if bits < floor:
        raise DataValidationError(f"Paillier key size must be at least {floor} bits")
    half = int(bits) // 2
    p = _random_blum_prime(half)
    while True:
        q = _random_blum_prime(half)
        if abs(p - q).bit_length() > half - 4 and gmpy2.gcd(p - 1, q - 1) == 2:
            break
    hs = make_djn_hs(p, q) if djn else None
    public = PaillierPublicKey(p * q, hs)
    return public, PaillierPrivateKey(public, p, q)


def raw_encrypt(public_key: PaillierPublicKey, m: int, r: int) -> int:
    """Textbook Paillier: g^m · r^n mod n² with g = n + 1, for known-answer tests.

    ``m`` is a raw plaintext in [0, n) (no signed encoding); ``r`` must be in
    [1, n) and coprime to n. Real encryption draws ``r`` itself, see
    :func:`pprl.crypto.paillier.vector.encrypt_vector`.
    """
    n, nsquare = public_key.n, public_key.nsquare
    if not _is_int(m) or not 0 <= m < n:
        raise DataValidationError("raw plaintext must be an integer in [0, n)")
    if not _is_int(r) or not 1 <= r < n or gmpy2.gcd(r, n) != 1:
        raise DataValidationError("r must be an integer in [1, n) coprime to n")
    # (n + 1)^m = 1 + m·n (mod n²): the binomial expansion stops after two terms.
    return int((1 + int(m) * n) * gmpy2.powmod(int(r), n, nsquare) % nsquare)
