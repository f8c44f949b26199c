"""The bureau's second step: sum ciphertexts per linked entity into a release for the authority.

Each record's scores travel packed in one ciphertext, so one homomorphic sum
per entity adds every column at once. The release payload's ``sums`` holds
one entry, ``packed``; its header carries the packing spec the authority
needs to unpack the column sums.

Only entities with enough contributing platforms are released. The bureau
never holds a key that opens the sums; the release carries ciphertexts only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pprl.crypto.packing import PackingSpec
from pprl.crypto.paillier import EncryptedVector
from pprl.documents import Card, b64e, document_hash, sign_document, write_document
from pprl.errors import DocumentError, PolicyError
from pprl.parties.bureau import check_consistent, load_linkage, load_submission, paillier_key_of
from pprl.parties.identity import PartyKey

__all__ = ["ReleaseResult", "aggregate"]


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
    check_consistent(ordered)
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

    spec = PackingSpec.from_dict(ordered[0].header["packing"])
    if any(c > spec.max_summands for c in contributors):
        raise PolicyError(f"an entity has more than {spec.max_summands} records, beyond the packing's headroom")
    key = paillier_key_of(ordered[0])
    vectors = [EncryptedVector.from_bytes(key, s.scores["packed"]) for s in ordered]
    sums = {"packed": b64e(EncryptedVector.concat(vectors).sum_groups(groups).to_bytes())}
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
            "packing": spec.to_dict(),
            "min_contributors": min_contributors,
            "entities": len(released_ids),
            "suppressed": suppressed,
        },
        "payload": {"entity_ids": released_ids, "contributors": contributors, "sums": sums},
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return ReleaseResult(path=path, released=len(released_ids), suppressed=suppressed)
