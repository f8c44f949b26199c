"""Dice candidate pairs: against a brute-force Dice, and against anonlink itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from anchors import load_anonlink as _load_anonlink
from anchors import to_bitarrays  # noqa: F401  (test_dice_kernel imports it from here)

from pprl.errors import DataValidationError
from pprl.matching.dice import fallback as dice_numpy
from pprl.matching.dice import native as dice_native
from pprl.matching.dice import rows as dice_rows
from pprl.matching.dice.similarity import Candidates, dice_pairs, find_candidates, popcounts


def load_anonlink():
    return _load_anonlink("candidate_generation", "similarities")


@pytest.fixture(scope="module")
def anonlink():
    return load_anonlink()


def kernel_names() -> list[str]:
    """Every kernel this build can run: numpy, then each native variant the CPU has."""
    names = ["numpy"]
    if dice_native._native is not None:
        names += [f"native-{isa}" for isa in dice_native._native.isas()]
    return names


@pytest.fixture(params=kernel_names())
def kernel(request, monkeypatch):
    """Run the test once per kernel; results must not depend on the kernel."""
    name = request.param
    if name == "numpy":
        monkeypatch.setattr(dice_native, "_native", None)
    else:
        monkeypatch.setattr(dice_native, "_ISA", name.removeprefix("native-"))
    return name


def brute_force(a: np.ndarray, b: np.ndarray, t: float) -> list[tuple[int, int, float]]:
    """Dice on Python ints: 2|A&B| / (|A|+|B|), 0.0 for two empty filters."""
    ints_a = [int.from_bytes(row.tobytes(), "big") for row in a]
    ints_b = [int.from_bytes(row.tobytes(), "big") for row in b]
    out = []
    for i, x in enumerate(ints_a):
        for j, y in enumerate(ints_b):
            total = bin(x).count("1") + bin(y).count("1")
            sim = 2 * bin(x & y).count("1") / total if total else 0.0
            if sim >= t:
                out.append((i, j, sim))
    return out


def as_triples(i, j, s) -> list[tuple[int, int, float]]:
    return list(zip(i.tolist(), j.tolist(), s.tolist()))


def ones(k: int, nbytes: int, start: int = 0) -> np.ndarray:
    """One filter of nbytes bytes with bits start..start+k-1 set."""
    bits = np.zeros(nbytes * 8, dtype=bool)
    bits[start : start + k] = True
    return np.packbits(bits)


def correlated(rng: np.random.Generator, n: int, nbytes: int) -> tuple[np.ndarray, np.ndarray]:
    """Random filters of varied density, and noisy copies of most of them (shuffled)."""
    density = rng.uniform(0.05, 0.6, size=(n, 1))
    a = np.packbits(rng.random((n, nbytes * 8)) < density, axis=1)
    b = a[rng.permutation(n)].copy()
    noise = np.packbits(rng.random((n, nbytes * 8)) < rng.uniform(0, 0.08, size=(n, 1)), axis=1)
    b ^= noise
    return a, b


def make_datasets(seed: int, sizes: tuple[int, ...], nbytes: int) -> list[np.ndarray]:
    """Datasets drawn from one population with bit flips, plus strays and edge rows."""
    rng = np.random.default_rng(seed)
    pop = 300
    base = np.packbits(rng.random((pop, nbytes * 8)) < rng.uniform(0.1, 0.5, (pop, 1)), axis=1)
    out = []
    for n in sizes:
        rows = base[rng.choice(pop, size=n, replace=False)].copy()
        flips = rng.random((n, nbytes * 8)) < rng.uniform(0, 0.1, (n, 1))
        rows ^= np.packbits(flips, axis=1)
        rows[-3:] = np.packbits(rng.random((3, nbytes * 8)) < 0.3, axis=1)  # strays
        rows[0] = 0  # an empty filter
        # A subset pair at exactly 0.75 (anonlink's rounded window drops it
        # when the 30-bit filter is on the left) and an exact duplicate.
        rows[1] = ones((30, 50, 50)[len(out) % 3], nbytes)
        rows[2] = base[0]
        out.append(rows)
    return out


# --- dice_pairs ---------------------------------------------------------------


@pytest.mark.parametrize("nbytes", [1, 5, 8, 13, 16, 128])
def test_dice_pairs_equals_brute_force(nbytes, kernel):
    rng = np.random.default_rng(nbytes)
    a, b = correlated(rng, 37, nbytes)
    b = b[:29]
    a[3] = 0
    a[4] = 0
    b[5] = 0
    b[6] = a[7]
    for t in (0.0, 0.3, 0.5, 0.75, 0.8, 0.9, 1.0):
        expected = brute_force(a, b, t)
        for chunk_rows in (1, 3, 2048):
            got = as_triples(*dice_pairs(a, b, t, chunk_rows=chunk_rows))
            assert got == expected, (t, chunk_rows)


def test_dice_pairs_tiles_smaller_than_inputs(monkeypatch, kernel):
    # Force many small tiles in both directions.
    monkeypatch.setattr(dice_numpy, "_TILE_PAIRS", 12)
    rng = np.random.default_rng(7)
    a, b = correlated(rng, 50, 16)
    for t in (0.0, 0.6, 0.85):
        assert as_triples(*dice_pairs(a, b, t, chunk_rows=5)) == brute_force(a, b, t)


def test_dice_pairs_lookup_table_fallback(monkeypatch, kernel):
    rng = np.random.default_rng(3)
    a, b = correlated(rng, 30, 13)
    a[0] = 0
    expected = {t: as_triples(*dice_pairs(a, b, t)) for t in (0.0, 0.5, 0.8)}
    monkeypatch.setattr(dice_rows, "_HAVE_BITWISE_COUNT", False)
    for t, want in expected.items():
        got = as_triples(*dice_pairs(a, b, t, chunk_rows=4))
        assert got == want == brute_force(a, b, t)


def test_all_zero_rows_have_dice_zero(kernel):
    z = np.zeros((2, 8), np.uint8)
    i, j, s = dice_pairs(z, z, 0.0)
    assert as_triples(i, j, s) == [(0, 0, 0.0), (0, 1, 0.0), (1, 0, 0.0), (1, 1, 0.0)]
    assert len(dice_pairs(z, z, 1e-9)[0]) == 0


def test_results_sorted_and_typed(kernel):
    rng = np.random.default_rng(11)
    a, b = correlated(rng, 60, 32)
    i, j, s = dice_pairs(a, b, 0.5, chunk_rows=7)
    assert i.dtype == np.int64 and j.dtype == np.int64 and s.dtype == np.float64
    keys = list(zip(i.tolist(), j.tolist()))
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


def test_popcounts():
    x = np.array([[0xFF, 0x01, 0x00], [0, 0, 0], [0x80, 0x80, 0x81]], np.uint8)
    assert popcounts(x).tolist() == [9, 0, 4]


def test_anonlink_window_drops_boundary_subset_pair(kernel):
    # Dice(30 bits, superset of 50 bits) = 60/80 = 0.75 exactly, but
    # anonlink's window floor(2 * 30 * (1/0.75 - 1)) = 19 < 20 skips it.
    left = ones(30, 16)[None, :]
    right = ones(50, 16)[None, :]
    assert as_triples(*dice_pairs(left, right, 0.75)) == [(0, 0, 0.75)]
    assert as_triples(*dice_pairs(left, right, 0.75, window="anonlink")) == []
    # With the bigger filter on the left the window is wide enough.
    assert as_triples(*dice_pairs(right, left, 0.75, window="anonlink")) == [(0, 0, 0.75)]


def test_anonlink_window_matches_anonlink_on_boundary(anonlink, kernel):
    dice = anonlink.similarities.dice_coefficient_accelerated
    left = np.stack([ones(30, 16), ones(3, 16), ones(50, 16)])
    right = np.stack([ones(50, 16), ones(5, 16), ones(30, 16)])
    for t in (0.75, 0.7, 0.6):
        sims, (ri, rj) = dice((to_bitarrays(left), to_bitarrays(right)), t)
        want = sorted(zip(ri, rj, sims))
        got = as_triples(*dice_pairs(left, right, t, window="anonlink"))
        assert got == want, t


@pytest.mark.parametrize(
    "kwargs",
    [{"threshold": -0.1}, {"threshold": 1.5}, {"threshold": math.nan}, {"threshold": "0.8"}],
)
def test_bad_threshold_is_value_error(kwargs):
    a = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError):
        dice_pairs(a, a, **kwargs)
    with pytest.raises(ValueError):
        find_candidates([a, a], **kwargs)


def test_bad_arguments():
    a = np.zeros((2, 8), np.uint8)
    with pytest.raises(ValueError):
        dice_pairs(a, a, 0.5, chunk_rows=0)
    with pytest.raises(ValueError):
        dice_pairs(a, a, 0.5, window="fast")  # type: ignore[arg-type]
    with pytest.raises(DataValidationError):
        dice_pairs(a, np.zeros((2, 9), np.uint8), 0.5)
    with pytest.raises(DataValidationError):
        dice_pairs(a.astype(np.int64), a, 0.5)
    with pytest.raises(DataValidationError):
        dice_pairs(np.zeros(8, np.uint8), a, 0.5)
    with pytest.raises(DataValidationError):
        find_candidates([a, np.zeros((2, 16), np.uint8)], 0.5)
    with pytest.raises(DataValidationError):
        find_candidates([a, [[0] * 8]], 0.5)  # type: ignore[list-item]


def test_empty_inputs(kernel):
    a = np.zeros((0, 8), np.uint8)
    b = np.ones((3, 8), np.uint8)
    for x, y in ((a, b), (b, a), (a, a)):
        i, j, s = dice_pairs(x, y, 0.0)
        assert len(i) == len(j) == len(s) == 0
    assert len(find_candidates([], 0.5)) == 0
    assert len(find_candidates([b], 0.5)) == 0
    c = find_candidates([a, b, a], 0.0)
    assert len(c) == 0 and c.dataset.shape == (0, 2) and c.record.shape == (0, 2)


# --- find_candidates ------------------------------------------------------------


def anonlink_candidates(anonlink, datasets, t):
    sims, (d0, d1), (r0, r1) = anonlink.candidate_generation.find_candidate_pairs(
        [to_bitarrays(d) for d in datasets],
        anonlink.similarities.dice_coefficient_accelerated,
        t,
    )
    return np.asarray(sims), np.stack([d0, d1], axis=1), np.stack([r0, r1], axis=1)


@pytest.mark.parametrize("nbytes", [128, 13])
def test_find_candidates_equals_anonlink(anonlink, nbytes, kernel):
    datasets = make_datasets(1, (120, 150, 100), nbytes)
    for t in (0.0, 0.5, 0.7, 0.75, 0.8, 0.9, 1.0):
        ours = find_candidates(datasets, t)
        sims, dset, rec = anonlink_candidates(anonlink, datasets, t)
        assert len(ours) == len(sims), t
        # Same pairs, same order, bit-identical similarities.
        assert np.array_equal(ours.dataset, dset)
        assert np.array_equal(ours.record, rec)
        assert np.array_equal(ours.similarity, sims)
        assert np.all(ours.dataset[:, 0] < ours.dataset[:, 1])


def test_find_candidates_windows_differ_only_on_boundary(kernel):
    datasets = make_datasets(2, (60, 60, 60), 16)
    compat = find_candidates(datasets, 0.75)
    exact = find_candidates(datasets, 0.75, window="exact")
    key = lambda c: {  # noqa: E731
        (d0, d1, r0, r1): s
        for (d0, d1), (r0, r1), s in zip(c.dataset.tolist(), c.record.tolist(), c.similarity.tolist())
    }
    k_compat, k_exact = key(compat), key(exact)
    assert set(k_compat) <= set(k_exact)
    extra = set(k_exact) - set(k_compat)
    # Rows 1 are the subset filters: 30 bits in dataset 0, 50 in datasets 1, 2.
    assert extra == {(0, 1, 1, 1), (0, 2, 1, 1)}
    assert all(k_exact[e] == 0.75 for e in extra)


def test_find_candidates_matches_pairwise_dice_pairs(kernel):
    datasets = make_datasets(3, (40, 30, 50), 32)
    c = find_candidates(datasets, 0.6, window="exact")
    got = {
        (d0, d1, r0, r1, s)
        for (d0, d1), (r0, r1), s in zip(c.dataset.tolist(), c.record.tolist(), c.similarity.tolist())
    }
    want = set()
    for d0, d1 in ((0, 1), (0, 2), (1, 2)):
        want |= {(d0, d1, i, j, s) for i, j, s in brute_force(datasets[d0], datasets[d1], 0.6)}
    assert got == want
    order = list(zip((-c.similarity).tolist(), c.dataset.tolist(), c.record.tolist()))
    assert order == sorted(order)


def test_find_candidates_progress_on_stderr(capsys, kernel):
    datasets = make_datasets(4, (20, 20), 16)
    quiet = find_candidates(datasets, 0.8)
    assert capsys.readouterr().err == ""
    loud = find_candidates(datasets, 0.8, progress=True)
    assert "comparing" in capsys.readouterr().err
    assert np.array_equal(quiet.record, loud.record)


def test_candidates_validation():
    c = Candidates(np.array([0.9, 0.8]), np.array([[0, 1], [0, 2]]), np.array([[1, 2], [3, 4]]))
    assert len(c) == 2 and c.dataset.dtype == np.int64 and c.similarity.dtype == np.float64
    with pytest.raises(DataValidationError):
        Candidates(np.array([0.9]), np.array([[0, 1], [0, 2]]), np.array([[1, 2], [3, 4]]))
    with pytest.raises(DataValidationError):
        Candidates(np.array([0.9]), np.array([[0, -1]]), np.array([[1, 2]]))
    with pytest.raises(DataValidationError):
        Candidates(np.zeros((1, 1)), np.array([[0, 1]]), np.array([[1, 2]]))
    with pytest.raises(DataValidationError):
        Candidates(np.array(["x"]), np.array([[0, 1]]), np.array([[1, 2]]))
    assert len(Candidates.empty()) == 0
