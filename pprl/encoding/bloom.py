"""Bloom-filter bit positions for tokens, exactly as clkhash computes them.

``blakeHash`` and ``doubleHash`` positions, memoised per token
(:class:`TokenHasher`); filters are Python ints whose big-endian bytes equal
bitarray's ``tobytes()``, so whole filters OR and fold as single int operations.

The C extension ``pprl.encoding._bloom`` computes whole values' masks for the
common features (n-gram or exact comparison, ``blakeHash``, UTF-8 or ASCII
tokens, no salt): tokenising, BLAKE2b and setting bits in one call per batch
(:func:`native_masker`). It is portable C (no instruction-set variants) and
gives exactly the masks of the Python path here, which runs when it was not
built, for other features, or when ``PPRL_NO_BLOOM`` is set to anything but
``""``/``"0"`` (read at every batch, :func:`bloom_enabled`).

Design: docs/design.md#clk-encoding
"""

from __future__ import annotations

import codecs
import hmac
import struct
from collections.abc import Collection
from hashlib import blake2b, md5, sha1
from types import ModuleType
from typing import Any

import numpy as np

from pprl._native import disabled, load
from pprl.encoding.hashing import Hashing
from pprl.encoding.tokens import ExactComparison, NgramComparison

__all__ = [
    "BLOOM_SWITCH",
    "HAVE_BLOOM",
    "TokenHasher",
    "blake_positions",
    "bloom_enabled",
    "double_hash_positions",
    "fold_masks",
    "masks_to_bytes",
    "native_masker",
]

#: The environment switch that sends value masks to the Python path (read at every batch).
BLOOM_SWITCH = "PPRL_NO_BLOOM"

# The extension itself, None when it was not built.
_bloom: ModuleType | None = load("pprl.encoding._bloom")

#: True when ``pprl.encoding._bloom`` is built (portable C: usable on every CPU).
HAVE_BLOOM: bool = _bloom is not None

_NATIVE_MAX_BITS = 2048  # the extension's limit on bits per token (64 BLAKE2b salts)


def bloom_enabled() -> bool:
    """True when value masks are computed by the C extension now (built, and ``PPRL_NO_BLOOM`` unset)."""
    return _bloom is not None and not disabled(BLOOM_SWITCH)


def native_masker(hashing: Hashing, key: bytes, encoding: str, length: int) -> Any | None:
    """The extension's masker for one unsalted feature, or None when it cannot compute its masks.

    Its ``masks(texts)`` gives the filter mask (an int, as :meth:`TokenHasher.mask` ORed
    over the value's tokens with clkhash's bits per token) of every normalised, checked
    text; it raises ``UnicodeError`` for a text its encoding cannot carry.
    """
    if _bloom is None or hashing.hash_type != "blakeHash" or not 1 <= len(key) <= 64:
        return None
    if not 8 <= length <= 65536 or length & (length - 1) or hashing.bits > _NATIVE_MAX_BITS:
        return None
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        return None
    if codec not in ("utf-8", "ascii"):
        return None
    comparison = hashing.comparison
    if type(comparison) is ExactComparison:
        n, positional = 0, False
    elif type(comparison) is NgramComparison and 1 <= comparison.n <= 64:
        n, positional = comparison.n, comparison.positional
    else:
        return None
    return _bloom.Table(key, length, n, positional, hashing.strategy == "bitsPerToken", hashing.bits,
                        codec == "ascii")

_SHORTS = struct.Struct("<32H")
TOKEN_CACHE_SIZE = 1 << 17


def blake_positions(token: bytes, k: int, key: bytes, length: int) -> list[int]:
    """The ``k`` positions clkhash's ``blake_hash_token`` gives ``token``."""
    shorts: list[int] = []
    for i in range((k + 31) // 32):
        shorts.extend(_SHORTS.unpack(blake2b(token, key=key, salt=str(i).encode()).digest()))
    return [s % length for s in shorts[:k]]


def _double_hash_pair(token: bytes, key_sha1: bytes, key_md5: bytes, length: int,
                      prevent_singularity: bool) -> tuple[int, int]:
    h1 = int.from_bytes(hmac.digest(key_sha1, token, sha1), "big") % length
    h2 = int.from_bytes(hmac.digest(key_md5, token, md5), "big") % length
    if prevent_singularity:
        j = 0
        while h2 == 0:
            h2 = int.from_bytes(hmac.digest(key_md5, token + chr(j).encode(), md5), "big") % length
            j += 1
    return h1, h2


def double_hash_positions(token: bytes, k: int, key_sha1: bytes, key_md5: bytes,
                          length: int, prevent_singularity: bool = False) -> list[int]:
    """The ``k`` positions clkhash's double hashing gives ``token``."""
    h1, h2 = _double_hash_pair(token, key_sha1, key_md5, length, prevent_singularity)
    return [(h1 + i * h2) % length for i in range(k)]


BIT_TABLE_MAX = 4096  # precompute single-bit masks for filters up to this length
BATCH_MIN = 16  # fewer new tokens than this are hashed one by one
BATCH_CELLS = 1 << 22  # bytes of scratch (tokens x filter length) per numpy batch


class _MaskCache(dict):
    """token -> filter mask for one feature and one ``k``; computes on a miss."""

    __slots__ = ("_hasher", "_k")

    def __init__(self, hasher: TokenHasher, k: int) -> None:
        super().__init__()
        self._hasher = hasher
        self._k = k

    def __missing__(self, token: str) -> int:
        h = self._hasher
        bits = h.bits
        top = h.length - 1
        mask = 0
        for p in h.positions(token, self._k):
            mask |= bits[p] if bits is not None else 1 << (top - p)
        if len(self) >= TOKEN_CACHE_SIZE:
            self.clear()
        self[token] = mask
        return mask


class TokenHasher:
    """Turns one feature's tokens into filter masks (ints), memoised per (token, k).

    ``fill`` hashes many new tokens at once and sets their bits with numpy,
    which is several times faster than one big-int OR per bit; single
    lookups fall back to the scalar path.
    """

    def __init__(self, hash_type: str, keys: tuple[bytes, bytes], encoding: str, length: int,
                 prevent_singularity: bool = False) -> None:
        if hash_type not in ("blakeHash", "doubleHash"):
            raise ValueError(f"unsupported hash type {hash_type!r}")
        if hash_type == "blakeHash" and length & (length - 1):
            raise ValueError("blakeHash needs a filter length that is a power of two")
        self.hash_type = hash_type
        self.keys = keys
        self.encoding = encoding
        self.length = length
        self.prevent_singularity = prevent_singularity
        top = length - 1
        self.bits = [1 << (top - p) for p in range(length)] if length <= BIT_TABLE_MAX else None
        self._caches: dict[int, _MaskCache] = {}

    def positions(self, token: str, k: int) -> list[int]:
        """Bit positions (before folding) that ``token`` sets when inserted ``k`` times."""
        data = token.encode(self.encoding)
        if self.hash_type == "blakeHash":
            return blake_positions(data, k, self.keys[0], self.length)
        return double_hash_positions(data, k, self.keys[0], self.keys[1], self.length,
                                     self.prevent_singularity)

    def cache(self, k: int) -> _MaskCache:
        """The memo ``token -> mask`` for ``k`` insertions; index it with a token."""
        c = self._caches.get(k)
        if c is None:
            c = self._caches[k] = _MaskCache(self, k)
        return c

    def mask(self, token: str, k: int) -> int:
        """Filter mask of ``token`` inserted ``k`` times."""
        return self.cache(k)[token]

    def fill(self, k: int, tokens: Collection[str]) -> None:
        """Compute and memoise the masks of ``tokens`` (not yet cached) for ``k`` insertions."""
        cache = self.cache(k)
        if len(cache) + len(tokens) > TOKEN_CACHE_SIZE:
            cache.clear()  # before, never during: callers rely on these tokens staying cached
        if len(tokens) < BATCH_MIN or k < 1:
            for t in tokens:
                cache[t]
            return
        todo = list(tokens)
        step = max(1, BATCH_CELLS // self.length)
        for start in range(0, len(todo), step):
            part = todo[start:start + step]
            cache.update(zip(part, self._batch_masks(part, k)))

    def _batch_masks(self, tokens: list[str], k: int) -> list[int]:
        length = self.length
        enc = self.encoding
        n = len(tokens)
        if self.hash_type == "blakeHash":
            key = self.keys[0]
            macs = (k + 31) // 32
            # A keyed, salted BLAKE2b state copied per token skips re-hashing the key block.
            bases = [blake2b(key=key, salt=str(i).encode()) for i in range(macs)]
            parts: list[bytes] = []
            add = parts.append
            for t in tokens:
                data = t.encode(enc)
                for base in bases:
                    h = base.copy()
                    h.update(data)
                    add(h.digest())
            digests = b"".join(parts)
            shorts = np.frombuffer(digests, dtype="<u2").reshape(n, 32 * macs)[:, :k]
            pos = (shorts & (length - 1)).astype(np.intp)
        else:
            key_sha1, key_md5 = self.keys
            pairs = [_double_hash_pair(t.encode(enc), key_sha1, key_md5, length,
                                       self.prevent_singularity) for t in tokens]
            hh = np.array(pairs, dtype=np.int64).reshape(n, 2)
            pos = ((hh[:, :1] + np.arange(k, dtype=np.int64)[None, :] * hh[:, 1:]) % length).astype(np.intp)
        grid = np.zeros((n, length), dtype=np.uint8)
        grid[np.repeat(np.arange(n), pos.shape[1]), pos.ravel()] = 1
        blob = np.packbits(grid, axis=1).data.cast("B")
        width = (length + 7) // 8
        pad = -length % 8
        from_bytes = int.from_bytes
        if pad:
            return [from_bytes(blob[i:i + width], "big") >> pad for i in range(0, n * width, width)]
        return [from_bytes(blob[i:i + width], "big") for i in range(0, n * width, width)]


def fold_masks(masks: list[int], length: int, folds: int) -> list[int]:
    """XOR-fold each filter ``folds`` times: first half XOR second half (as clkhash)."""
    for _ in range(folds):
        length >>= 1
        low = (1 << length) - 1
        masks = [(m >> length) ^ (m & low) for m in masks]
    return masks


def masks_to_bytes(masks: list[int], l: int) -> bytes:  # noqa: E741 (clkhash's name for the filter length)
    """Concatenated ``bitarray.tobytes()`` of ``l``-bit filters (zero-padded to bytes)."""
    pad = -l % 8
    size = (l + 7) // 8
    if pad:
        return b"".join([(m << pad).to_bytes(size, "big") for m in masks])
    return b"".join([m.to_bytes(size, "big") for m in masks])
