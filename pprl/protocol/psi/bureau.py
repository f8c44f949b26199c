"""PSI, the bureau's step: match the fully blinded lists, count or sum per person, write the release and reveals.

Part of the exact-identifier path described in :mod:`pprl.protocol.psi`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pprl.crypto.paillier.packing import PackingSpec
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPublicKey,
)
from pprl.documents import (
    b64e,
    document_hash,
    sign_document,
    write_document,
)
from pprl.errors import (
    DocumentError,
    KeyMismatchError,
    PolicyError,
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.psi.platform import LoadedRound, load_round
from pprl.protocol.psi.session import (
    REVEAL_KIND,
    PsiSession,
    _now,
    load_session,
    ring_order,
)

__all__ = [
    "IntersectionCounts",
    "PsiReleaseResult",
    "aggregate_intersection",
    "count_intersection",
]

_ENTITY_DOMAIN = b"pprl-psi-entity-v1"


# --------------------------------------------------------------------------- bureau: match and sum


@dataclass(frozen=True)
class _Matched:
    session: PsiSession
    rounds: list[LoadedRound]
    groups: list[list[int]]          # global indices (rounds concatenated in session order)
    group_elements: list[bytes]
    transcript_hash: str


def _match(me: PartyKey, session: PsiSession | str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]) -> _Matched:
    sess = session if isinstance(session, PsiSession) else load_session(session, me.card)
    if me.role != "bureau" or sess.bureau.name != me.name or sess.bureau.public != me.card.public:
        raise KeyMismatchError(f"{sess.path}: this session was opened by '{sess.bureau.name}', not by '{me.name}'")
    rounds: dict[str, LoadedRound] = {}
    for p in inputs:
        rnd = load_round(p, sess)
        if not rnd.complete:
            missing = [n for n in ring_order(sess.names, rnd.origin) if n not in rnd.hops]
            raise PolicyError(f"{p}: still needs blinding by {', '.join(missing)}")
        if rnd.origin in rounds:
            raise DocumentError(f"{p}: a second list from '{rnd.origin}' (first: {rounds[rnd.origin].path})")
        rounds[rnd.origin] = rnd
    missing = [n for n in sess.names if n not in rounds]
    if missing:
        raise PolicyError(f"no complete list from {', '.join(missing)}; give one --inputs per platform")
    ordered = [rounds[n] for n in sess.names]
    first = ordered[0]
    for r in ordered[1:]:
        for name, what in [
            ("score_columns", "score columns"),
            ("paillier_fingerprint", "Paillier key"),
            ("score_decimals", "score precision"),
            ("packing", "score packing"),
        ]:
            if r.header.get(name) != first.header.get(name):
                raise KeyMismatchError(f"{r.path}: uses different {what} than {first.path}")

    arrays = [np.frombuffer(r.elements, dtype="V32") for r in ordered]
    for r, arr in zip(ordered, arrays):
        if len(np.unique(arr)) != len(arr):
            raise DocumentError(f"{r.path}: repeats an element (a platform listed one person twice)")
    everything = np.concatenate(arrays)
    uniq, inverse, counts = np.unique(everything, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts >= 2)
    members = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups = [members[starts[g] : starts[g + 1]].tolist() for g in shared]
    group_elements = [uniq[g].tobytes() for g in shared]
    transcript = document_hash({"session": sess.hash, "inputs": [r.hash for r in ordered]})
    return _Matched(sess, ordered, groups, group_elements, transcript)


def _entity_key(me: PartyKey, session_id: str) -> bytes:
    """The bureau's per-session key for entity ids, derived from its own private seed.

    Keyed, so a platform cannot turn a fully blinded list it produced itself
    (the last hop of its ring successor's list) into entity ids and learn
    which of its own revealed users that platform also holds.
    """
    return hashlib.sha256(_ENTITY_DOMAIN + me.identity.sign_seed + bytes.fromhex(session_id)).digest()


def _entity_id(key: bytes, element: bytes) -> str:
    return "E" + hmac.new(key, element, hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class IntersectionCounts:
    """What the bureau learns: list sizes and how many persons each number of platforms share."""

    records: dict[str, int]
    intersection: int
    by_contributors: dict[int, int]


def count_intersection(
    me: PartyKey, session: PsiSession | str | os.PathLike[str], inputs: Sequence[str | os.PathLike[str]]
) -> IntersectionCounts:
    """Cardinality only (bureau): persons on two or more platforms, by number of platforms."""
    m = _match(me, session, inputs)
    sizes: dict[int, int] = {}
    for g in m.groups:
        sizes[len(g)] = sizes.get(len(g), 0) + 1
    return IntersectionCounts({r.origin: r.records for r in m.rounds}, len(m.groups), dict(sorted(sizes.items())))


@dataclass(frozen=True)
class PsiReleaseResult:
    path: Path
    released: int
    suppressed: int
    intersection: int
    transcript_hash: str
    reveal_paths: tuple[Path, ...] = ()


def aggregate_intersection(
    me: PartyKey,
    session: PsiSession | str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]],
    min_contributors: int,
    out: str | os.PathLike[str],
    *,
    reveal_dir: str | os.PathLike[str] | None = None,
) -> PsiReleaseResult:
    """Match the fully blinded lists (bureau), sum ciphertexts per person, write the release.

    The release has exactly the layout of :func:`pprl.protocol.link.aggregate`'s,
    with ``linkage_hash`` set to the PSI transcript hash. Entities are the
    persons on two or more platforms (one platform's own users are never
    released, whatever ``min_contributors``); ``suppressed`` counts those
    below ``min_contributors``. With a revealing
    session, also writes ``<platform>.reveal.json`` per platform into
    ``reveal_dir`` (default: the release's directory).
    """
    if isinstance(min_contributors, bool) or not isinstance(min_contributors, int) or min_contributors < 1:
        raise PolicyError("--min-contributors must be at least 1")
    m = _match(me, session, inputs)
    sess, ordered = m.session, m.rounds
    columns = list(ordered[0].header["score_columns"])
    if not columns:
        raise PolicyError("the lists carry no score columns; nothing to sum (use `pprl psi count` for the size)")
    key = PaillierPublicKey.from_dict(ordered[0].header["paillier_key"])
    spec = PackingSpec.from_dict(ordered[0].header["packing"])
    if len(ordered) > spec.max_summands:
        raise PolicyError(f"{len(ordered)} platforms exceed the packing's headroom of {spec.max_summands} summands")
    entity_key = _entity_key(me, sess.session_id)
    released = [
        (_entity_id(entity_key, e), g) for e, g in zip(m.group_elements, m.groups) if len(g) >= min_contributors
    ]
    released.sort()
    suppressed = len(m.groups) - len(released)
    groups = [g for _, g in released]
    vectors = [EncryptedVector.from_bytes(key, r.scores["packed"]) for r in ordered]
    sums = {"packed": b64e(EncryptedVector.concat(vectors).sum_groups(groups).to_bytes())}
    doc = {
        "kind": "release",
        "version": 1,
        "header": {
            "created": _now(),
            "linkage_hash": m.transcript_hash,
            "paillier_fingerprint": key.fingerprint,
            "paillier_key": key.to_dict(),
            "score_columns": columns,
            "score_decimals": ordered[0].header["score_decimals"],
            "packing": spec.to_dict(),
            "min_contributors": min_contributors,
            "clip": None,
            "noise": None,
            "entities": len(released),
            "suppressed": suppressed,
        },
        "payload": {
            "entity_ids": [e for e, _ in released],
            "contributors": [len(g) for g in groups],
            "sums": sums,
        },
    }
    release = sign_document(doc, me.identity, me.card)
    reveals: list[tuple[Path, dict[str, Any]]] = []
    if sess.reveal_intersection:
        directory = Path(reveal_dir) if reveal_dir is not None else Path(out).parent
        offsets = np.cumsum([0, *[r.records for r in ordered]])
        for p, r in enumerate(ordered):
            rows = []
            for entity, g in released:
                for i in g:
                    if offsets[p] <= i < offsets[p + 1]:
                        rows.append((r.tokens[i - offsets[p]], entity, len(g)))  # type: ignore[index]
            reveal = {
                "kind": REVEAL_KIND,
                "version": 1,
                "header": {
                    "session_id": sess.session_id,
                    "session_hash": sess.hash,
                    "platform": r.origin,
                    "release_hash": document_hash(release),
                    "min_contributors": min_contributors,
                    "members": len(rows),
                    "created": _now(),
                },
                "payload": {
                    "tokens": [t for t, _, _ in rows],
                    "entity_ids": [e for _, e, _ in rows],
                    "contributors": [c for _, _, c in rows],
                },
            }
            reveals.append((directory / f"{r.origin}.reveal.json", sign_document(reveal, me.identity, me.card)))
    written: list[Path] = []
    try:
        path = write_document(out, release)
        written.append(path)
        for reveal_path, reveal_doc in reveals:
            written.append(write_document(reveal_path, reveal_doc))
    except BaseException:
        for w in written:
            w.unlink(missing_ok=True)
        raise
    return PsiReleaseResult(path, len(released), suppressed, len(m.groups), m.transcript_hash, tuple(written[1:]))
