"""The native Dice kernel: the C extension ``pprl.matching.dice._dice``, loaded if it can be.

Part of the Dice candidate generation described in
:mod:`pprl.matching.dice.similarity`.  The extension is built with the package:
64-bit words, hardware popcount (AVX-512 VPOPCNTDQ or POPCNT, chosen at run
time; portable code elsewhere), four left rows per pass over the right rows,
the GIL released so blocks run on all cores.  It computes exactly what the
numpy fallback (:mod:`pprl.matching.dice.fallback`) computes.

It is not used when it was not built or the environment variable
``PPRL_NO_DICE`` (or its older name ``PPRL_NO_NATIVE``) is set to anything but
``0``, read at every call (:mod:`pprl._native`).  :data:`HAVE_DICE` says whether
it is built, :func:`dice_enabled` whether it is in use now.  Tests set ``_native``
to None to run the numpy path and ``_ISA`` to force one variant.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from pprl._native import disabled, load
from pprl.matching.dice.rows import Job, Triples, anonlink_delta

__all__ = ["HAVE_DICE", "NATIVE", "SWITCH", "NativeRun", "dice_enabled", "loaded"]

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

# Force one native variant ("generic", "popcnt", "avx512"); None picks the
# fastest this CPU supports.  For tests and benchmarks.
_ISA: str | None = None
_ISA_CODES = {"generic": 0, "popcnt": 1, "avx512": 2}
_AVX512_MAX_WORDS = 1023  # the AVX-512 kernel packs counts into 16 bits


def _kernel() -> ModuleType:
    """The native kernel; only called on the native path."""
    kernel = _extension()
    if kernel is None:
        raise RuntimeError("the native Dice kernel is not loaded")
    return kernel


def _choose_isa(kernel: ModuleType, nwords: int) -> int:
    """The variant code to run rows of ``nwords`` 64-bit words with on ``kernel``."""
    available = kernel.isas()
    if _ISA is not None:
        if _ISA not in available:
            raise ValueError(f"kernel variant {_ISA!r} is not available here: {available}")
        return _ISA_CODES[_ISA]
    usable = [name for name in available if name != "avx512" or nwords <= _AVX512_MAX_WORDS]
    return _ISA_CODES[usable[-1]]


class NativeRun:
    """One job on the C kernel.

    The native layouts, the kernel's table of needed intersections and its
    variant are built up front, before threads share the job.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        a = job.pa.native
        _ = job.pb.native
        self.kernel = _kernel()  # kept: the switch may flip while blocks run
        self.need: bytes = self.kernel.need_table(job.t, 64 * a.nwords)
        self.isa: int = _choose_isa(self.kernel, a.nwords)

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
            b.rest,
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
        )
        return (
            np.frombuffer(bi, dtype=np.int64),
            np.frombuffer(bj, dtype=np.int64),
            np.frombuffer(bs, dtype=np.float64),
        )
