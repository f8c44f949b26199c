"""Many modular exponentiations with one exponent and one modulus: base^e mod M.

:func:`powmod_many` (Paillier CRT decryption) and :class:`MontgomeryTable` /
:func:`table_products` (DJN encryption's fixed-base products) run on the C
extension ``pprl.crypto._montexp`` when the CPU has AVX-512 IFMA and the modulus
fits :data:`MAX_BITS`; else on ``pprl.crypto._avx2exp`` (AVX2, four numbers in
lockstep, 27-bit limbs) when the CPU has AVX2 and the modulus fits
:data:`AVX2_MAX_BITS`; else on gmpy2; with identical results.
``PPRL_NO_IFMA=1`` skips the IFMA kernel, ``PPRL_NO_AVX2MONT=1`` (or
``PPRL_NO_AVX2=1``) the AVX2 one (read at every call: :mod:`pprl._native`).
Not constant time (like ``gmpy2.powmod``).

Design: docs/design.md#ifma-kernels
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import ModuleType
from typing import Any

import gmpy2

from pprl._native import disabled, load

__all__ = [
    "AVX2_MAX_BITS",
    "AVX2_SWITCH",
    "HAVE_AVX2MONT",
    "HAVE_IFMA",
    "MAX_BITS",
    "MIN_BITS",
    "SWITCH",
    "MontgomeryTable",
    "avx2_enabled",
    "avx2_supported",
    "ifma_enabled",
    "kernel_enabled",
    "kernel_for",
    "limbs_for",
    "modulus_supported",
    "powmod_many",
    "table_products",
]

#: The environment switch that sends every call to gmpy2 (read at every call).
SWITCH = "PPRL_NO_IFMA"

# The extension, None when it was not built (it is optional).
_montexp: ModuleType | None = load("pprl.crypto._montexp")

#: True when the extension is built and the CPU (and OS) support AVX-512F + IFMA.
HAVE_IFMA: bool = _montexp is not None and bool(_montexp.available())

_RADIX = 52
_MAX_LIMBS = 80
#: Largest modulus the C path takes: R = 2^(52 L) must exceed 4M with L <= 80.
MAX_BITS = _RADIX * _MAX_LIMBS - 2
#: Below this, gmpy2 is as fast (the C path always works on >= 8 limbs of 52 bits).
MIN_BITS = 256

#: The switch that keeps the AVX2 kernel off (``PPRL_NO_AVX2`` works too), read at every call.
AVX2_SWITCH = "PPRL_NO_AVX2MONT"
_avx2exp: ModuleType | None = load("pprl.crypto._avx2exp")
#: True when the AVX2 extension is built and the CPU (and OS) support AVX2.
HAVE_AVX2MONT: bool = _avx2exp is not None and bool(_avx2exp.available())
_RADIX27 = 27
_MAX_LIMBS27 = 160
#: Largest modulus the AVX2 path takes: R = 2^(27 L) must exceed 4M with L <= 160 (n² of a 2048-bit key).
AVX2_MAX_BITS = _RADIX27 * _MAX_LIMBS27 - 2


def limbs_for(bits: int) -> int:
    """L, the number of 52-bit limbs (a multiple of 8) for a ``bits``-bit modulus: 52 L >= bits + 2."""
    return 8 * -(-(bits + 2) // (_RADIX * 8))


def ifma_enabled() -> bool:
    """True when :func:`powmod_many` may use the C path (built, CPU support, no ``PPRL_NO_IFMA``)."""
    return HAVE_IFMA and not disabled(SWITCH)


def modulus_supported(modulus: int) -> bool:
    """True when the C path is enabled (:func:`ifma_enabled`) and takes this modulus (odd, MIN_BITS..MAX_BITS)."""
    modulus = int(modulus)
    return ifma_enabled() and modulus & 1 == 1 and MIN_BITS <= modulus.bit_length() <= MAX_BITS


def avx2_enabled() -> bool:
    """True when the AVX2 kernel may be used (built, CPU support, neither ``PPRL_NO_AVX2MONT`` nor ``PPRL_NO_AVX2``)."""
    return HAVE_AVX2MONT and not disabled(AVX2_SWITCH, "PPRL_NO_AVX2")


def avx2_supported(modulus: int) -> bool:
    """True when the AVX2 kernel is enabled and takes this modulus (odd, MIN_BITS..AVX2_MAX_BITS)."""
    modulus = int(modulus)
    return avx2_enabled() and modulus & 1 == 1 and MIN_BITS <= modulus.bit_length() <= AVX2_MAX_BITS


def kernel_for(modulus: int) -> str | None:
    """The C kernel this modulus goes to now: "ifma", else "avx2", else None (gmpy2)."""
    if modulus_supported(modulus):
        return "ifma"
    if avx2_supported(modulus):
        return "avx2"
    return None


def kernel_enabled(kernel: str) -> bool:
    """Whether a table built for ``kernel`` may use it now (the switches are read at every call)."""
    return ifma_enabled() if kernel == "ifma" else avx2_enabled()


def _extension() -> ModuleType:
    """The built extension (the switch is the callers' business: a built table is still converted back in C)."""
    if _montexp is None:
        raise RuntimeError("pprl.crypto._montexp is not built")
    return _montexp


def _ext(kernel: str) -> ModuleType:
    """The extension behind ``kernel`` ("ifma" or "avx2"); RuntimeError if it was not built."""
    if kernel == "ifma":
        return _extension()
    if _avx2exp is None:
        raise RuntimeError("pprl.crypto._avx2exp is not built")
    return _avx2exp


def _mont_params(modulus: int, kernel: str = "ifma") -> tuple[int, int, bytes, int]:
    """(bytes per number, L, R² mod M as bytes, k0 = -M⁻¹ mod 2^radix) for the C functions:
    52-bit limbs, L a multiple of 8, for "ifma"; 27-bit limbs for "avx2"; R = 2^(radix L) > 4M."""
    nbytes = (modulus.bit_length() + 7) // 8
    if kernel == "ifma":
        radix, limbs = _RADIX, limbs_for(modulus.bit_length())
    else:
        radix, limbs = _RADIX27, -(-(modulus.bit_length() + 2) // _RADIX27)
    r2 = int(gmpy2.powmod(2, 2 * radix * limbs, modulus)).to_bytes(nbytes, "little")
    k0 = -pow(modulus, -1, 1 << radix) % (1 << radix)
    return nbytes, limbs, r2, k0


def powmod_many(bases: Iterable[Any], exponent: int, modulus: int) -> list[Any]:
    """``[pow(b, exponent, modulus) for b in bases]``, on AVX-512 IFMA or AVX2 when possible.

    ``bases`` may be ints or gmpy2 ``mpz`` (any sign, any size); the results
    are fully reduced, in [0, modulus).  The C paths return ints, gmpy2's
    returns ``mpz``; they are equal.
    """
    exponent, modulus = int(exponent), int(modulus)
    items: Sequence[Any] = bases if isinstance(bases, Sequence) else list(bases)
    kernel = kernel_for(modulus) if exponent >= 0 else None
    if not items or kernel is None:
        e, m = gmpy2.mpz(exponent), gmpy2.mpz(modulus)
        return [gmpy2.powmod(b, e, m) for b in items]
    nbytes, limbs, r2, k0 = _mont_params(modulus, kernel)
    blob = b"".join(int(b % modulus).to_bytes(nbytes, "little") for b in items)
    out = _ext(kernel).powmod_batch(
        blob,
        exponent.to_bytes((exponent.bit_length() + 7) // 8, "little"),
        modulus.to_bytes(nbytes, "little"),
        r2,
        k0,
        limbs,
    )
    return [int.from_bytes(out[i : i + nbytes], "little") for i in range(0, len(out), nbytes)]


class MontgomeryTable:
    """A fixed-base table T[i][j] = base^(j·2^(w·i)) mod M in Montgomery form, for :func:`table_products`.

    ``kernel`` "ifma": ``data`` holds rows × 2^w entries of L native 64-bit
    words (52-bit limbs of a number < 2M congruent to x·R mod M, R = 2^(52 L)),
    640 bytes per entry at a 4096-bit M against 512 for the plain bytes.
    ``kernel`` "avx2": L native 32-bit words of 27-bit limbs, R = 2^(27 L)
    (608 bytes per entry at 4096 bits). Entry (i, 0) is the Montgomery one R,
    so a zero digit costs a multiplication like any other. It is one ``bytes``
    (or ``bytearray``) object that nothing writes after construction,
    so forked worker processes share its pages with the parent instead of
    copying them (Python objects per entry would be copied on first touch
    by reference counting).
    """

    __slots__ = ("modulus", "window", "rows", "limbs", "k0", "nbytes", "data", "kernel")

    def __init__(
        self, modulus: int, window: int, rows: int, data: bytes | bytearray, kernel: str = "ifma"
    ) -> None:
        self.modulus = int(modulus)
        self.kernel = kernel
        self.nbytes, self.limbs, _, self.k0 = _mont_params(self.modulus, kernel)
        self.window, self.rows, self.data = window, rows, data

    @property
    def word_bytes(self) -> int:
        """Bytes per limb in ``data``: 8 (IFMA) or 4 (AVX2)."""
        return 8 if self.kernel == "ifma" else 4

    @staticmethod
    def _kernel(modulus: int, kernel: str | None) -> str:
        chosen = kernel_for(modulus) if kernel is None else kernel
        if chosen is None or (chosen == "ifma" and not modulus_supported(modulus)) or (
            chosen == "avx2" and not avx2_supported(modulus)
        ):
            raise ValueError("no C kernel is available for this modulus")
        return chosen

    @classmethod
    def build(
        cls, base: int, modulus: int, window: int, rows: int, kernel: str | None = None
    ) -> MontgomeryTable:
        """Build the table of ``base`` directly in Montgomery form (one C multiplication per entry).

        ``kernel``: "ifma", "avx2" or None for :func:`kernel_for`. Raises ValueError when that
        kernel is unavailable or does not take the modulus.
        """
        modulus = int(modulus)
        kernel = cls._kernel(modulus, kernel)
        nbytes, limbs, r2, k0 = _mont_params(modulus, kernel)
        data = _ext(kernel).build_table(
            (int(base) % modulus).to_bytes(nbytes, "little"), window, rows,
            modulus.to_bytes(nbytes, "little"), r2, k0, limbs,
        )
        return cls(modulus, window, rows, data, kernel)

    @classmethod
    def from_rows(
        cls, rows: Sequence[Sequence[Any]], modulus: int, window: int, kernel: str | None = None
    ) -> MontgomeryTable:
        """Convert plain rows (rows[i][j] for 0 < j < 2^w, rows[i][0] ignored) with one AMM by R² per entry.

        Raises ValueError when no kernel takes the modulus.
        """
        modulus = int(modulus)
        kernel = cls._kernel(modulus, kernel)
        ext = _ext(kernel)
        nbytes, limbs, r2, k0 = _mont_params(modulus, kernel)
        word = 8 if kernel == "ifma" else 4
        entries, row_bytes = 1 << window, (1 << window) * limbs * word
        data = bytearray(len(rows) * row_bytes)
        one, mod = (1).to_bytes(nbytes, "little"), modulus.to_bytes(nbytes, "little")
        for i, row in enumerate(rows):  # row by row: no second full-size copy
            if len(row) != entries:
                raise ValueError("every row needs 2^window entries")
            plain = one + b"".join(int(x).to_bytes(nbytes, "little") for x in row[1:])
            data[i * row_bytes : (i + 1) * row_bytes] = ext.to_montgomery(plain, mod, r2, k0, limbs)
        return cls(modulus, window, len(rows), data, kernel)

    @classmethod
    def from_body(
        cls, body: Any, modulus: int, window: int, rows: int, kernel: str | None = None
    ) -> MontgomeryTable:
        """Convert the body of a table file: rows × (2^w - 1) big-endian entries (j ≥ 1) of
        len(modulus) bytes each, straight from the buffer (no ``mpz`` per entry).

        ValueError when an entry is 0 or not below ``modulus``, or no kernel takes it.
        """
        modulus = int(modulus)
        kernel = cls._kernel(modulus, kernel)
        ext = _ext(kernel)
        nbytes, limbs, r2, k0 = _mont_params(modulus, kernel)
        word = 8 if kernel == "ifma" else 4
        mod, entry = modulus.to_bytes(nbytes, "little"), limbs * word
        per_row, row_bytes = (1 << window) - 1, (1 << window) * limbs * word
        if len(body) != rows * per_row * nbytes:
            raise ValueError("table body length does not match")
        data = bytearray(rows * row_bytes)
        one = ext.to_montgomery((1).to_bytes(nbytes, "little"), mod, r2, k0, limbs)
        for i in range(rows):
            src = body[i * per_row * nbytes : (i + 1) * per_row * nbytes]
            data[i * row_bytes : i * row_bytes + entry] = one
            data[i * row_bytes + entry : (i + 1) * row_bytes] = ext.to_montgomery(src, mod, r2, k0, limbs, True)
        return cls(modulus, window, rows, data, kernel)

    def plain_rows(self) -> list[list[Any]]:
        """The entries back as ``mpz`` rows (rows[i][0] = 1), for the disk form and gmpy2 fallbacks."""
        per = 1 << self.window
        out = _ext(self.kernel).from_montgomery(
            self.data, self.modulus.to_bytes(self.nbytes, "little"), self.k0, self.limbs
        )
        nb, from_bytes = self.nbytes, gmpy2.mpz.from_bytes
        flat = [from_bytes(out[i : i + nb], "little") for i in range(0, len(out), nb)]
        return [[gmpy2.mpz(1), *flat[r * per + 1 : (r + 1) * per]] for r in range(self.rows)]


def table_products(table: MontgomeryTable, exponents: Sequence[int]) -> list[Any]:
    """``[base^e mod M for e in exponents]`` from a :class:`MontgomeryTable`, on its kernel
    (AVX-512 IFMA or AVX2; the caller checks :func:`kernel_enabled`).

    Each product is ∏_i T[i][digit_i(e)] over the ``rows`` base-2^w digits of
    e, several products in lockstep, without the GIL. Exponents must be in
    [0, 2^(w·rows)) (ValueError otherwise). Results are ``mpz``, fully
    reduced, equal to gmpy2's for the same exponents.

    Secret data: the digits are encryption randomness and index the table, so
    memory access depends on them (cache timing), as in the gmpy2 table path
    this replaces; the number of multiplications does not (a zero digit
    multiplies by the Montgomery one, where gmpy2's path skips it).
    """
    if not exponents:
        return []
    bits = table.window * table.rows
    if min(exponents) < 0 or max(exponents) >> bits:
        raise ValueError(f"exponents must be in [0, 2^{bits}) for this table")
    ebytes = (bits + 7) // 8
    blob = b"".join(int(e).to_bytes(ebytes, "little") for e in exponents)
    out = _ext(table.kernel).table_products(
        table.data, table.window, table.rows, blob, ebytes,
        table.modulus.to_bytes(table.nbytes, "little"), table.k0, table.limbs,
    )
    nb, from_bytes = table.nbytes, gmpy2.mpz.from_bytes
    return [from_bytes(out[i : i + nb], "little") for i in range(0, len(out), nb)]
