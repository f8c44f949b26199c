"""Type stub for the C extension ``pprl.crypto._h2c`` (pprl/crypto/_h2c.c)."""

from collections.abc import Iterable

from typing_extensions import Buffer

def hash_to_u(messages: Iterable[bytes], dst: Buffer, /) -> bytes:
    """RFC 9380 hash_to_curve (curve25519_XMD:SHA-512_ELL2_RO_) of each message: 32-byte u-coordinates, concatenated."""

def expand_message_xmd96(message: Buffer, dst: Buffer, /) -> bytes:
    """expand_message_xmd(message, dst, 96) with SHA-512."""

def map_to_u(field_bytes: Buffer, /) -> bytes:
    """The u-coordinate of each 96-byte record (two hash_to_field outputs), 32 bytes each, concatenated."""

def map_to_point(field_bytes: Buffer, /) -> tuple[bytes, bytes]:
    """For one 96-byte record, the point (u, v), each 32 bytes little-endian."""

def elligator2(field_element: Buffer, /) -> tuple[bytes, bytes]:
    """Elligator 2 of one 48-byte big-endian field element: the point (s, t), each 32 bytes little-endian."""

def x25519(key: Buffer, points: Buffer, isa: int, /) -> bytes:
    """libsodium's crypto_scalarmult(key, u) for every 32-byte u; 32 zero bytes where libsodium refuses."""

def hash_to_u_x25519(messages: Iterable[bytes], dst: Buffer, key: Buffer, isa: int, /) -> bytes:
    """x25519(key, hash_to_u(messages, dst), isa) in one call."""

def cpu_isa() -> int:
    """The fastest X25519 path this CPU runs: 0 portable, 1 AVX2, 2 AVX-512 IFMA."""
