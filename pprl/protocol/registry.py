"""The bureau's registry update: link one platform's new monthly submission into the persistent entities.

A submission replaces its platform's previous contribution. Its records are
compared (Dice, the same keyed blocking as ``link``) with every record the
registry holds, the platform's own previous records included, and assigned
greedily by similarity: a record whose previous self is still there (its
platform's old record, usually identical) keeps that entity, any other joins
the entity of its best match on another platform if that entity has no record
of this platform yet, and the rest start new entities. The platform's old
records all go; an entity left with no record is removed. So entities keep
stable ids across months, and a record that disappeared no longer counts.

This module plans the update on messages in memory (:func:`plan_update`);
the registry store (:mod:`pprl.registry`) applies a plan in one transaction.
Design: docs/registry.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pprl.crypto.oprf import PSEUDONYM_BYTES
from pprl.crypto.paillier.vector import PaillierPublicKey
from pprl.documents import Card, Submission, canonical_json
from pprl.errors import DocumentError, KeyMismatchError, PolicyError
from pprl.matching.blocking import derive_seed
from pprl.matching.dice.similarity import Candidates
from pprl.protocol.link import LinkOptions, VerifiedSubmission, open_submission, paillier_key_of, search_candidates
from pprl.protocol.submit import NO_PSEUDONYM

__all__ = [
    "PARAMETER_FIELDS",
    "NewRecord",
    "RegistryView",
    "UpdatePlan",
    "parameters_of",
    "plan_update",
]

#: What every submission in one registry must share (its header values).
PARAMETER_FIELDS = (
    "schema_hash", "linkage_key_id", "clk_bytes", "paillier_fingerprint", "score_columns", "score_decimals", "packing",
)


@dataclass(frozen=True)
class RegistryView:
    """What an update needs to see of the registry: its parameters and every record's platform, entity and CLK.

    Attributes:
        parameters: the registry's parameters (None while it is empty).
        platforms: the platform of each record.
        record_ids: the registry's id of each record.
        entities: the entity number of each record.
        clks: one CLK row per record.
        applied: per platform, (hash, created) of the submission its records come from.
        pseudonym_kind: the identifier kind of the records' pseudonyms (None until a submission brings some).
    """

    parameters: dict[str, Any] | None
    platforms: np.ndarray
    record_ids: np.ndarray
    entities: np.ndarray
    clks: np.ndarray = field(repr=False)
    applied: dict[str, tuple[str, str]] = field(default_factory=dict)
    pseudonym_kind: str | None = None

    @classmethod
    def empty(cls, clk_bytes: int = 0) -> RegistryView:
        return cls(None, np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                   np.zeros((0, clk_bytes), dtype=np.uint8))


@dataclass(frozen=True)
class NewRecord:
    """A record the update adds: its token, CLK, ciphertext and entity (existing number, or -1 - k for new entity k)."""

    token: str
    clk: bytes = field(repr=False)
    ciphertext: bytes | None = field(repr=False)
    entity: int
    pseudonym: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class UpdatePlan:
    """Everything one update changes, for the store to apply in one transaction.

    Attributes:
        platform: whose contribution is replaced.
        submission_hash, created: the submission applied.
        parameters: the registry's parameters (set by the first submission).
        pseudonym_kind: the identifier kind of the submission's pseudonyms, if it carries any.
        remove: record ids of the platform's previous records.
        add: the new records.
        new_entities: how many entities the update creates (numbered -1, -2, ... in ``add``).
        removed_entities: entity numbers left without records.
        new, updated, removed, unchanged: entity counts for the report.
        threshold, threshold_method: the Dice threshold used and how it was chosen.
    """

    platform: str
    submission_hash: str
    created: str
    parameters: dict[str, Any]
    pseudonym_kind: str | None
    remove: np.ndarray = field(repr=False)
    add: list[NewRecord] = field(repr=False)
    new_entities: int
    removed_entities: list[int] = field(repr=False)
    new: int
    updated: int
    removed: int
    unchanged: int
    threshold: float
    threshold_method: str


def parameters_of(sub: VerifiedSubmission) -> dict[str, Any]:
    """The registry parameters a submission carries (and the Paillier key they are under)."""
    header = sub.doc.header
    return {**{name: getattr(header, name) for name in PARAMETER_FIELDS}, "paillier_key": header.paillier_key}


def _check_parameters(view: RegistryView, sub: VerifiedSubmission) -> dict[str, Any]:
    params = parameters_of(sub)
    if sub.doc.header.packing is not None and int(sub.doc.header.packing.get("records_per_ciphertext", 1)) != 1:
        raise PolicyError(
            f"{sub.source}: packs several records per ciphertext; a registry keeps one ciphertext per record "
            "(submit with one record per ciphertext)"
        )
    kind = sub.doc.header.pseudonym_kind
    if kind is not None and view.pseudonym_kind not in (None, kind):
        raise KeyMismatchError(
            f"{sub.source}: its pseudonyms are of {kind}, the registry's of {view.pseudonym_kind}"
        )
    if view.parameters is None:
        return params
    for name in PARAMETER_FIELDS:
        if canonical_json(view.parameters.get(name)) != canonical_json(params[name]):
            what = name.replace("_", " ")
            hint = ("it belongs to another consortium set-up, or its schema rotates the key per run "
                    "(clkConfig.rotate), which a registry cannot keep" if name == "linkage_key_id"
                    else "it belongs to another consortium set-up")
            raise KeyMismatchError(f"{sub.source}: its {what} differs from the registry's; {hint}")
    return params


def _ciphertexts(sub: VerifiedSubmission) -> list[bytes | None]:
    n = len(sub.tokens)
    packed = sub.doc.payload.scores_packed
    if not sub.doc.header.score_columns or packed is None:
        return [None] * n
    key: PaillierPublicKey = paillier_key_of(sub)
    width = key.ciphertext_bytes
    if len(packed) != n * width:
        raise DocumentError(f"{sub.source}: encrypted scores are not one ciphertext per record")
    return [packed[i * width : (i + 1) * width] for i in range(n)]


def _pseudonyms(sub: VerifiedSubmission) -> list[bytes | None]:
    """Each record's pseudonym (None where the platform had no valid identifier, or sent none)."""
    blob = sub.doc.payload.pseudonyms
    n = len(sub.tokens)
    if blob is None:
        return [None] * n
    out: list[bytes | None] = []
    for i in range(n):
        p = blob[i * PSEUDONYM_BYTES : (i + 1) * PSEUDONYM_BYTES]
        out.append(None if p == NO_PSEUDONYM else p)
    return out


def _candidates(new: np.ndarray, old: np.ndarray, options: LinkOptions, seed: bytes) -> tuple[Candidates, float, str]:
    """Pairs (new record, registry record) at or above the threshold, and the threshold used."""
    if len(new) == 0 or len(old) == 0:
        t = float(options.threshold) if options.threshold is not None else 0.0
        empty = Candidates(np.zeros(0), np.zeros((0, 2), dtype=np.int64), np.zeros((0, 2), dtype=np.int64))
        return empty, t, "fixed" if options.threshold is not None else "none"
    search = search_candidates([new, old], options, seed)
    return search.candidates, search.threshold, search.method


def plan_update(
    view: RegistryView, submission: Submission, options: LinkOptions, cards: Sequence[Card],
    stage: Callable[[str], None] | None = None,
) -> UpdatePlan:
    """Plan how one platform's submission replaces its contribution to the registry.

    Args:
        view: the registry as it stands (:meth:`pprl.registry.Registry.view`).
        submission: the platform's signed submission.
        options: threshold and blocking, as for linking.
        cards: platform cards the submission's signer must be among.
        stage: told each stage as it begins ("verifying", "comparing 100,000 records with 2,000,000",
            "assigning entities"), for progress reports.

    Raises:
        SignatureError: a submission not signed by a platform among ``cards``.
        KeyMismatchError: a submission made under other parameters than the registry's.
        PolicyError: a submission already applied, or older than the one applied.
    """
    say = stage or (lambda _what: None)
    say("verifying the submission")
    sub = open_submission(submission, cards)
    platform = sub.platform
    params = _check_parameters(view, sub)
    created = sub.doc.header.created
    applied = view.applied.get(platform)
    if applied is not None:
        if applied[0] == sub.hash:
            raise PolicyError(f"{sub.source}: this submission from '{platform}' is already in the registry")
        if created < applied[1]:
            raise PolicyError(
                f"{sub.source}: older ({created}) than the submission from '{platform}' already applied ({applied[1]})"
            )
    ciphertexts = _ciphertexts(sub)
    n = len(sub.tokens)
    mine_old = np.flatnonzero(view.platforms == platform) if len(view.platforms) else np.zeros(0, dtype=np.int64)
    say(f"comparing {n:,} records with the registry's {len(view.clks):,}")
    candidates, t, method = _candidates(sub.clks, view.clks, options, derive_seed("registry", sub.hash))
    say(f"assigning entities ({len(candidates):,} candidate pairs)")

    old_entity = view.entities
    is_mine = np.zeros(len(old_entity), dtype=bool)
    is_mine[mine_old] = True
    # strongest first; at equal similarity a record's own previous self before another platform's record
    order = np.lexsort((~is_mine[candidates.record[:, 1]] if len(candidates) else np.zeros(0, bool),
                        -candidates.similarity))
    assigned_list = [0] * n  # 0: not yet; else entity number (existing > 0)
    taken: set[int] = set()  # entities that already got a new record of this platform
    carried: dict[int, int] = {}  # entity -> index of the old record of this platform it inherited
    new_side = candidates.record[order, 0].tolist()
    old_side = candidates.record[order, 1].tolist()
    entity_list = old_entity.tolist()
    mine_list = is_mine.tolist()
    for i, r in zip(new_side, old_side):
        if assigned_list[i]:
            continue
        e = entity_list[r]
        if e in taken:  # one record per platform per entity
            continue
        assigned_list[i] = e
        taken.add(e)
        if mine_list[r]:
            carried[e] = r
    assigned = np.array(assigned_list, dtype=np.int64)
    # the others start new entities
    new_count = 0
    entity_of = []
    for i in range(n):
        if assigned[i]:
            entity_of.append(int(assigned[i]))
        else:
            new_count += 1
            entity_of.append(-new_count)
    found = _pseudonyms(sub)
    add = [NewRecord(sub.tokens[i], sub.clks[i].tobytes(), ciphertexts[i], entity_of[i], found[i]) for i in range(n)]

    # entity bookkeeping (dictionaries, not scans: an update touches up to every entity)
    counts: dict[int, int] = {}
    for e in old_entity.tolist():
        counts[e] = counts.get(e, 0) + 1
    mine_counts: dict[int, int] = {}
    for e in old_entity[mine_old].tolist():
        mine_counts[e] = mine_counts.get(e, 0) + 1
    new_of = {int(e): i for i, e in enumerate(assigned.tolist()) if e}
    touched = set(mine_counts) | taken
    removed_entities = []
    updated = 0
    for e in sorted(touched):
        before = counts.get(e, 0)
        mine_before = mine_counts.get(e, 0)
        after = before - mine_before + (1 if e in taken else 0)
        if after == 0:
            removed_entities.append(e)
            continue
        old_r = carried.get(e)
        new_i = new_of.get(e)
        same = (
            old_r is not None and new_i is not None
            and bytes(view.clks[old_r].tobytes()) == sub.clks[new_i].tobytes()
            and mine_before == 1
        )
        if not same:
            updated += 1
    existing = len(counts)
    unchanged = existing - len(removed_entities) - updated
    return UpdatePlan(
        platform=platform,
        submission_hash=sub.hash,
        created=created,
        parameters=params,
        pseudonym_kind=sub.doc.header.pseudonym_kind,
        remove=view.record_ids[mine_old] if len(mine_old) else np.zeros(0, dtype=np.int64),
        add=add,
        new_entities=new_count,
        removed_entities=removed_entities,
        new=new_count,
        updated=updated,
        removed=len(removed_entities),
        unchanged=unchanged,
        threshold=t,
        threshold_method=method,
    )

