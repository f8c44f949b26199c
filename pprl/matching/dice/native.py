"""The native Dice kernel: the C extension ``pprl.matching.dice._dice``, loaded if it can be.

Part of the Dice candidate generation described in
:mod:`pprl.matching.dice.similarity`.  The extension is built with the package:
64-bit words, hardware popcount (AVX-512 VPOPCNTDQ or POPCNT, chosen at run
time; portable code elsewhere), four left rows per pass over the right rows,
the GIL released so blocks run on all cores.  It computes exactly what the
numpy fallback (:mod:`pprl.matching.dice.fallback`) computes.

It is not used when it cannot be imported or the environment variable
``PPRL_NO_NATIVE`` is set (to anything but ``0``); :data:`NATIVE` says
whether it is in use.  Tests set ``_native`` to None to run the numpy path
and ``_ISA`` to force one variant.
"""

from __future__ import annotations

import os
from types import ModuleType

import numpy as np

from pprl.matching.dice.rows import Job, Triples, anonlink_delta

__all__ = ["NATIVE", "NativeRun", "loaded"]


def _load_native() -> ModuleType | None:
    """The C kernel, or None when it is missing or ``PPRL_NO_NATIVE`` is set."""
    if os.environ.get("PPRL_NO_NATIVE", "").strip() not in ("", "0"):
        return None
    try:
        from pprl.matching.dice import _dice
    except ImportError:
        return None
    return _dice


# The kernel in use; tests set it to None to run the numpy path.
_native: ModuleType | None = _load_native()

#: True when the native kernel is in use, False for the numpy fallback.
NATIVE: bool = _native is not None

# Force one native variant ("generic", "popcnt", "avx512"); None picks the
# fastest this CPU supports.  For tests and benchmarks.
_ISA: str | None = None
_ISA_CODES = {"generic": 0, "popcnt": 1, "avx512": 2}
_AVX512_MAX_WORDS = 1023  # the AVX-512 kernel packs counts into 16 bits


def loaded() -> bool:
    """Whether comparisons run on the native kernel (False: the numpy fallback)."""
    return _native is not None


def _kernel() -> ModuleType:
    """The native kernel; only called on the native path."""
    if _native is None:
        raise RuntimeError("the native Dice kernel is not loaded")
    return _native


def _choose_isa(nwords: int) -> int:
    """The variant code to run rows of ``nwords`` 64-bit words with."""
    available = _kernel().isas()
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
        self.need: bytes = _kernel().need_table(job.t, 64 * a.nwords)
        self.isa: int = _choose_isa(a.nwords)

    def block(self, r0: int, r1: int) -> Triples:
        """Pairs of sorted left rows ``r0 .. r1-1``, by the C kernel (GIL released)."""
        job = self.job
        a, b = job.pa.native, job.pb.native
        delta = anonlink_delta(job.t) if job.window == "anonlink" else None
        bi, bj, bs = _kernel().pairs(
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
