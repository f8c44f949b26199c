"""Greedy solving: hand-made cases, and equality with anonlink's solver."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest
from anchors import load_anonlink as _load_anonlink

from pprl.errors import DataValidationError
from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.solve import greedy_solve, group_similarities, solve_order


def load_anonlink():
    return _load_anonlink("solving")


def make_datasets(seed: int, sizes: tuple[int, ...], nbytes: int) -> list[np.ndarray]:
    """Datasets drawn from one population of filters, each row with bit flips."""
    rng = np.random.default_rng(seed)
    pop = 300
    base = np.packbits(rng.random((pop, nbytes * 8)) < rng.uniform(0.1, 0.5, (pop, 1)), axis=1)
    out = []
    for n in sizes:
        rows = base[rng.choice(pop, size=n, replace=False)].copy()
        flips = rng.random((n, nbytes * 8)) < rng.uniform(0, 0.1, (n, 1))
        rows ^= np.packbits(flips, axis=1)
        rows[0] = 0
        rows[1] = base[0]  # exact duplicates across datasets: ties at 1.0
        out.append(rows)
    return out


@pytest.fixture(scope="module")
def anonlink():
    return load_anonlink()


def cands(rows: list[tuple[float, int, int, int, int]]) -> Candidates:
    """Candidates from (sim, d0, r0, d1, r1) rows."""
    if not rows:
        return Candidates.empty()
    sim = np.array([r[0] for r in rows], float)
    dset = np.array([(r[1], r[3]) for r in rows])
    rec = np.array([(r[2], r[4]) for r in rows])
    return Candidates(sim, dset, rec)


def to_anonlink(c: Candidates) -> tuple:
    """Our candidates in anonlink's format, in the order our solver takes them."""
    order = solve_order(c)
    d = c.dataset[order].astype(np.uint32)
    r = c.record[order].astype(np.uint32)
    return (
        array("d", c.similarity[order].tolist()),
        (array("I", d[:, 0].tolist()), array("I", d[:, 1].tolist())),
        (array("I", r[:, 0].tolist()), array("I", r[:, 1].tolist())),
    )


def as_sets(groups) -> set[frozenset]:
    return {frozenset((int(d), int(r)) for d, r in g) for g in groups}


def check_format(groups):
    for g in groups:
        assert len(g) >= 2
        assert g == sorted(g)
        assert all(type(d) is int and type(r) is int for d, r in g)
    assert [g[0] for g in groups] == sorted(g[0] for g in groups)
    members = [m for g in groups for m in g]
    assert len(members) == len(set(members))


# --- hand-made cases --------------------------------------------------------------


def test_pair_then_third_record_needs_every_edge():
    # A-B first; C matches B only: C waits as a singleton; A-C completes it.
    a, b, c = (0, 0), (1, 0), (2, 0)
    rows = [(0.9, *a, *b), (0.85, *b, *c)]
    assert greedy_solve(cands(rows)) == [[a, b]]
    rows.append((0.8, *a, *c))
    assert greedy_solve(cands(rows)) == [[a, b, c]]


def test_best_pair_wins_and_order_is_by_similarity_not_input():
    rows = [(0.8, 0, 0, 1, 1), (0.95, 0, 0, 1, 0), (0.9, 0, 1, 1, 0), (0.85, 0, 1, 1, 1)]
    # 0.95: (0,0)-(1,0); 0.9: (0,1) joins? group size 2 -> waits; 0.85 -> new pair.
    assert greedy_solve(cands(rows)) == [[(0, 0), (1, 0)], [(0, 1), (1, 1)]]


def test_ties_break_by_indices():
    # Equal similarities: the pair with the smaller (d0, d1, r0, r1) goes first.
    rows = [(0.9, 0, 1, 1, 0), (0.9, 0, 0, 1, 0)]
    assert greedy_solve(cands(rows)) == [[(0, 0), (1, 0)]]


def test_same_dataset_pairs_and_self_pairs():
    rows = [(1.0, 0, 3, 0, 3), (0.9, 0, 0, 0, 1), (0.8, 0, 0, 1, 0), (0.7, 0, 1, 1, 0)]
    assert greedy_solve(cands(rows)) == [[(0, 0), (1, 0)]]
    # Without the check, (0,1)-(1,0) completes the edges to merge all three.
    assert greedy_solve(cands(rows), deduplicated=False) == [[(0, 0), (0, 1), (1, 0)]]


def test_empty_and_bad_input():
    assert greedy_solve(Candidates.empty()) == []
    with pytest.raises(DataValidationError):
        greedy_solve((array("d"), (), ()))  # type: ignore[arg-type]


def test_group_similarities():
    a, b, c, d = (0, 0), (1, 0), (2, 0), (2, 5)
    c_all = cands([(0.9, *a, *b), (0.85, *b, *c), (0.8, *a, *c), (0.99, *a, *d)])
    groups = [[a, b, c], [d, (1, 9)]]
    assert group_similarities(groups, c_all)[0] == [0.9, 0.9, 0.85]
    second = group_similarities(groups, c_all)[1]
    assert all(math.isnan(x) for x in second)
    with pytest.raises(DataValidationError):
        group_similarities([[a, b], [b, c]], c_all)
    with pytest.raises(DataValidationError):
        group_similarities([[a, a]], c_all)


def test_group_similarities_of_solved_groups():
    datasets = make_datasets(5, (80, 90, 70), 64)
    c = find_candidates(datasets, 0.7)
    groups = greedy_solve(c)
    sims = group_similarities(groups, c)
    assert [len(s) for s in sims] == [len(g) for g in groups]
    flat = [x for s in sims for x in s]
    assert flat and all(0.7 <= x <= 1.0 for x in flat)


# --- against anonlink ---------------------------------------------------------------


@pytest.mark.parametrize("sizes", [(150, 170), (120, 150, 100), (60, 70, 80, 50)])
@pytest.mark.parametrize("threshold", [0.6, 0.75, 0.85])
def test_greedy_solve_equals_anonlink(anonlink, sizes, threshold):
    datasets = make_datasets(len(sizes) * 10 + int(threshold * 100), sizes, 128)
    c = find_candidates(datasets, threshold)
    ours = greedy_solve(c)
    check_format(ours)
    theirs = anonlink.solving.greedy_solve(to_anonlink(c))
    assert as_sets(ours) == as_sets(theirs)
    assert ours == greedy_solve(c, deduplicated=False)
    assert any(len(g) > 2 for g in ours) or len(sizes) == 2


def random_candidates(seed: int, n_datasets: int, n_records: int, m: int, *, messy: bool):
    """Many candidates with heavily tied similarities, in random order.

    Unless ``messy``, pairs are distinct and always join two datasets, like
    find_candidates' output; ``messy`` allows repeated pairs, pairs inside one
    dataset and self pairs.
    """
    rng = np.random.default_rng(seed)
    d0 = rng.integers(0, n_datasets, m)
    if messy:
        d1 = rng.integers(0, n_datasets, m)
    else:
        d1 = (d0 + rng.integers(1, n_datasets, m)) % n_datasets
    swap = d0 > d1
    rec = rng.integers(0, n_records, (m, 2))
    rec[swap] = rec[swap][:, ::-1]
    dset = np.stack([np.minimum(d0, d1), np.maximum(d0, d1)], axis=1)
    sim = rng.choice([0.95, 0.9, 0.9, 0.85, 0.8], m)
    if not messy:
        _, first = np.unique(np.concatenate([dset, rec], axis=1), axis=0, return_index=True)
        keep = np.sort(first)
        sim, dset, rec = sim[keep], dset[keep], rec[keep]
    return Candidates(sim, dset, rec)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_datasets", [2, 3, 4])
def test_ties_equal_anonlink(anonlink, seed, n_datasets):
    c = random_candidates(seed, n_datasets, 12, 200, messy=False)
    ours = greedy_solve(c)
    check_format(ours)
    assert as_sets(ours) == as_sets(anonlink.solving.greedy_solve(to_anonlink(c)))
    assert ours == greedy_solve(c, deduplicated=False)
    assert any(len(g) > 2 for g in ours) or n_datasets == 2
    # The solver sorts: any input order gives the same groups.
    perm = np.random.default_rng(seed).permutation(len(c))
    shuffled = Candidates(c.similarity[perm], c.dataset[perm], c.record[perm])
    assert greedy_solve(shuffled) == ours


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("n_datasets", [1, 2, 3])
def test_messy_candidates_equal_anonlink(anonlink, seed, n_datasets):
    # Repeated pairs can complete the edge count on their own, and pairs
    # inside a dataset can group its records: deduplicated=True refuses
    # such groups exactly like anonlink's deduplicated solver.
    c = random_candidates(100 + seed, n_datasets, 10, 150, messy=True)
    as_anon = to_anonlink(c)
    dedup = anonlink.solving.probabilistic_greedy_solve(
        as_anon, merge_threshold=1.0, deduplicated=True
    )
    plain = anonlink.solving.greedy_solve(as_anon)
    ours = greedy_solve(c)
    check_format(ours)
    assert as_sets(ours) == as_sets(dedup)
    for g in ours:
        assert len({d for d, _ in g}) == len(g)
    loose = greedy_solve(c, deduplicated=False)
    check_format(loose)
    assert as_sets(loose) == as_sets(plain)
    if n_datasets < 3:
        assert loose != ours


@pytest.mark.parametrize("seed", range(8))
def test_two_datasets_fast_path_equals_general_rules(seed):
    # Two datasets (the two-platform case) take a one-to-one greedy path; it must
    # give exactly the general rules' groups, with pairs written either way
    # round, repeated pairs and heavy ties.
    from pprl.matching.solve import _greedy_groups, _two_datasets

    rng = np.random.default_rng(500 + seed)
    m, n = 400, 40 + 10 * seed
    sets = rng.permutation([2, 5])
    rec = rng.integers(0, n, (m, 2))
    dset = np.tile(sets, (m, 1))
    flip = rng.random(m) < 0.3
    dset[flip] = dset[flip][:, ::-1]
    sim = rng.choice([0.95, 0.9, 0.9, 0.85, 0.8, 0.7], m)
    c = Candidates(sim, dset, rec)
    assert _two_datasets(c.dataset)
    ours = greedy_solve(c)
    check_format(ours)
    assert ours == _greedy_groups(c, solve_order(c), True)
    assert ours and all(len(g) == 2 for g in ours)
    real = find_candidates(make_datasets(600 + seed, (150, 170), 128), 0.6)
    assert _two_datasets(real.dataset)
    assert greedy_solve(real) == _greedy_groups(real, solve_order(real), True)
    three = Candidates(np.r_[sim, 0.5], np.r_[dset, [[2, 3]]], np.r_[rec, [[0, 0]]])
    assert not _two_datasets(three.dataset)
    assert not _two_datasets(Candidates(sim, np.full((m, 2), 2), rec).dataset)


@pytest.mark.parametrize("seed", range(4))
def test_solve_order_skips_the_sort_only_when_in_order(seed):
    c = random_candidates(900 + seed, 3, 12, 300, messy=True)
    d, r = c.dataset, c.record
    full = np.lexsort((r[:, 1], r[:, 0], d[:, 1], d[:, 0], -c.similarity))
    assert solve_order(c).tolist() == full.tolist()
    ordered = Candidates(c.similarity[full], d[full], r[full])
    assert solve_order(ordered).tolist() == list(range(len(c)))
    # two neighbours swapped (rows that differ in some key, from the similarity to the last record)
    keys = np.stack([-ordered.similarity, *ordered.dataset.T, *ordered.record.T], axis=1)
    differ = np.flatnonzero((keys[1:] != keys[:-1]).any(axis=1))
    for k in differ[:: max(1, len(differ) // 12)]:
        perm = np.arange(len(c))
        perm[k], perm[k + 1] = k + 1, k
        broken = Candidates(ordered.similarity[perm], ordered.dataset[perm], ordered.record[perm])
        assert solve_order(broken).tolist() == perm.argsort(kind="stable").tolist() or np.array_equal(
            keys[perm][solve_order(broken)], keys
        )
        assert solve_order(broken).tolist() != list(range(len(c)))
