"""Pairwise linkage quality on hand-made examples with known answers."""

from __future__ import annotations

import itertools

import pytest

from pprl.errors import DataValidationError
from pprl.matching.quality import LinkageQuality, evaluate_groups

TRUTH = {"a": 1, "b": 1, "c": 1, "d": 2, "e": 3}  # true pairs: ab, ac, bc


def test_three_true_two_predicted_one_correct():
    q = evaluate_groups([["a", "b"], ["d", "e"]], TRUTH)
    assert (q.true_pairs, q.predicted_pairs, q.correct_pairs) == (3, 2, 1)
    assert q.precision == 0.5
    assert q.recall == pytest.approx(1 / 3)
    assert q.f1 == pytest.approx(0.4)


def test_perfect():
    q = evaluate_groups([["c", "a", "b"], ["d"], ["e"]], TRUTH)
    assert (q.precision, q.recall, q.f1) == (1.0, 1.0, 1.0)
    assert (q.true_pairs, q.predicted_pairs, q.correct_pairs) == (3, 3, 3)


def test_group_of_three_with_one_wrong_member():
    # abd: pairs ab (right), ad, bd (wrong) -> 1 of 3; recall 1 of 3.
    q = evaluate_groups([("a", "b", "d")], TRUTH)
    assert (q.predicted_pairs, q.correct_pairs) == (3, 1)
    assert q.precision == pytest.approx(1 / 3)
    assert q.recall == pytest.approx(1 / 3)
    assert q.f1 == pytest.approx(1 / 3)


def test_nothing_predicted():
    q = evaluate_groups([], TRUTH)
    assert (q.precision, q.recall, q.f1) == (1.0, 0.0, 0.0)
    q = evaluate_groups([["a"], ["b"]], TRUTH)
    assert (q.precision, q.recall, q.predicted_pairs) == (1.0, 0.0, 0)


def test_nothing_to_find():
    truth = {"x": 1, "y": 2}
    assert evaluate_groups([], truth).as_dict() == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "true_pairs": 0,
        "predicted_pairs": 0,
        "correct_pairs": 0,
    }
    q = evaluate_groups([["x", "y"]], truth)
    assert (q.precision, q.recall, q.f1) == (0.0, 1.0, 0.0)


def test_all_wrong_is_zero():
    q = evaluate_groups([["a", "d"], ["b", "e"]], TRUTH)
    assert (q.precision, q.recall, q.f1) == (0.0, 0.0, 0.0)


def test_keys_missing_from_truth_count_as_wrong():
    q = evaluate_groups([["a", "b", "zz"], ["yy", "xx"]], TRUTH)
    # predicted: ab, a-zz, b-zz, yy-xx = 4; correct: ab.
    assert (q.predicted_pairs, q.correct_pairs, q.true_pairs) == (4, 1, 3)
    assert q.precision == 0.25


def test_platform_token_keys():
    truth = {
        ("platform_1", "u1"): "E1",
        ("platform_2", "t9"): "E1",
        ("platform_3", "k4"): "E1",
        ("platform_1", "u2"): "E2",
        ("platform_2", "t3"): "E2",
    }
    groups = [
        [("platform_1", "u1"), ("platform_2", "t9")],
        [("platform_1", "u2"), ("platform_2", "t3"), ("platform_3", "k4")],
    ]
    q = evaluate_groups(groups, truth)
    # true 3 + 1 = 4; predicted 1 + 3 = 4; correct: u1-t9, u2-t3 = 2.
    assert (q.true_pairs, q.predicted_pairs, q.correct_pairs) == (4, 4, 2)
    assert (q.precision, q.recall, q.f1) == (0.5, 0.5, 0.5)


def test_counts_equal_explicit_pair_sets():
    truth = {k: k % 7 for k in range(60)}
    groups = [list(range(i, min(60, i + 5))) for i in range(0, 60, 5)]
    q = evaluate_groups(groups, truth)
    predicted = {frozenset(p) for g in groups for p in itertools.combinations(g, 2)}
    true = {frozenset(p) for p in itertools.combinations(truth, 2) if truth[min(p)] == truth[max(p)]}
    assert q.predicted_pairs == len(predicted)
    assert q.true_pairs == len(true)
    assert q.correct_pairs == len(predicted & true)


def test_groups_may_be_generators():
    q = evaluate_groups((iter(g) for g in [["a", "b"], ["c"]]), TRUTH)
    assert (q.predicted_pairs, q.correct_pairs) == (1, 1)


def test_duplicate_keys_are_rejected():
    with pytest.raises(DataValidationError):
        evaluate_groups([["a", "b"], ["b", "c"]], TRUTH)
    with pytest.raises(DataValidationError):
        evaluate_groups([["a", "a"]], TRUTH)


def test_frozen():
    q = LinkageQuality(1.0, 1.0, 1.0, 0, 0, 0)
    with pytest.raises(AttributeError):
        q.precision = 0.5  # type: ignore[misc]
