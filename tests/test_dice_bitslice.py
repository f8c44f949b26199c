"""The bit-sliced filter of the Dice kernel: identical results to the row-by-row kernel and to numpy.

The filter (``_dice.c``: right rows transposed into blocks of 256, all 256
intersections of a block counted at once with carry-save adders, only the
pairs that can reach the threshold counted exactly) runs with AVX2 on the
``avx2`` variant, AVX-512VL on ``avx512`` and as portable C on ``generic``
and ``popcnt``.  Every variant this CPU has runs here with the filter forced on
and off: raw kernel output (each left row's pairs in the same order, top-k
heaps in the very same order), ``dice_pairs`` and ``find_candidates`` against
a numpy reference and the numpy fallback; on random and adversarial filters
(empty and full rows, 512 / 1000 / 1024 / 2048 bits and the widest rows the
vector kernels take, right sides that are no multiple of 256 rows, thresholds
0.0 / 0.5 / 0.8 / 1.0).  Also the rule that picks the filter and its switch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_dice_isa import as_bytes, by_row, numpy_reference, random_filters, sort_ij

from pprl.matching.dice import compare as dice_compare
from pprl.matching.dice import native as dice_native
from pprl.matching.dice import rows as dice_rows
from pprl.matching.dice.similarity import dice_pairs, find_candidates

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not dice_native.HAVE_DICE, reason="the native Dice kernel is not built"
)

ISAS = dice_native.isas()
THRESHOLDS = (0.0, 0.5, 0.8, 1.0)


@pytest.fixture(autouse=True)
def _no_switches(monkeypatch):
    """Each test starts with no PPRL_NO_* switch set, no variant, split or filter choice forced."""
    for switch in (dice_native.SWITCH, dice_native.SWITCH_ALIAS, dice_native.BITSLICE_SWITCH,
                   *dice_native.ISA_SWITCHES.values()):
        monkeypatch.delenv(switch, raising=False)
    monkeypatch.setattr(dice_native, "_ISA", None)
    monkeypatch.setattr(dice_native, "_SPLIT", None)
    monkeypatch.setattr(dice_native, "_BITSLICE", None)


def run_kernel(a, b, t, isa, bitslice, window="exact", k=None):
    """The raw output of one kernel call over all left rows, and whether the filter ran."""
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), t, window, k, 1 << 20)
    dice_native._ISA, dice_native._BITSLICE = isa, bitslice
    try:
        run = dice_native.NativeRun(job)
        assert run.isa_name == isa
        assert run.bitslice == (bitslice and b.shape[0] > 0)
        return run.block(0, a.shape[0])
    finally:
        dice_native._ISA, dice_native._BITSLICE = None, None


def filters_with_extremes(seed, n, m, nbytes):
    """random_filters plus all-zero and all-ones rows on both sides."""
    a, b = random_filters(seed, n, m, nbytes)
    a[1] = 0xFF
    a[2] = 0
    b[5] = 0xFF
    b[6] = 0xFF
    b[7] = 0
    return a, b


# 512, 1000, 1024 and 2048 bits; short rows; 21 words (no multiple of a vector).
WIDTHS = (1, 8, 13, 64, 125, 128, 168, 256)


@pytest.mark.parametrize("nbytes", WIDTHS)
def test_filter_equals_row_kernel_and_numpy_on_every_variant(nbytes):
    # 600 right rows: two whole blocks of 256 and a partial one; 37 left rows: groups of 32 and 5.
    n, m = 37, 600
    a, b = filters_with_extremes(nbytes, n, m, nbytes)
    found = 0
    for t in THRESHOLDS:
        want = as_bytes(numpy_reference(a, b, t))
        found += len(want[0]) // 8
        reference = run_kernel(a, b, t, "generic", False)
        assert sort_ij(reference) == want, t
        for isa in ISAS:
            for bitslice in (True, False):
                got = run_kernel(a, b, t, isa, bitslice)
                assert by_row(got) == by_row(reference), (isa, bitslice, t)
    assert found > n  # the test compares something


@pytest.mark.parametrize("nbytes", (8, 125, 128, 256))
@pytest.mark.parametrize("window", ["exact", "anonlink"])
def test_filter_top_k_is_identical_in_order(nbytes, window):
    """With k, the heaps see the same offers in the same order: byte-identical output."""
    a, b = filters_with_extremes(200 + nbytes, 45, 300, nbytes)
    for t in THRESHOLDS:
        for k in (1, 3):
            reference = as_bytes(run_kernel(a, b, t, "generic", False, window, k))
            for isa in ISAS:
                got = as_bytes(run_kernel(a, b, t, isa, True, window, k))
                assert got == reference, (isa, t, k)


@pytest.mark.parametrize("nbytes", (1000, 2000, 8184))
def test_filter_full_rows_reach_every_counter_plane(nbytes):
    """All-ones rows up to 65472 bits: the bit-sliced counters at their widest."""
    rng = np.random.default_rng(nbytes)
    a = np.full((9, nbytes), 0xFF, dtype=np.uint8)
    b = np.full((260, nbytes), 0xFF, dtype=np.uint8)
    a[1:5] ^= np.packbits(rng.random((4, nbytes * 8)) < 0.01, axis=1)
    b[3:200] ^= np.packbits(rng.random((197, nbytes * 8)) < rng.uniform(0, 0.4, (197, 1)), axis=1)
    b[250] = 0
    for t in (0.5, 0.8, 1.0):
        want = as_bytes(numpy_reference(a, b, t))
        assert len(want[0]) > 0
        for isa in ISAS:
            assert sort_ij(run_kernel(a, b, t, isa, True)) == want, (isa, t)


def test_filter_windows_that_cut_blocks():
    """Popcounts spread so each left row's window starts and ends inside blocks of 256."""
    rng = np.random.default_rng(11)
    fills_b = np.sort(rng.uniform(0.02, 0.9, 1100))
    b = np.packbits(rng.random((1100, 1024)) < fills_b[:, None], axis=1)
    a = b[rng.choice(1100, 50, replace=False)] ^ np.packbits(rng.random((50, 1024)) < 0.03, axis=1)
    for t in (0.8, 0.9, 1.0):
        job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), t, "exact", None, 64)
        assert ((job.lo % 256 != 0) & (job.hi - job.lo < 256)).any()
        want = as_bytes(numpy_reference(a, b, t))
        for isa in ISAS:
            assert sort_ij(run_kernel(a, b, t, isa, True)) == want, (isa, t)


@pytest.mark.parametrize("nbytes", (64, 128))
def test_dice_pairs_and_candidates_equal_numpy_with_filter_on(nbytes, monkeypatch):
    """The public API: same candidates, similarities and order, filter forced on, as the numpy path."""
    monkeypatch.setattr(dice_compare, "_MIN_BLOCK_ROWS", 8)
    rng = np.random.default_rng(nbytes)
    base = np.packbits(rng.random((400, nbytes * 8)) < rng.uniform(0.1, 0.5, (400, 1)), axis=1)
    datasets = []
    for size in (330, 290, 270):
        pick = base[rng.choice(400, size=size, replace=False)]
        noise = np.packbits(rng.random(pick.shape[:1] + (nbytes * 8,)) < 0.05, axis=1)
        datasets.append(pick ^ noise)
    for t in (0.5, 0.8):
        with monkeypatch.context() as m:
            m.setattr(dice_native, "_native", None)
            want = find_candidates(datasets, t, workers=2)
            want_k = find_candidates(datasets, t, k=2, workers=1)
            want_pairs = as_bytes(dice_pairs(datasets[0], datasets[1], t, chunk_rows=16, workers=1))
        assert len(want) > 100
        for isa in ISAS:
            with monkeypatch.context() as m:
                m.setattr(dice_native, "_ISA", isa)
                m.setattr(dice_native, "_BITSLICE", True)
                got = find_candidates(datasets, t, workers=2)
                got_k = find_candidates(datasets, t, k=2, workers=1)
                got_pairs = as_bytes(dice_pairs(datasets[0], datasets[1], t, chunk_rows=16, workers=1))
            for x, y in ((got, want), (got_k, want_k)):
                assert x.similarity.tobytes() == y.similarity.tobytes(), (isa, t)
                assert x.dataset.tobytes() == y.dataset.tobytes(), (isa, t)
                assert x.record.tobytes() == y.record.tobytes(), (isa, t)
            assert got_pairs == want_pairs, (isa, t)


# --- the rule, the switch, the kernel's checks -------------------------------------------


def bench_like(n, m, seed=0):
    """Filters like bench_similarity.py's: 1024 bits, fill about 0.3, half of b noisy copies of a."""
    rng = np.random.default_rng(seed)
    a = np.packbits(rng.random((n, 1024)) < rng.uniform(0.25, 0.35, (n, 1)), axis=1)
    b = np.packbits(rng.random((m, 1024)) < rng.uniform(0.25, 0.35, (m, 1)), axis=1)
    b[: m // 2] = a[: m // 2] ^ np.packbits(rng.random((m // 2, 1024)) < 0.05, axis=1)
    return a, b


def chosen(a, b, t, isa, k=None):
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), t, "anonlink", k, 2048)
    dice_native._ISA = isa
    try:
        return dice_native.NativeRun(job).bitslice
    finally:
        dice_native._ISA = None


@pytest.mark.parametrize("isa", [name for name in ISAS if name in ("avx2", "avx512")])
def test_rule_picks_the_filter_on_benchmark_data_and_not_where_it_cannot_pay(isa):
    a, b = bench_like(1500, 1500)
    assert chosen(a, b, 0.5, isa)
    assert chosen(a, b, 0.8, isa)
    assert not chosen(a, b, 0.0, isa)  # every pair passes: nothing to filter
    assert not chosen(a[:40], b[:40], 0.5, isa)  # a small job: no sample, the row kernel
    dense = np.packbits(np.random.default_rng(1).random((1500, 1024)) < 0.5, axis=1)
    assert not chosen(dense, dense[::-1].copy(), 0.5, isa)  # nearly half of all pairs pass


def test_rule_keeps_neon_on_its_own_kernel():
    a, b = bench_like(600, 600)
    job = dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), 0.5, "anonlink", None, 2048)
    need = np.frombuffer(dice_native._kernel().need_table(0.5, 1024), dtype=np.uint32)
    assert not dice_native.choose_bitslice(job, "neon", need, 16.0)
    assert dice_native.choose_bitslice(job, "generic", need, 16.0)  # the portable C filter


def test_switch_keeps_the_filter_off(monkeypatch):
    a, b = bench_like(1500, 1500)
    isa = ISAS[-1] if ISAS[-1] != "neon" else "generic"
    before = chosen(a, b, 0.8, isa)
    monkeypatch.setenv(dice_native.BITSLICE_SWITCH, "1")
    assert not chosen(a, b, 0.8, isa)
    monkeypatch.setenv(dice_native.BITSLICE_SWITCH, "0")
    assert chosen(a, b, 0.8, isa) == before
    dice_native._BITSLICE = True  # tests and benchmarks can still force it
    monkeypatch.setenv(dice_native.BITSLICE_SWITCH, "1")
    assert chosen(a, b, 0.8, isa)


def test_kernel_checks_the_transposed_rows():
    native = dice_native._kernel()
    a, b = random_filters(4, 12, 300, 128)
    pa, pb = dice_rows.prepare(a), dice_rows.prepare(b)
    job = dice_rows.Job.create(pa, pb, 0.5, "exact", None, 64)
    x, y = pa.native, pb.native
    bt = dice_native.transposed(y.words, y.nwords, native)
    assert bt.shape == (2 * (1024 + 1), 4)  # two blocks of 256 rows, 1024 columns and a zero one
    # Row j, bit i: lane (j % 256) // 64, bit j % 64 of column i of block j // 256.
    bits = np.unpackbits(y.words.view(np.uint8), axis=1, bitorder="little")
    for j in (0, 63, 64, 255, 256, 299):
        col = bt[(j // 256) * 1025 : (j // 256) * 1025 + 1024, (j % 256) // 64]
        assert np.array_equal((col >> np.uint64(j % 64)) & np.uint64(1), bits[j].astype(np.uint64))
    assert not bt[1024].any() and not bt[2049].any()
    need = native.need_table(0.5, 1024)
    base = [x.words, x.counts, x.index, y.words, y.counts, y.rest, y.index, job.lo, job.hi, need,
            x.nwords, 0, 12, -1.0, -1, 0, 16]
    def rows_of(out):
        return by_row([np.frombuffer(x, dtype=d) for x, d in zip(out, (np.int64, np.int64, np.float64))])

    assert rows_of(native.pairs(*base, bt)) == rows_of(native.pairs(*base))
    with pytest.raises(ValueError, match="bt has"):
        native.pairs(*base, bt[:-1])
    with pytest.raises(ValueError, match="out has"):
        native.transpose(y.words, y.nwords, np.zeros((10, 4), np.uint64))


def test_bench_similarity_reports_the_path():
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRL_NO_")}
    for flag, path in (("on", "path: bit-sliced filter"), ("off", "path: row-by-row kernel")):
        out = subprocess.run(
            [sys.executable, "benchmarks/bench_similarity.py", "-n", "300", "-m", "300", "--repeats", "1",
             "--thresholds", "0.8", "--bitslice", flag],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
        )
        assert out.returncode == 0, out.stderr
        assert path in out.stdout
        assert "same candidates: no" not in out.stdout


def test_filter_is_never_forced_onto_rows_it_cannot_hold():
    """Over 65472 bits the filter stays off even when forced: the portable kernels run those rows."""
    a, b = random_filters(6, 5, 5, 8 * 1024)  # 1024 words
    want = as_bytes(numpy_reference(a, b, 0.5))
    for isa in (name for name in ISAS if name in ("generic", "popcnt")):
        assert sort_ij(run_kernel(a, b, 0.5, isa, False)) == want
        dice_native._ISA, dice_native._BITSLICE = isa, True
        try:
            assert as_bytes(dice_pairs(a, b, 0.5, workers=1)) == want
        finally:
            dice_native._ISA, dice_native._BITSLICE = None, None
