"""Candidate generation: pprl's Dice kernel against anonlink's, on the same CLKs.

What: in one run, on the same filters, time anonlink's
``find_candidate_pairs(..., dice_coefficient_accelerated, t)`` and pprl's
``find_candidates([a, b], t)`` on one core, then pprl on all cores, for each
threshold; print comparisons per second (``n * m / wall time``: every pair
counts, whether a kernel computes it or prunes it) and check that both find
exactly the same candidate pairs, in the same order, with bit-identical
similarities.

Why: issue 3 asks for at least twice anonlink's comparisons per second on one
core.  Runs of the two tools are interleaved and the medians reported, so a
busy machine slows both alike.  One-core figures pin the process to a single
CPU with ``os.sched_setaffinity``; anonlink's inputs are converted to
bitarrays beforehand (not timed), pprl's are the uint8 arrays it uses anyway.

The filters are random, ``--bits`` long, each with its own fill drawn around
``--fill`` (as CLKs of records with more or fewer tokens are); half of the
right-hand records are noisy copies of left-hand ones, so there are true
matches to find.

The native kernel runs the best variant this CPU has unless ``--isa`` forces
one (generic, popcnt, avx2, avx512, neon: each is refused where the CPU lacks
it) or ``PPRL_NO_AVX512=1``, ``PPRL_NO_AVX2=1``, ... switch variants off; the
header names the CPU and the variant, so each figure says what produced it.
Under each threshold a note says which path ran: the bit-sliced filter
(AVX2 on avx2, AVX-512VL on avx512, portable C on generic and popcnt; chosen per job, see
``pprl.matching.dice.native.choose_bitslice``) or the row-by-row kernel with
its early exit; ``--bitslice on|off`` forces the choice (``PPRL_NO_BITSLICE=1``
keeps the filter off too).

    python benchmarks/bench_similarity.py                     # 10k x 10k, t = 0.8 and 0.5
    python benchmarks/bench_similarity.py -n 20000 -m 5000 --thresholds 0.9
    python benchmarks/bench_similarity.py --isa avx2          # force a native variant
    python benchmarks/bench_similarity.py --isa avx2 --bitslice off   # the row-by-row AVX2 kernel
    PPRL_NO_AVX512=1 python benchmarks/bench_similarity.py    # as on an AVX2-only CPU
    PPRL_NO_NATIVE=1 python benchmarks/bench_similarity.py -n 2000 -m 2000   # numpy path
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from anchors import optional_anonlink as load_anonlink  # noqa: E402
from anchors import to_bitarrays  # noqa: E402

from pprl.matching.dice import native as dice_native
from pprl.matching.dice import rows as dice_rows
from pprl.matching.dice import similarity

__all__ = ["main", "make_filters"]


def make_filters(
    n: int, m: int, bits: int, fill: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` and ``m`` random filters of ``bits`` bits; half of the right ones copy left ones."""
    if bits % 8:
        raise ValueError(f"--bits must be a multiple of 8, got {bits}")
    rng = np.random.default_rng(seed)
    spread = min(fill, 1.0 - fill) * 0.25

    def draw(rows: int) -> np.ndarray:
        density = rng.uniform(fill - spread, fill + spread, size=(rows, 1))
        return np.packbits(rng.random((rows, bits)) < density, axis=1)

    a, b = draw(n), draw(m)
    copies = min(n, m) // 2
    src = rng.choice(n, size=copies, replace=False)
    dst = rng.choice(m, size=copies, replace=False)
    flips = rng.random((copies, bits)) < rng.uniform(0.0, 0.2, size=(copies, 1))
    b[dst] = a[src] ^ np.packbits(flips, axis=1)
    return a, b


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def same_candidates(ours: similarity.Candidates, theirs: tuple) -> bool:
    sims, (d0, d1), (r0, r1) = theirs
    return (
        np.array_equal(ours.similarity, np.asarray(sims, dtype=np.float64))
        and np.array_equal(ours.dataset, np.stack([d0, d1], axis=1).reshape(-1, 2))
        and np.array_equal(ours.record, np.stack([r0, r1], axis=1).reshape(-1, 2))
    )


def kernel_name(nwords: int) -> str:
    isa = dice_native.current_isa(nwords)
    if isa is None:
        return "numpy (fallback)"
    forced = " (forced)" if dice_native._ISA is not None else ""
    return f"native {isa}{forced}; this CPU has {', '.join(dice_native.isas())}"


def cpu_name() -> str:
    """The CPU's model name, as lscpu prints it (/proc/cpuinfo on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def checkpoint(a: np.ndarray, b: np.ndarray, t: float) -> tuple[int, int, bool] | None:
    """(split, nwords, bitslice): the native kernel's early-exit checkpoint and whether the bit-sliced filter runs."""
    if not dice_native.dice_enabled():
        return None
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), t, "anonlink", None, 2048)
    run = dice_native.NativeRun(job)
    return run.split, job.pa.native.nwords, run.bitslice


def path_note(isa: str | None, split: tuple[int, int, bool]) -> str:
    """Which kernel path ran, in words."""
    if split[2]:
        code = {"avx2": "AVX2", "avx512": "AVX-512VL"}.get(isa or "", "portable C")
        return f"path: bit-sliced filter ({code}, 256 right rows per block)"
    if split[0] < split[1]:
        return f"path: row-by-row kernel, early exit after {split[0]} of {split[1]} words"
    return "path: row-by-row kernel, no early exit"


def allowed_cpus() -> set[int]:
    """CPUs this process may run on (all of them where affinity is unsupported)."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def pin(cpus: set[int]) -> None:
    """Restrict this process to ``cpus`` (a no-op where affinity is unsupported)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def rate(pairs: int, seconds: float) -> str:
    return f"{pairs / seconds / 1e6:,.1f} M/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="left records (default 10000)")
    parser.add_argument("-m", type=int, default=10_000, help="right records (default 10000)")
    parser.add_argument("--bits", type=int, default=1024, help="filter length (default 1024)")
    parser.add_argument("--fill", type=float, default=0.30, help="mean fill (default 0.30)")
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.8, 0.5], help="(default 0.8 0.5)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs each (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--isa", choices=dice_native.ISAS, help="force a native kernel variant (default: the best)"
    )
    parser.add_argument(
        "--bitslice",
        choices=("auto", "on", "off"),
        default="auto",
        help="force the bit-sliced filter on or off (default: chosen per job)",
    )
    args = parser.parse_args(argv)
    if args.bitslice != "auto":
        dice_native._BITSLICE = args.bitslice == "on"
    if args.isa:
        if dice_native._native is None:
            parser.error("the native kernel is not built or switched off (PPRL_NO_DICE)")
        try:
            dice_native.force_isa(args.isa)
        except ValueError as exc:
            parser.error(str(exc))

    a, b = make_filters(args.n, args.m, args.bits, args.fill, args.seed)
    pairs = args.n * args.m
    anonlink = load_anonlink()
    if anonlink is not None:
        bits_a, bits_b = to_bitarrays(a), to_bitarrays(b)
        dice = anonlink.similarities.dice_coefficient_accelerated
        find_pairs = anonlink.candidate_generation.find_candidate_pairs

    all_cpus = allowed_cpus()
    one_cpu = {min(all_cpus)}
    fill = np.unpackbits(a, axis=1).mean()
    nwords = -(-args.bits // 64)
    print(
        f"Dice candidate generation: {args.n} x {args.m} filters of {args.bits} bits, "
        f"mean fill {fill:.1%}; median of {args.repeats} runs\n"
        f"CPU: {cpu_name()}; pprl kernel: {kernel_name(nwords)}"
    )
    if anonlink is None:
        print("anonlink is not installed (pip install -e '.[bench]'): timing pprl only")
    header = (
        f"{'t':>4}  {'candidates':>10}  {'anonlink 1 core':>16}  {'pprl 1 core':>14}  "
        f"{'ratio':>6}  {f'pprl {len(all_cpus)} cores':>14}  {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for t in args.thresholds:
        pin(one_cpu)
        try:
            ours_1: list[float] = []
            theirs_1: list[float] = []
            # One untimed warm-up of each, then interleaved timed runs.
            ours = similarity.find_candidates([a, b], t, workers=1)
            theirs = find_pairs([bits_a, bits_b], dice, t) if anonlink is not None else None
            for _ in range(args.repeats):
                seconds, ours = timed(lambda t=t: similarity.find_candidates([a, b], t, workers=1))
                ours_1.append(seconds)
                if anonlink is not None:
                    seconds, theirs = timed(lambda t=t: find_pairs([bits_a, bits_b], dice, t))
                    theirs_1.append(seconds)
        finally:
            pin(all_cpus)
        ours_all: list[float] = []
        many = similarity.find_candidates([a, b], t)
        for _ in range(args.repeats):
            seconds, many = timed(lambda t=t: similarity.find_candidates([a, b], t))
            ours_all.append(seconds)
        med_1, med_all = statistics.median(ours_1), statistics.median(ours_all)
        threads_agree = np.array_equal(many.record, ours.record) and np.array_equal(
            many.similarity, ours.similarity
        )
        if theirs is not None:
            med_theirs = statistics.median(theirs_1)
            same = same_candidates(ours, theirs) and threads_agree
            cells = [
                rate(pairs, med_theirs),
                rate(pairs, med_1),
                f"{med_theirs / med_1:.2f}x",
                rate(pairs, med_all),
                f"{med_theirs / med_all:.2f}x",
            ]
        else:
            cells = ["-", rate(pairs, med_1), "-", rate(pairs, med_all), "-"]
        print(
            f"{t:>4}  {len(ours):>10}  {cells[0]:>16}  {cells[1]:>14}  {cells[2]:>6}  "
            f"{cells[3]:>14}  {cells[4]:>6}"
        )
        notes = []
        if theirs is not None:
            notes.append(f"same candidates: {'yes' if same else 'no'}")
        split = checkpoint(a, b, t)
        if split is not None:
            notes.append(path_note(dice_native.current_isa(nwords), split))
        if notes:
            print("      " + "; ".join(notes))
        if not threads_agree:
            print("pprl's 1-core and all-core candidates differ", file=sys.stderr)
            return 1
        if theirs is not None and not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
