"""Measuring a linkage against a known truth: what ``pprl evaluate`` runs.

:func:`evaluate_linkage` reads the signed linkage, the platforms' token maps and
a truth CSV (``platform,user_id,person``) and measures precision, recall, F1,
pair completeness, blocking pair completeness, the reduction ratio and the
curves against the threshold. Only whoever holds the truth and the maps can run
it; the bureau cannot.

Design: docs/design.md#measuring-a-linkage
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pprl.documents import Card
from pprl.errors import DataValidationError, DocumentError
from pprl.matching.dice.similarity import Candidates
from pprl.matching.quality import (
    CurvePoint,
    LinkageQuality,
    PairCompleteness,
    evaluate_groups,
    pair_completeness,
    threshold_curve,
)
from pprl.matching.solve import greedy_solve
from pprl.protocol.files import load_linkage
from pprl.protocol.link import CANDIDATE_COLUMNS, SAMPLE_COLUMNS
from pprl.protocol.tables import read_table, require_columns

__all__ = ["Evaluation", "TRUTH_COLUMNS", "evaluate_linkage", "evaluation_json", "read_maps", "read_truth"]

TRUTH_COLUMNS = ("platform", "user_id", "person")
_EXACT_STEPS = 25
_EXACT_WORK = 2_000_000  # candidate pairs re-solved in all, at most (more than two platforms)


@dataclass(frozen=True)
class Evaluation:
    """A linkage measured against the truth."""

    linkage: Path
    threshold: float
    threshold_method: str
    blocking: str
    quality: LinkageQuality
    completeness: PairCompleteness
    reduction_ratio: float
    comparisons: int
    pairs_total: int
    blocking_pair_completeness: float | None = None
    blocking_pairs_checked: int = 0
    exact_curve: list[CurvePoint] = field(default_factory=list)
    sample_curve: list[CurvePoint] = field(default_factory=list)
    plot: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (curves included)."""
        return {
            "linkage": str(self.linkage),
            "threshold": self.threshold,
            "threshold_method": self.threshold_method,
            "blocking": self.blocking,
            **self.quality.as_dict(),
            "pair_completeness": self.completeness.value,
            "true_pairs_in_candidates": self.completeness.found,
            "candidate_pairs": self.completeness.candidate_pairs,
            "reduction_ratio": self.reduction_ratio,
            "comparisons": self.comparisons,
            "pairs_total": self.pairs_total,
            "blocking_pair_completeness": self.blocking_pair_completeness,
            "exact_curve": [p.as_dict() for p in self.exact_curve],
            "sample_curve": [p.as_dict() for p in self.sample_curve],
            "plot": None if self.plot is None else str(self.plot),
        }

    def render(self) -> str:
        """The lines ``pprl evaluate`` prints."""
        q, pc = self.quality, self.completeness
        lines = [
            f"linkage            {self.linkage}: threshold {self.threshold:.4f} ({self.threshold_method}), blocking {self.blocking}",
            f"precision          {q.precision:.4f}  ({q.correct_pairs} of {q.predicted_pairs} linked pairs correct)",
            f"recall             {q.recall:.4f}  ({q.correct_pairs} of {q.true_pairs} true pairs)",
            f"F1                 {q.f1:.4f}",
            f"pair completeness  {pc.value:.4f}  ({pc.found} of {pc.true_pairs} true pairs among {pc.candidate_pairs} candidate pairs)",
            f"reduction ratio    {self.reduction_ratio:.6f}  ({self.comparisons:,} of {self.pairs_total:,} pairs compared)",
        ]
        if self.blocking_pair_completeness is not None:
            lines.append(
                f"blocking completeness {self.blocking_pair_completeness:.4f}  "
                f"(sampled true best matches at or above the threshold: {self.blocking_pairs_checked})"
            )
        if self.plot is not None:
            lines.append(f"plot               {self.plot}")
        return "\n".join(lines)


def _table(doc: dict[str, Any], name: str, columns: Sequence[str], source: str) -> list[list[str]]:
    """A CSV table of the linkage payload (``candidates``, ``sample``) as rows of strings; [] if absent."""
    table = doc.get("payload", {}).get(name)
    if table is None:
        return []
    try:
        if list(table["columns"]) != list(columns):
            raise DocumentError(f"{source}: linkage payload table '{name}' has unexpected columns")
        rows = list(csv.reader(io.StringIO(table["csv"])))
    except (KeyError, TypeError, csv.Error):
        raise DocumentError(f"{source}: linkage payload table '{name}' is malformed") from None
    if any(len(row) != len(columns) for row in rows):
        raise DocumentError(f"{source}: linkage payload table '{name}' has rows of the wrong width")
    return rows


def _platform_tokens(doc: dict[str, Any], source: str) -> dict[str, set[str]]:
    """Every token the linkage mentions, by platform."""
    tokens: dict[str, set[str]] = defaultdict(set)
    payload = doc.get("payload", {})
    try:
        for entity in payload.get("entities", []):
            for platform, token, _ in entity["members"]:
                tokens[platform].add(token)
    except (KeyError, TypeError, ValueError):
        raise DocumentError(f"{source}: linkage payload is malformed") from None
    for pa, ta, pb, tb, _ in _table(doc, "candidates", CANDIDATE_COLUMNS, source):
        tokens[pa].add(ta)
        tokens[pb].add(tb)
    for p, t, q, pt, _, _ in _table(doc, "sample", SAMPLE_COLUMNS, source):
        tokens[p].add(t)
        tokens[q].add(pt)
    return tokens


def read_maps(
    specs: Sequence[str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]],
    doc: dict[str, Any],
    *,
    source: str = "linkage",
) -> dict[str, dict[str, str]]:
    """Platform -> (token -> platform user id), one map file per linked platform.

    A spec is a path, ``"NAME=PATH"`` or ``(NAME, PATH)``; a bare path's
    platform is the one whose tokens in the linkage it holds.  Refuses, naming
    the file: a map without a ``token`` column, one matching no platform of
    the linkage, two maps for one platform, a map whose row count differs from
    its submission's record count.  Refuses, naming the platform, a linked
    platform left without a map.
    """
    known = _platform_tokens(doc, source)
    platforms = [s.get("platform") for s in doc.get("header", {}).get("submissions", [])]
    records = {s.get("platform"): s.get("records") for s in doc.get("header", {}).get("submissions", [])}
    out: dict[str, dict[str, str]] = {}
    where: dict[str, str] = {}
    for spec in specs:
        name: str | None = None
        if isinstance(spec, tuple):
            name, path = spec[0], Path(spec[1])
        else:
            text = os.fspath(spec)
            head, sep, tail = text.partition("=")
            if sep and head in platforms:
                name, path = head, Path(tail)
            else:
                path = Path(text)
        frame = read_table(path)
        require_columns(frame, ["token"], str(path))
        if len(frame.columns) < 2:
            raise DataValidationError(f"{path}: a map needs a token column and an id column")
        id_column = next(c for c in frame.columns if c != "token")
        mapping = dict(zip(frame["token"], frame[id_column]))
        tokens = set(mapping)
        if name is None:
            overlaps = {p: len(tokens & known.get(p, set())) for p in platforms}
            best = max(overlaps, key=lambda p: overlaps[p]) if overlaps else None
            if best is None or overlaps[best] == 0:
                raise DataValidationError(
                    f"{path}: none of its tokens appear in {source}; it is not the map of a submission linked there "
                    f"(platforms: {', '.join(map(str, platforms))})"
                )
            name = best
        elif name not in platforms:
            raise DataValidationError(f"{path}: platform '{name}' is not in {source} (platforms: {', '.join(map(str, platforms))})")
        if known.get(name) and not (known[name] <= tokens):
            raise DataValidationError(f"{path}: lacks tokens that {source} has for '{name}'; it is not that platform's map")
        if name in out:
            raise DataValidationError(f"{path}: a second map for '{name}' (first: {where[name]})")
        if isinstance(records.get(name), int) and records[name] != len(mapping):
            raise DataValidationError(
                f"{path}: has {len(mapping)} tokens but '{name}' submitted {records[name]} records"
            )
        out[name] = mapping
        where[name] = str(path)
    for p in platforms:
        if p not in out:
            raise DataValidationError(f"no map given for platform '{p}' (its SUBMISSION.map.csv)")
    return out


def read_truth(path: str | os.PathLike[str]) -> dict[tuple[str, str], str]:
    """(platform, user_id) -> person from a ``platform,user_id,person`` CSV."""
    frame = read_table(path)
    require_columns(frame, list(TRUTH_COLUMNS), str(path))
    keys = list(zip(frame["platform"], frame["user_id"]))
    if len(set(keys)) != len(keys):
        raise DataValidationError(f"{path}: a (platform, user_id) appears twice")
    return dict(zip(keys, frame["person"]))


def _exact_curve(
    candidates: list[list[Any]], to_key: dict[tuple[str, str], tuple[str, str]], truth: dict, threshold: float,
    platforms: list[str],
) -> list[CurvePoint]:
    """Re-solve the stored candidates at thresholds from the linkage's own up to 1.

    The greedy solver takes candidates in decreasing similarity, so solving
    the candidates at or above a higher threshold gives exactly the groups a
    linkage at that threshold would have had.  (Ties are broken by record
    index; records are renumbered here, so a tie may go the other way.)
    Each step re-runs the solver: the number of steps shrinks for large
    linkages (see :func:`_pair_curve` for the fast two-platform case).
    """
    if not candidates:
        return []
    index: dict[tuple[str, str], tuple[int, int]] = {}
    next_record: dict[int, int] = defaultdict(int)
    dsets, recs, sims = [], [], []
    order = {p: k for k, p in enumerate(platforms)}
    for pa, ta, pb, tb, s in candidates:
        ends = []
        for p, t in ((pa, ta), (pb, tb)):
            if (p, t) not in index:
                d = order[p]
                index[(p, t)] = (d, next_record[d])
                next_record[d] += 1
            ends.append(index[(p, t)])
        (da, ra), (db, rb) = sorted(ends)
        dsets.append((da, db))
        recs.append((ra, rb))
        sims.append(float(s))
    back = {v: to_key[k] for k, v in index.items()}
    sim = np.array(sims)
    dset = np.array(dsets, dtype=np.int64)
    rec = np.array(recs, dtype=np.int64)
    points = []
    steps = max(3, min(_EXACT_STEPS, _EXACT_WORK // len(candidates)))
    for t in np.linspace(threshold, 1.0, steps):
        keep = sim >= t - 1e-12
        groups = greedy_solve(Candidates(sim[keep], dset[keep], rec[keep]))
        q = evaluate_groups([[back[m] for m in g] for g in groups], truth)
        points.append(CurvePoint(float(t), q.precision, q.recall, q.f1, q.predicted_pairs, q.correct_pairs))
    return points


def _pair_curve(entities: list[dict[str, Any]], groups: list[list[tuple[str, str]]], truth: dict, true_pairs: int,
                threshold: float) -> list[CurvePoint]:
    """Two platforms: entities are pairs, and a linkage at a higher threshold keeps exactly those at or above it.

    (The greedy solver takes pairs in decreasing similarity, and with two
    platforms a pair joins two free records; the pairs it has taken by the
    time it reaches a threshold are the entities whose similarity reaches it.)
    """
    sims = [min(float(m[2]) for m in e["members"]) for e in entities]
    missing: Any = object()
    right = [len(g) == 2 and truth.get(g[0], missing) is not missing and truth.get(g[0]) == truth.get(g[1], missing)
             for g in groups]
    grid = np.linspace(threshold, 1.0, _EXACT_STEPS)
    points = threshold_curve(sims, right, true_pairs, grid - 1e-9)
    return [CurvePoint(float(t), p.precision, p.recall, p.f1, p.predicted, p.correct) for t, p in zip(grid, points)]


def _plot(
    path: Path, sample_sims: np.ndarray, sample_correct: np.ndarray, cand_sims: np.ndarray, cand_true: np.ndarray,
    threshold: float, exact: list[CurvePoint], estimated: list[CurvePoint], title: str,
) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    everything = np.concatenate([sample_sims, cand_sims, [threshold]])
    lo = max(0.0, math.floor(float(everything.min()) * 20.0) / 20.0 - 0.05)
    bins = np.linspace(lo, 1.0, max(20, int(round((1.0 - lo) * 100))) + 1)
    if sample_sims.size:
        ax1.hist(sample_sims[sample_correct], bins=bins, histtype="stepfilled", alpha=0.5, color="tab:green",
                 label=f"sampled best matches: same person ({int(sample_correct.sum())})")
        ax1.hist(sample_sims[~sample_correct], bins=bins, histtype="stepfilled", alpha=0.5, color="tab:red",
                 label=f"sampled best matches: different people ({int((~sample_correct).sum())})")
    if cand_sims.size:
        ax1.hist(cand_sims[cand_true], bins=bins, histtype="step", color="darkgreen",
                 label=f"candidate pairs: true ({int(cand_true.sum())})")
        ax1.hist(cand_sims[~cand_true], bins=bins, histtype="step", color="darkred",
                 label=f"candidate pairs: false ({int((~cand_true).sum())})")
    ax1.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.3f}")
    ax1.set_yscale("log")
    ax1.set_xlabel("Dice similarity")
    ax1.set_ylabel("pairs")
    ax1.set_title("Similarity by truth")
    ax1.legend(fontsize=7, loc="upper left")
    if estimated:
        x = [p.threshold for p in estimated]
        ax2.plot(x, [p.precision for p in estimated], "--", color="tab:blue", label="precision (sample estimate)")
        ax2.plot(x, [p.recall for p in estimated], "--", color="tab:orange", label="recall (sample estimate)")
        ax2.plot(x, [p.f1 for p in estimated], "--", color="tab:green", label="F1 (sample estimate)")
    if exact:
        x = [p.threshold for p in exact]
        ax2.plot(x, [p.precision for p in exact], "-", color="tab:blue", label="precision (linkage, re-solved)")
        ax2.plot(x, [p.recall for p in exact], "-", color="tab:orange", label="recall (linkage, re-solved)")
        ax2.plot(x, [p.f1 for p in exact], "-", color="tab:green", label="F1 (linkage, re-solved)")
    ax2.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax2.set_xlabel("threshold")
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_title("Precision / recall against threshold")
    ax2.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def evaluate_linkage(
    linkage: str | os.PathLike[str],
    maps: Sequence[str | os.PathLike[str] | tuple[str, str | os.PathLike[str]]],
    truth: str | os.PathLike[str],
    *,
    plot: str | os.PathLike[str] | None = None,
    cards: Sequence[Card],
) -> Evaluation:
    """Measure ``linkage`` against ``truth`` (see the module docstring); optionally draw ``plot`` (PNG)."""
    doc = load_linkage(linkage, cards).wire
    header = doc.get("header", {})
    payload = doc.get("payload", {})
    maps_by_platform = read_maps(maps, doc, source=str(linkage))
    truth_all = read_truth(truth)
    platforms = [s["platform"] for s in header.get("submissions", [])]
    submitted = {(p, u) for p, m in maps_by_platform.items() for u in m.values()}
    truth_map = {k: v for k, v in truth_all.items() if k in submitted}

    def key(platform: str, token: str) -> tuple[str, str]:
        try:
            return platform, maps_by_platform[platform][token]
        except KeyError:
            raise DataValidationError(f"{linkage}: token of '{platform}' missing from that platform's map") from None

    try:
        entities = payload["entities"]
        groups = [[key(p, t) for p, t, _ in e["members"]] for e in entities]
        candidates: list[list[Any]] = [[pa, ta, pb, tb, float(sim)]
                                       for pa, ta, pb, tb, sim in _table(doc, "candidates", CANDIDATE_COLUMNS, str(linkage))]
        sample: list[list[Any]] = [[p, t, q, pt, float(s1), float(s2) if s2 else None]
                  for p, t, q, pt, s1, s2 in _table(doc, "sample", SAMPLE_COLUMNS, str(linkage))]
    except (KeyError, TypeError, ValueError):
        raise DocumentError(f"{linkage}: linkage payload is malformed") from None
    cand_pairs = [(key(pa, ta), key(pb, tb)) for pa, ta, pb, tb, _ in candidates]
    quality = evaluate_groups(groups, truth_map)
    completeness = pair_completeness(cand_pairs, truth_map)
    threshold = float(header.get("threshold", 0.0))
    blocking = header.get("blocking", {}) or {}
    method = blocking.get("method", "none")

    # The sample: each row is a sampled record's best match on another platform.
    missing: Any = object()
    present: dict[str, set[str]] = defaultdict(set)  # platform -> persons submitted there
    for (p, _u), person in truth_map.items():
        present[p].add(person)
    s_sims, s_correct, s_positive, s_pairs = [], [], 0, []
    for p, t, q, pt, top1, _top2 in sample:
        a, b = key(p, t), key(q, pt)
        person = truth_map.get(a, missing)
        right = person is not missing and truth_map.get(b, missing) == person
        s_sims.append(float(top1))
        s_correct.append(right)
        s_pairs.append((a, b))
        if person is not missing and person in present[q]:
            s_positive += 1
    sample_sims = np.array(s_sims, dtype=np.float64)
    sample_correct = np.array(s_correct, dtype=bool)
    estimated = (
        threshold_curve(sample_sims, sample_correct, s_positive, np.linspace(0.4, 1.0, 61)) if sample else []
    )
    blocking_pc, checked = None, 0
    if method == "lsh" and sample:
        cand_set = {frozenset(pair) for pair in cand_pairs}
        wanted = [frozenset(pr) for pr, s, c in zip(s_pairs, s_sims, s_correct) if c and s >= threshold]
        checked = len(wanted)
        if wanted:
            blocking_pc = sum(1 for w in wanted if w in cand_set) / len(wanted)
    if len(platforms) == 2 and all(len(g) == 2 for g in groups):
        exact = _pair_curve(entities, groups, truth_map, quality.true_pairs, threshold)
    else:
        exact = _exact_curve(candidates, {(p, t): key(p, t) for p, t in _candidate_tokens(candidates)}, truth_map,
                             threshold, platforms)
    plot_path = None
    if plot is not None:
        cand_sims = np.array([float(c[4]) for c in candidates], dtype=np.float64)
        cand_true = np.array(
            [truth_map.get(a, missing) is not missing and truth_map.get(a) == truth_map.get(b, missing) for a, b in cand_pairs],
            dtype=bool,
        )
        title = (f"{Path(linkage).name}: threshold {threshold:.4f} ({header.get('threshold_method', 'fixed')}), "
                 f"precision {quality.precision:.4f}, recall {quality.recall:.4f}, F1 {quality.f1:.4f}")
        plot_path = _plot(Path(plot), sample_sims, sample_correct, cand_sims, cand_true, threshold, exact, estimated, title)
    return Evaluation(
        linkage=Path(linkage),
        threshold=threshold,
        threshold_method=str(header.get("threshold_method", "fixed")),
        blocking=method,
        quality=quality,
        completeness=completeness,
        reduction_ratio=float(blocking.get("reduction_ratio", 0.0)),
        comparisons=int(blocking.get("comparisons", 0)),
        pairs_total=int(blocking.get("pairs_total", 0)),
        blocking_pair_completeness=blocking_pc,
        blocking_pairs_checked=checked,
        exact_curve=exact,
        sample_curve=estimated,
        plot=plot_path,
    )


def _candidate_tokens(candidates: list[list[Any]]) -> set[tuple[str, str]]:
    return {(pa, ta) for pa, ta, _, _, _ in candidates} | {(pb, tb) for _, _, pb, tb, _ in candidates}


def evaluation_json(result: Evaluation) -> str:
    """The figures as indented JSON."""
    return json.dumps(result.as_dict(), indent=2)
