"""The native Dice kernel: the C extension ``pprl.matching.dice._dice``, loaded if it can be.

Part of the Dice candidate generation described in
:mod:`pprl.matching.dice.similarity`.  The extension is built with the package:
64-bit words, hardware popcount, four left rows per pass over the right rows,
the GIL released so blocks run on all cores.  It computes exactly what the
numpy fallback (:mod:`pprl.matching.dice.fallback`) computes.

It is not used when it was not built or the environment variable
``PPRL_NO_DICE`` (or its older name ``PPRL_NO_NATIVE``) is set to anything but
``0``, read at every call (:mod:`pprl._native`).  :data:`HAVE_DICE` says whether
it is built, :func:`dice_enabled` whether it is in use now.

Variants (ISAs), all with identical results: ``generic`` (portable C),
``popcnt`` (x86 POPCNT), ``avx2`` (x86 AVX2 nibble lookup), ``avx512`` (x86
AVX-512 VPOPCNTDQ) and ``neon`` (aarch64).  :func:`isas` lists those this CPU
runs, best last; each job takes the best one that fits its rows, except those
switched off with ``PPRL_NO_POPCNT``, ``PPRL_NO_AVX2``, ``PPRL_NO_AVX512`` or
``PPRL_NO_NEON`` (read at every job; with all of them set the generic C code
runs).  :func:`force_isa` pins one variant (benchmarks' ``--isa``; tests set
``_ISA``), overriding those switches, and refuses a variant this CPU lacks.
Tests set ``_native`` to None to run the numpy path and ``_SPLIT`` to force the
early-exit checkpoint.

Bit-sliced filter: where it pays, a job runs the right rows transposed into
blocks of 256 (one bit per row in a 256-bit column) and counts, for each left
row, all 256 intersections of a block at once with carry-save adders; only
the pairs that can reach the threshold are then counted exactly (see
``_dice.c``).  :func:`choose_bitslice` decides per job from a cost estimate
on the same sample as the checkpoint; ``PPRL_NO_BITSLICE`` (read at every
job) keeps it off, and tests pin it with ``_BITSLICE``.  It runs with AVX2
on the ``avx2`` variant, with AVX-512VL (``vpternlogq``: two instructions
per carry-save adder instead of five) on ``avx512`` (AVX2 where the CPU
lacks AVX-512VL), and as portable C on ``generic`` and ``popcnt``; results
are identical either way.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pprl._native import disabled, load
from pprl.matching.dice.rows import Job, Triples, aligned_zeros, anonlink_delta, lane_popcount

__all__ = [
    "BITSLICE_SWITCH",
    "HAVE_DICE",
    "ISAS",
    "ISA_SWITCHES",
    "NATIVE",
    "SWITCH",
    "NativeRun",
    "alive_fractions",
    "choose_bitslice",
    "choose_split",
    "current_isa",
    "dice_enabled",
    "force_isa",
    "isas",
    "loaded",
    "split_cost",
    "transposed",
]

#: The environment switch that sends comparisons to the numpy path (read at every call).
SWITCH = "PPRL_NO_DICE"
#: Its older name, still honoured.
SWITCH_ALIAS = "PPRL_NO_NATIVE"

# The extension itself, None when it was not built.
_dice: ModuleType | None = load("pprl.matching.dice._dice")

#: True when the native kernel is built (it runs on every CPU: the variant is chosen at run time).
HAVE_DICE: bool = _dice is not None


def _extension() -> ModuleType | None:
    """The kernel to run now: None when it is not built, switched off, or pinned off by a test.

    Tests pin the numpy path by setting the module attribute ``_native`` to None;
    until then ``_native`` is computed by :func:`__getattr__`.
    """
    if disabled(SWITCH, SWITCH_ALIAS):
        return None
    pinned: ModuleType | None = globals().get("_native", _dice)
    return pinned


def dice_enabled() -> bool:
    """Whether comparisons run on the native kernel now (False: the numpy fallback)."""
    return _extension() is not None


def loaded() -> bool:
    """Same as :func:`dice_enabled` (the older name)."""
    return dice_enabled()


def __getattr__(name: str) -> object:
    """``NATIVE`` (:func:`dice_enabled`) and ``_native`` (the kernel in use, or None), evaluated on access."""
    if name == "NATIVE":
        return dice_enabled()
    if name == "_native":
        return _extension()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


NATIVE: bool  # provided by __getattr__: True when the native kernel is in use now

#: Every kernel variant the extension knows, in its order (best last on each CPU).
ISAS: tuple[str, ...] = ("generic", "popcnt", "avx2", "avx512", "neon")
#: Environment switches that keep the automatic choice off a variant (read at every job).
ISA_SWITCHES: dict[str, str] = {
    "popcnt": "PPRL_NO_POPCNT",
    "avx2": "PPRL_NO_AVX2",
    "avx512": "PPRL_NO_AVX512",
    "neon": "PPRL_NO_NEON",
}
_ISA_CODES = {name: code for code, name in enumerate(ISAS)}
# The vector variants take rows of at most this many 64-bit words (see _dice.c).
_WIDE_MAX_WORDS = 1023
_WIDE = frozenset({"avx2", "avx512", "neon"})

# Force one native variant (a name of ISAS); None picks the best usable one.
# For tests and benchmarks: set it with force_isa(), which checks the name.
_ISA: str | None = None

# The early-exit checkpoint (see _dice.c): after `split` words of a pair the
# kernel drops the pair when even the rest of both rows could not reach the
# threshold.  A split other than nwords must be a multiple of the variant's
# step (its vector width in words).  A variant compares a group of left rows with
# each right row and stops only when the whole group can.  In words of
# comparison work per pair, the check costs _CHECK_COST[0] always and
# _CHECK_COST[1] more for the comparisons that go on, and a mispredicted
# branch _BRANCH_COST (avx2 checks a batch of right rows first, then finishes
# the survivors: hardly a branch to mispredict): fitted to
# benchmarks/bench_similarity.py's filters (512 to 4096 bits, fills 0.3 and
# 0.5) on an AMD EPYC (Zen 4).
_SPLIT_STEP = {"generic": 1, "popcnt": 1, "avx2": 4, "avx512": 8, "neon": 1}
_GROUP_ROWS = {"generic": 4, "popcnt": 4, "avx2": 8, "avx512": 4, "neon": 4}
_CHECK_COST = {
    "generic": (2.0, 0.5), "popcnt": (2.0, 0.5), "avx2": (1.0, 2.5), "avx512": (1.2, 3.0), "neon": (2.0, 0.5),
}
_BRANCH_COST = {"generic": 5.0, "popcnt": 5.0, "avx2": 1.0, "avx512": 8.0, "neon": 5.0}
# The sample the checkpoint is chosen on: groups of left rows, and at most
# this many (group, right row) pairs in all, a small part of the job.
_SAMPLE_GROUPS = 64
_SAMPLE_PAIRS = 4096
_SAMPLE_CELLS = 1 << 20
# Tests: force the split (None: chosen on the sample).
_SPLIT: int | None = None

#: The environment switch that keeps the bit-sliced filter off (read at every job).
BITSLICE_SWITCH = "PPRL_NO_BITSLICE"
# Tests: force the bit-sliced filter on or off (None: chosen by choose_bitslice).
_BITSLICE: bool | None = None
# Right rows per transposed block, uint64 lanes per column (as in _dice.c).
_BS_ROWS = 256
_BS_LANES = 4
# Where the filter runs: AVX2 on avx2, AVX-512VL on avx512, portable C on generic
# and popcnt (not measured on NEON hardware: neon keeps its own kernel).
_BS_ISAS = frozenset({"generic", "popcnt", "avx2", "avx512"})
# The cost model, in nanoseconds on one core of an AMD EPYC (Zen 4), fitted to
# benchmarks/bench_similarity.py's filters: the usual kernel costs
# _WORD_NS[isa] per word of choose_split's expected work per pair; the filter
# _BS_BIT_NS[isa] per set bit of the left row per block of right rows it
# touches, times the share of set bits it reads before every row of the
# block is out of reach, plus _EXACT_NS[isa] per word for each pair it lets through.
_WORD_NS = {"generic": 1.8, "popcnt": 0.27, "avx2": 0.155, "avx512": 0.075, "neon": 1.0}
_BS_BIT_NS = {"generic": 1.6, "popcnt": 1.6, "avx2": 0.62, "avx512": 0.45}
_EXACT_NS = {"generic": 2.0, "popcnt": 0.4, "avx2": 0.4, "avx512": 0.4}


def _kernel() -> ModuleType:
    """The native kernel; only called on the native path."""
    kernel = _extension()
    if kernel is None:
        raise RuntimeError("the native Dice kernel is not loaded")
    return kernel


def isas() -> tuple[str, ...]:
    """Variants this CPU runs, best last (empty when the kernel is not built)."""
    return tuple(_dice.isas()) if _dice is not None else ()


def _check_isa(name: str, available: tuple[str, ...]) -> None:
    if name not in _ISA_CODES:
        raise ValueError(f"unknown Dice kernel variant {name!r} (known: {', '.join(ISAS)})")
    if name not in available:
        raise ValueError(
            f"Dice kernel variant {name!r} is not available on this CPU "
            f"(available: {', '.join(available) or 'none: the native kernel is not built'})"
        )


def force_isa(name: str | None) -> None:
    """Run every later job on variant ``name`` (None: the best usable one again).

    Raises ValueError, and changes nothing, when ``name`` is unknown or this
    CPU (or this build) lacks it.  Overrides the ``PPRL_NO_<ISA>`` switches.
    """
    global _ISA
    if name is not None:
        _check_isa(name, isas())
    _ISA = name


def _choose_isa(kernel: ModuleType, nwords: int) -> str:
    """The variant to run rows of ``nwords`` 64-bit words with on ``kernel``."""
    available = tuple(kernel.isas())
    if _ISA is not None:
        _check_isa(_ISA, available)
        if _ISA in _WIDE and nwords > _WIDE_MAX_WORDS:
            raise ValueError(
                f"Dice kernel variant {_ISA!r} takes rows of at most {64 * _WIDE_MAX_WORDS} bits"
            )
        return _ISA
    usable = [
        name
        for name in available
        if not (name in _WIDE and nwords > _WIDE_MAX_WORDS)
        and not (name in ISA_SWITCHES and disabled(ISA_SWITCHES[name]))
    ]
    return usable[-1]


def current_isa(nwords: int = 16) -> str | None:
    """The variant a job with rows of ``nwords`` words would run on now (None: numpy)."""
    kernel = _extension()
    return None if kernel is None else _choose_isa(kernel, nwords)


def _default_split(nwords: int, step: int) -> int:
    """The kernel's own default: half-way, where the variant can stop there."""
    half = nwords // 2 if nwords >= 4 else nwords
    return half if half % step == 0 else nwords


def alive_fractions(job: Job, splits: np.ndarray, group: int, need: np.ndarray) -> np.ndarray:
    """For each split, the share of (group, right row) comparisons the checkpoint lets through.

    Measured on a sample: groups of ``group`` consecutive left rows in popcount
    order, right rows spread evenly over each group's window, as the kernel
    runs them.  NaN when the sample is empty.
    """
    a, b = job.pa.native, job.pb.native
    groups = a.counts.shape[0] // group
    if groups == 0:
        return np.full(splits.shape[0], np.nan)
    nwords = a.nwords
    # At most _SAMPLE_CELLS words of AND + popcount (wide rows: fewer groups and right rows).
    n_groups = max(1, min(groups, _SAMPLE_GROUPS, _SAMPLE_CELLS // (4 * group * nwords)))
    starts = group * np.unique(np.linspace(0, groups - 1, n_groups).astype(np.int64))
    per_group = max(4, min(_SAMPLE_PAIRS // starts.shape[0], _SAMPLE_CELLS // (starts.shape[0] * group * nwords)))
    rows = starts[:, None] + np.arange(group)  # (G, g) left rows
    lo, hi = job.lo[rows].min(axis=1), job.hi[rows].max(axis=1)
    keep = hi > lo
    if not keep.any():
        return np.full(splits.shape[0], np.nan)
    rows, lo, hi = rows[keep], lo[keep], hi[keep]
    cols = lo[:, None] + (np.arange(per_group) * (hi - lo)[:, None]) // per_group  # (G, S)
    wa, wb = a.words[rows], b.words[cols]  # (G, g, W), (G, S, W)
    ca = a.counts[rows].astype(np.int64)  # (G, g)
    cb = b.counts[cols].astype(np.int64)  # (G, S)
    common = np.cumsum(
        lane_popcount(wa[:, :, None, :] & wb[:, None, :, :]), axis=3, dtype=np.int32
    )[..., splits - 1]  # (G, g, S, splits)
    rest_a = (ca[:, :, None] - np.cumsum(lane_popcount(wa), axis=2, dtype=np.int64)[..., splits - 1])
    rest_b = (cb[:, :, None] - np.cumsum(lane_popcount(wb), axis=2, dtype=np.int64)[..., splits - 1])
    bound = common + np.minimum(rest_a[:, :, None, :], rest_b[:, None, :, :])
    needed = need[ca[:, :, None] + cb[:, None, :]]  # (G, g, S)
    alive = (bound >= needed[..., None]).any(axis=1)  # (G, S, splits)
    return alive.mean(axis=(0, 1))


def choose_split(job: Job, isa: str, need: np.ndarray) -> int:
    """The early-exit checkpoint (in words) for ``job`` on variant ``isa`` (see :func:`split_cost`)."""
    return split_cost(job, isa, need)[0]


def split_cost(job: Job, isa: str, need: np.ndarray) -> tuple[int, float | None]:
    """The early-exit checkpoint (in words) for ``job`` on variant ``isa``.

    For every split the variant allows, :func:`alive_fractions` measures on a
    sample how many comparisons go on past it; the split with the least
    expected work per pair wins (``split``, the check, the rest of the row
    for those that go on, and a mispredicted branch as often as the less
    likely outcome), against ``nwords`` without a checkpoint.  The results
    never depend on the split; only the time does.  ``need`` is the kernel's
    table of needed intersections.  Returns the split and its expected work
    per pair in words (None when no sample was measured).
    """
    nwords = job.pa.native.nwords
    step = _SPLIT_STEP[isa]
    if _SPLIT is not None:
        return _SPLIT, None
    n, m = job.pa.counts.shape[0], job.pb.counts.shape[0]
    if n * m < 16 * _SAMPLE_PAIRS:  # small jobs: not worth a sample
        return _default_split(nwords, step), None
    if nwords < 2 * step:
        return nwords, float(nwords)
    splits = np.arange(step, nwords, step)
    alive = alive_fractions(job, splits, _GROUP_ROWS[isa], need)
    if np.isnan(alive).any():
        return nwords, float(nwords)
    stop_cost, go_cost = _CHECK_COST[isa]
    cost = (
        splits
        + stop_cost
        + alive * (nwords - splits + go_cost)
        + _BRANCH_COST[isa] * np.minimum(alive, 1.0 - alive)
    )
    best = int(np.argmin(cost))
    return (int(splits[best]), float(cost[best])) if cost[best] < nwords else (nwords, float(nwords))


def choose_bitslice(job: Job, isa: str, need: np.ndarray, words_per_pair: float | None) -> bool:
    """Whether ``job`` runs the bit-sliced filter on variant ``isa``.

    Off for rows the vector kernels do not take (over 65472 bits; even when
    forced), where ``PPRL_NO_BITSLICE`` is set, on variants without it
    (``neon``), for small jobs (no sample) and for
    thresholds of 0 (every pair passes).  Otherwise the cheaper of two
    estimates per pair wins: the usual kernel's ``words_per_pair``
    (:func:`split_cost`) at ``_WORD_NS[isa]``, against the filter's reads of
    the left rows' set bits per block, shortened by its early exit, plus the
    exact count of the pairs that pass, measured on a sample.  Results never
    depend on the choice; only the time does.
    """
    nwords = job.pa.native.nwords
    if nwords > _WIDE_MAX_WORDS:  # the kernel's counters and layout stop there
        return False
    if _BITSLICE is not None:
        return _BITSLICE
    if disabled(BITSLICE_SWITCH) or isa not in _BS_ISAS or words_per_pair is None or job.t <= 0.0:
        return False
    window = (job.hi - job.lo).astype(np.float64)
    if not (window > 0).any():
        return False
    window = window[window > 0]
    # Pairs that reach the threshold, one left row at a time: the exact counts to do.
    passing = float(alive_fractions(job, np.array([nwords]), 1, need)[0])
    if np.isnan(passing):
        return False
    pa = float(job.pa.counts.mean())
    pb = float(job.pb.counts.mean())
    fill_b = min(pb / (64 * nwords), 0.999)
    # Early exit: a block is done once the bits left of A cannot lift even the
    # block's best row (about 3 sigma above the mean) to the threshold.
    t_need = float(need[min(int(round(pa + pb)), need.shape[0] - 1)])
    if t_need >= float(np.uint32(0xFFFFFFFF)):
        t_need = pa
    margin = 3.0 * np.sqrt(max(pa * fill_b * (1.0 - fill_b), 0.0))
    share = min(1.0, max(0.05, (pa - t_need + margin) / max((1.0 - fill_b) * pa, 1.0)))
    per_pair = float(np.mean((window / _BS_ROWS + 1.0) / window))
    bitslice_ns = _BS_BIT_NS[isa] * pa * share * per_pair + passing * _EXACT_NS[isa] * (nwords + 4)
    return bitslice_ns < _WORD_NS[isa] * words_per_pair


def transposed(rows: np.ndarray, nwords: int, kernel: ModuleType) -> np.ndarray:
    """The right rows ``rows`` ((m, nwords) uint64) in the bit-sliced filter's layout (see ``_dice.c``)."""
    m = rows.shape[0]
    out = aligned_zeros(-(-m // _BS_ROWS) * (64 * nwords + 1), _BS_LANES)
    kernel.transpose(rows, nwords, out)
    return out


class NativeRun:
    """One job on the C kernel.

    The native layouts, the kernel's table of needed intersections, its
    variant and its early-exit checkpoint (with the right rows' popcounts
    after it) are settled up front, before threads share the job.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        a = job.pa.native
        b = job.pb.native
        self.kernel = _kernel()  # kept: the switch may flip while blocks run
        self.need: bytes = self.kernel.need_table(job.t, 64 * a.nwords)
        self.isa_name: str = _choose_isa(self.kernel, a.nwords)
        self.isa: int = _ISA_CODES[self.isa_name]
        need = np.frombuffer(self.need, dtype=np.uint32)
        self.split, words_per_pair = split_cost(job, self.isa_name, need)
        #: Whether the bit-sliced filter runs (then self.bt holds the transposed right rows).
        self.bitslice: bool = b.words.shape[0] > 0 and choose_bitslice(
            job, self.isa_name, need, words_per_pair
        )
        self.bt: np.ndarray | None = transposed(b.words, b.nwords, self.kernel) if self.bitslice else None
        # The right rows' popcounts after the split (rows.py holds them for the half-way one).
        if self.split in (a.nwords, a.nwords // 2):
            self.b_rest: np.ndarray = b.rest
        else:
            self.b_rest = lane_popcount(b.words[:, self.split :]).sum(axis=1, dtype=np.uint32)

    def block(self, r0: int, r1: int) -> Triples:
        """Pairs of sorted left rows ``r0 .. r1-1``, by the C kernel (GIL released)."""
        job = self.job
        a, b = job.pa.native, job.pb.native
        delta = anonlink_delta(job.t) if job.window == "anonlink" else None
        bi, bj, bs = self.kernel.pairs(
            a.words,
            a.counts,
            a.index,
            b.words,
            b.counts,
            self.b_rest,
            b.index,
            job.lo,
            job.hi,
            self.need,
            a.nwords,
            r0,
            r1,
            -1.0 if delta is None else delta,
            -1 if job.k is None else job.k,
            self.isa,
            self.split,
            *(() if self.bt is None else (self.bt,)),
        )
        return (
            np.frombuffer(bi, dtype=np.int64),
            np.frombuffer(bj, dtype=np.int64),
            np.frombuffer(bs, dtype=np.float64),
        )
