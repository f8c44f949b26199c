"""Type stub for the C extension ``pprl.matching.dice._dice`` (pprl/matching/dice/_dice.c)."""

from typing_extensions import Buffer

def isas() -> tuple[str, ...]:
    """Kernel variants usable on this CPU ("generic", "popcnt", "avx2", "avx512", "neon"), best last."""

def need_table(threshold: float, nbits: int, /) -> bytes:
    """uint32 need[s], s = 0..2*nbits: the smallest intersection reaching the threshold."""

def pairs(
    a: Buffer,
    a_cnt: Buffer,
    a_idx: Buffer,
    b: Buffer,
    b_cnt: Buffer,
    b_rest: Buffer,
    b_idx: Buffer,
    lo: Buffer,
    hi: Buffer,
    need: Buffer,
    nwords: int,
    r0: int,
    r1: int,
    delta: float,
    k: int,
    isa: int,
    split: int = -1,
    bt: Buffer = ...,
    /,
) -> tuple[bytes, bytes, bytes]:
    """Dice pairs of left rows r0..r1-1 (popcount order) reaching the threshold: (i int64, j int64, sim float64).

    ``isa`` indexes ("generic", "popcnt", "avx2", "avx512", "neon"); ``split``
    is the early-exit checkpoint in words (-1: half-way where the variant can
    stop there), and ``b_rest`` the right rows' popcounts of the words after it.
    With ``bt`` (the right rows as :func:`transpose` lays them out) the
    bit-sliced filter runs instead (AVX2 on "avx2", AVX-512VL on "avx512",
    portable C elsewhere), with identical results.
    """

def transpose(b: Buffer, nwords: int, out: Buffer, /) -> None:
    """Right rows ``b`` (m rows of ``nwords`` words) into ``out``: blocks of 256 rows, column-wise.

    ``out`` holds ceil(m / 256) * (64 * nwords + 1) * 4 uint64: per block, column i
    is bit i of each of its rows (four uint64: row 64 l + x is bit x of lane l), then a zero column.
    """
