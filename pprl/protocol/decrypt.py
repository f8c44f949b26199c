"""The authority's steps: hold the Paillier key, decrypt only released aggregates, log every release.

Decryption happens only for a release signed by a bureau, under this
authority's key, and every decryption yields a signed, hash-chained audit
entry that is appended before the plaintext leaves. A release with noise
charges each score column's running privacy budget (basic composition over
the log): docs/release-policy.md.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, unpack
from pprl.crypto.paillier.proofs import verify_additions
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    decode_fixed,
    decrypt_vector,
    generate_keypair,
)
from pprl.documents import (
    Card,
    Linkage,
    PaillierKeyDocument,
    PaillierPub,
    PsiRound,
    PsiSession,
    Release,
    Submission,
    seal,
    verify,
)
from pprl.errors import DocumentError, KeyFormatError, KeyMismatchError, OptionError, PolicyError, PPRLError
from pprl.protocol.aggregate import addition_context, linked_groups
from pprl.protocol.audit import check_chain, check_extends, next_entry
from pprl.protocol.identity import PartyKey
from pprl.protocol.psi import check_psi_release, check_session

__all__ = [
    "DecryptOptions",
    "PsiEvidence",
    "ReleaseEvidence",
    "check_evidence",
    "check_release_sums",
    "Decrypted",
    "check_release_packing",
    "decrypt_sums",
    "new_paillier_key",
    "open_paillier_private",
    "privacy_budget",
    "publish",
    "summands",
]

MIN_BITS = 2048


def new_paillier_key(me: PartyKey, bits: int) -> tuple[PaillierPub, PaillierKeyDocument]:
    """The authority's new Paillier keypair: (signed public key, private key document)."""
    if me.role != "authority":
        raise KeyFormatError(f"only an authority generates the Paillier key; '{me.name}' is a {me.role}")
    if bits < MIN_BITS:
        raise KeyFormatError(f"a {bits}-bit key is too small; use {MIN_BITS} bits or more")
    public, private = generate_keypair(bits)
    body = private.to_dict()
    secret = PaillierKeyDocument(
        owner=me.name, fingerprint=public.fingerprint, public_key=body["public_key"], p=body["p"], q=body["q"]
    )
    pub = seal(PaillierPub(fingerprint=public.fingerprint, key=public.to_dict()), me.identity, me.card)
    return pub, secret


def open_paillier_private(doc: PaillierKeyDocument) -> PaillierPrivateKey:
    """The private key a document holds, checked against its fingerprint."""
    key = PaillierPrivateKey.from_dict({"public_key": doc.public_key, "p": doc.p, "q": doc.q})
    if key.public_key.fingerprint != doc.fingerprint:
        raise KeyFormatError(f"{doc.source}: key does not match its fingerprint (damaged)")
    return key


@dataclass(frozen=True)
class DecryptOptions:
    """The authority's limits for one decryption.

    Attributes:
        max_epsilon: refuse when the running epsilon of any score column in the
            log would exceed it, or the release carries no noise.
        progress: show progress bars.
    """

    max_epsilon: float | None = None
    progress: bool = False
    evidence: ReleaseEvidence | PsiEvidence | None = None

    def __post_init__(self) -> None:
        m = self.max_epsilon
        if m is not None and (not math.isfinite(m) or m < 0):
            raise OptionError("{max_epsilon} must be a finite number >= 0", "max_epsilon")


@dataclass(frozen=True)
class ReleaseEvidence:
    """What a decryptor checks a release against, rather than trusting the bureau's header.

    Attributes:
        linkage: the bureau's signed linkage the release says it follows.
        submissions: the platforms' signed submissions the linkage was built from.
        platforms: the platform cards the decryptor pinned.
        min_contributors: the decryptor's own floor: every released entity must hold records from at
            least this many distinct platforms, whatever the release header says.
    """

    linkage: Linkage
    submissions: Sequence[Submission] = field(repr=False)
    platforms: Sequence[Card] = ()
    min_contributors: int = 2

    def __post_init__(self) -> None:
        _check_floor(self.min_contributors)


@dataclass(frozen=True)
class PsiEvidence:
    """What a decryptor checks a PSI release against: the bureau's session and the platforms' final lists.

    ``platforms``: the platform cards the decryptor pinned (every platform the session lists must be one);
    ``min_contributors``: its own floor, as for :class:`ReleaseEvidence`.
    """

    session: PsiSession
    rounds: Sequence[PsiRound] = field(repr=False)
    platforms: Sequence[Card] = ()
    min_contributors: int = 2

    def __post_init__(self) -> None:
        _check_floor(self.min_contributors)


def _check_floor(m: object) -> None:
    """A decryptor's own minimum of contributing platforms: an integer of at least 1."""
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise OptionError("{min_contributors} must be at least 1", "min_contributors")


def check_evidence(release: Release, evidence: ReleaseEvidence | PsiEvidence, bureaus: Sequence[Card]) -> int:
    """The decryptor's own check of a release, whichever path made it; returns the sums compared exactly."""
    if isinstance(evidence, PsiEvidence):
        session = check_session(evidence.session, bureaus, evidence.platforms)
        return check_psi_release(release, session, evidence.rounds, evidence.min_contributors)
    return check_release_sums(release, evidence, bureaus)


def check_release_sums(release: Release, evidence: ReleaseEvidence, bureaus: Sequence[Card]) -> int:
    """Recompute what a release must hold from the signed linkage and submissions; returns the sums compared.

    Refused (one line, nothing decrypted): a release of another linkage, an entity the linkage does not
    have or gives twice, a contributor count that is not the entity's, an entity below the decryptor's
    own floor, and a sum that is not exactly the homomorphic sum of the entity's records, or (when the
    bureau added noise or masks) that sum plus additions the bureau proves it knows the plaintexts of
    (:mod:`pprl.crypto.paillier.proofs`): never something made from a platform's ciphertext.
    """
    source = release.source
    linked = linked_groups(evidence.linkage, evidence.submissions, evidence.platforms, bureaus)
    if release.header.linkage_hash != evidence.linkage.hash:
        raise DocumentError(f"{source}: follows another linkage than {evidence.linkage.source}")
    ids, counts = release.payload.entity_ids, release.payload.contributors
    if len(set(ids)) != len(ids):
        raise DocumentError(f"{source}: releases an entity twice")
    for entity, count in zip(ids, counts, strict=True):
        found = linked.entities.get(entity)
        if found is None:
            raise DocumentError(f"{source}: releases entity {entity}, which the linkage does not have")
        group, platforms = found
        if count != len(group):
            raise DocumentError(f"{source}: entity {entity} has {len(group)} records in the linkage, not {count}")
        if platforms < evidence.min_contributors:
            raise PolicyError(f"{source}: entity {entity} has records from {platforms} platforms, below your "
                              f"floor of {evidence.min_contributors}; nothing is decrypted")
    spec = linked.spec
    if not ids:
        return 0
    recomputed = linked.sums(ids).to_bytes()
    key, width = linked.key, linked.key.ciphertext_bytes
    given = release.payload.sums.get("packed") or b""
    if len(given) != len(ids) * width:
        raise DocumentError(f"{source}: holds {len(given) // width} sums for {len(ids)} entities")
    if release.header.noise is not None or spec.records_per_ciphertext > 1:
        # the bureau added ciphertexts of its own (noise, masks): it must prove it knows what they encrypt
        verify_additions(key, given, recomputed, release.payload.added_proof,
                         addition_context(evidence.linkage.hash, ids), source=source)
        return len(ids)
    if recomputed != given:
        for i, entity in enumerate(ids):
            if given[i * width : (i + 1) * width] != recomputed[i * width : (i + 1) * width]:
                raise DocumentError(f"{source}: the sum for entity {entity} is not the sum of its records")
        raise DocumentError(f"{source}: its sums are not the sums of the linked records")
    return len(ids)


@dataclass(frozen=True)
class Decrypted:
    """A decrypted release: the aggregates table and the audit entry that must be logged before it leaves."""

    table: bytes = field(repr=False)
    entry: dict[str, Any]
    entities: int
    #: Entities whose sums could not be read (a platform's value out of range); their cells are empty. Only the
    #: decryptor learns this: the log entry does not say it, lest a platform use it as a comparison oracle.
    unreadable: int = 0


def decrypt_sums(
    me: PartyKey,
    private: PaillierPrivateKey,
    release: Release,
    log: Sequence[Mapping[str, Any]],
    options: DecryptOptions,
    cards: Sequence[Card],
) -> Decrypted:
    """Verify a release, decrypt its per-entity sums and make the audit entry that logs it.

    Args:
        me: the authority (signs the entry).
        private: its Paillier private key.
        release: the bureau's signed release.
        log: the audit log so far (its entries, checked here).
        options: the privacy-budget limit.
        cards: bureau cards the release's signer must be among.

    Raises:
        SignatureError, KeyMismatchError, DocumentError: a release this authority must not decrypt.
        PolicyError: a release over the privacy budget.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority decrypts releases; '{me.name}' is a {me.role}")
    source = release.source
    bureau = verify(release, cards, source=source, role="bureau")
    if options.evidence is not None:
        check_evidence(release, options.evidence, [bureau])
    header, payload = release.header, release.payload
    if header.paillier_fingerprint != private.public_key.fingerprint:
        raise KeyMismatchError(f"{source}: encrypted under a different Paillier key than this one")
    public = PaillierPublicKey.from_dict(header.paillier_key)
    if public != private.public_key:
        raise KeyMismatchError(f"{source}: carries a different Paillier key than this one")
    ids = payload.entity_ids
    spec = check_release_packing(release)
    budget = privacy_budget(release, log, options.max_epsilon)
    vectors = {}
    for name in ["packed"] if spec is not None else header.score_columns:
        if name not in payload.sums:
            raise DocumentError(f"{source}: sums.{name} is missing")
        enc = EncryptedVector.from_bytes(public, payload.sums[name])
        if len(enc) != len(ids):
            raise DocumentError(f"{source}: {len(enc)} sums in '{name}' for {len(ids)} entities")
        vectors[name] = enc
    if spec is not None:
        columns = decrypt_packed(private, vectors["packed"], spec, summands(release), progress=options.progress,
                                 invalid="mark")
    else:
        if header.noise is not None:
            raise DocumentError(f"{source}: release noise needs packed sums")
        columns = np.array(
            [decrypt_vector(private, v, progress=options.progress) for v in vectors.values()], dtype=object
        ).T
    return publish(me, release, columns, log, budget)


def check_release_packing(release: Release) -> PackingSpec | None:
    """The release's packing spec (None: one ciphertext per column), checked against its columns."""
    header = release.header
    if header.packing is None:
        return None
    if "packed" not in release.payload.sums:
        raise DocumentError(f"{release.source}: declares packing but carries no packed sums")
    spec = PackingSpec.from_dict(header.packing)
    if spec.slots != len(header.score_columns) or spec.decimals != int(header.score_decimals):
        raise DocumentError(f"{release.source}: packing spec disagrees with the release's score columns")
    return spec


def unpack_release(release: Release, sums: Mapping[str, Any], spec: PackingSpec | None) -> np.ndarray:
    """Combined plaintext sums (threshold decryption) as an (entities x columns) array."""
    if spec is not None:
        return unpack(sums["packed"], spec, summands(release), invalid="mark")
    if release.header.noise is not None:
        raise DocumentError(f"{release.source}: release noise needs packed sums")
    return np.array([sums[c] for c in release.header.score_columns], dtype=object).T


def _noise_of(release: Release) -> dict[str, Any] | None:
    """The release's noise parameters (None: no noise), checked for shape."""
    noise, source = release.header.noise, release.source
    if noise is None:
        return None
    try:
        eps, delta = float(noise["epsilon"]), float(noise["delta"])
        ok = (
            noise["mechanism"] in ("laplace", "gaussian")
            and math.isfinite(eps) and eps > 0 and 0 <= delta < 1
            and noise["noise_summands"] == 1
        )
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise DocumentError(f"{source}: malformed noise parameters in the release header")
    return dict(noise)


def summands(release: Release) -> list[int]:
    """Summands per released sum: the contributors, plus the noise row when the bureau added noise."""
    counts, source = release.payload.contributors, release.source
    if _noise_of(release) is None:
        return counts
    if not isinstance(counts, list) or not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
        raise DocumentError(f"{source}: contributor counts must be integers")
    return [c + 1 for c in counts]


def privacy_budget(
    release: Release, log: Sequence[Mapping[str, Any]], max_epsilon: float | None
) -> dict[str, Any]:
    """Audit fields ``noise`` and ``privacy_budget`` (running epsilon, delta per column, basic composition).

    PolicyError when ``max_epsilon`` is set and the release has no noise or
    would take some column's running epsilon above it. The budget is only
    as good as the log it is counted from: when the release names the log's
    head as the bureau last saw it witnessed (``audit_head``), the log must
    extend it (DocumentError otherwise: truncated or rewritten).
    """
    if max_epsilon is not None and (not math.isfinite(max_epsilon) or max_epsilon < 0):
        raise OptionError("{max_epsilon} must be a finite number >= 0", "max_epsilon")
    source = release.source
    noise = _noise_of(release)
    columns = release.header.score_columns
    try:
        check_chain(log)
    except PPRLError as exc:
        raise DocumentError(f"refusing to use a damaged audit log: {exc}") from None
    anchor = release.header.audit_head
    if anchor is not None:
        check_extends(log, int(anchor["entries"]), str(anchor["head"]), source="the audit log",
                      who=f"the head {source} names ({anchor['keeper']}'s)")
    totals = {c: {"epsilon": 0.0, "delta": 0.0} for c in columns}
    for entry in log:
        previous = entry.get("noise")
        if entry.get("event") != "release" or not isinstance(previous, dict):
            continue
        for c in entry.get("score_columns") or []:
            if c in totals:
                totals[c]["epsilon"] += float(previous.get("epsilon", 0.0))
                totals[c]["delta"] += float(previous.get("delta", 0.0))
    if noise is not None:
        for c in columns:
            totals[c]["epsilon"] += float(noise["epsilon"])
            totals[c]["delta"] += float(noise["delta"])
    if max_epsilon is not None:
        if noise is None:
            raise OptionError(
                f"{source}: release carries no noise, so it has no privacy budget to check against {{max_epsilon}}",
                "max_epsilon",
            )
        over = [c for c in columns if totals[c]["epsilon"] > max_epsilon * (1 + 1e-12)]
        if over:
            raise OptionError(
                f"{source}: refused: the running epsilon of {over[0]} would be {totals[over[0]]['epsilon']:g}, "
                f"above {{max_epsilon}} {max_epsilon:g}", "max_epsilon",
            )
    return {"noise": noise, "privacy_budget": totals, "composition": "basic (sum of epsilon and delta per column)"}


def publish(
    me: PartyKey | None,
    release: Release,
    sums: np.ndarray,
    log: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any],
    *,
    release_hash: str | None = None,
) -> Decrypted:
    """The aggregates table of a decrypted release and the audit entry that logs it: the one way plaintext leaves."""
    header, payload = release.header, release.payload
    ids, counts, columns = payload.entity_ids, payload.contributors, header.score_columns
    decimals = int(header.score_decimals)
    unreadable = {i for i in range(len(ids)) if any(v is None for v in sums[i, :])}
    plain = {column: decode_fixed([0 if i in unreadable else v for i, v in enumerate(sums[:, j])], decimals)
             for j, column in enumerate(columns)}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["entity_id", "contributors", *[f"{c}_sum" for c in columns]])
    for i, entity in enumerate(ids):
        writer.writerow([entity, counts[i], *["" if i in unreadable else str(plain[c][i]) for c in columns]])
    data = buffer.getvalue().encode("utf-8")
    if release.signer is None:
        raise DocumentError(f"{release.source}: not signed")
    entry = next_entry(
        log,
        None if me is None else me.identity,
        None if me is None else me.card,
        "release",
        {
            "release_hash": release_hash or release.hash,
            "linkage_hash": header.linkage_hash,
            "bureau": release.signer.name,
            "paillier_fingerprint": header.paillier_fingerprint,
            "entities": len(ids),
            "score_columns": columns,
            "min_contributors": header.min_contributors,
            "packing": header.packing,
            "output_sha256": hashlib.sha256(data).hexdigest(),
            **({"platforms": header.platforms} if header.platforms is not None else {}),
            **extra,
        },
    )
    return Decrypted(table=data, entry=entry, entities=len(ids), unreadable=len(unreadable))
