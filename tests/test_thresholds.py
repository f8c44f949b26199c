"""The automatic threshold: mixture fit on best-match similarities, keyed sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pprl.encoding.clk import encode_records
from pprl.encoding.schema import load_schema
from pprl.errors import DataValidationError
from pprl.matching.dice.similarity import dice_pairs, find_candidates
from pprl.matching.quality import evaluate_groups
from pprl.matching.solve import greedy_solve
from pprl.matching.thresholds import (
    DEFAULT_THRESHOLD,
    THRESHOLD_RANGE,
    best_match_sample,
    choose_threshold,
    estimate_f1_curve,
    fit_mixture,
    keyed_choice,
)
from pprl.sim.synth import generate_population

SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "schema-cn-clkhash.json"


def bimodal(seed: int = 0, matches: int = 700, others: int = 300):
    """Best matches: true ones around 0.88, best wrong ones around 0.60; second best all wrong."""
    rng = np.random.default_rng(seed)
    true = np.clip(rng.normal(0.88, 0.06, matches), 0.0, 1.0)
    wrong = rng.normal(0.60, 0.02, others)
    top1 = rng.permutation(np.concatenate([true, wrong]))
    top2 = rng.normal(0.59, 0.02, matches + others)
    return top1, top2


def test_threshold_lands_between_the_modes():
    top1, top2 = bimodal()
    choice = choose_threshold(top1, top2)
    assert choice.method == "auto"
    assert 0.62 < choice.threshold < 0.75
    # The posterior is low among the wrong matches and high among the true ones.
    post = choice.posterior([0.58, 0.60, 0.85, 0.95])
    assert post[0] < 0.05 and post[1] < 0.2
    assert post[2] > 0.95 and post[3] > 0.99
    # The posterior crosses 0.5 where recorded; the F1 rule sits at or below it (the greedy
    # solver blocks many wrong best matches, and F1 trades a few wrong links for right ones).
    crossing = choice.extra["posterior_crossing"]
    assert choice.posterior(crossing)[()] == pytest.approx(0.5, abs=1e-3)
    assert choice.threshold <= crossing + 1e-9
    assert choice.extra["rule"].startswith("maximum of the estimated F1")


def test_threshold_is_deterministic():
    top1, top2 = bimodal(seed=3)
    a = choose_threshold(top1, top2)
    b = choose_threshold(top1.copy(), top2.copy())
    assert a.threshold == b.threshold
    assert a.fit == b.fit
    assert a.as_dict() == b.as_dict()


def test_fit_recovers_the_components():
    top1, top2 = bimodal(seed=5, matches=2000, others=1000)
    fit = fit_mixture(top1, top2)
    assert fit.converged
    # Non-match mean ~ logit(0.6) = 0.405; match weight among best matches ~ 2/3.
    assert fit.mean[0] == pytest.approx(np.log(0.6 / 0.4), abs=0.05)
    assert fit.weight_top1 == pytest.approx(2 / 3, abs=0.05)  # the logit-normal shape is only an approximation
    assert fit.weight_top2 < 0.02


def test_without_second_best_values_it_still_separates():
    top1, _ = bimodal(seed=7)
    choice = choose_threshold(top1)
    assert choice.method == "auto"
    assert 0.62 < choice.threshold < 0.78


def test_one_population_falls_back_to_the_default():
    rng = np.random.default_rng(1)
    top1 = rng.normal(0.60, 0.02, 1000)
    top2 = rng.normal(0.59, 0.02, 1000)
    choice = choose_threshold(top1, top2)
    assert choice.method == "default"
    assert choice.threshold == DEFAULT_THRESHOLD
    assert choice.reason
    assert choice.posterior([0.9]) is None


def test_too_small_a_sample_falls_back():
    choice = choose_threshold([0.9, 0.6, 0.95])
    assert choice.method == "default" and "3" in choice.reason


def test_threshold_is_clamped():
    rng = np.random.default_rng(2)
    top1 = np.concatenate([rng.normal(0.20, 0.02, 300), rng.normal(0.40, 0.03, 700)])
    top2 = rng.normal(0.19, 0.02, 1000)
    choice = choose_threshold(top1, top2)
    assert choice.method == "auto"
    assert choice.threshold == THRESHOLD_RANGE[0]
    assert choice.clamped


def test_bad_inputs():
    with pytest.raises(DataValidationError):
        fit_mixture([0.5])
    with pytest.raises(DataValidationError):
        fit_mixture([0.5, 1.5, 0.7])
    with pytest.raises(ValueError):
        choose_threshold([0.5] * 40, clamp=(0.9, 0.5))


def test_keyed_choice_is_deterministic_and_distinct():
    a = keyed_choice(b"seed", "x", 1000, 200)
    assert np.array_equal(a, keyed_choice(b"seed", "x", 1000, 200))
    assert len(set(a.tolist())) == 200 and a.min() >= 0 and a.max() < 1000
    assert not np.array_equal(a, keyed_choice(b"other", "x", 1000, 200))
    assert not np.array_equal(a, keyed_choice(b"seed", "y", 1000, 200))
    assert sorted(keyed_choice(b"s", "all", 50, 50).tolist()) == list(range(50))
    with pytest.raises(ValueError):
        keyed_choice(b"s", "x", 5, 6)


def _filters(rng, n, nbytes=64, fill=0.3):
    return np.packbits(rng.random((n, nbytes * 8)) < fill, axis=1)


def test_best_match_sample_equals_brute_force():
    rng = np.random.default_rng(11)
    a = _filters(rng, 120)
    b = np.concatenate([a[:80] ^ np.packbits(rng.random((80, 512)) < 0.03, axis=1), _filters(rng, 50)])
    sample = best_match_sample([a, b], size=60, seed=b"run")
    assert sample.records_sampled == 60
    assert len(sample) == 60
    for d, r, e, p, s1, s2 in zip(sample.dataset, sample.record, sample.other, sample.partner, sample.top1, sample.top2):
        x, y = ([a, b][d], [a, b][e])
        _, j, s = dice_pairs(x[r : r + 1], y, 0.0)
        order = np.lexsort((j, -s))
        assert s1 == s[order[0]] and p == j[order[0]]
        assert s2 == s[order[1]]
    again = best_match_sample([a, b], size=60, seed=b"run")
    assert np.array_equal(again.record, sample.record) and np.array_equal(again.top1, sample.top1)
    # Hamming distance of the best pair, exactly.
    k = 0
    x, y = [a, b][sample.dataset[k]][sample.record[k]], [a, b][sample.other[k]][sample.partner[k]]
    assert sample.hamming[k] == int(np.unpackbits(x ^ y).sum())


def test_sample_of_everything_when_small():
    rng = np.random.default_rng(4)
    a, b, c = _filters(rng, 10), _filters(rng, 12), _filters(rng, 1)
    sample = best_match_sample([a, b, c], size=1000, seed=b"")
    assert sample.records_sampled == 23
    # each record against each of the two other datasets
    assert len(sample) == 23 * 2
    # the single-record dataset has no second best
    assert np.isnan(sample.top2[sample.other == 2]).all()


def test_f1_estimate_of_separate_populations():
    top1, top2 = bimodal(seed=3)
    fit = fit_mixture(top1, top2)
    est = estimate_f1_curve(fit, top1, [0.3, 0.7, 0.99])
    # Everything kept at 0.3: the 300 wrong best matches count only where their partner is free.
    assert est.recall[0] == pytest.approx(1.0) and est.precision[0] < 1.0
    # Between the modes nearly only right links are kept; near 1 almost nothing is.
    assert est.precision[1] > 0.99 and est.recall[1] > 0.95 and est.f1[1] > est.f1[0]
    assert est.recall[2] < 0.2 and est.f1[2] < est.f1[1]
    assert est.best == pytest.approx(0.7)


def _synth_world(seed: int, people: int = 3000, platforms: int = 3, corruption: float = 0.6):
    """CLKs of a heavily corrupted synthetic population, and its truth."""
    population = generate_population(people, platforms, seed=seed, corruption=corruption)
    schema = load_schema(SCHEMA)
    names = list(population.platforms)
    datasets = [encode_records(population.platforms[n], schema, b"threshold test secret") for n in names]
    person = {(p, u): who for p, u, who in population.truth[["platform", "user_id", "person"]].itertuples(index=False)}
    truth = {(d, r): person[(n, u)] for d, n in enumerate(names)
             for r, u in enumerate(population.platforms[n]["user_id"])}
    return datasets, truth


def _f1_at(datasets, truth, candidates, t):
    keep = candidates.similarity >= t
    cands = type(candidates)(candidates.similarity[keep], candidates.dataset[keep], candidates.record[keep])
    groups = greedy_solve(cands)
    return evaluate_groups(groups, truth).f1


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_threshold_near_the_best_fixed_one(seed):
    datasets, truth = _synth_world(seed)
    sample = best_match_sample(datasets, size=1000, seed=b"test")
    choice = choose_threshold(sample.top1, sample.top2)
    assert choice.method == "auto"
    candidates = find_candidates(datasets, 0.55)
    fixed = {t: _f1_at(datasets, truth, candidates, t) for t in np.round(np.arange(0.55, 0.951, 0.01), 2)}
    best = max(fixed.values())
    ours = _f1_at(datasets, truth, candidates, choice.threshold)
    # Issue 14's target.  (The posterior's 0.5 crossing, the rule before, misses it here by
    # 0.004-0.007: it ignores the wrong best matches the greedy solver blocks.)
    assert ours >= best - 0.003, (choice.threshold, ours, max(fixed, key=fixed.get), best)
