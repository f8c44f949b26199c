"""Every Dice kernel variant (ISA) this CPU runs, against the portable C path and a numpy reference.

The variants (generic C, POPCNT, AVX2, AVX-512 VPOPCNTDQ, aarch64 NEON) and
every early-exit checkpoint ("split") must give byte-identical candidates:
the same indices, bit-identical similarities, in the same order.  Each test
runs every variant :func:`pprl.matching.dice.native.isas` reports here, so on
an AVX2-only machine it checks AVX2 and on an ARM one NEON; the portable C
path runs everywhere.  Also: forcing a variant (``force_isa``, ``--isa``),
refusing one this CPU lacks, and the ``PPRL_NO_<ISA>`` switches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pprl.matching.dice import compare as dice_compare
from pprl.matching.dice import native as dice_native
from pprl.matching.dice import rows as dice_rows
from pprl.matching.dice.similarity import dice_pairs, find_candidates

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not dice_native.HAVE_DICE, reason="the native Dice kernel is not built"
)

ISAS = dice_native.isas()
MISSING = [name for name in dice_native.ISAS if name not in ISAS]
# Bytes per filter: tiny ones, around the 8-byte word, 32-byte AVX2 and
# 64-byte AVX-512 vectors, 1000 bits (125 bytes), and past the AVX2 kernel's
# 31-vector byte accumulation (992 bytes).
WIDTHS = (1, 2, 7, 8, 13, 31, 32, 33, 63, 64, 65, 100, 125, 128, 129, 257, 520, 1100)
THRESHOLDS = (0.5, 0.8)


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch):
    """Each test starts with no PPRL_NO_* switch set and no variant forced."""
    for switch in (dice_native.SWITCH, dice_native.SWITCH_ALIAS, *dice_native.ISA_SWITCHES.values()):
        monkeypatch.delenv(switch, raising=False)
    monkeypatch.setattr(dice_native, "_ISA", None)
    monkeypatch.setattr(dice_native, "_SPLIT", None)


def random_filters(seed: int, n: int, m: int, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Filters of varied density; ``b`` holds noisy copies of ``a``, so pairs reach 0.5 and 0.8."""
    rng = np.random.default_rng(seed)
    bits = nbytes * 8
    a = np.packbits(rng.random((n, bits)) < rng.uniform(0.05, 0.6, (n, 1)), axis=1)
    b = np.packbits(rng.random((m, bits)) < rng.uniform(0.05, 0.6, (m, 1)), axis=1)
    copies = min(n, m) * 2 // 3
    src = rng.choice(n, size=copies, replace=False)
    dst = rng.choice(m, size=copies, replace=False)
    flips = np.packbits(rng.random((copies, bits)) < rng.uniform(0, 0.25, (copies, 1)), axis=1)
    b[dst] = a[src] ^ flips
    a[0] = 0  # an empty filter on each side
    b[-1] = 0
    b[1] = b[2]  # identical right rows: ties
    return a, b


def numpy_reference(a: np.ndarray, b: np.ndarray, t: float) -> tuple[np.ndarray, ...]:
    """Dice by matrix product of the bits: every (i, j, sim) with sim >= t, sorted by (i, j)."""
    bits_a = np.unpackbits(a, axis=1).astype(np.int64)
    bits_b = np.unpackbits(b, axis=1).astype(np.int64)
    common = bits_a @ bits_b.T
    total = bits_a.sum(axis=1)[:, None] + bits_b.sum(axis=1)[None, :]
    sim = np.zeros(common.shape)
    np.divide((2 * common).astype(np.float64), total.astype(np.float64), out=sim, where=total > 0)
    i, j = np.nonzero(sim >= t)
    return i.astype(np.int64), j.astype(np.int64), sim[i, j]


def as_bytes(triples) -> list[bytes]:
    return [np.ascontiguousarray(x).tobytes() for x in triples]


def splits_for(isa: str, nwords: int) -> list[int]:
    """Every checkpoint the variant allows (nwords: none), at most ~10 of them."""
    step = dice_native._SPLIT_STEP[isa]
    allowed = [s for s in range(1, nwords) if s % step == 0]
    if len(allowed) > 8:
        allowed = allowed[:: len(allowed) // 8 + 1] + allowed[-1:]
    return [*allowed, nwords]


def kernel_output(a, b, t, isa, split, window="exact", k=None):
    """The raw output of one kernel call over all left rows (popcount order), for one variant and split."""
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), t, window, k, 2048)
    dice_native._ISA, dice_native._SPLIT = isa, split
    try:
        run = dice_native.NativeRun(job)
        assert run.isa_name == isa and run.split == split
        return run.block(0, a.shape[0])
    finally:
        dice_native._ISA, dice_native._SPLIT = None, None


def by_row(triples) -> list[bytes]:
    """The output grouped by left row, each row's pairs in the order the kernel gave them."""
    order = np.argsort(triples[0], kind="stable")
    return as_bytes(x[order] for x in triples)


# --- every variant, every split, equals generic C and numpy -------------------------


def sort_ij(triples) -> list[bytes]:
    order = np.lexsort((triples[1], triples[0]))
    return as_bytes(x[order] for x in triples)


@pytest.mark.parametrize("nbytes", WIDTHS)
def test_every_variant_and_split_equals_generic_and_numpy(nbytes):
    # Groups of 8, of 4 and single rows; more right rows than AVX2 checks in one batch (64).
    n, m = (23, 70) if nbytes > 600 else (45, 150)
    a, b = random_filters(nbytes, n, m, nbytes)
    nwords = -(-nbytes // 8)
    found = 0
    for t in THRESHOLDS:
        want = as_bytes(numpy_reference(a, b, t))
        found += len(want[0]) // 8
        reference = kernel_output(a, b, t, "generic", nwords)
        assert sort_ij(reference) == want
        for isa in ISAS:
            for split in splits_for(isa, nwords):
                got = kernel_output(a, b, t, isa, split)
                # Each left row's pairs in the same order (the variants differ only
                # in how rows interleave: AVX2 runs eight at a time).
                assert by_row(got) == by_row(reference), (isa, split, t)
            dice_native._ISA = isa
            try:
                assert as_bytes(dice_pairs(a, b, t, chunk_rows=16, workers=1)) == want, (isa, t)
            finally:
                dice_native._ISA = None
    assert found > n // 2  # the test compares something


@pytest.mark.parametrize("nbytes", (8, 125, 128, 256))
@pytest.mark.parametrize("window", ["exact", "anonlink"])
def test_top_k_output_is_identical_in_order(nbytes, window):
    """With k, every variant and split gives the same pairs in the very same order (heaps included)."""
    a, b = random_filters(100 + nbytes, 37, 41, nbytes)
    nwords = -(-nbytes // 8)
    for t in THRESHOLDS:
        for k in (1, 3):
            reference = as_bytes(kernel_output(a, b, t, "generic", nwords, window, k))
            for isa in ISAS:
                for split in splits_for(isa, nwords):
                    got = as_bytes(kernel_output(a, b, t, isa, split, window, k))
                    assert got == reference, (isa, split, t, k)


@pytest.mark.parametrize("nbytes", (13, 125, 128))
def test_candidates_are_byte_identical_across_variants(nbytes, monkeypatch):
    """find_candidates: same indices, similarities and order on every variant and with numpy."""
    monkeypatch.setattr(dice_compare, "_MIN_BLOCK_ROWS", 8)
    rng = np.random.default_rng(nbytes)
    base = np.packbits(rng.random((150, nbytes * 8)) < rng.uniform(0.1, 0.5, (150, 1)), axis=1)
    datasets = []
    for size in (120, 90, 70):
        pick = base[rng.choice(150, size=size, replace=False)]
        noise = np.packbits(rng.random(pick.shape[:1] + (nbytes * 8,)) < 0.05, axis=1)
        datasets.append(pick ^ noise)
    for t in THRESHOLDS:
        results = {}
        for name in ("numpy", *ISAS):
            with monkeypatch.context() as m:
                if name == "numpy":
                    m.setattr(dice_native, "_native", None)
                else:
                    m.setattr(dice_native, "_ISA", name)
                c = find_candidates(datasets, t, workers=2)
            results[name] = [c.similarity.tobytes(), c.dataset.tobytes(), c.record.tobytes()]
        assert len(results["numpy"][0]) > 0
        for name, got in results.items():
            assert got == results["numpy"], (name, t)


def test_output_heavy_threshold_is_exact_everywhere():
    """t = 0.5 on dense filters: most pairs pass, so the accept path carries the load."""
    rng = np.random.default_rng(5)
    a = np.packbits(rng.random((70, 1000)) < 0.5, axis=1)
    b = np.packbits(rng.random((60, 1000)) < 0.5, axis=1)
    want = as_bytes(numpy_reference(a, b, 0.5))
    assert len(want[0]) // 8 > 70 * 60 // 4  # the test compares many pairs
    for isa in ISAS:
        dice_native._ISA = isa
        try:
            assert as_bytes(dice_pairs(a, b, 0.5, workers=1)) == want, isa
        finally:
            dice_native._ISA = None


@pytest.mark.parametrize("nbytes", (992, 1000, 2000, 4100, 8184))
def test_full_filters_do_not_overflow_any_counter(nbytes):
    """All-ones rows: every byte, lane and accumulator of every variant at its maximum."""
    rng = np.random.default_rng(nbytes)
    a = np.full((11, nbytes), 0xFF, dtype=np.uint8)
    b = np.full((10, nbytes), 0xFF, dtype=np.uint8)
    a[1:5] ^= np.packbits(rng.random((4, nbytes * 8)) < 0.01, axis=1)  # nearly full
    b[3:6] ^= np.packbits(rng.random((3, nbytes * 8)) < 0.3, axis=1)
    nwords = -(-nbytes // 8)
    for t in (0.5, 0.8, 1.0):
        want = as_bytes(numpy_reference(a, b, t))
        for isa in ISAS:
            if isa in dice_native._WIDE and nwords > dice_native._WIDE_MAX_WORDS:
                continue
            for split in splits_for(isa, nwords)[-2:]:
                assert sort_ij(kernel_output(a, b, t, isa, split)) == want, (isa, split, t)


# --- the checkpoint chooser -----------------------------------------------------------


def test_chosen_split_is_one_the_variant_allows():
    a, b = random_filters(3, 400, 420, 128)
    pa, pb = dice_rows.prepare(a), dice_rows.prepare(b)
    for t in (0.0, 0.5, 0.8, 0.95):
        job = dice_rows.Job.create(pa, pb, t, "anonlink", None, 2048)
        for isa in ISAS:
            dice_native._ISA = isa
            try:
                split = dice_native.NativeRun(job).split
            finally:
                dice_native._ISA = None
            step = dice_native._SPLIT_STEP[isa]
            assert split == 16 or (split % step == 0 and 0 < split < 16), (isa, t, split)
            if t == 0.0:
                assert split == 16  # nothing can be pruned at t = 0


def test_chooser_finds_a_checkpoint_that_prunes():
    """At t = 0.8 on the benchmark's kind of data most pairs die half-way: the scalar kernels stop early."""
    rng = np.random.default_rng(0)
    a = np.packbits(rng.random((400, 1024)) < 0.3, axis=1)
    b = np.packbits(rng.random((400, 1024)) < 0.3, axis=1)
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), 0.8, "anonlink", None, 2048)
    need = np.frombuffer(dice_native._kernel().need_table(0.8, 1024), dtype=np.uint32)
    alive = dice_native.alive_fractions(job, np.arange(1, 16), 4, need)
    assert alive[-1] < 0.05 < alive[0]  # few pass a late checkpoint, most an early one
    assert 1 < dice_native.choose_split(job, "generic", need) < 16


# --- forcing a variant, and refusing one the CPU lacks -------------------------------


def test_isas_are_known_and_generic_comes_first():
    assert ISAS[0] == "generic"
    assert set(ISAS) <= set(dice_native.ISAS)
    assert list(ISAS) == [name for name in dice_native.ISAS if name in ISAS]  # best last
    assert MISSING  # no CPU is both x86 and aarch64


def test_force_isa_runs_that_variant():
    for isa in ISAS:
        dice_native.force_isa(isa)
        assert dice_native.current_isa() == isa
        job = dice_rows.Job.create(*(dice_rows.prepare(x) for x in random_filters(1, 9, 9, 64)),
                                   0.5, "exact", None, 64)
        assert dice_native.NativeRun(job).isa_name == isa
    dice_native.force_isa(None)
    assert dice_native.current_isa() == ISAS[-1]


@pytest.mark.parametrize("isa", MISSING)
def test_force_isa_refuses_a_variant_this_cpu_lacks(isa):
    with pytest.raises(ValueError, match=f"'{isa}' is not available on this CPU"):
        dice_native.force_isa(isa)
    assert dice_native._ISA is None  # nothing changed
    # Forced behind force_isa's back, the job refuses it just as clearly.
    dice_native._ISA = isa
    a, b = random_filters(2, 9, 9, 16)
    with pytest.raises(ValueError, match="not available on this CPU"):
        dice_pairs(a, b, 0.5)


@pytest.mark.parametrize("isa", MISSING)
def test_kernel_refuses_a_variant_this_cpu_lacks(isa):
    native = dice_native._kernel()
    words = np.zeros((2, 2), np.uint64)
    cnt = np.zeros(2, np.uint32)
    idx = np.arange(2, dtype=np.int64)
    lo, hi = np.zeros(2, np.int64), np.full(2, 2, np.int64)
    args = [words, cnt, idx, words, cnt, cnt, idx, lo, hi, native.need_table(0.5, 128), 2, 0, 2, -1.0, -1]
    with pytest.raises(ValueError, match="not usable on this CPU"):
        native.pairs(*args, dice_native.ISAS.index(isa))


def test_force_isa_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown Dice kernel variant 'sve2'"):
        dice_native.force_isa("sve2")


def test_kernel_checks_the_split():
    native = dice_native._kernel()
    a, b = random_filters(4, 12, 12, 128)  # 16 words
    pa, pb = dice_rows.prepare(a), dice_rows.prepare(b)
    job = dice_rows.Job.create(pa, pb, 0.5, "exact", None, 64)
    x, y = pa.native, pb.native
    need = native.need_table(0.5, 64 * x.nwords)
    base = [x.words, x.counts, x.index, y.words, y.counts, y.rest, y.index, job.lo, job.hi, need,
            x.nwords, 0, 12, -1.0, -1]
    for isa in ISAS:
        code = dice_native.ISAS.index(isa)
        native.pairs(*base, code)  # default: half-way (8 words) where the variant can stop there
        native.pairs(*base, code, 16)
        for bad in (0, 17, -2):
            with pytest.raises(ValueError, match="split"):
                native.pairs(*base, code, bad)
        step = dice_native._SPLIT_STEP[isa]
        if step != 1:
            with pytest.raises(ValueError, match="split"):
                native.pairs(*base, code, 5)


@pytest.mark.parametrize("isa", [name for name in ISAS if name in ("avx2", "avx512", "neon")])
def test_vector_variants_refuse_rows_they_cannot_hold(isa):
    a, b = random_filters(6, 5, 5, 8 * 1024)  # 1024 words: one past their limit
    dice_native._ISA = isa
    with pytest.raises(ValueError, match="at most 65472 bits"):
        dice_pairs(a, b, 0.5)
    dice_native._ISA = None
    assert dice_native.current_isa(1024) in ("generic", "popcnt")
    assert len(dice_pairs(a, b, 0.5)[0]) == len(numpy_reference(a, b, 0.5)[0])


def test_isa_switches_keep_the_automatic_choice_off_a_variant(monkeypatch):
    best = ISAS[-1]
    assert dice_native.current_isa() == best
    for name in reversed(ISAS[1:]):
        monkeypatch.setenv(dice_native.ISA_SWITCHES[name], "1")
        below = [isa for isa in ISAS if isa != name and not os.environ.get(dice_native.ISA_SWITCHES.get(isa, "-"))]
        assert dice_native.current_isa() == below[-1]
    assert dice_native.current_isa() == "generic"  # every switch set: the portable C path
    if len(ISAS) > 1:
        dice_native.force_isa(best)  # forcing wins over the switches
        assert dice_native.current_isa() == best
    for name in ISAS[1:]:
        monkeypatch.setenv(dice_native.ISA_SWITCHES[name], "0")
    dice_native.force_isa(None)
    assert dice_native.current_isa() == best


def test_isa_switch_set_before_import():
    """``PPRL_NO_AVX512=1 PPRL_NO_AVX2=1`` in the environment: a fresh interpreter picks what is left."""
    code = "from pprl.matching.dice import native as n; print(n.current_isa())"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRL_NO_")}
    env.update(PPRL_NO_AVX512="1", PPRL_NO_AVX2="1", PPRL_NO_NEON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == [isa for isa in ISAS if isa in ("generic", "popcnt")][-1]


# --- the benchmark's --isa -------------------------------------------------------------


def _bench(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRL_NO_")}
    return subprocess.run(
        [sys.executable, "benchmarks/bench_similarity.py", "-n", "120", "-m", "100", "--repeats", "1",
         "--thresholds", "0.8", "0.5", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def test_bench_similarity_runs_a_forced_variant():
    isa = ISAS[-1]
    out = _bench("--isa", isa)
    assert out.returncode == 0, out.stderr
    assert f"pprl kernel: native {isa} (forced)" in out.stdout
    assert "CPU: " in out.stdout
    assert "same candidates: no" not in out.stdout


@pytest.mark.parametrize("isa", MISSING[:1])
def test_bench_similarity_refuses_a_variant_this_cpu_lacks(isa):
    out = _bench("--isa", isa)
    assert out.returncode == 2
    assert f"'{isa}' is not available on this CPU" in out.stderr
