"""Many modular exponentiations with one exponent and one modulus: base^e mod M.

Paillier CRT decryption (:func:`pprl.crypto.paillier_engine.decrypt_chunk`)
raises every ciphertext of a batch to p-1 mod p² and q-1 mod q².
:func:`powmod_many` runs such a batch through the C extension
``pprl.crypto._montexp`` (Montgomery multiplication on AVX-512 IFMA, several
times faster than GMP's ``mpz_powm`` at 2048-bit moduli) when the CPU has
IFMA and the modulus is odd and at most :data:`MAX_BITS` bits, and through
``gmpy2.powmod`` otherwise; both give identical results.  Set
``PPRL_NO_IFMA=1`` to force gmpy2 (read at every call, for tests and
comparisons).

Like ``gmpy2.powmod``, the C path is not constant time: it is a fixed-window
method whose table index is a window of the exponent.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2

try:
    from pprl.crypto import _montexp
except ImportError:  # not built (optional extension) or not importable
    _montexp = None

__all__ = ["HAVE_IFMA", "MAX_BITS", "MIN_BITS", "ifma_enabled", "limbs_for", "powmod_many"]

#: True when the extension is built and the CPU (and OS) support AVX-512F + IFMA.
HAVE_IFMA: bool = _montexp is not None and bool(_montexp.available())

_RADIX = 52
_MAX_LIMBS = 80
#: Largest modulus the C path takes: R = 2^(52 L) must exceed 4M with L <= 80.
MAX_BITS = _RADIX * _MAX_LIMBS - 2
#: Below this, gmpy2 is as fast (the C path always works on >= 8 limbs of 52 bits).
MIN_BITS = 256


def limbs_for(bits: int) -> int:
    """L, the number of 52-bit limbs (a multiple of 8) for a ``bits``-bit modulus: 52 L >= bits + 2."""
    return 8 * -(-(bits + 2) // (_RADIX * 8))


def ifma_enabled() -> bool:
    """True when :func:`powmod_many` may use the C path (built, CPU support, no ``PPRL_NO_IFMA``)."""
    return HAVE_IFMA and os.environ.get("PPRL_NO_IFMA", "") in ("", "0")


def _use_c(exponent: int, modulus: int) -> bool:
    return (
        ifma_enabled()
        and exponent >= 0
        and modulus & 1 == 1
        and MIN_BITS <= modulus.bit_length() <= MAX_BITS
    )


def powmod_many(bases: Iterable[Any], exponent: int, modulus: int) -> list[Any]:
    """``[pow(b, exponent, modulus) for b in bases]``, on AVX-512 IFMA when possible.

    ``bases`` may be ints or gmpy2 ``mpz`` (any sign, any size); the results
    are fully reduced, in [0, modulus).  The C path returns ints, gmpy2's
    returns ``mpz``; they are equal.
    """
    exponent, modulus = int(exponent), int(modulus)
    items: Sequence[Any] = bases if isinstance(bases, Sequence) else list(bases)
    if not items or not _use_c(exponent, modulus):
        e, m = gmpy2.mpz(exponent), gmpy2.mpz(modulus)
        return [gmpy2.powmod(b, e, m) for b in items]
    nbytes = (modulus.bit_length() + 7) // 8
    limbs = limbs_for(modulus.bit_length())
    r2 = int(gmpy2.powmod(2, 2 * _RADIX * limbs, modulus))
    k0 = -pow(modulus, -1, 1 << _RADIX) % (1 << _RADIX)
    blob = b"".join(int(b % modulus).to_bytes(nbytes, "little") for b in items)
    out = _montexp.powmod_batch(
        blob,
        exponent.to_bytes((exponent.bit_length() + 7) // 8, "little"),
        modulus.to_bytes(nbytes, "little"),
        r2.to_bytes(nbytes, "little"),
        k0,
        limbs,
    )
    return [int.from_bytes(out[i : i + nbytes], "little") for i in range(0, len(out), nbytes)]
