"""The bureau's steps: link platforms' encodings into entities, then sum ciphertexts per entity.

The bureau sees CLKs, opaque tokens and ciphertexts; it never holds the
linkage secret or the Paillier private key. Every submission is verified
(signature against the platforms' cards, one schema, one linkage secret, one
Paillier key) before any of it is used.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pprl.crypto.paillier import EncryptedVector, PaillierPublicKey
from pprl.documents import (
    Card,
    b64d,
    b64e,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import DocumentError, KeyMismatchError, PolicyError
from pprl.linkage.similarity import find_candidates
from pprl.linkage.solve import greedy_solve, group_similarities
from pprl.parties.identity import PartyKey

__all__ = [
    "LoadedSubmission",
    "LinkResult",
    "ReleaseResult",
    "load_submission",
    "load_linkage",
    "link",
    "aggregate",
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
        scores = {c: b64d(payload["scores"][c], f"{path}: scores.{c}") for c in header["score_columns"]}
    except (KeyError, TypeError, ValueError):
        raise DocumentError(f"{path}: submission is missing header or payload fields") from None
    n = int(header["records"])
    if len(tokens) != n or len(set(tokens)) != n or width <= 0 or len(raw) != n * width:
        raise DocumentError(f"{path}: record counts, tokens and encodings disagree")
    clks = np.frombuffer(raw, dtype=np.uint8).reshape(n, width)
    return LoadedSubmission(str(path), signer.name, header, tokens, clks, scores, document_hash(doc))


def _check_consistent(subs: Sequence[LoadedSubmission]) -> None:
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


def _paillier_key(sub: LoadedSubmission) -> PaillierPublicKey:
    key = PaillierPublicKey.from_dict(sub.header["paillier_key"])
    if key.fingerprint != sub.header["paillier_fingerprint"]:
        raise KeyMismatchError(f"{sub.path}: Paillier key does not match its fingerprint")
    return key


@dataclass(frozen=True)
class LinkResult:
    path: Path
    entities: int
    candidate_pairs: int
    linked_records: int


def link(
    me: PartyKey,
    cards: Sequence[Card],
    submissions: Sequence[str | os.PathLike[str]],
    threshold: float,
    out: str | os.PathLike[str],
    *,
    progress: bool = False,
) -> LinkResult:
    """Verify submissions, compare encodings (Dice), solve greedily, write the signed linkage."""
    if not 0.0 < threshold <= 1.0:
        raise PolicyError(f"threshold {threshold} must be in (0, 1]")
    subs = [load_submission(p, cards) for p in submissions]
    _check_consistent(subs)
    if len(subs) < 2:
        raise PolicyError("linkage needs submissions from at least two platforms")
    candidates = find_candidates([s.clks for s in subs], threshold, progress=progress)
    groups = greedy_solve(candidates)
    sims = group_similarities(groups, candidates)
    entities = []
    for number, (group, group_sims) in enumerate(zip(groups, sims), start=1):
        members = [[subs[d].platform, subs[d].tokens[r], round(float(s), 6)] for (d, r), s in zip(group, group_sims)]
        entities.append({"entity_id": f"E{number:07d}", "members": members})
    first = subs[0].header
    doc = {
        "kind": "linkage",
        "version": 1,
        "header": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "threshold": threshold,
            "method": "dice+greedy",
            "schema_hash": first["schema_hash"],
            "linkage_key_id": first["linkage_key_id"],
            "paillier_fingerprint": next(
                (s.header["paillier_fingerprint"] for s in subs if s.header.get("paillier_fingerprint")), None
            ),
            "submissions": [{"platform": s.platform, "records": len(s.tokens), "hash": s.hash} for s in subs],
            "candidate_pairs": len(candidates),
            "entities": len(entities),
        },
        "payload": {"entities": entities},
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    linked = sum(len(e["members"]) for e in entities)
    return LinkResult(path=path, entities=len(entities), candidate_pairs=len(candidates), linked_records=linked)


def load_linkage(path: str | os.PathLike[str], trusted: Sequence[Card] | None = None) -> dict[str, Any]:
    """Read and verify a linkage document (signed by a bureau)."""
    doc = read_document(path, "linkage")
    verify_document(doc, trusted, source=str(path), role="bureau")
    return doc


@dataclass(frozen=True)
class ReleaseResult:
    path: Path
    released: int
    suppressed: int


def aggregate(
    me: PartyKey,
    linkage: str | os.PathLike[str],
    submissions: Sequence[str | os.PathLike[str]],
    min_contributors: int,
    out: str | os.PathLike[str],
    *,
    cards: Sequence[Card] | None = None,
) -> ReleaseResult:
    """Sum each score column per entity under encryption; release only well-supported entities."""
    if min_contributors < 1:
        raise PolicyError("--min-contributors must be at least 1")
    link_doc = load_linkage(linkage, [me.card])
    subs = {s.platform: s for s in (load_submission(p, cards) for p in submissions)}
    expected = {e["platform"]: e["hash"] for e in link_doc["header"]["submissions"]}
    for platform, digest in expected.items():
        if platform not in subs:
            raise DocumentError(f"{linkage}: links a submission from '{platform}' that was not given")
        if subs[platform].hash != digest:
            raise DocumentError(f"{subs[platform].path}: is not the submission the linkage was built from")
    for platform, sub in subs.items():
        if platform not in expected:
            raise DocumentError(f"{sub.path}: not part of linkage {linkage}")
    ordered = [subs[p] for p in expected]
    _check_consistent(ordered)
    columns = ordered[0].header["score_columns"]
    for s in ordered:
        if s.header["score_columns"] != columns:
            raise DocumentError(f"{s.path}: score columns {s.header['score_columns']} differ from {ordered[0].path}'s {columns}")
        if s.header["score_decimals"] != ordered[0].header["score_decimals"]:
            raise DocumentError(f"{s.path}: score precision differs from {ordered[0].path}'s")
    if not columns:
        raise PolicyError("the submissions carry no score columns (linkage-only); nothing to aggregate")
    fingerprint = ordered[0].header["paillier_fingerprint"]

    offsets, position = {}, 0
    for s in ordered:
        offsets[s.platform] = position
        position += len(s.tokens)
    token_index = {s.platform: {t: i for i, t in enumerate(s.tokens)} for s in ordered}
    released_ids, contributors, groups = [], [], []
    suppressed = 0
    for entity in link_doc["payload"]["entities"]:
        members = entity["members"]
        if len({m[0] for m in members}) < min_contributors:
            suppressed += 1
            continue
        try:
            groups.append([offsets[p] + token_index[p][t] for p, t, _ in members])
        except KeyError:
            raise DocumentError(f"{linkage}: entity {entity['entity_id']} names a token no submission has") from None
        released_ids.append(entity["entity_id"])
        contributors.append(len(members))

    key = _paillier_key(ordered[0])
    sums = {}
    for column in columns:
        vectors = [EncryptedVector.from_bytes(key, s.scores[column]) for s in ordered]
        sums[column] = b64e(EncryptedVector.concat(vectors).sum_groups(groups).to_bytes())
    doc = {
        "kind": "release",
        "version": 1,
        "header": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "linkage_hash": document_hash(link_doc),
            "paillier_fingerprint": fingerprint,
            "paillier_key": key.to_dict(),
            "score_columns": columns,
            "score_decimals": ordered[0].header["score_decimals"],
            "min_contributors": min_contributors,
            "entities": len(released_ids),
            "suppressed": suppressed,
        },
        "payload": {"entity_ids": released_ids, "contributors": contributors, "sums": sums},
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return ReleaseResult(path=path, released=len(released_ids), suppressed=suppressed)
