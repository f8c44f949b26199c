"""The Dice kernels: native (every CPU variant) vs numpy vs brute force, top-k, threads.

Every kernel must give exactly the same pairs and bit-identical similarities:
they are checked against a brute-force Dice on Python ints, against each
other, and (top-k) against anonlink itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_similarity import (
    anonlink_candidates,
    as_triples,
    brute_force,
    kernel,  # noqa: F401  (the fixture that runs a test once per kernel)
    kernel_names,
    load_anonlink,
    make_datasets,
    ones,
    to_bitarrays,
)

from pprl._native import disabled
from pprl.matching.dice import compare as dice_compare
from pprl.matching.dice import native as dice_native
from pprl.matching.dice import rows as dice_rows
from pprl.matching.dice import similarity
from pprl.matching.dice.similarity import dice_pairs, find_candidates

THRESHOLDS = (0.0, 0.2, 0.5, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0)
# Byte widths around the word (8 bytes) and AVX-512 vector (64 bytes) sizes;
# 25 bytes and up also exercise the scalar kernels' half-way early exit.
WIDTHS = (1, 3, 7, 8, 9, 24, 25, 31, 33, 64, 100, 128, 129, 256, 520)


def random_pair(seed: int, n: int, m: int, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Filters of varied density; ``b`` holds noisy copies of some of ``a``, ties and blanks."""
    rng = np.random.default_rng(seed)
    bits = nbytes * 8
    a = np.packbits(rng.random((n, bits)) < rng.uniform(0.05, 0.6, (n, 1)), axis=1)
    b = np.packbits(rng.random((m, bits)) < rng.uniform(0.05, 0.6, (m, 1)), axis=1)
    copies = min(n, m) // 2
    src = rng.choice(n, size=copies, replace=False)
    dst = rng.choice(m, size=copies, replace=False)
    flips = np.packbits(rng.random((copies, bits)) < rng.uniform(0, 0.1, (copies, 1)), axis=1)
    b[dst] = a[src] ^ flips
    b[dst[:3]] = b[dst[3]]  # identical right rows: ties for top-k
    a[0] = 0
    if m > 1:
        b[1] = 0
    return a, b


def brute_top_k(a, b, t, k):
    """Brute-force top-k: per row of a, the k best pairs by (-sim, j), sorted by (i, j)."""
    rows: dict[int, list[tuple[int, int, float]]] = {}
    for i, j, s in brute_force(a, b, t):
        rows.setdefault(i, []).append((i, j, s))
    out = []
    for triples in rows.values():
        out += sorted(triples, key=lambda x: (-x[2], x[1]))[:k]
    return sorted(out)


# --- the native extension is there ------------------------------------------------


def test_native_extension_is_built():
    """The C kernel must be importable wherever the package was installed."""
    if disabled(dice_native.SWITCH, dice_native.SWITCH_ALIAS):
        pytest.skip("PPRL_NO_DICE or PPRL_NO_NATIVE is set")
    assert similarity.NATIVE, "pprl.matching.dice._dice is missing: reinstall with `pip install -e .`"
    isas = dice_native._native.isas()
    assert isas[0] == "generic"
    assert set(isas) <= {"generic", "popcnt", "avx2", "avx512", "neon"}


def test_no_native_environment_variable_selects_numpy():
    code = (
        "import pprl.matching.dice.similarity as s; from pprl.matching.dice import native as d; "
        "print(s.NATIVE, d.NATIVE, d._native)"
    )
    env = {**os.environ, "PPRL_NO_NATIVE": "1"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "False", "None"]


@pytest.mark.parametrize("switch", ["PPRL_NO_DICE", "PPRL_NO_NATIVE"])
def test_switch_is_read_at_every_call_and_numpy_gives_the_same_pairs(switch, monkeypatch):
    """PPRL_NO_DICE (and its older name PPRL_NO_NATIVE) flips the kernel in-process; the pairs do not change."""
    if not dice_native.HAVE_DICE:
        pytest.skip("native kernel not built")
    for name in ("PPRL_NO_DICE", "PPRL_NO_NATIVE"):
        monkeypatch.delenv(name, raising=False)
    a, b = random_pair(11, 97, 83, 64)
    assert dice_native.dice_enabled() and similarity.NATIVE
    native = {t: as_triples(*dice_pairs(a, b, t, workers=1)) for t in (0.3, 0.7, 0.9)}
    monkeypatch.setenv(switch, "1")
    assert not dice_native.dice_enabled() and not dice_native.loaded() and not similarity.NATIVE
    assert dice_native.HAVE_DICE
    with pytest.raises(RuntimeError):
        dice_native.NativeRun(dice_rows.Job.create(dice_rows.prepare(a), dice_rows.prepare(b), 0.5, "exact", None, 64))
    numpy = {t: as_triples(*dice_pairs(a, b, t, workers=1)) for t in (0.3, 0.7, 0.9)}
    assert numpy == native
    assert sum(map(len, native.values())) > 20  # the test compares something
    monkeypatch.setenv(switch, "0")
    assert dice_native.dice_enabled() and similarity.NATIVE


# --- all kernels agree with brute force --------------------------------------------


@pytest.mark.parametrize("nbytes", WIDTHS)
@pytest.mark.usefixtures("kernel")
def test_every_kernel_equals_brute_force(nbytes):
    a, b = random_pair(nbytes, 23, 19, nbytes)
    for t in THRESHOLDS:
        want = brute_force(a, b, t)
        for chunk_rows in (1, 5, 2048):
            got = as_triples(*dice_pairs(a, b, t, chunk_rows=chunk_rows, workers=1))
            assert got == want, (t, chunk_rows)


@pytest.mark.parametrize("nbytes", (13, 128, 256))
@pytest.mark.parametrize("window", ["exact", "anonlink"])
def test_native_equals_numpy_on_larger_inputs(nbytes, window, monkeypatch):
    # 203 and 157 rows: groups of four plus a remainder, several blocks.
    a, b = random_pair(100 + nbytes, 203, 157, nbytes)
    monkeypatch.setattr(dice_compare, "_MIN_BLOCK_ROWS", 8)
    results = {}
    for name in kernel_names():
        with monkeypatch.context() as m:
            if name == "numpy":
                m.setattr(dice_native, "_native", None)
            else:
                m.setattr(dice_native, "_ISA", name.removeprefix("native-"))
            results[name] = {
                t: as_triples(*dice_pairs(a, b, t, window=window, workers=1))
                for t in (0.3, 0.6, 0.75, 0.85)
            }
    reference = results.pop("numpy")
    for name, got in results.items():
        assert got == reference, name
    assert sum(map(len, reference.values())) > 100  # the test compares something


def test_very_long_filters_use_a_kernel_that_fits():
    # 1025 words per row: too long for the AVX-512 kernel's 16-bit packing.
    a, b = random_pair(2, 10, 9, 8200)
    for t in (0.0, 0.3, 0.6):
        assert as_triples(*dice_pairs(a, b, t)) == brute_force(a, b, t)


@pytest.mark.usefixtures("kernel")
def test_subset_pair_boundary_all_kernels():
    # Dice exactly 0.75; anonlink's window drops it with the small filter on the left.
    for nbytes in (16, 128):
        left, right = ones(30, nbytes)[None, :], ones(50, nbytes)[None, :]
        assert as_triples(*dice_pairs(left, right, 0.75)) == [(0, 0, 0.75)]
        assert as_triples(*dice_pairs(left, right, 0.75, window="anonlink")) == []
        assert as_triples(*dice_pairs(right, left, 0.75, window="anonlink")) == [(0, 0, 0.75)]


def test_need_table_is_exact():
    if dice_native._native is None:
        pytest.skip("native kernel not available")
    for t in (0.0, 1e-9, 0.1, 1 / 3, 0.5, 0.7, 0.75, 0.8, 0.9, 0.99, 1.0):
        need = np.frombuffer(dice_native._native.need_table(t, 64), dtype=np.uint32)
        assert need.shape == (129,)
        for s in range(129):
            ok = [i for i in range(s // 2 + 1) if (2 * i / s if s else 0.0) >= t]
            assert need[s] == (ok[0] if ok else 2**32 - 1), (t, s)


def test_native_rejects_inconsistent_buffers():
    if dice_native._native is None:
        pytest.skip("native kernel not available")
    native = dice_native._native
    words = np.zeros((2, 2), np.uint64)
    cnt = np.zeros(2, np.uint32)
    idx = np.arange(2, dtype=np.int64)
    lo, hi = np.zeros(2, np.int64), np.full(2, 2, np.int64)
    need = native.need_table(0.5, 128)
    args = [words, cnt, idx, words, cnt, cnt, idx, lo, hi, need, 2, 0, 2, -1.0, -1, 0]
    i, j, s = native.pairs(*args)
    assert len(i) == len(j) == len(s) == 0  # all-zero rows never reach 0.5
    bad = {
        0: np.zeros((2, 3), np.uint64),  # a longer than its counts say
        8: np.full(2, 3, np.int64),  # window past the right rows
        9: native.need_table(0.5, 64),  # need table for the wrong width
        11: 0,  # r0 > r1 (with r1 set below)
    }
    for pos, value in bad.items():
        broken = list(args)
        broken[pos] = value
        if pos == 11:
            broken[11], broken[12] = 2, 1
        with pytest.raises(ValueError):
            native.pairs(*broken)
    with pytest.raises(ValueError):
        native.pairs(*args[:-1], 99)  # no such kernel variant


# --- top-k -------------------------------------------------------------------------


@pytest.mark.parametrize("nbytes", (5, 32, 128))
@pytest.mark.usefixtures("kernel")
def test_top_k_equals_brute_force(nbytes):
    a, b = random_pair(7 + nbytes, 29, 23, nbytes)
    for t in (0.0, 0.4, 0.8):
        for k in (1, 2, 3, 5, 23, 100):
            got = as_triples(*dice_pairs(a, b, t, k=k, chunk_rows=6, workers=1))
            assert got == brute_top_k(a, b, t, k), (t, k)
        assert len(dice_pairs(a, b, t, k=0)[0]) == 0


@pytest.mark.usefixtures("kernel")
def test_top_k_breaks_ties_by_lower_index():
    row = ones(40, 16)
    a = row[None, :]
    b = np.stack([ones(40, 16, start=1), row, ones(39, 16), row, row])
    # b[1], b[3], b[4] are exact copies (Dice 1.0); b[0] and b[2] score lower.
    assert as_triples(*dice_pairs(a, b, 0.5, k=2)) == [(0, 1, 1.0), (0, 3, 1.0)]
    got = as_triples(*dice_pairs(a, b, 0.5, k=4))
    assert [j for _, j, _ in got] == [1, 2, 3, 4]


@pytest.mark.usefixtures("kernel")
def test_top_k_with_anonlink_window():
    # Both right rows have Dice exactly 0.75 with the left one: the 50-bit
    # superset (a tie won by the lower index) and 34 bits sharing 24.  The
    # superset is outside anonlink's window, so there top-1 is the other.
    left = ones(30, 16)[None, :]
    right = np.stack([ones(50, 16), ones(34, 16, start=6)])
    assert as_triples(*dice_pairs(left, right, 0.75, k=1)) == [(0, 0, 0.75)]
    assert as_triples(*dice_pairs(left, right, 0.75, k=1, window="anonlink")) == [(0, 1, 0.75)]


@pytest.mark.usefixtures("kernel")
def test_dice_coefficient_top_k_equals_anonlink():
    anonlink = load_anonlink()
    dice = anonlink.similarities.dice_coefficient_accelerated
    a, b = random_pair(5, 40, 35, 128)
    for t in (0.0, 0.5, 0.8):
        for k in (1, 3, 10):
            sims, (ri, rj) = dice((to_bitarrays(a), to_bitarrays(b)), t, k=k)
            want = sorted(zip(ri, rj, sims))
            got = as_triples(*dice_pairs(a, b, t, k=k, window="anonlink"))
            assert got == want, (t, k)


@pytest.mark.parametrize("nbytes", [128, 13])
@pytest.mark.usefixtures("kernel")
def test_find_candidates_top_k_equals_anonlink(nbytes):
    anonlink = load_anonlink()
    datasets = make_datasets(9, (80, 100, 70), nbytes)
    for t in (0.0, 0.5, 0.75, 0.8):
        for k in (1, 2, 5):
            ours = find_candidates(datasets, t, k=k)
            sims, (d0, d1), (r0, r1) = anonlink.candidate_generation.find_candidate_pairs(
                [to_bitarrays(d) for d in datasets],
                anonlink.similarities.dice_coefficient_accelerated,
                t,
                k=k,
            )
            assert np.array_equal(ours.similarity, np.asarray(sims)), (t, k)
            assert np.array_equal(ours.dataset, np.stack([d0, d1], axis=1).reshape(-1, 2))
            assert np.array_equal(ours.record, np.stack([r0, r1], axis=1).reshape(-1, 2))


@pytest.mark.usefixtures("kernel")
def test_find_candidates_without_k_equals_anonlink_again():
    anonlink = load_anonlink()
    datasets = make_datasets(11, (90, 60, 75, 40), 64)
    for t in (0.6, 0.8):
        ours = find_candidates(datasets, t, workers=2)
        sims, dset, rec = anonlink_candidates(anonlink, datasets, t)
        assert np.array_equal(ours.similarity, sims)
        assert np.array_equal(ours.dataset, dset)
        assert np.array_equal(ours.record, rec)


# --- threads -----------------------------------------------------------------------


@pytest.mark.usefixtures("kernel")
def test_workers_do_not_change_results(monkeypatch):
    monkeypatch.setattr(dice_compare, "_MIN_BLOCK_ROWS", 4)
    a, b = random_pair(21, 150, 130, 128)
    for t in (0.0, 0.6, 0.85):
        for k in (None, 2):
            one = dice_pairs(a, b, t, k=k, workers=1)
            for workers in (2, 3, None):
                many = dice_pairs(a, b, t, k=k, workers=workers)
                for x, y in zip(one, many):
                    assert np.array_equal(x, y), (t, k, workers)
    datasets = make_datasets(12, (60, 50, 40), 32)
    c1 = find_candidates(datasets, 0.7, workers=1, k=3)
    c2 = find_candidates(datasets, 0.7, workers=2, k=3)
    assert np.array_equal(c1.record, c2.record) and np.array_equal(c1.similarity, c2.similarity)


@pytest.mark.usefixtures("kernel")
def test_progress_with_threads(capsys, monkeypatch):
    monkeypatch.setattr(dice_compare, "_MIN_BLOCK_ROWS", 4)
    datasets = make_datasets(4, (40, 40), 16)
    quiet = find_candidates(datasets, 0.8, workers=1)
    loud = find_candidates(datasets, 0.8, progress=True, workers=2)
    err = capsys.readouterr().err
    assert "comparing" in err and "40/40" in err
    assert np.array_equal(quiet.record, loud.record)


def test_native_kernel_releases_the_gil():
    """While one thread is inside the kernel, another can run Python code."""
    if dice_native._native is None:
        pytest.skip("native kernel not available")
    a, b = random_pair(3, 8000, 8000, 128)
    pa, pb = dice_rows.prepare(a), dice_rows.prepare(b)
    run = dice_native.NativeRun(dice_rows.Job.create(pa, pb, 0.9, "exact", None, 8192))
    inside = threading.Event()
    stamps: dict[str, float] = {}

    def work() -> None:
        stamps["start"] = time.perf_counter()
        inside.set()
        run.block(0, a.shape[0])
        stamps["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    worker.start()
    inside.wait()
    stamps["main"] = time.perf_counter()
    worker.join()
    # Holding the GIL, the kernel would keep this thread waiting until it
    # returned; released, this thread runs at once.
    in_kernel = stamps["end"] - stamps["start"]
    assert stamps["main"] - stamps["start"] < 0.5 * in_kernel


def test_row_blocks_cover_rows_once():
    for n in (0, 1, 5, 63, 64, 65, 1000, 10007):
        for chunk_rows in (1, 3, 4, 100, 2048):
            for workers in (1, 2, 8):
                blocks = dice_compare.row_blocks(n, chunk_rows, workers)
                assert [r for r0, r1 in blocks for r in range(r0, r1)] == list(range(n))
                assert all(0 < r1 - r0 <= chunk_rows for r0, r1 in blocks)


# --- argument checks -----------------------------------------------------------------


@pytest.mark.parametrize("k", [-1, 1.5, True, "2"])
def test_bad_k_is_value_error(k):
    a = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError):
        dice_pairs(a, a, 0.5, k=k)
    with pytest.raises(ValueError):
        find_candidates([a, a], 0.5, k=k)


@pytest.mark.parametrize("workers", [0, -2, 1.0, True, "2"])
def test_bad_workers_is_value_error(workers):
    a = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError):
        dice_pairs(a, a, 0.5, workers=workers)
    with pytest.raises(ValueError):
        find_candidates([a, a], 0.5, workers=workers)


def test_unknown_forced_variant_is_value_error(monkeypatch):
    if dice_native._native is None:
        pytest.skip("native kernel not available")
    monkeypatch.setattr(dice_native, "_ISA", "sve2")
    a = np.ones((2, 8), np.uint8)
    with pytest.raises(ValueError):
        dice_pairs(a, a, 0.5)
