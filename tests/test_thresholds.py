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


def _real_like(seed: int, n: int = 1000):
    """The shape of real records (Union Army census x service records): a quarter of the records
    have a match, 14 % of the matches agree exactly (similarity 1), and the non-matches have a tail
    of hard ones (relatives, namesakes) that second-best values share."""
    rng = np.random.default_rng(seed)

    def sig(x):
        return 1.0 / (1.0 + np.exp(-x))

    k = n // 4
    exact = int(0.14 * k)
    matches = np.concatenate([np.ones(exact), sig(rng.normal(2.2, 0.6, k - exact))])
    others = sig(np.concatenate([rng.normal(0.8, 0.3, n - k - 60), rng.normal(1.6, 0.3, 60)]))
    top1 = rng.permutation(np.concatenate([matches, others]))
    top2 = sig(np.concatenate([rng.normal(0.85, 0.3, n - 100), rng.normal(1.6, 0.3, 100)]))
    return top1, top2


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_agreement_and_a_tail_of_hard_non_matches(seed):
    # Before the atom at exact agreement, the Gaussian match component stretched over the
    # similarity-1 values, failed the separation check and the default 0.8 was used.
    top1, top2 = _real_like(seed)
    choice = choose_threshold(top1, top2)
    assert choice.method == "auto", choice.reason
    assert 0.8 < choice.threshold < 0.88
    fit = choice.fit
    assert fit is not None
    assert fit.exact_weight == pytest.approx(0.14, abs=0.04)
    assert fit.weight_top2 == 0.0
    assert fit.weight_top1 == pytest.approx(0.25, abs=0.06)
    assert choice.posterior([1.0])[0] == 1.0
    assert choice.posterior([0.65])[0] < 0.01


def test_no_exact_agreement_means_no_atom():
    top1, top2 = bimodal(seed=2)
    fit = fit_mixture(np.minimum(top1, 0.999), top2)
    assert fit.exact_weight == 0.0
    assert "with 0.0% at exact agreement" in fit.as_dict()["model"]


def test_unrelated_populations_are_not_linked():
    # Two populations with nobody in common: whatever the fit finds, the threshold must not
    # be one at which the greedy linkage links a noticeable share of the records.
    a = _synth_world(10, people=1500, platforms=2, corruption=0.6)[0][0]
    b = _synth_world(11, people=1500, platforms=2, corruption=0.6)[0][1]
    sample = best_match_sample([a, b], size=1000, seed=b"unrelated")
    choice = choose_threshold(sample.top1, sample.top2)
    if choice.method == "default":
        assert choice.reason
    groups = greedy_solve(find_candidates([a, b], choice.threshold))
    linked = sum(len(g) for g in groups if len(g) > 1)
    assert linked <= 0.01 * (a.shape[0] + b.shape[0]), (choice.as_dict(), linked)


def test_records_one_value_each_change_nothing():
    top1, top2 = bimodal(seed=4)
    fit = fit_mixture(top1, top2)
    plain = estimate_f1_curve(fit, top1)
    each = estimate_f1_curve(fit, top1, records=np.arange(top1.shape[0])[::-1])
    assert np.allclose(plain.f1, each.f1) and plain.best == each.best
    with pytest.raises(ValueError):
        estimate_f1_curve(fit, top1, records=[1, 2])


def test_records_with_several_best_matches_block_more_wrong_links():
    # A record's best matches in two other datasets: once either is linked, a wrong partner
    # pointing at it is refused, so fewer wrong links are expected than row by row.
    top1, top2 = bimodal(seed=6, matches=600, others=400)
    fit = fit_mixture(top1, top2)
    pairs = np.repeat(np.arange(top1.shape[0] // 2), 2)
    rows = estimate_f1_curve(fit, top1, [0.3])
    grouped = estimate_f1_curve(fit, top1, [0.3], records=pairs)
    assert grouped.precision[0] > rows.precision[0]
    assert grouped.recall[0] == pytest.approx(rows.recall[0])


def test_sample_record_ids_name_dataset_and_record():
    rng = np.random.default_rng(8)
    a, b, c = _filters(rng, 30), _filters(rng, 40), _filters(rng, 20)
    sample = best_match_sample([a, b, c], size=1000, seed=b"ids")
    ids = sample.record_ids()
    assert ids.shape == sample.top1.shape
    # one id per (dataset, record): each sampled record has one row per other dataset
    pairs = set(zip(sample.dataset.tolist(), sample.record.tolist()))
    assert len(set(ids.tolist())) == len(pairs) == 90
    assert (np.bincount(np.unique(ids, return_inverse=True)[1]) == 2).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_auto_threshold_near_the_best_fixed_one_with_records(seed):
    datasets, truth = _synth_world(seed)
    sample = best_match_sample(datasets, size=1000, seed=b"test")
    choice = choose_threshold(sample.top1, sample.top2, records=sample.record_ids())
    assert choice.method == "auto"
    candidates = find_candidates(datasets, 0.55)
    fixed = {t: _f1_at(datasets, truth, candidates, t) for t in np.round(np.arange(0.55, 0.951, 0.01), 2)}
    best = max(fixed.values())
    ours = _f1_at(datasets, truth, candidates, choice.threshold)
    assert ours >= best - 0.003, (choice.threshold, ours, max(fixed, key=fixed.get), best)
