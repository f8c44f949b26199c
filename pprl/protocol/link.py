"""The bureau's first step: verify submissions and link platforms' encodings into entities.

The bureau sees CLKs, opaque tokens and ciphertexts; it never holds the
linkage secret or the Paillier private key. Every submission is verified
(signature against the platforms' cards, one schema, one linkage secret, one
Paillier key) before any of it is used.  Linking picks its Dice threshold
from the data unless told one (:mod:`pprl.matching.thresholds`) and blocks
with keyed LSH when that pays (:mod:`pprl.matching.blocking`).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pprl.crypto.paillier.vector import PaillierPublicKey
from pprl.documents import (
    Card,
    b64d,
    canonical_json,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import DocumentError, KeyMismatchError, PolicyError
from pprl.matching.blocking import BlockingReport, derive_seed, lsh_candidates, plan_blocking
from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.solve import greedy_solve
from pprl.matching.thresholds import best_match_sample, choose_threshold
from pprl.protocol.identity import PartyKey

__all__ = [
    "CANDIDATE_COLUMNS",
    "SAMPLE_COLUMNS",
    "SAMPLE_SIZE",
    "LoadedSubmission",
    "LinkResult",
    "load_submission",
    "load_linkage",
    "link",
    "check_consistent",
    "paillier_key_of",
]


@dataclass(frozen=True)
class LoadedSubmission:
    """A verified submission, decoded."""

    path: str
    platform: str
    header: dict[str, Any]
    tokens: list[str]
    clks: np.ndarray
    scores: dict[str, bytes] = field(repr=False)
    hash: str = ""


def load_submission(path: str | os.PathLike[str], cards: Sequence[Card] | None = None) -> LoadedSubmission:
    """Read and verify one submission; refuse it unless signed by one of ``cards``."""
    doc = read_document(path, "submission")
    signer = verify_document(doc, cards, source=str(path), role="platform")
    header, payload = doc.get("header", {}), doc.get("payload", {})
    try:
        if header["platform"] != signer.name:
            raise DocumentError(f"{path}: header names '{header['platform']}' but '{signer.name}' signed it")
        tokens = list(payload["tokens"])
        width = int(header["clk_bytes"])
        raw = b64d(payload["clks"], f"{path}: clks")
        scores = {}
        if header["score_columns"]:
            if not isinstance(header.get("packing"), dict):
                raise DocumentError(f"{path}: scores without a packing spec")
            scores["packed"] = b64d(payload["scores_packed"], f"{path}: scores_packed")
    except (KeyError, TypeError, ValueError):
        raise DocumentError(f"{path}: submission is missing header or payload fields") from None
    n = int(header["records"])
    if len(tokens) != n or len(set(tokens)) != n or width <= 0 or len(raw) != n * width:
        raise DocumentError(f"{path}: record counts, tokens and encodings disagree")
    clks = np.frombuffer(raw, dtype=np.uint8).reshape(n, width)
    return LoadedSubmission(str(path), signer.name, header, tokens, clks, scores, document_hash(doc))


def check_consistent(subs: Sequence[LoadedSubmission]) -> None:
    if not subs:
        raise DocumentError("no submissions given")
    first = subs[0]
    seen: dict[str, str] = {}
    for s in subs:
        if s.platform in seen:
            raise DocumentError(f"{s.path}: a second submission from '{s.platform}' (first: {seen[s.platform]})")
        seen[s.platform] = s.path
        for field_name, what in [
            ("schema_hash", "linkage schema"),
            ("linkage_key_id", "linkage secret"),
            ("clk_bytes", "encoding length"),
        ]:
            if s.header.get(field_name) != first.header.get(field_name):
                raise KeyMismatchError(f"{s.path}: uses a different {what} than {first.path}")
    keys = {s.header.get("paillier_fingerprint") for s in subs} - {None}
    if len(keys) > 1:
        raise KeyMismatchError(f"{subs[-1].path}: submissions are encrypted under different Paillier keys")
    packings = {canonical_json(s.header.get("packing")) for s in subs if s.header.get("packing") is not None}
    if len(packings) > 1:
        raise KeyMismatchError(f"{subs[-1].path}: submissions pack their scores differently")


def paillier_key_of(sub: LoadedSubmission) -> PaillierPublicKey:
    key = PaillierPublicKey.from_dict(sub.header["paillier_key"])
    if key.fingerprint != sub.header["paillier_fingerprint"]:
        raise KeyMismatchError(f"{sub.path}: Paillier key does not match its fingerprint")
    return key


@dataclass(frozen=True)
class LinkResult:
    """What ``link`` wrote, with the figures the link report prints."""

    path: Path
    entities: int
    candidate_pairs: int
    linked_records: int
    threshold: float = 0.0
    threshold_method: str = "fixed"
    threshold_reason: str = ""
    blocking: str = "none"
    blocking_reason: str = ""
    bands: int = 0
    bits_per_band: int = 0
    comparisons: int = 0
    pairs_total: int = 0
    reduction_ratio: float = 0.0
    estimated_pair_completeness: float | None = None
    sample_pair_completeness: float | None = None


#: Records sampled (per run) for the automatic threshold and the blocking design.
SAMPLE_SIZE = 1000


def _check_threshold(threshold: float | str) -> float | None:
    """None for "auto", else the number (refusing anything outside (0, 1])."""
    if isinstance(threshold, str):
        if threshold.strip().lower() == "auto":
            return None
        try:
            threshold = float(threshold)
        except ValueError:
            raise PolicyError(f"threshold '{threshold}' must be 'auto' or a number in (0, 1]") from None
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < float(threshold) <= 1.0:
        raise PolicyError(f"threshold {threshold} must be 'auto' or a number in (0, 1]")
    return float(threshold)


#: Columns of the linkage payload's candidate table (CSV text, one row per candidate pair).
CANDIDATE_COLUMNS = ("platform_a", "token_a", "platform_b", "token_b", "similarity")
#: Columns of the payload's sample table: a sampled record's best and second-best match on another platform.
SAMPLE_COLUMNS = ("platform", "token", "other_platform", "partner_token", "best", "second_best")


def _csv_text(rows: Iterable[list[Any]]) -> str:
    """Rows as CSV text: one JSON string is far cheaper to write than a list per row."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def _member_similarities(
    groups: Sequence[Sequence[tuple[int, int]]], candidates: Candidates, sizes: Sequence[int]
) -> list[list[float]]:
    """Each member's best similarity to a fellow member (as ``solve.group_similarities``), vectorised."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    group_of = np.full(int(offsets[-1]), -1, dtype=np.int64)
    flat_members = [offsets[d] + r for group in groups for d, r in group]
    group_ids = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    if flat_members:
        group_of[np.array(flat_members, dtype=np.int64)] = group_ids
    best = np.full(int(offsets[-1]), np.nan)
    if len(candidates):
        a = offsets[candidates.dataset[:, 0]] + candidates.record[:, 0]
        b = offsets[candidates.dataset[:, 1]] + candidates.record[:, 1]
        same = (group_of[a] >= 0) & (group_of[a] == group_of[b]) & (a != b)
        sim = candidates.similarity[same]
        ends = np.concatenate([a[same], b[same]])
        values = np.concatenate([sim, sim])
        order = np.lexsort((-values, ends))  # per record, highest first
        ends, values = ends[order], values[order]
        first = np.r_[True, ends[1:] != ends[:-1]] if ends.shape[0] else np.zeros(0, bool)
        best[ends[first]] = values[first]
    out = best[np.array(flat_members, dtype=np.int64)].tolist() if flat_members else []
    result, k = [], 0
    for group in groups:
        result.append(out[k : k + len(group)])
        k += len(group)
    return result


def _pair_codes(dataset: np.ndarray, record: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """One int64 per (dataset, record) pair, order-free, for membership tests."""
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    a = offsets[dataset[:, 0]] + record[:, 0]
    b = offsets[dataset[:, 1]] + record[:, 1]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo * int(offsets[-1]) + hi


def link(
    me: PartyKey,
    cards: Sequence[Card],
    submissions: Sequence[str | os.PathLike[str]],
    threshold: float | str,
    out: str | os.PathLike[str],
    *,
    blocking: str = "auto",
    progress: bool = False,
    sample_size: int = SAMPLE_SIZE,
    workers: int | None = None,
) -> LinkResult:
    """Verify submissions, compare encodings (Dice), solve greedily, write the signed linkage.

    ``threshold`` is a Dice similarity in (0, 1] or ``"auto"``: chosen from
    the similarity distribution of a keyed sample of records
    (:mod:`pprl.matching.thresholds`).  ``blocking`` is ``"auto"`` (LSH when
    it is estimated to pay at pair completeness 0.99), ``"lsh"`` or
    ``"none"`` (:mod:`pprl.matching.blocking`).  Both are keyed by a public
    seed derived from the submissions' hashes, so the same submissions
    always give the same linkage.  The header records the threshold and how
    it was chosen, the blocking figures and the candidate-pair count; each
    entity carries an estimated ``match_probability``; the payload also keeps
    the candidate pairs and the sample's best matches (tokens and
    similarities only) so that ``pprl evaluate`` can measure the run.
    """
    fixed = _check_threshold(threshold)
    if blocking not in ("auto", "lsh", "none"):
        raise PolicyError(f"blocking '{blocking}' must be one of auto, lsh, none")
    subs = [load_submission(p, cards) for p in submissions]
    check_consistent(subs)
    if len(subs) < 2:
        raise PolicyError("linkage needs submissions from at least two platforms")
    datasets = [s.clks for s in subs]
    sizes = [len(s.tokens) for s in subs]
    seed = derive_seed(*sorted(s.hash for s in subs))
    sample = best_match_sample(datasets, size=sample_size, seed=seed, workers=workers)
    choice = choose_threshold(sample.top1, sample.top2)
    if fixed is None:
        t, method, reason = choice.threshold, choice.method, choice.reason
    else:
        t, method, reason = fixed, "fixed", ""
    plan = plan_blocking(datasets, t, mode=blocking, seed=seed, sample=sample)  # type: ignore[arg-type]
    report: BlockingReport | None = None
    if plan.method == "lsh" and plan.design is not None:
        candidates, report = lsh_candidates(
            datasets, t, seed=seed, bands=plan.design.bands, bits_per_band=plan.design.bits_per_band,
            sample=sample, progress=progress,
        )
    else:
        extra = {} if workers is None else {"workers": workers}
        candidates = find_candidates(datasets, t, progress=progress, **extra)
    sample_pc = None
    if report is not None:
        wanted = sample.top1 >= t
        if wanted.any():
            pairs = np.stack([sample.dataset[wanted], sample.other[wanted]], axis=1)
            recs = np.stack([sample.record[wanted], sample.partner[wanted]], axis=1)
            have = _pair_codes(candidates.dataset, candidates.record, sizes)
            sample_pc = float(np.isin(_pair_codes(pairs, recs, sizes), have).mean())
    groups = greedy_solve(candidates)
    sims = _member_similarities(groups, candidates, sizes)
    # An entity's match probability: the lowest posterior among its members' links.
    probabilities: list[float | None] = [None] * len(groups)
    if groups:
        flat = np.fromiter((x for group_sims in sims for x in group_sims), dtype=np.float64)
        post = choice.posterior(flat)
        if post is not None:
            starts = np.concatenate([[0], np.cumsum([len(g) for g in groups])[:-1]])
            probabilities = np.round(np.minimum.reduceat(post, starts), 6).tolist()
    names = [s.platform for s in subs]
    tokens = [s.tokens for s in subs]
    entities = []
    for number, (group, group_sims, probability) in enumerate(zip(groups, sims, probabilities), start=1):
        members = [[names[d], tokens[d][r], round(s, 6)] for (d, r), s in zip(group, group_sims)]
        entities.append({"entity_id": f"E{number:07d}", "members": members, "match_probability": probability})
    pairs_total = int(sum(a * b for a, b in itertools.combinations(sizes, 2)))
    comparisons = report.comparisons if report is not None else pairs_total
    blocking_header: dict[str, Any] = {
        "method": "lsh" if report is not None else "none",
        "reason": plan.reason,
        "pairs_total": pairs_total,
        "comparisons": comparisons,
        "reduction_ratio": round(1.0 - comparisons / pairs_total, 8) if pairs_total else 0.0,
    }
    if report is not None:
        blocking_header.update(
            bands=report.bands,
            bits_per_band=report.bits_per_band,
            seed=report.seed,
            estimated_pair_completeness=report.estimated_pair_completeness,
            pair_completeness_at_threshold=report.pair_completeness_at_threshold,
            sample_pair_completeness=sample_pc,
        )
    candidate_rows = _csv_text(
        [names[d0], tokens[d0][r0], names[d1], tokens[d1][r1], round(sim, 6)]
        for sim, (d0, d1), (r0, r1) in zip(
            candidates.similarity.tolist(), candidates.dataset.tolist(), candidates.record.tolist()
        )
    )
    sample_rows = _csv_text(
        [names[d], tokens[d][r], names[e], tokens[e][p], round(s1, 6), "" if math.isnan(s2) else round(s2, 6)]
        for d, r, e, p, s1, s2 in zip(
            sample.dataset.tolist(), sample.record.tolist(), sample.other.tolist(),
            sample.partner.tolist(), sample.top1.tolist(), sample.top2.tolist(),
        )
    )
    first = subs[0].header
    doc = {
        "kind": "linkage",
        "version": 1,
        "header": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threshold": t,
            "threshold_method": method,
            "threshold_choice": {**choice.as_dict(), "sample_records": sample.records_sampled,
                                 **({"used": False} if fixed is not None else {})},
            "method": "dice+greedy",
            "schema_hash": first["schema_hash"],
            "linkage_key_id": first["linkage_key_id"],
            "paillier_fingerprint": next(
                (s.header["paillier_fingerprint"] for s in subs if s.header.get("paillier_fingerprint")), None
            ),
            "submissions": [{"platform": s.platform, "records": len(s.tokens), "hash": s.hash} for s in subs],
            "blocking": blocking_header,
            "candidate_pairs": len(candidates),
            "entities": len(entities),
        },
        "payload": {
            "entities": entities,
            "candidates": {"columns": list(CANDIDATE_COLUMNS), "csv": candidate_rows},
            "sample": {"columns": list(SAMPLE_COLUMNS), "csv": sample_rows},
        },
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    linked = sum(len(e["members"]) for e in entities)
    return LinkResult(
        path=path,
        entities=len(entities),
        candidate_pairs=len(candidates),
        linked_records=linked,
        threshold=t,
        threshold_method=method,
        threshold_reason=reason,
        blocking=blocking_header["method"],
        blocking_reason=plan.reason,
        bands=report.bands if report is not None else 0,
        bits_per_band=report.bits_per_band if report is not None else 0,
        comparisons=comparisons,
        pairs_total=pairs_total,
        reduction_ratio=blocking_header["reduction_ratio"],
        estimated_pair_completeness=report.estimated_pair_completeness if report is not None else None,
        sample_pair_completeness=sample_pc,
    )


def load_linkage(path: str | os.PathLike[str], trusted: Sequence[Card] | None = None) -> dict[str, Any]:
    """Read and verify a linkage document (signed by a bureau)."""
    doc = read_document(path, "linkage")
    verify_document(doc, trusted, source=str(path), role="bureau")
    return doc
