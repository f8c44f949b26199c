"""Type stub for the C extension ``pprl.encoding._bloom`` (pprl/encoding/_bloom.c)."""

from typing_extensions import Buffer

class Table:
    """One feature's settings and token memo: clkhash's blakeHash masks of n-gram or exact tokens."""

    def __init__(self, key: Buffer, length: int, n: int, positional: bool, per_token: bool, bits: int,
                 ascii_only: bool) -> None: ...
    def masks(self, texts: list[str], /) -> list[int]:
        """The filter mask of every text: bitarray ``tobytes()`` as a big-endian int."""
    def memo_size(self) -> int:
        """Number of tokens memoised."""
    def clear(self) -> None:
        """Empty the token memo."""
