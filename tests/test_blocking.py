"""Keyed LSH blocking: completeness against brute force, determinism, parameter choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pprl.matching.blocking import (
    BITS_RANGE,
    MAX_BANDS,
    MIN_PAIRS_FOR_LSH,
    band_positions,
    collision_probability,
    derive_seed,
    design_lsh,
    lsh_candidates,
    plan_blocking,
)
from pprl.matching.dice.similarity import find_candidates
from pprl.matching.thresholds import best_match_sample

LENGTH = 1024


def correlated(seed: int = 0, n: int = 4000, shared: int = 2500, fill: float = 0.3, noise: float = 0.04):
    """Two datasets of CLK-like filters: ``shared`` records of A reappear in B with bits flipped."""
    rng = np.random.default_rng(seed)
    bits_a = rng.random((n, LENGTH)) < fill
    copies = bits_a[:shared] ^ (rng.random((shared, LENGTH)) < noise)
    bits_b = np.concatenate([copies, rng.random((n - shared, LENGTH)) < fill])
    order = rng.permutation(n)
    return np.packbits(bits_a, axis=1), np.packbits(bits_b[order], axis=1)


@pytest.fixture(scope="module")
def data():
    a, b = correlated()
    brute = find_candidates([a, b], 0.75)
    return a, b, brute


def _pairs(c):
    return set(zip(c.dataset[:, 0].tolist(), c.record[:, 0].tolist(), c.dataset[:, 1].tolist(), c.record[:, 1].tolist()))


def test_lsh_finds_almost_all_pairs_with_a_big_reduction(data):
    a, b, brute = data
    cands, report = lsh_candidates([a, b], 0.75, seed=derive_seed("test"))
    found, truth = _pairs(cands), _pairs(brute)
    assert found <= truth  # exact similarities, never a pair brute force rejects
    assert len(truth) >= 2400
    completeness = len(found) / len(truth)
    assert completeness >= 0.99
    assert report.reduction_ratio >= 0.97  # 16M pairs; the cost model keeps hashing cheap at this size
    assert report.pairs_total == a.shape[0] * b.shape[0]
    assert report.comparisons == round((1 - report.reduction_ratio) * report.pairs_total)
    assert report.estimated_pair_completeness is not None and report.estimated_pair_completeness >= 0.99
    # Same similarities and the same order as brute force, restricted to what was found.
    keep = np.array([p in found for p in zip(brute.dataset[:, 0].tolist(), brute.record[:, 0].tolist(),
                                             brute.dataset[:, 1].tolist(), brute.record[:, 1].tolist())])
    assert np.array_equal(brute.similarity[keep], cands.similarity)
    assert np.array_equal(brute.record[keep], cands.record)


def test_same_seed_same_candidates(data):
    a, b, _ = data
    one, r1 = lsh_candidates([a, b], 0.75, seed=b"s" * 32, bands=12, bits_per_band=20)
    two, r2 = lsh_candidates([a, b], 0.75, seed=b"s" * 32, bands=12, bits_per_band=20)
    assert np.array_equal(one.record, two.record) and np.array_equal(one.similarity, two.similarity)
    assert r1 == r2
    other, r3 = lsh_candidates([a, b], 0.75, seed=b"t" * 32, bands=12, bits_per_band=20)
    assert r3.comparisons != r1.comparisons or not np.array_equal(one.record, other.record)


def test_band_positions_are_keyed_distinct_and_in_range():
    p = band_positions(b"seed", LENGTH, 50, 24)
    assert p.shape == (50, 24)
    assert p.min() >= 0 and p.max() < LENGTH
    assert all(len(set(row)) == 24 for row in p.tolist())
    assert np.array_equal(p, band_positions(b"seed", LENGTH, 50, 24))
    assert not np.array_equal(p, band_positions(b"seeds", LENGTH, 50, 24))
    # Bands are drawn one by one: more bands extend, never reshuffle.
    assert np.array_equal(band_positions(b"seed", LENGTH, 10, 24), p[:10])


def test_collision_probability_formula():
    assert collision_probability([0], LENGTH, 20, 1)[0] == pytest.approx(1.0)
    h, b, bands = 300, 16, 10
    q = math.comb(LENGTH - h, b) / math.comb(LENGTH, b)
    assert collision_probability([h], LENGTH, b, bands)[0] == pytest.approx(1 - (1 - q) ** bands, rel=1e-9)
    assert collision_probability([LENGTH], LENGTH, 8, 100)[0] == 0.0


@pytest.mark.parametrize("n", [1_000, 10_000, 100_000, 1_000_000])
def test_parameter_choice_is_sane(n):
    design = design_lsh([n, n], 0.8, length=LENGTH, fill=0.35)
    assert design is not None and design.meets_target
    assert BITS_RANGE[0] <= design.bits_per_band <= BITS_RANGE[1]
    assert 1 <= design.bands <= MAX_BANDS
    assert design.estimated_pair_completeness >= 0.99
    assert design.pair_completeness_at_threshold >= 0.99  # no sample: designed for the worst case
    assert design.expected_comparisons < n * n
    # bigger inputs: at least as selective (a smaller share of pairs compared)
    if n > 1_000:
        smaller = design_lsh([n // 10, n // 10], 0.8, length=LENGTH, fill=0.35)
        assert design.bits_per_band >= smaller.bits_per_band
        assert design.expected_comparisons / n**2 <= smaller.expected_comparisons / (n // 10) ** 2


def test_an_impossible_target_gives_no_design_unless_best_effort():
    # Threshold barely above what random filters reach: no band separates them.
    assert design_lsh([100_000, 100_000], 0.3, length=LENGTH, fill=0.5) is None
    forced = design_lsh([100_000, 100_000], 0.3, length=LENGTH, fill=0.5, best_effort=True)
    assert forced is not None and not forced.meets_target and forced.bands == MAX_BANDS


def test_plan_blocking_auto_skips_small_inputs(data):
    a, b, _ = data
    plan = plan_blocking([a, b], 0.75, mode="auto", seed=b"x")
    assert plan.method == "none" and a.shape[0] * b.shape[0] < MIN_PAIRS_FOR_LSH
    assert plan_blocking([a, b], 0.75, mode="none").method == "none"
    forced = plan_blocking([a, b], 0.75, mode="lsh", seed=b"x")
    assert forced.method == "lsh" and forced.design is not None
    with pytest.raises(ValueError):
        plan_blocking([a, b], 0.75, mode="sometimes")  # type: ignore[arg-type]


def test_design_uses_the_sampled_best_matches(data):
    a, b, _ = data
    sample = best_match_sample([a, b], size=400, seed=b"x")
    with_sample = plan_blocking([a, b], 0.75, mode="lsh", seed=b"x", sample=sample).design
    without = plan_blocking([a, b], 0.75, mode="lsh", seed=b"x").design
    # Best matches lie far above the threshold here: fewer bands suffice than for the worst case.
    assert with_sample.bands * 2 ** -with_sample.bits_per_band <= without.bands * 2 ** -without.bits_per_band or (
        with_sample.expected_comparisons <= without.expected_comparisons
    )
    assert with_sample.estimated_pair_completeness >= 0.99


def test_three_datasets_and_empty_filters():
    rng = np.random.default_rng(9)
    a, b = correlated(seed=9, n=600, shared=400)
    c = np.concatenate([a[:300] ^ np.packbits(rng.random((300, LENGTH)) < 0.03, axis=1), np.zeros((5, LENGTH // 8), np.uint8)])
    brute = find_candidates([a, b, c], 0.75)
    cands, report = lsh_candidates([a, b, c], 0.75, seed=b"three", bands=40, bits_per_band=16)
    assert _pairs(cands) <= _pairs(brute)
    assert len(_pairs(cands)) >= 0.99 * len(brute)
    assert set(map(tuple, cands.dataset.tolist())) == {(0, 1), (0, 2), (1, 2)}
    assert report.pairs_total == 600 * 600 + 600 * 305 + 600 * 305


def test_bad_arguments(data):
    a, b, _ = data
    with pytest.raises(ValueError):
        lsh_candidates([a, b], 0.0, seed=b"x")
    with pytest.raises(ValueError):
        lsh_candidates([a, b], 0.8, seed=b"x", bands=4, bits_per_band=65)
    with pytest.raises(ValueError):
        lsh_candidates([a, b], 0.8, seed=b"x", bands=0, bits_per_band=8)
    with pytest.raises(TypeError):
        lsh_candidates([a, b], 0.8, seed="text")  # type: ignore[arg-type]
