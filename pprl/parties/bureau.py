"""The bureau's first step: verify submissions and link platforms' encodings into entities.

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

from pprl.crypto.paillier import PaillierPublicKey
from pprl.documents import (
    Card,
    b64d,
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
        scores = {c: b64d(payload["scores"][c], f"{path}: scores.{c}") for c in header["score_columns"]}
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


def paillier_key_of(sub: LoadedSubmission) -> PaillierPublicKey:
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
    check_consistent(subs)
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
