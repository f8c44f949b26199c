"""Type stub for the C extension ``pprl.crypto._avx2exp`` (pprl/crypto/_avx2exp.c)."""

from typing_extensions import Buffer

def available() -> bool:
    """The CPU and OS support AVX2."""

def powmod_batch(bases: Buffer, exponent: Buffer, modulus: Buffer, r2: Buffer, k0: int, limbs: int, /) -> bytes:
    """base^exponent mod modulus for each len(modulus)-byte little-endian base (< modulus)."""

def to_montgomery(
    values: Buffer, modulus: Buffer, r2: Buffer, k0: int, limbs: int, big_endian: bool = False, /
) -> bytes:
    """x R mod M as ``limbs`` native uint32 (27-bit limbs) per value."""

def from_montgomery(data: Buffer, modulus: Buffer, k0: int, limbs: int, /) -> bytes:
    """The inverse of :func:`to_montgomery`, fully reduced."""

def build_table(base: Buffer, window: int, rows: int, modulus: Buffer, r2: Buffer, k0: int, limbs: int, /) -> bytes:
    """The :func:`table_products` table of ``base``."""

def table_products(
    table: Buffer, window: int, rows: int, exponents: Buffer, ebytes: int, modulus: Buffer, k0: int, limbs: int, /
) -> bytes:
    """Fixed-base table products base^e mod modulus, one per exponent."""
