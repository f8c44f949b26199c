"""Greedy multi-party solving: turn candidate pairs into entities.

:func:`greedy_solve` applies anonlink's ``greedy_solve`` rules, reimplemented so
that pprl needs no anonlink at run time and gives exactly the same groups;
``deduplicated=True`` (the default) also refuses any group with two records of
one dataset.

Design: docs/design.md#solving
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from pprl.errors import DataValidationError
from pprl.matching.dice.similarity import Candidates

__all__ = ["greedy_solve", "group_similarities", "solve_order"]

Record = tuple[int, int]


def solve_order(candidates: Candidates) -> np.ndarray:
    """Indices of ``candidates`` in the order the greedy solver takes them."""
    d, r = candidates.dataset, candidates.record
    if _in_solve_order(candidates):  # as find_candidates gives them: no sort needed
        return np.arange(len(candidates))
    return np.lexsort((r[:, 1], r[:, 0], d[:, 1], d[:, 0], -candidates.similarity))


def _in_solve_order(candidates: Candidates) -> bool:
    """Whether the rows already run by decreasing similarity, then increasing (d0, d1, r0, r1)."""
    s, d, r = candidates.similarity, candidates.dataset, candidates.record
    if s.shape[0] < 2:
        return True
    ok = r[:-1, 1] <= r[1:, 1]
    for key in (r[:, 0], d[:, 1], d[:, 0]):
        ok = (key[:-1] < key[1:]) | ((key[:-1] == key[1:]) & ok)
    ok = (s[:-1] > s[1:]) | ((s[:-1] == s[1:]) & ok)
    return bool(ok.all())


class _Groups:
    """Disjoint groups of records plus the sparse count of edges between groups."""

    def __init__(self) -> None:
        self.group_of: dict[Record, int] = {}
        self.members: dict[int, list[Record]] = {}
        self.datasets: dict[int, set[int]] = {}
        self.edges: defaultdict[int, dict[int, int]] = defaultdict(dict)
        self._next = 0

    def new(self, *records: Record) -> int:
        gid = self._next
        self._next += 1
        self.members[gid] = list(records)
        self.datasets[gid] = {rec[0] for rec in records}
        for rec in records:
            self.group_of[rec] = gid
        return gid

    def add(self, gid: int, rec: Record) -> None:
        self.members[gid].append(rec)
        self.datasets[gid].add(rec[0])
        self.group_of[rec] = gid

    def add_edge(self, g0: int, g1: int) -> int:
        count = self.edges[g0].get(g1, 0) + 1
        self.edges[g0][g1] = count
        self.edges[g1][g0] = count
        return count

    def merge(self, absorber: int, absorbee: int) -> None:
        moved = self.members.pop(absorbee)
        self.members[absorber].extend(moved)
        self.datasets[absorber] |= self.datasets.pop(absorbee)
        for rec in moved:
            self.group_of[rec] = absorber
        edges_a = self.edges[absorber]
        edges_a.pop(absorbee, None)
        edges_b = self.edges.pop(absorbee, {})
        edges_b.pop(absorber, None)
        for other, count in edges_b.items():
            edges_a[other] = edges_a.get(other, 0) + count
            other_edges = self.edges[other]
            other_edges[absorber] = other_edges.get(absorber, 0) + count
            del other_edges[absorbee]
        if not edges_a:
            del self.edges[absorber]

    def disjoint(self, g0: int, g1: int) -> bool:
        """True when the two groups share no dataset."""
        return self.datasets[g0].isdisjoint(self.datasets[g1])


def _one_grouped(groups: _Groups, gid: int, rec: Record, deduplicated: bool) -> None:
    """A pair of a record in group ``gid`` and the ungrouped record ``rec``."""
    if len(groups.members[gid]) <= 1:
        if not deduplicated or rec[0] not in groups.datasets[gid]:
            groups.add(gid, rec)
    else:
        # Only one of the group's members is known to match rec: rec waits
        # in a group of its own, one edge closer to joining.
        groups.add_edge(gid, groups.new(rec))


def _two_datasets(dataset: np.ndarray) -> bool:
    """Whether every pair joins the same two different datasets (the two-platform case)."""
    if dataset.shape[0] == 0:
        return False
    first, second = int(dataset[0, 0]), int(dataset[0, 1])
    if first == second:
        return False
    lo, hi = np.minimum(dataset[:, 0], dataset[:, 1]), np.maximum(dataset[:, 0], dataset[:, 1])
    return bool((lo == min(first, second)).all() and (hi == max(first, second)).all())


def _greedy_pairs(candidates: Candidates, order: np.ndarray) -> list[list[tuple[int, int]]]:
    """:func:`greedy_solve` (deduplicated) when every pair joins the same two datasets: one-to-one greedy.

    With two datasets and no group holding two records of one, the rules
    reduce to this: a group of two already has both datasets, so it takes no
    one and merges with nothing; a record left waiting alone joins the next
    pair it is in whose other end is free (or waiting alone) too. So, in
    solving order, a pair becomes a group when neither of its records is in
    one yet. ``tests/test_solve.py`` checks this against the general rules.
    """
    d = candidates.dataset[order]
    r = candidates.record[order]
    low = d[:, 0] <= d[:, 1]  # orient every pair (low dataset, high dataset)
    lo_rec = np.where(low, r[:, 0], r[:, 1]).tolist()
    hi_rec = np.where(low, r[:, 1], r[:, 0]).tolist()
    lo_set, hi_set = int(min(d[0, 0], d[0, 1])), int(max(d[0, 0], d[0, 1]))
    taken_lo: set[int] = set()
    taken_hi: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for a, b in zip(lo_rec, hi_rec):
        if a in taken_lo or b in taken_hi:
            continue
        taken_lo.add(a)
        taken_hi.add(b)
        pairs.append((a, b))
    pairs.sort()
    return [[(lo_set, a), (hi_set, b)] for a, b in pairs]


def greedy_solve(
    candidates: Candidates, *, deduplicated: bool = True
) -> list[list[tuple[int, int]]]:
    """Greedy grouping of candidate pairs (anonlink's ``greedy_solve`` rules).

    Returns the groups of at least two records, each a sorted list of
    ``(dataset_index, record_index)``; groups are sorted by their first
    member.  See the module docstring for the exact rules.
    """
    if not isinstance(candidates, Candidates):
        raise DataValidationError("greedy_solve needs a Candidates object")
    order = solve_order(candidates)
    if deduplicated and _two_datasets(candidates.dataset):
        return _greedy_pairs(candidates, order)
    return _greedy_groups(candidates, order, deduplicated)


def _greedy_groups(candidates: Candidates, order: np.ndarray, deduplicated: bool) -> list[list[tuple[int, int]]]:
    """:func:`greedy_solve` by its general rules, taking the pairs in ``order``."""
    d = candidates.dataset[order].tolist()
    r = candidates.record[order].tolist()
    groups = _Groups()
    group_of = groups.group_of
    for (d0, d1), (r0, r1) in zip(d, r):
        i0: Record = (d0, r0)
        i1: Record = (d1, r1)
        if i0 == i1:
            continue
        g0 = group_of.get(i0)
        g1 = group_of.get(i1)
        if g0 is None:
            if g1 is None:
                if not deduplicated or d0 != d1:
                    groups.new(i0, i1)
            else:
                _one_grouped(groups, g1, i0, deduplicated)
        elif g1 is None:
            _one_grouped(groups, g0, i1, deduplicated)
        elif g0 != g1:
            overlap = groups.add_edge(g0, g1)
            size0, size1 = len(groups.members[g0]), len(groups.members[g1])
            if overlap >= size0 * size1 and (not deduplicated or groups.disjoint(g0, g1)):
                if size0 < size1:
                    groups.merge(g1, g0)
                else:
                    groups.merge(g0, g1)
    result = [sorted(m) for m in groups.members.values() if len(m) > 1]
    result.sort(key=lambda g: g[0])
    return [[(int(ds), int(rec)) for ds, rec in g] for g in result]


def group_similarities(
    groups: Sequence[Iterable[tuple[int, int]]], candidates: Candidates
) -> list[list[float]]:
    """For each member of each group, its best similarity to a fellow member.

    The value is the highest similarity among the candidate pairs that join
    the member to another member of the same group (NaN if there is none,
    which cannot happen for groups from :func:`greedy_solve`).  The output
    has the shape of ``groups``.
    """
    if not isinstance(candidates, Candidates):
        raise DataValidationError("group_similarities needs a Candidates object")
    member_lists: list[list[Record]] = []
    where: dict[Record, int] = {}
    for g, group in enumerate(groups):
        members = [(int(ds), int(rec)) for ds, rec in group]
        for rec in members:
            if rec in where:
                raise DataValidationError(f"record {rec} appears more than once in the groups")
            where[rec] = g
        member_lists.append(members)
    best: dict[Record, float] = {}
    sims = candidates.similarity.tolist()
    for s, (d0, d1), (r0, r1) in zip(
        sims, candidates.dataset.tolist(), candidates.record.tolist()
    ):
        i0, i1 = (d0, r0), (d1, r1)
        if i0 == i1:
            continue
        g0 = where.get(i0)
        if g0 is None or g0 != where.get(i1):
            continue
        if s > best.get(i0, -math.inf):
            best[i0] = s
        if s > best.get(i1, -math.inf):
            best[i1] = s
    return [[best.get(rec, math.nan) for rec in members] for members in member_lists]
