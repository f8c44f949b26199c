"""PSI, the bureau's step: match the fully blinded lists, count or sum per person, sign the release and reveals.

Part of the exact-identifier path (docs/psi.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from pprl.crypto.paillier.packing import PackingSpec
from pprl.crypto.paillier.proofs import verify_additions
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
from pprl.documents import (
    PsiReveal,
    PsiRevealHeader,
    PsiRevealPayload,
    PsiRound,
    Release,
    ReleaseHeader,
    ReleasePayload,
    document_hash,
    seal,
)
from pprl.errors import DocumentError, KeyMismatchError, OptionError, PolicyError
from pprl.protocol.aggregate import (
    AggregateOptions,
    addition_context,
    common_clip,
    noise_key,
    noise_policy,
    noise_rows,
    proved_additions,
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.psi.platform import VerifiedRound, check_round
from pprl.protocol.psi.session import Session, ring_order

if TYPE_CHECKING:
    from pprl.engine import Engine

__all__ = [
    "IntersectionCounts",
    "IntersectionRelease",
    "check_psi_release",
    "count_rounds",
    "entity_id",
    "entity_key",
    "match_rounds",
    "sum_rounds",
]

_ENTITY_DOMAIN = b"pprl-psi-entity-v1"


@dataclass(frozen=True)
class _Matched:
    session: Session
    rounds: list[VerifiedRound]
    groups: list[list[int]]          # global indices (rounds concatenated in session order)
    group_elements: list[bytes]
    transcript_hash: str


def _match(me: PartyKey, session: Session, rounds: Sequence[PsiRound], engine: Engine | None = None) -> _Matched:
    if me.role != "bureau" or session.bureau.name != me.name or session.bureau.public != me.card.public:
        raise KeyMismatchError(
            f"{session.source}: this session was opened by '{session.bureau.name}', not by '{me.name}'"
        )
    return match_rounds(session, rounds, engine=engine)


def match_rounds(session: Session, rounds: Sequence[PsiRound], *, engine: Engine | None = None) -> _Matched:
    """Join a session's fully blinded lists: who shares which person (deterministic; what a decryptor recomputes).

    ``engine``: where the join runs (:meth:`pprl.engine.Engine.psi_join`; the same groups); the rounds are
    checked here either way."""
    by_origin: dict[str, VerifiedRound] = {}
    for doc in rounds:
        rnd = check_round(doc, session)
        if not rnd.complete:
            missing = [n for n in ring_order(session.names, rnd.origin) if n not in rnd.hops]
            raise PolicyError(f"{rnd.source}: still needs blinding by {', '.join(missing)}")
        if rnd.origin in by_origin:
            raise DocumentError(f"{rnd.source}: a second list from '{rnd.origin}' (first: {by_origin[rnd.origin].source})")
        by_origin[rnd.origin] = rnd
    missing = [n for n in session.names if n not in by_origin]
    if missing:
        raise PolicyError(f"no complete list from {', '.join(missing)}; give one list per platform")
    ordered = [by_origin[n] for n in session.names]
    first = ordered[0]
    for r in ordered[1:]:
        for name, what in [
            ("score_columns", "score columns"),
            ("paillier_fingerprint", "Paillier key"),
            ("score_decimals", "score precision"),
            ("packing", "score packing"),
        ]:
            if getattr(r.header, name) != getattr(first.header, name):
                raise KeyMismatchError(f"{r.source}: uses different {what} than {first.source}")

    transcript = document_hash({"session": session.hash, "inputs": [r.hash for r in ordered]})
    if engine is not None:
        joined = engine.psi_join([r.elements for r in ordered])
        if joined.repeats:
            r = ordered[joined.repeats[0]]
            raise DocumentError(f"{r.source}: repeats an element (a platform listed one person twice)")
        return _Matched(session, ordered, joined.groups, joined.elements, transcript)
    arrays = [np.frombuffer(r.elements, dtype="V32") for r in ordered]
    for r, arr in zip(ordered, arrays):
        if len(np.unique(arr)) != len(arr):
            raise DocumentError(f"{r.source}: repeats an element (a platform listed one person twice)")
    everything = np.concatenate(arrays)
    uniq, inverse, counts = np.unique(everything, return_inverse=True, return_counts=True)
    shared = np.flatnonzero(counts >= 2)
    members = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    groups = [members[starts[g] : starts[g + 1]].tolist() for g in shared]
    group_elements = [uniq[g].tobytes() for g in shared]
    return _Matched(session, ordered, groups, group_elements, transcript)


def check_psi_release(release: Release, session: Session, rounds: Sequence[PsiRound], floor: int) -> int:
    """A decryptor's own check of a PSI release against the session and the platforms' final lists.

    Entity ids are keyed by the bureau, so the release must hold, as a
    multiset, exactly (contributors, sum) pairs the lists give: every sum the
    homomorphic sum of one shared person's ciphertexts, each person at most
    once, none from fewer than ``floor`` platforms. Returns the sums compared.
    """
    source = release.source
    m = match_rounds(session, rounds)
    if release.header.linkage_hash != m.transcript_hash:
        raise DocumentError(f"{source}: does not follow this session's lists (another transcript)")
    header0 = m.rounds[0].header
    key = PaillierPublicKey.from_dict(header0.paillier_key or {})
    width = key.ciphertext_bytes
    vectors = [EncryptedVector.from_bytes(key, r.scores["packed"]) for r in m.rounds]
    index = release.payload.join_index
    if index is not None:
        return _check_indexed(release, m, vectors, key, index, floor)
    if release.header.noise is not None:
        raise DocumentError(f"{source}: a noised PSI release must say which shared person each sum is")
    summed = EncryptedVector.concat(vectors).sum_groups(m.groups).to_bytes() if m.groups else b""
    available: dict[tuple[int, bytes], int] = {}
    for i, group in enumerate(m.groups):
        pair = (len(group), summed[i * width : (i + 1) * width])
        available[pair] = available.get(pair, 0) + 1
    given = release.payload.sums.get("packed") or b""
    counts = release.payload.contributors
    if len(given) != len(counts) * width:
        raise DocumentError(f"{source}: holds {len(given) // width} sums for {len(counts)} entities")
    for i, (entity, count) in enumerate(zip(release.payload.entity_ids, counts, strict=True)):
        if count < floor:
            raise PolicyError(f"{source}: entity {entity} is held by {count} platforms, below your floor of {floor}; "
                              "nothing is decrypted")
        pair = (count, given[i * width : (i + 1) * width])
        if not available.get(pair):
            raise DocumentError(f"{source}: the sum for entity {entity} is not the sum of one shared person's records")
        available[pair] -= 1
    return len(counts)


def _check_indexed(
    release: Release, m: _Matched, vectors: Sequence[EncryptedVector], key: PaillierPublicKey, index: Sequence[int],
    floor: int,
) -> int:
    """The check when the release names each entity's person in the join order: recompute each sum, and
    (with noise) verify the bureau's proof that it knows what it added."""
    source = release.source
    ids, counts = release.payload.entity_ids, release.payload.contributors
    if len(index) != len(ids) or len(set(index)) != len(index) or any(
        not isinstance(j, int) or not 0 <= j < len(m.groups) for j in index
    ):
        raise DocumentError(f"{source}: its join indices are not one distinct shared person per entity")
    for entity, j, count in zip(ids, index, counts, strict=True):
        if count != len(m.groups[j]):
            raise DocumentError(f"{source}: entity {entity} is held by {len(m.groups[j])} platforms, not {count}")
        if count < floor:
            raise PolicyError(f"{source}: entity {entity} is held by {count} platforms, below your floor of {floor}; "
                              "nothing is decrypted")
    if not ids:
        return 0
    width = key.ciphertext_bytes
    recomputed = EncryptedVector.concat(list(vectors)).sum_groups([m.groups[j] for j in index]).to_bytes()
    given = release.payload.sums.get("packed") or b""
    if len(given) != len(recomputed):
        raise DocumentError(f"{source}: holds {len(given) // width} sums for {len(ids)} entities")
    if release.header.noise is None:
        if given != recomputed:
            raise DocumentError(f"{source}: a sum is not the sum of its person's records")
        return len(ids)
    verify_additions(key, given, recomputed, release.payload.added_proof, addition_context(m.transcript_hash, ids),
                     source=source)
    return len(ids)


def entity_key(me: PartyKey, session_id: str) -> bytes:
    """The bureau's per-session key for entity ids, derived from its own private seed.

    Keyed, so a platform cannot turn a fully blinded list it produced itself
    (the last hop of its ring successor's list) into entity ids and learn
    which of its own revealed users that platform also holds.
    """
    return hashlib.sha256(_ENTITY_DOMAIN + me.identity.sign_seed + bytes.fromhex(session_id)).digest()


def entity_id(key: bytes, element: bytes) -> str:
    """The opaque entity id of a fully blinded element under the bureau's session key."""
    return "E" + hmac.new(key, element, hashlib.sha256).hexdigest()[:20]


@dataclass(frozen=True)
class IntersectionCounts:
    """What the bureau learns: list sizes and how many persons each number of platforms share."""

    records: dict[str, int]
    intersection: int
    by_contributors: dict[int, int]


def count_rounds(me: PartyKey, session: Session, rounds: Sequence[PsiRound], *,
                 engine: Engine | None = None) -> IntersectionCounts:
    """Cardinality only (bureau): persons on two or more platforms, by number of platforms.

    ``engine``: where the join runs (:mod:`pprl.engine`; the same counts)."""
    m = _match(me, session, rounds, engine)
    sizes: dict[int, int] = {}
    for g in m.groups:
        sizes[len(g)] = sizes.get(len(g), 0) + 1
    return IntersectionCounts({r.origin: r.records for r in m.rounds}, len(m.groups), dict(sorted(sizes.items())))


@dataclass(frozen=True)
class IntersectionRelease:
    """The bureau's signed release of the intersection's sums, and one reveal per platform (revealing sessions)."""

    release: Release
    reveals: dict[str, PsiReveal] = field(repr=False)
    released: int
    suppressed: int
    intersection: int
    transcript_hash: str


def sum_rounds(
    me: PartyKey, session: Session, rounds: Sequence[PsiRound], min_contributors: int,
    options: AggregateOptions | None = None, *, engine: Engine | None = None,
) -> IntersectionRelease:
    """Match the fully blinded lists (bureau), sum ciphertexts per person, sign the release.

    The release has exactly the CLK path's layout, with ``linkage_hash`` set
    to the PSI transcript hash. Entities are the persons on two or more
    platforms (one platform's own users are never released, whatever
    ``min_contributors``); ``suppressed`` counts those below
    ``min_contributors``. A revealing session also gets one signed reveal per platform.
    ``engine``: where the join and the sums run (:mod:`pprl.engine`; the same release, byte for byte).
    """
    if isinstance(min_contributors, bool) or not isinstance(min_contributors, int) or min_contributors < 1:
        raise OptionError("{min_contributors} must be at least 1", "min_contributors")
    options = options or AggregateOptions(min_contributors=min_contributors)
    m = _match(me, session, rounds, engine)
    ordered = m.rounds
    header0 = ordered[0].header
    columns = list(header0.score_columns)
    if not columns:
        raise PolicyError("the lists carry no score columns; nothing to sum (count the intersection instead)")
    key = PaillierPublicKey.from_dict(header0.paillier_key or {})
    spec = PackingSpec.from_dict(header0.packing)
    if len(ordered) > spec.max_summands:
        raise PolicyError(f"{len(ordered)} platforms exceed the packing's headroom of {spec.max_summands} summands")
    ekey = entity_key(me, session.session_id)
    released = sorted(
        (entity_id(ekey, e), j, g) for j, (e, g) in enumerate(zip(m.group_elements, m.groups))
        if len(g) >= min_contributors
    )
    suppressed = len(m.groups) - len(released)
    groups = [g for _, _, g in released]
    entity_ids = [e for e, _, _ in released]
    vectors = [EncryptedVector.from_bytes(key, r.scores["packed"]) for r in ordered]
    if engine is not None:  # one record per ciphertext (checked with each round): sum_records is sum_groups
        summed = engine.sum_records(EncryptedVector.concat(vectors), groups, spec)
    else:
        summed = EncryptedVector.concat(vectors).sum_groups(groups)
    policy, clip, added_proof = None, None, None
    if options.noise is not None:
        clips = [r.header.clip for r in ordered]
        clip = common_clip(clips)
        policy = noise_policy(options, clip, columns, clips, spec)
        if any(len(g) + 1 > spec.max_summands for g in groups):
            raise PolicyError(f"a person has more than {spec.max_summands - 1} records (plus the noise row)")
        if entity_ids:
            noise = noise_rows(spec, policy, columns, entity_ids, m.transcript_hash, noise_key(me))
            added, added_proof = proved_additions(key, spec, noise, m.transcript_hash, entity_ids)
            summed = summed + added
    sums = {"packed": summed.to_bytes()}
    header = ReleaseHeader(
        linkage_hash=m.transcript_hash,
        paillier_fingerprint=key.fingerprint,
        paillier_key=key.to_dict(),
        score_columns=columns,
        score_decimals=header0.score_decimals,
        packing=spec.to_dict(),
        min_contributors=min_contributors,
        clip=clip,
        noise=policy,
        entities=len(released),
        suppressed=suppressed,
        platforms=list(session.names),
    )
    payload = ReleasePayload(entity_ids=entity_ids, contributors=[len(g) for g in groups], sums=sums,
                             added_proof=added_proof, join_index=[j for _, j, _ in released])
    release = seal(Release(header=header, payload=payload), me.identity, me.card)
    reveals: dict[str, PsiReveal] = {}
    if session.reveal_intersection:
        offsets = np.cumsum([0, *[r.records for r in ordered]])
        for p, r in enumerate(ordered):
            tokens = r.tokens or []
            rows = []
            for entity, _, g in released:
                for i in g:
                    if offsets[p] <= i < offsets[p + 1]:
                        rows.append((tokens[i - offsets[p]], entity, len(g)))
            reveal = PsiReveal(
                header=PsiRevealHeader(
                    session_id=session.session_id,
                    session_hash=session.hash,
                    platform=r.origin,
                    release_hash=release.hash,
                    min_contributors=min_contributors,
                    members=len(rows),
                ),
                payload=PsiRevealPayload(
                    tokens=[t for t, _, _ in rows], entity_ids=[e for _, e, _ in rows],
                    contributors=[c for _, _, c in rows],
                ),
            )
            reveals[r.origin] = seal(reveal, me.identity, me.card)
    return IntersectionRelease(release, reveals, len(released), suppressed, len(m.groups), m.transcript_hash)
