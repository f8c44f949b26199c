"""The bureau's second step: sum ciphertexts per linked entity into a release for the authority.

Each record's scores travel packed in one ciphertext, so one homomorphic sum
per entity adds every column at once. With several records per ciphertext,
each record is first aligned onto the spec's target slots and every sum gets
fresh masks over the other records' slots. Only entities with enough
contributing platforms are released; the release carries ciphertexts only.
Optional release noise (discrete Laplace or Gaussian, added under
encryption as one extra packed summand): docs/release-policy.md.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from pprl.crypto.exchange import hkdf_sha256
from pprl.crypto.noise import KeyedStream, discrete_gaussian, discrete_laplace, gaussian_sigma
from pprl.crypto.paillier.packing import PackingSpec, pack_rows
from pprl.crypto.paillier.packing_records import blinding_plaintexts, record_addresses, sum_records
from pprl.crypto.paillier.proofs import encrypt_known, prove_known
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey, encode_fixed
from pprl.documents import Card, Linkage, LogHead, Release, ReleaseHeader, ReleasePayload, Submission, seal, verify
from pprl.engine import Engine
from pprl.errors import DocumentError, OptionError, PolicyError
from pprl.protocol.identity import PartyKey
from pprl.protocol.link import VerifiedSubmission, check_consistent, open_linkage, open_submission, paillier_key_of

__all__ = [
    "NOISE_MECHANISMS",
    "AggregateOptions",
    "Aggregated",
    "LinkedGroups",
    "addition_context",
    "common_clip",
    "aggregate_release",
    "linked_groups",
    "noise_key",
    "noise_policy",
    "noise_rows",
    "proved_additions",
]

NOISE_MECHANISMS = ("laplace", "gaussian")
#: Refuse noise whose chance of exceeding the packing bound B is not below 2^-64 per value.
_LAPLACE_TAIL = 45  # exp(-45) < 2^-64
_GAUSSIAN_TAIL = 10  # exp(-10^2 / 2) < 2^-64


@dataclass(frozen=True)
class AggregateOptions:
    """The bureau's release policy for one release; checked once, here.

    Attributes:
        min_contributors: release an entity only if at least this many platforms contributed.
        noise: None, "laplace" or "gaussian": differentially private noise on every released sum.
        epsilon: with noise, the privacy parameter per score column.
        delta: with gaussian noise, the privacy parameter delta.
        progress: show progress bars.
    """

    min_contributors: int = 2
    noise: str | None = None
    epsilon: float | None = None
    delta: float | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.min_contributors, bool) or not isinstance(self.min_contributors, int) \
                or self.min_contributors < 1:
            raise OptionError("{min_contributors} must be at least 1", "min_contributors")
        noise, epsilon, delta = self.noise, self.epsilon, self.delta
        if noise is None:
            if epsilon is not None or delta is not None:
                raise OptionError("{epsilon}/{delta} need {noise} laplace|gaussian", "epsilon", "delta", "noise")
            return
        if noise not in NOISE_MECHANISMS:
            raise OptionError(f"{{noise}} must be one of {', '.join(NOISE_MECHANISMS)}, not '{noise}'", "noise")
        if epsilon is None or not math.isfinite(epsilon) or epsilon <= 0:
            raise OptionError(f"{{noise}} {noise} needs a finite {{epsilon}} > 0", "noise", "epsilon")
        if noise == "laplace" and delta not in (None, 0, 0.0):
            raise OptionError("{noise} laplace is pure epsilon-DP; {delta} applies only to {noise} gaussian",
                              "noise", "delta")
        if noise == "gaussian" and (delta is None or not 0 < delta < 1):
            raise OptionError("{noise} gaussian needs {delta} in (0, 1)", "noise", "delta")


@dataclass(frozen=True)
class Aggregated:
    """The signed release and how many entities it released and held back."""

    release: Release
    released: int
    suppressed: int


def aggregate_release(
    me: PartyKey,
    linkage: Linkage,
    submissions: Sequence[Submission],
    options: AggregateOptions,
    cards: Sequence[Card],
    audit_head: LogHead | None = None,
    engine: Engine | None = None,
    sign: bool = True,
) -> Aggregated:
    """Sum each score column per entity under encryption; release only well-supported entities.

    Args:
        me: the bureau (the linkage must be its own).
        linkage: the signed linkage the sums follow.
        submissions: exactly the submissions the linkage was built from.
        options: minimum contributors and optional noise.
        cards: platform cards the submissions' signers must be among (and the signer of ``audit_head``).
        audit_head: the decryptor's audit-log head as a pinned party witnessed it (``pprl audit
            witness``); the release carries it, and the decryptor refuses it unless its log extends it.
        engine: where the sums run (:mod:`pprl.engine`; default: here); the release is the same.
        sign: False leaves the release unsealed, for a writer that signs another form of it
            (:func:`pprl.documents.chunked.write_chunked`).

    Raises:
        DocumentError: submissions that are not the linkage's, or disagree.
        PolicyError: no score columns, noise that the declared clip ranges or packing cannot honour.
    """
    linked = linked_groups(linkage, submissions, cards, [me.card])
    ordered, spec, key, columns = linked.ordered, linked.spec, linked.key, linked.columns
    first = ordered[0].doc.header
    released_ids, contributors, groups = [], [], []
    suppressed = 0
    for entity_id, (group, platforms) in linked.entities.items():
        if platforms < options.min_contributors:
            suppressed += 1
            continue
        groups.append(group)
        released_ids.append(entity_id)
        contributors.append(len(group))

    clip = common_clip([s.doc.header.clip for s in ordered])
    policy = None
    if options.noise is not None:
        policy = noise_policy(options, clip, columns, [s.doc.header.clip for s in ordered], spec)
    extra = 1 if policy is not None else 0
    if any(c + extra > spec.max_summands for c in contributors):
        raise PolicyError(
            f"an entity has more than {spec.max_summands - extra} records"
            + (" (plus the noise row)" if extra else "") + ", beyond the packing's headroom"
        )
    summed = linked.sums(released_ids, progress=options.progress, engine=engine)
    added_proof = None
    if released_ids and (policy is not None or spec.records_per_ciphertext > 1):
        rows = (noise_rows(spec, policy, columns, released_ids, linkage.hash, noise_key(me))
                if policy is not None else None)
        added, added_proof = proved_additions(key, spec, rows, linkage.hash, released_ids)
        summed = summed + added
    header = ReleaseHeader(
        linkage_hash=linkage.hash,
        paillier_fingerprint=key.fingerprint,
        paillier_key=key.to_dict(),
        score_columns=columns,
        score_decimals=first.score_decimals,
        packing=spec.to_dict(),
        min_contributors=options.min_contributors,
        clip=clip,
        noise=policy,
        entities=len(released_ids),
        suppressed=suppressed,
        platforms=[s.platform for s in ordered],
        audit_head=_anchor(audit_head, cards),
    )
    payload = ReleasePayload(entity_ids=released_ids, contributors=contributors, sums={"packed": summed.to_bytes()},
                             added_proof=added_proof)
    release = Release(header=header, payload=payload)
    if sign:
        release = seal(release, me.identity, me.card)
    return Aggregated(release=release, released=len(released_ids), suppressed=suppressed)


def common_clip(clips: Sequence[Mapping[str, Any] | None]) -> dict[str, list[str]] | None:
    """The clip ranges every input (submission, PSI list) declares alike, or None if they differ or none does."""
    first = clips[0] or {}
    if any((c or {}) != first for c in clips[1:]):
        return None
    return dict(first) or None


def noise_policy(
    options: AggregateOptions,
    clip: Mapping[str, list[str]] | None,
    columns: Sequence[str],
    declared_clips: Sequence[Mapping[str, Any] | None],
    spec: PackingSpec,
) -> dict[str, Any]:
    """The release header's noise parameters; PolicyError when they cannot be honoured.

    ``clip``: the ranges every input declares alike (None if they differ); ``declared_clips``: each
    input's own, for the message.
    """
    noise, epsilon, delta = str(options.noise), options.epsilon, options.delta
    missing = [c for c in columns if clip is None or c not in clip]
    if missing:
        declared = {json.dumps(d or {}, sort_keys=True) for d in declared_clips}
        why = ("the submissions declare different clip ranges" if len(declared) > 1
               else f"no clip range declared for {', '.join(missing)}")
        raise OptionError(
            "noise needs every submission to declare the same clip range for every score column "
            f"(made when submitting, {{clip}} COL=LO:HI): {why}", "clip"
        )
    clip = clip or {}
    eps = float(epsilon or 0.0)  # checked by AggregateOptions
    decimals = spec.decimals
    sensitivity: dict[str, int] = {}
    for c in columns:
        # Contributor counts are released exactly, so neighbouring inputs differ in one record's value, not in
        # its presence: the sum moves by at most hi - lo (not max(|lo|, |hi|)).
        lo, hi = encode_fixed(clip[c], decimals)
        sensitivity[c] = hi - lo
    params: dict[str, dict[str, Any]] = {}
    for c in columns:
        if noise == "laplace":
            scale = Fraction(sensitivity[c]) / Fraction(repr(eps))
            if _LAPLACE_TAIL * scale > spec.bound:
                raise OptionError(f"noise scale for '{c}' is too large for the packing bound; raise {{epsilon}}",
                                  "epsilon")
            params[c] = {"scale": str(scale), "scale_float": float(scale)}
        else:
            sigma2 = gaussian_sigma(sensitivity[c], eps, float(delta or 0.0))
            if _GAUSSIAN_TAIL**2 * sigma2 > spec.bound**2:
                raise OptionError(f"noise sigma for '{c}' is too large for the packing bound; raise {{epsilon}}",
                                  "epsilon")
            params[c] = {"sigma2": str(sigma2), "sigma": math.sqrt(sigma2)}
    return {
        "mechanism": noise,
        "epsilon": eps,
        "delta": float(delta or 0.0) if noise == "gaussian" else 0.0,
        "bound": "classic: sigma = sqrt(2 ln(1.25/delta)) * sensitivity / epsilon" if noise == "gaussian"
                 else "scale = sensitivity / epsilon",
        "sensitivity_fixed": sensitivity,
        "parameters": params,
        "clip": {c: list(clip[c]) for c in columns},
        "units": f"fixed point, 10^-{decimals}",
        "noise_summands": 1,
    }


@dataclass(frozen=True)
class LinkedGroups:
    """A verified linkage with its verified submissions: per entity, its records' addresses and platforms.

    ``entities[entity_id] = (record addresses, distinct platforms)``, in linkage order; ``vectors`` are
    the submissions' ciphertexts in the order the addresses count them.
    """

    ordered: list[VerifiedSubmission]
    spec: PackingSpec
    key: PaillierPublicKey
    columns: list[str]
    entities: dict[str, tuple[list[int], int]]

    def sums(self, entity_ids: Sequence[str], *, progress: bool = False, engine: Engine | None = None
             ) -> EncryptedVector:
        """The homomorphic sums of these entities' records, as the bureau must compute them (deterministic;
        ``engine``: on a cluster, with the same result)."""
        vectors = [EncryptedVector.from_bytes(self.key, s.doc.payload.scores_packed or b"") for s in self.ordered]
        groups = [self.entities[e][0] for e in entity_ids]
        if engine is not None:
            return engine.sum_records(EncryptedVector.concat(vectors), groups, self.spec)
        return sum_records(EncryptedVector.concat(vectors), groups, self.spec, progress=progress)


def linked_groups(
    linkage: Linkage, submissions: Sequence[Submission], cards: Sequence[Card], bureaus: Sequence[Card]
) -> LinkedGroups:
    """Check a linkage (signed by one of ``bureaus``) against its submissions (signed by platforms among
    ``cards``) and return its entities' record groups: what the bureau sums, and what a decryptor recomputes."""
    open_linkage(linkage, bureaus)
    source = linkage.source
    subs = {s.platform: s for s in (open_submission(d, cards) for d in submissions)}
    expected = {e.platform: e.hash for e in linkage.header.submissions}
    for platform, digest in expected.items():
        if platform not in subs:
            raise DocumentError(f"{source}: links a submission from '{platform}' that was not given")
        if subs[platform].hash != digest:
            raise DocumentError(f"{subs[platform].source}: is not the submission the linkage was built from")
    for platform, sub in subs.items():
        if platform not in expected:
            raise DocumentError(f"{sub.source}: not part of linkage {source}")
    ordered = [subs[p] for p in expected]
    check_consistent(ordered)
    first = ordered[0].doc.header
    columns = first.score_columns
    for s in ordered:
        h = s.doc.header
        if h.score_columns != columns:
            raise DocumentError(f"{s.source}: score columns {h.score_columns} differ from {ordered[0].source}'s {columns}")
        if h.score_decimals != first.score_decimals:
            raise DocumentError(f"{s.source}: score precision differs from {ordered[0].source}'s")
    if not columns:
        raise PolicyError("the submissions carry no score columns (linkage-only); nothing to aggregate")
    spec = PackingSpec.from_dict(first.packing)
    key = paillier_key_of(ordered[0])
    spec.check_key(key)  # a submission's spec must fit the key before anything is summed under it
    addresses, position = {}, 0
    for s in ordered:
        count = -(-len(s.tokens) // spec.records_per_ciphertext)
        packed = s.doc.payload.scores_packed or b""
        if len(packed) != count * key.ciphertext_bytes:
            raise DocumentError(
                f"{s.source}: encrypted scores are not {count} ciphertexts for {len(s.tokens)} records at "
                f"{spec.records_per_ciphertext} records per ciphertext"
            )
        addresses[s.platform] = record_addresses(position, len(s.tokens), spec)
        position += count
    token_index = {s.platform: {t: i for i, t in enumerate(s.tokens)} for s in ordered}
    entities: dict[str, tuple[list[int], int]] = {}
    for entity in linkage.payload.entities:
        members = entity.members
        try:
            group = [addresses[p][token_index[p][t]] for p, t, _ in members]
        except KeyError:
            raise DocumentError(f"{source}: entity {entity.entity_id} names a token no submission has") from None
        entities[entity.entity_id] = (group, len({m[0] for m in members}))
    return LinkedGroups(ordered, spec, key, list(columns), entities)


def proved_additions(
    key: PaillierPublicKey, spec: PackingSpec, rows: list[int] | None, transcript: str, entity_ids: Sequence[str]
) -> tuple[EncryptedVector, dict[str, Any]]:
    """What the bureau adds to each released sum (noise ``rows``, several-records masks) and the proof it knows it.

    Made with known randomness and proved known (:mod:`pprl.crypto.paillier.proofs`), so a decryptor that
    recomputes the sums can check the additions depend on nothing but the bureau's own choices.
    """
    plain = blinding_plaintexts(spec, len(entity_ids), rows)
    added, exps = encrypt_known(key, plain)
    proof = prove_known(key, added, plain, exps, addition_context(transcript, entity_ids))
    return EncryptedVector._trusted(key, added), proof


def addition_context(linkage_hash: str, entity_ids: Sequence[str]) -> bytes:
    """What the proof of the bureau's additions is bound to: the linkage and the released entities, in order."""
    return bytes.fromhex(linkage_hash) + hashlib.sha256("\n".join(entity_ids).encode()).digest()


def _anchor(head: LogHead | None, cards: Sequence[Card]) -> dict[str, Any] | None:
    """The witnessed log head a release carries, after checking its witness is pinned."""
    if head is None:
        return None
    verify(head, cards, source=head.source)
    return {"keeper": head.header.keeper, "entries": head.header.entries, "head": head.header.head}


def noise_key(me: PartyKey) -> bytes:
    """The bureau's secret noise key, derived from its identity: the same every run, known to no one else."""
    return hkdf_sha256(me.identity.sign_seed, 32, salt=b"pprl-release-noise-v1", info=me.card.fingerprint.encode())


def noise_rows(
    spec: PackingSpec, policy: Mapping[str, Any], columns: Sequence[str], entity_ids: Sequence[str],
    linkage_hash: str, key: bytes,
) -> list[int]:
    """One packed noise row per released entity (noise clipped to ±B), not yet encrypted.

    Each (linkage, entity, column) draws from its own keyed stream, so
    aggregating the same linkage again releases the same noise: repeating a
    release cannot average it away.
    """
    b = spec.bound
    matrix = np.empty((len(entity_ids), len(columns)), dtype=object)
    for j, c in enumerate(columns):
        p = policy["parameters"][c]
        draw = []
        for entity in entity_ids:
            rng = KeyedStream(key, f"{linkage_hash}|{entity}|{c}".encode())
            if policy["mechanism"] == "laplace":
                draw.append(discrete_laplace(Fraction(p["scale"]), rng))
            else:
                draw.append(discrete_gaussian(Fraction(p["sigma2"]), rng))
        matrix[:, j] = [min(max(v, -b), b) for v in draw]
    return pack_rows(matrix, spec.single())
