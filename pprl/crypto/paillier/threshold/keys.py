"""Threshold Paillier keys: safe primes, one trusted dealer, Shamir shares of the secret.

Split out of :mod:`pprl.crypto.paillier.threshold.partials` (which re-exports
everything here). :func:`deal` makes the key (Shoup 2000 / Damgård–Jurik 2001,
s = 1) and hands out the shares; the dealer is trusted at keygen only. The
public key is an ordinary Paillier key with g = n + 1.

The public key carries a DJN base ``h_s`` (field ``djn_hs``), so platforms
encrypt under a threshold key with the fixed-base DJN path, as fast as under
an ordinary key (without it: classic r^n, several times slower; documents
dealt before it existed still load and fall back to r^n). Why whoever makes
``h_s`` learns nothing that helps decrypt: ``h_s = (-x²)^n mod n²`` with
``x = SHAKE256(domain, n)`` (:func:`~pprl.crypto.paillier.keys.derive_djn_hs`)
is a public, deterministic function of n. Anyone holding the public key can
compute it, and every reader recomputes it and refuses any other value, so it
adds no information beyond n (nothing a holder or an outsider could not derive
alone), and nobody, the dealer included, can choose it: no trapdoor base (say
one of small order, which would make ciphertexts predictable) can be planted.
The dealer's CRT shortcut (:func:`~pprl.crypto.paillier.keys.make_djn_hs`)
yields the same number and uses p, q only while they exist anyway (they are
dropped on return). Decrypting still needs T shares of d; the secrecy of each
ciphertext rests on the encryptor's fresh exponent, drawn with :mod:`secrets`
(DJN's assumption, with h public as in their scheme).

Design and trust assumption: docs/threshold.md#key-generation
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import gmpy2
import numpy as np

from pprl.crypto.paillier.keys import make_djn_hs
from pprl.crypto.paillier.vector import MIN_KEY_BITS, PaillierPrivateKey, PaillierPublicKey
from pprl.errors import DataValidationError, KeyFormatError, KeyMismatchError

__all__ = [
    "MAX_HOLDERS",
    "PRIME_ROUNDS",
    "ThresholdPublicKey",
    "ThresholdKeyShare",
    "generate_safe_prime",
    "deal",
]

#: Upper bound on the number of holders (Δ = ℓ! grows fast; 64! has 296 bits).
MAX_HOLDERS = 64
#: Miller–Rabin rounds for each of p' and p (after the Fermat pre-tests).
PRIME_ROUNDS = 40

_SIEVE_LIMIT = 1 << 17
_WINDOW = 1 << 18


def _is_int(x: object) -> bool:
    return isinstance(x, int | gmpy2.mpz) and not isinstance(x, bool)


def _small_primes(limit: int) -> np.ndarray:
    """Primes 5 <= r < limit (2 and 3 are handled by the p' ≡ 5 mod 6 step)."""
    sieve = np.ones(limit, dtype=bool)
    sieve[:2] = False
    for i in range(2, math.isqrt(limit) + 1):
        if sieve[i]:
            sieve[i * i :: i] = False
    primes = np.flatnonzero(sieve)
    return primes[primes >= 5].astype(np.int64)


_PRIMES = _small_primes(_SIEVE_LIMIT)
_INV6 = np.array([pow(6, -1, int(r)) for r in _PRIMES], dtype=np.int64)


def _residues(value: int) -> np.ndarray:
    """value mod r for every sieve prime r, vectorised over 30-bit limbs (Horner)."""
    limbs = []
    while value:
        limbs.append(value & ((1 << 30) - 1))
        value >>= 30
    out = np.zeros_like(_PRIMES)
    for limb in reversed(limbs):
        out = (out * (1 << 30) + limb) % _PRIMES
    return out


def generate_safe_prime(bits: int) -> int:
    """A random safe prime p = 2p'+1 of exactly ``bits`` bits, top two bits set.

    Uses the OS CSPRNG for the starting points; ``bits`` must be at least 64.
    """
    if not _is_int(bits) or bits < 64:
        raise DataValidationError("safe primes must have at least 64 bits")
    h = int(bits) - 1  # bits of p'
    lo, hi = 3 << (h - 2), 1 << h  # p' in [lo, hi): p = 2p'+1 has its top two bits set
    span = 6 * _WINDOW
    while True:
        base = lo + secrets.randbelow(hi - lo - span)
        base += (5 - base) % 6  # p' ≡ 5 (mod 6): p' odd, 3 ∤ p', 3 ∤ 2p'+1
        res = _residues(base)
        alive = np.ones(_WINDOW, dtype=bool)
        # candidate k is base + 6k; strike k where r | p' or r | 2p'+1.
        k_zero = (-res * _INV6) % _PRIMES
        k_half = (((_PRIMES - 1) // 2 - res) % _PRIMES * _INV6) % _PRIMES
        for r, k0, k1 in zip(_PRIMES.tolist(), k_zero.tolist(), k_half.tolist()):
            alive[k0::r] = False
            alive[k1::r] = False
        two = gmpy2.mpz(2)
        for k in np.flatnonzero(alive).tolist():
            pp = gmpy2.mpz(base + 6 * k)
            if gmpy2.powmod(two, pp - 1, pp) != 1:
                continue
            p = 2 * pp + 1
            if gmpy2.powmod(two, p - 1, p) != 1:
                continue
            if gmpy2.is_prime(pp, PRIME_ROUNDS) and gmpy2.is_prime(p, PRIME_ROUNDS):
                return int(p)


def _int_width(n: int) -> int:
    return (n.bit_length() + 7) // 8


@dataclass(frozen=True)
class ThresholdPublicKey:
    """Everything public about a threshold key: n, T, the verification base and keys.

    ``verification_keys[i - 1]`` belongs to holder i (1-based). Checked on
    construction: 1 <= T <= ℓ <= :data:`MAX_HOLDERS`, and v and every v_i
    are units in (1, n²) (KeyFormatError otherwise).
    """

    public: PaillierPublicKey
    threshold: int
    verification_base: int = field(repr=False)
    verification_keys: tuple[int, ...] = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public, PaillierPublicKey):
            raise KeyFormatError("a threshold key needs a PaillierPublicKey")
        keys = tuple(self.verification_keys)
        if not 1 <= len(keys) <= MAX_HOLDERS:
            raise KeyFormatError(f"a threshold key has 1 to {MAX_HOLDERS} holders, not {len(keys)}")
        if not _is_int(self.threshold) or not 1 <= int(self.threshold) <= len(keys):
            raise KeyFormatError(f"threshold must be between 1 and the {len(keys)} holders")
        n, n2 = self.public.n, self.public.nsquare
        checked = []
        for what, x in [("verification base", self.verification_base)] + [
            (f"verification key {i}", k) for i, k in enumerate(keys, start=1)
        ]:
            if not _is_int(x) or not 1 < int(x) < n2 or gmpy2.gcd(int(x), n) != 1:
                raise KeyFormatError(f"threshold key: {what} is not a unit mod n²")
            checked.append(int(x))
        object.__setattr__(self, "threshold", int(self.threshold))
        object.__setattr__(self, "verification_base", checked[0])
        object.__setattr__(self, "verification_keys", tuple(checked[1:]))

    def __repr__(self) -> str:
        return (
            f"ThresholdPublicKey({self.threshold}-of-{self.holders}, "
            f"bits={self.public.bits}, fingerprint={self.public.fingerprint!r})"
        )

    @property
    def holders(self) -> int:
        """ℓ, the number of share holders."""
        return len(self.verification_keys)

    @cached_property
    def delta(self) -> int:
        """Δ = ℓ!, which clears every Lagrange denominator."""
        return math.factorial(self.holders)

    def verification_key(self, index: int) -> int:
        """v_i for holder ``index`` (1-based); DataValidationError if out of range."""
        if not _is_int(index) or not 1 <= int(index) <= self.holders:
            raise DataValidationError(f"holder index must be between 1 and {self.holders}")
        return self.verification_keys[int(index) - 1]

    @property
    def element_bytes(self) -> int:
        """Fixed byte width of an element mod n² (same as a ciphertext)."""
        return self.public.ciphertext_bytes


@dataclass(frozen=True)
class ThresholdKeyShare:
    """Holder ``index``'s secret share s_i. ``repr``/``str`` never show the value.

    Construction checks v^(Δ·s_i) = v_i (KeyMismatchError otherwise), so a
    damaged or swapped share is caught before it produces a useless part.
    """

    public: ThresholdPublicKey
    index: int
    value: int = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.public, ThresholdPublicKey):
            raise KeyFormatError("a key share needs a ThresholdPublicKey")
        if not _is_int(self.index) or not 1 <= int(self.index) <= self.public.holders:
            raise KeyFormatError(f"share index must be between 1 and {self.public.holders}")
        if not _is_int(self.value) or not 0 <= int(self.value) < self.public.public.nsquare:
            raise KeyFormatError("share value is out of range")
        object.__setattr__(self, "index", int(self.index))
        object.__setattr__(self, "value", int(self.value))
        pk = self.public
        expected = pk.verification_key(self.index)
        got = gmpy2.powmod(pk.verification_base, pk.delta * self.value, pk.public.nsquare)
        if got != expected:
            raise KeyMismatchError(f"share {self.index} does not match its verification key")

    def to_bytes(self) -> bytes:
        """s_i as a fixed-width big-endian integer (``element_bytes`` long)."""
        return self.value.to_bytes(self.public.element_bytes, "big")

    @classmethod
    def from_bytes(cls, public: ThresholdPublicKey, index: int, data: bytes) -> ThresholdKeyShare:
        """Inverse of :meth:`to_bytes`; KeyFormatError on a wrong length."""
        if not isinstance(data, bytes | bytearray) or len(data) != public.element_bytes:
            raise KeyFormatError("key share has the wrong length for this key")
        return cls(public, index, int.from_bytes(bytes(data), "big"))


def _random_square(n: int) -> int:
    n2 = n * n
    while True:
        x = secrets.randbelow(n2 - 2) + 2
        if gmpy2.gcd(x, n) == 1:
            v = int(gmpy2.powmod(x, 2, n2))
            if v != 1:
                return v


def deal(
    bits: int,
    threshold: int,
    holders: int,
    *,
    _allow_insecure: bool = False,
) -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    """The trusted dealer: a fresh T-of-ℓ key; returns the public key and ℓ shares.

    ``bits`` (even) is the size of n, at least :data:`MIN_KEY_BITS`;
    ``_allow_insecure`` lets tests go down to 128 bits. p, q, d and the
    polynomial are local to this call and dropped on return. Before
    returning, a random plaintext is encrypted and threshold-decrypted with
    the first T shares as a self-test.
    """
    if not _is_int(bits) or bits % 2:
        raise DataValidationError("threshold key size must be an even number of bits")
    floor = 128 if _allow_insecure else MIN_KEY_BITS
    if bits < floor:
        raise DataValidationError(f"threshold key size must be at least {floor} bits")
    if not _is_int(holders) or not 1 <= holders <= MAX_HOLDERS:
        raise DataValidationError(f"number of holders must be between 1 and {MAX_HOLDERS}")
    if not _is_int(threshold) or not 1 <= threshold <= holders:
        raise DataValidationError(f"threshold must be between 1 and the {holders} holders")
    half = int(bits) // 2
    while True:
        p = generate_safe_prime(half)
        q = generate_safe_prime(half)
        n = p * q
        # p != q, and neither p' nor q' equals the other prime (distinct sizes rule it out,
        # but check): otherwise gcd(n, m) != 1 and d does not exist.
        if p != q and n.bit_length() == bits and math.gcd(n, (p - 1) * (q - 1)) == 1:
            break
    # the DJN base is derived from n, so a threshold key encrypts as fast as an ordinary one
    public = PaillierPublicKey(n, djn_hs=make_djn_hs(p, q))
    PaillierPrivateKey(public, p, q)  # the same validity checks as an ordinary key
    m = ((p - 1) // 2) * ((q - 1) // 2)
    nm = n * m
    d = m * int(gmpy2.invert(m, n)) % nm  # d ≡ 0 (mod m), d ≡ 1 (mod n)
    coefficients = [d] + [secrets.randbelow(nm) for _ in range(int(threshold) - 1)]
    values = []
    for i in range(1, int(holders) + 1):
        acc = 0
        for a in reversed(coefficients):
            acc = (acc * i + a) % nm
        values.append(acc)
    del p, q, d, m, coefficients
    n2 = n * n
    v = _random_square(n)
    delta = math.factorial(int(holders))
    keys = tuple(int(gmpy2.powmod(v, delta * s, n2)) for s in values)
    tpk = ThresholdPublicKey(public, int(threshold), v, keys)
    shares = [ThresholdKeyShare(tpk, i, s) for i, s in enumerate(values, start=1)]
    del nm, values
    _self_test(tpk, shares[: tpk.threshold])
    return tpk, shares


def _self_test(tpk: ThresholdPublicKey, shares: Sequence[ThresholdKeyShare]) -> None:
    """Encrypt a random value and threshold-decrypt it; KeyFormatError if it fails."""
    from pprl.crypto.paillier.threshold.partials import combine_partials, partial_decrypt
    from pprl.crypto.paillier.vector import encrypt_vector

    value = secrets.randbelow(tpk.public.max_int)
    enc = encrypt_vector(tpk.public, [value], workers=1)
    parts = [partial_decrypt(s, enc, workers=1) for s in shares]
    if combine_partials(tpk, parts, enc, workers=1) != [value]:
        raise KeyFormatError("threshold key failed its self-test; generate it again")

