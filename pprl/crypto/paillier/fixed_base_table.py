"""Fixed-base window tables: ``T[i][j] = base^(j·2^(w·i)) mod M``, so base^e is one product per window.

DJN encryption (:mod:`pprl.crypto.paillier.djn`) raises one public base h_s
to a fresh random exponent per ciphertext; with this table that costs about
ℓ/w modular multiplications instead of ~1.2·ℓ for a square-and-multiply.
The table lives either as gmpy2 ``mpz`` rows or, on CPUs with AVX-512 IFMA or
AVX2, only in Montgomery form for a C kernel (:mod:`pprl.crypto.montexp`). Its
disk form (``to_bytes``/``from_bytes``) is bound to the key's fingerprint and
base and spot-checked when read, so a damaged or foreign cache file is
refused rather than used. The exponent's digits index the table: like
gmpy2's powmod, this is not constant time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import Any

import gmpy2

from pprl.crypto import montexp
from pprl.errors import DataValidationError

__all__ = ["FixedBaseTable"]

_MAGIC = b"PPRL-DJN-TABLE-1"
_SPOT_CHECKS = 32


class FixedBaseTable:
    """Precomputed powers ``T[i][j] = base^(j·2^(w·i))`` mod ``modulus`` for fast ``base^e``.

    Either ``rows`` of ``mpz`` (:meth:`build`) or, for a C kernel (IFMA or AVX2), only a
    :class:`~pprl.crypto.montexp.MontgomeryTable` ``mont`` (:meth:`build_fast`,
    ``from_bytes(montgomery=True)``, :meth:`use_montgomery`); ``rows`` are then
    rebuilt on first use (the kernel's switch set later, tests) and kept.
    """

    __slots__ = ("modulus", "window", "exponent_bits", "_rows", "mont", "_mask")

    def __init__(
        self, modulus: Any, window: int, exponent_bits: int, rows: list[list[Any]] | None,
        mont: montexp.MontgomeryTable | None = None,
    ) -> None:
        self.modulus = gmpy2.mpz(modulus)
        self.window = window
        self.exponent_bits = exponent_bits
        self._rows = rows  # rows[i][j] for j in 0..2^w-1; rows[i][0] = 1 (unused)
        self.mont = mont
        self._mask = (1 << window) - 1

    @property
    def rows(self) -> list[list[Any]]:
        """The entries as ``mpz`` rows (rebuilt from the Montgomery form, once, if need be)."""
        if self._rows is None:
            self._rows = self._plain_rows()
        return self._rows

    def _plain_rows(self) -> list[list[Any]]:
        """The ``mpz`` rows, without keeping a rebuilt copy (for the disk form)."""
        if self._rows is not None:
            return self._rows
        return self.mont.plain_rows() if self.mont is not None else []

    @staticmethod
    def _check(window: int, exponent_bits: int) -> None:
        if not 1 <= window <= 16 or exponent_bits < 1:
            raise DataValidationError("table window must be 1..16 and the exponent length positive")

    @classmethod
    def build(cls, base: int, modulus: int, exponent_bits: int, window: int) -> FixedBaseTable:
        """Compute the ``mpz`` table: ⌈ℓ/w⌉·(2^w - 1) modular multiplications with gmpy2."""
        cls._check(window, exponent_bits)
        m = gmpy2.mpz(modulus)
        b = gmpy2.mpz(base) % m
        rows = []
        for _ in range(-(-exponent_bits // window)):
            row = [gmpy2.mpz(1), b]
            for _ in range((1 << window) - 2):
                row.append(row[-1] * b % m)
            rows.append(row)
            b = row[-1] * b % m  # base^(2^w) for the next row
        return cls(m, window, exponent_bits, rows)

    @classmethod
    def build_fast(cls, base: int, modulus: int, exponent_bits: int, window: int) -> FixedBaseTable:
        """The table in Montgomery form, built on IFMA (~3.5x faster than :meth:`build`) or AVX2,
        when :func:`~pprl.crypto.montexp.kernel_for` names a kernel; else :meth:`build`."""
        cls._check(window, exponent_bits)
        kernel = montexp.kernel_for(int(modulus))
        if kernel is None:
            return cls.build(base, modulus, exponent_bits, window)
        count = -(-exponent_bits // window)
        mont = montexp.MontgomeryTable.build(int(base), int(modulus), window, count, kernel)
        return cls(modulus, window, exponent_bits, None, mont)

    def use_montgomery(self) -> bool:
        """Convert the ``mpz`` rows to Montgomery form and drop them, when a C kernel takes
        the modulus (one Montgomery multiplication per entry); True if the table is now in that form."""
        kernel = montexp.kernel_for(int(self.modulus))
        if self.mont is None and self._rows is not None and kernel is not None:
            self.mont = montexp.MontgomeryTable.from_rows(self._rows, int(self.modulus), self.window, kernel)
            self._rows = None
        return self.mont is not None

    def pow(self, e: int) -> Any:
        """base^e mod modulus for 0 <= e < 2^exponent_bits, by one multiplication per digit."""
        return self.pow_many([e])[0]

    def pow_many(self, exponents: Sequence[int]) -> list[Any]:
        """``[self.pow(e) for e in exponents]``; several at once on IFMA or AVX2 in Montgomery form.

        Not constant time: each w-bit digit of e (secret randomness when
        encrypting) selects the table entry to load, on every path; the C
        paths multiply for zero digits too, so their operation count does not
        depend on e, where the gmpy2 path skips them.
        """
        for e in exponents:
            if e < 0 or e.bit_length() > self.exponent_bits:
                raise DataValidationError("exponent outside the table's range")
        if self.mont is not None and montexp.kernel_enabled(self.mont.kernel):
            return montexp.table_products(self.mont, exponents)
        m, w, mask, rows = self.modulus, self.window, self._mask, self.rows
        out = []
        for e in exponents:
            acc = None
            for row in rows:
                d = e & mask
                e >>= w
                if d:
                    acc = row[d] if acc is None else acc * row[d] % m
            out.append(gmpy2.mpz(1) if acc is None else acc)
        return out

    # --- disk form -----------------------------------------------------------------

    def _header(self, fingerprint: str, base: int) -> bytes:
        width = (self.modulus.bit_length() + 7) // 8
        head = {
            "fingerprint": fingerprint,
            "base_sha256": hashlib.sha256(int(base).to_bytes(width, "big")).hexdigest(),
            "exponent_bits": self.exponent_bits,
            "window": self.window,
            "entry_bytes": width,
        }
        return json.dumps(head, sort_keys=True, separators=(",", ":")).encode("ascii")

    def to_bytes(self, fingerprint: str, base: int) -> bytes:
        """Magic, header length + JSON header, entries (j ≥ 1, fixed width), SHA-256 trailer."""
        head = self._header(fingerprint, base)
        width = (self.modulus.bit_length() + 7) // 8
        body = b"".join(x.to_bytes(width, "big") for row in self._plain_rows() for x in row[1:])
        data = _MAGIC + len(head).to_bytes(4, "big") + head + body
        return data + hashlib.sha256(data).digest()

    @classmethod
    def from_bytes(
        cls, data: bytes, *, base: int, modulus: int, exponent_bits: int, window: int, fingerprint: str,
        montgomery: bool = False,
    ) -> FixedBaseTable | None:
        """Parse and verify :meth:`to_bytes` output for exactly these parameters; None if anything is off.

        ``montgomery``: straight into Montgomery form, without ``mpz`` rows, when a
        C kernel takes the modulus (the same checks, in C for the range of each entry).
        """
        m = gmpy2.mpz(modulus)
        expected = cls(m, window, exponent_bits, [])._header(fingerprint, base)
        width = (m.bit_length() + 7) // 8
        count, per_row = -(-exponent_bits // window), (1 << window) - 1
        start = len(_MAGIC) + 4 + len(expected)
        if (
            len(data) != start + count * per_row * width + 32
            or not data.startswith(_MAGIC)
            or data[len(_MAGIC) : start] != len(expected).to_bytes(4, "big") + expected
            or hashlib.sha256(data[:-32]).digest() != data[-32:]
        ):
            return None
        from_bytes = gmpy2.mpz.from_bytes
        kernel = montexp.kernel_for(int(m)) if montgomery else None
        if kernel is not None:
            body = memoryview(data)[start : start + count * per_row * width]
            try:
                mont = montexp.MontgomeryTable.from_body(body, int(m), window, count, kernel)
            except ValueError:  # an entry outside [1, m)
                return None
            table = cls(m, window, exponent_bits, None, mont)

            def entry(i: int, j: int) -> Any:
                pos = (i * per_row + j - 1) * width
                return from_bytes(body[pos : pos + width], "big")

            return table if table._plausible(base, entry, count) else None
        rows, pos = [], start
        for _ in range(count):
            row = [gmpy2.mpz(1)]
            for _ in range(per_row):
                x = from_bytes(data[pos : pos + width], "big")
                if not 0 < x < m:
                    return None
                row.append(x)
                pos += width
            rows.append(row)
        table = cls(m, window, exponent_bits, rows)
        return table if table._plausible(base, lambda i, j: rows[i][j], count) else None

    def _plausible(self, base: int, entry: Any, count: int) -> bool:
        """Cheap algebraic checks that catch a corrupted or naively edited table (entry(i, j) = T[i][j])."""
        m, top = self.modulus, (1 << self.window) - 1
        if entry(0, 1) != gmpy2.mpz(base) % m:
            return False
        for i in range(1, count):
            if entry(i, 1) != entry(i - 1, top) * entry(i - 1, 1) % m:
                return False
        for _ in range(_SPOT_CHECKS if top > 1 else 0):
            i, j = secrets.randbelow(count), 2 + secrets.randbelow(top - 1)
            if entry(i, j) != entry(i, j - 1) * entry(i, 1) % m:
                return False
        return True
