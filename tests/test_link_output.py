"""How the linkage's tables and entities are built: column by column, byte for byte what the row-by-row code wrote."""

from __future__ import annotations

import csv
import gc
import io
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.solve import greedy_solve, group_similarities
from pprl.matching.thresholds import best_match_sample, choose_threshold
from pprl.protocol import link as link_step


def _subs(names: list[str], sizes: list[int], seed: int, odd: str = "") -> list[SimpleNamespace]:
    rng = np.random.default_rng(seed)
    return [
        SimpleNamespace(platform=name, tokens=[f"t{rng.integers(1 << 40):x}{odd if r == 1 else ''}" for r in range(n)])
        for name, n in zip(names, sizes)
    ]


def _datasets(seed: int, sizes: list[int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = np.packbits(rng.random((60, 256)) < 0.3, axis=1)
    out = []
    for n in sizes:
        rows = base[rng.integers(0, 60, n)].copy()
        rows ^= np.packbits(rng.random((n, 256)) < 0.03, axis=1)
        out.append(rows)
    return out


def _rows_csv(candidates: Candidates, subs) -> str:
    """The candidate table as the csv module writes it, one row at a time (how it was built before)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(
        [subs[d0].platform, subs[d0].tokens[r0], subs[d1].platform, subs[d1].tokens[r1], round(s, 6)]
        for s, (d0, d1), (r0, r1) in zip(
            candidates.similarity.tolist(), candidates.dataset.tolist(), candidates.record.tolist()
        )
    )
    return buffer.getvalue()


@pytest.mark.parametrize(
    "names, odd",
    [
        (["platform_1", "platform_2", "platform_3"], ""),
        (["a,b", "plain", "c"], ""),  # a name the csv module quotes: the csv module writes the table
        (["p1", "p2", "p3"], '"'),  # a token it quotes
        (["p1", "p2", "p3"], "\n"),
    ],
)
def test_candidate_csv_is_what_the_csv_module_writes(names, odd):
    sizes = [40, 50, 30]
    candidates = find_candidates(_datasets(3, sizes), 0.6)
    assert len(candidates) > 20
    subs = _subs(names, sizes, 4, odd)
    text = link_step._candidate_csv(candidates, subs)
    assert text == _rows_csv(candidates, subs)
    assert link_step._candidate_csv(Candidates.empty(), subs) == ""


@pytest.mark.parametrize("sizes", [[60, 70], [40, 50, 45]])
def test_entities_are_what_the_row_by_row_code_built(sizes):
    datasets = _datasets(7, sizes)
    sample = best_match_sample(datasets, size=50, seed=b"s")
    choice = choose_threshold(sample.top1, sample.top2)
    candidates = find_candidates(datasets, 0.6)
    groups = greedy_solve(candidates)
    assert groups
    subs = _subs([f"p{d}" for d in range(len(sizes))], sizes, 8)
    entities = link_step._entities(groups, candidates, subs, choice)
    sims = group_similarities(groups, candidates)
    flat = np.array([x for g in sims for x in g])
    post = choice.posterior(flat)
    starts = np.concatenate([[0], np.cumsum([len(g) for g in groups])[:-1]])
    probabilities = (np.round(np.minimum.reduceat(post, starts), 6).tolist() if post is not None
                     else [None] * len(groups))
    want = [
        (f"E{n:07d}", [[subs[d].platform, subs[d].tokens[r], round(s, 6)] for (d, r), s in zip(g, gs)], p)
        for n, (g, gs, p) in enumerate(zip(groups, sims, probabilities), start=1)
    ]
    got = [(e.entity_id, e.members, e.match_probability) for e in entities]
    assert got == want
    assert all(not math.isnan(m[2]) for e in entities for m in e.members)
    assert link_step._entities([], candidates, subs, choice) == []


@pytest.mark.parametrize("enabled", [True, False])
def test_gc_paused_while_linking_and_restored(enabled):
    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        with link_step._gc_paused():
            assert not gc.isenabled()
        assert gc.isenabled() is enabled
        with pytest.raises(RuntimeError), link_step._gc_paused():
            raise RuntimeError("a failed step")
        assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_link_command_imports_none_of_the_other_steps():
    # `pprl link` starts in a fresh interpreter: what it imports is start-up time on every run.
    heavy = ["pandas", "pprl.protocol.aggregate", "pprl.protocol.decrypt", "pprl.protocol.psi",
             "pprl.crypto.paillier.vector", "pprl.crypto.oprf", "gmpy2"]
    code = ("import sys, pprl.cli, pprl.protocol.files, pprl.protocol.link; "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"
