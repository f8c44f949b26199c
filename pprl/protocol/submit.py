"""A platform's step: turn its own users into one signed submission for the bureau.

Identifiers become CLKs under the linkage secret; a record's score columns
are packed into one Paillier plaintext (fixed-point slots with headroom) and
encrypted under the authority's key; each record gets a random opaque token.
The submission carries no raw identifier, no plaintext score and no platform
user id; the token map (token -> the platform's own user id) stays with the
platform. Design: docs/design.md (packing, DJN encryption).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
import pandas as pd

from pprl.crypto.oprf import PSEUDONYM_BYTES, derive_key, pseudonyms
from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed, fixed_bound
from pprl.crypto.paillier.vector import PaillierPublicKey, decode_fixed, encode_fixed
from pprl.crypto.shuffle import random_permutation
from pprl.documents import Card, PaillierPub, Submission, SubmissionHeader, SubmissionPayload, seal, verify
from pprl.encoding.clk import encode_with_report
from pprl.encoding.normalise import IDENTIFIER_KINDS, normaliser_for
from pprl.encoding.schema import Schema
from pprl.engine import Engine
from pprl.errors import DataValidationError, KeyMismatchError, OptionError
from pprl.protocol.identity import PartyKey
from pprl.protocol.link import check_run
from pprl.protocol.secret import LinkageSecret
from pprl.protocol.tables import own_records

__all__ = [
    "ENCRYPTIONS",
    "SCORE_DECIMALS",
    "PreparedSubmission",
    "SubmitOptions",
    "open_paillier_public",
    "prepare_submission",
    "record_pseudonyms",
    "score_packing",
    "clip_ranges",
]

SCORE_DECIMALS = 2
#: The pseudonym of a record without a valid identifier.
NO_PSEUDONYM = bytes(PSEUDONYM_BYTES)
SCORE_MAX_ABS = 10**9  # largest |score| a platform may submit
MAX_CONTRIBUTORS = 64  # most records one entity may sum (one per platform)
#: How scores may be encrypted: the key's DJN base (default) or classic r^n randomness.
ENCRYPTIONS = ("djn", "plain")


@dataclass(frozen=True)
class SubmitOptions:
    """What a platform decides for one submission; checked once, here.

    Attributes:
        id_column: the platform's own user id column (goes only into the token map).
        scores: score columns to encrypt (none: a linkage-only submission).
        clip: {score column: (lo, hi)}: clip those columns to [lo, hi] before
            encryption and declare the ranges in the signed header (what release
            noise is calibrated to).
        encryption: "djn" (the key's DJN base) or "plain" (classic r^n randomness).
        records_per_ciphertext: pack this many records into each ciphertext;
            every platform of a run must agree.
        pseudonym_column: a column holding each user's identifier of ``pseudonym_kind``: the
            submission then carries each record's pseudonym (the OPRF of the normalised
            identifier under the platforms' key), how a consenting applicant is found later.
        pseudonym_kind: "resident_id" or "mobile".
        run: the linkage run the bureau announced (``pprl link --run`` refuses another run's submission).
        progress: show progress bars.
    """

    id_column: str
    scores: tuple[str, ...] = ()
    clip: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    encryption: str = "djn"
    records_per_ciphertext: int = 1
    pseudonym_column: str | None = None
    pseudonym_kind: str = "resident_id"
    progress: bool = False
    run: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", tuple(self.scores))
        if self.run is not None:
            check_run(self.run)
        if self.pseudonym_kind not in IDENTIFIER_KINDS:
            raise OptionError(
                f"{{pseudonym_kind}} must be one of {', '.join(IDENTIFIER_KINDS)}, not '{self.pseudonym_kind}'",
                "pseudonym_kind",
            )
        if not self.id_column:
            raise OptionError("{id_column} must name a column", "id_column")
        if len(set(self.scores)) != len(self.scores):
            raise OptionError("{scores} names a column twice", "scores")
        if self.encryption not in ENCRYPTIONS:
            raise OptionError(f"encryption must be one of {', '.join(ENCRYPTIONS)}, not '{self.encryption}'")
        rpc = self.records_per_ciphertext
        if isinstance(rpc, bool) or not isinstance(rpc, int) or not 1 <= rpc <= 16:
            raise OptionError("{records_per_ciphertext} must be an integer from 1 to 16", "records_per_ciphertext")
        if rpc != 1 and not self.scores:
            raise OptionError("{records_per_ciphertext} applies to encrypted scores: name {scores}",
                              "records_per_ciphertext", "scores")
        for column in self.clip:
            if column not in self.scores:
                raise OptionError(f"{{clip}} names '{column}', which is not one of the {{scores}} columns", "clip",
                                  "scores")


@dataclass(frozen=True)
class PreparedSubmission:
    """A platform's signed submission and what stays with the platform.

    Attributes:
        submission: the signed document for the bureau.
        token_map: (token, the platform's own user id) per record: private, never sent.
        notes: what encoding noticed (missing or invalid values per feature).
    """

    submission: Submission
    token_map: list[tuple[str, str]] = field(repr=False)
    notes: tuple[str, ...] = ()


def open_paillier_public(doc: PaillierPub, authority: Card | Sequence[Card]) -> PaillierPublicKey:
    """The authority's Paillier public key, after its signature (by the pinned ``authority``) and fingerprint."""
    verify(doc, [authority] if isinstance(authority, Card) else authority, source=doc.source, role="authority")
    key = PaillierPublicKey.from_dict(doc.key)
    if key.fingerprint != doc.fingerprint:
        raise KeyMismatchError(f"{doc.source}: key does not match its fingerprint")
    return key


def score_packing(columns: Sequence[str], key: PaillierPublicKey, records_per_ciphertext: int = 1) -> PackingSpec:
    """The consortium-wide packing of a record's score columns into one plaintext.

    Every platform derives the same spec from the column count (and the
    agreed records per ciphertext) alone, so the bureau can add any
    platforms' ciphertexts slot by slot. Headroom covers MAX_CONTRIBUTORS
    records per entity; a count slot lets the authority check the bureau's
    contributor counts. One record per ciphertext is packed with masking
    room per slot (``maskable``), so the bureau can answer a lender with only
    the columns a purpose's release policy allows. PolicyError, naming the
    key's maximum, when ``records_per_ciphertext`` records do not fit the key.
    """
    return PackingSpec.plan(
        fixed_bound(SCORE_MAX_ABS, SCORE_DECIMALS), len(columns), MAX_CONTRIBUTORS,
        key=key, decimals=SCORE_DECIMALS, count_slot=True, records_per_ciphertext=records_per_ciphertext,
        maskable=records_per_ciphertext == 1,
    )


def clip_ranges(
    clip: Mapping[str, tuple[Decimal, Decimal]] | None, columns: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """Validate declared clip ranges; return them in fixed-point units.

    Each range must name a score column, be finite with LO <= HI, lie within
    ±SCORE_MAX_ABS and be exact at SCORE_DECIMALS (so the declared range is
    exactly the one applied, and the bureau's sensitivity is exact).
    """
    out: dict[str, tuple[int, int]] = {}
    for column, pair in (clip or {}).items():
        if column not in columns:
            raise OptionError(f"{{clip}} names '{column}', which is not one of the {{scores}} columns", "clip", "scores")
        try:
            lo, hi = (Decimal(str(v)) if not isinstance(v, Decimal) else v for v in pair)
        except (TypeError, ValueError, InvalidOperation):
            raise DataValidationError(f"clip range for '{column}' must be two numbers (LO, HI)") from None
        if not (lo.is_finite() and hi.is_finite()) or lo > hi:
            raise DataValidationError(f"clip range for '{column}' must be finite numbers with LO <= HI")
        if max(abs(lo), abs(hi)) > SCORE_MAX_ABS:
            raise DataValidationError(f"clip range for '{column}' goes beyond ±{SCORE_MAX_ABS}")
        lo_fp, hi_fp = encode_fixed([lo, hi], SCORE_DECIMALS)
        if decode_fixed([lo_fp, hi_fp], SCORE_DECIMALS) != [lo, hi]:
            raise DataValidationError(f"clip range for '{column}' has more than {SCORE_DECIMALS} decimals")
        out[column] = (lo_fp, hi_fp)
    return out


def _fixed_point_scores(
    frame: pd.DataFrame, columns: Sequence[str], source: str, clip: Mapping[str, tuple[int, int]] | None = None
) -> np.ndarray:
    """(records x columns) fixed-point ints, refusing non-numbers and values beyond the bound by row.

    Columns in ``clip`` ({column: (lo, hi)} in fixed-point units) are clipped
    to [lo, hi] first; rounding is monotone, so clipping the rounded value
    equals rounding the clipped one, and clipped values never hit the bound.
    """
    bound = fixed_bound(SCORE_MAX_ABS, SCORE_DECIMALS)
    clip = clip or {}
    matrix = np.empty((len(frame), len(columns)), dtype=object)
    for j, column in enumerate(columns):
        try:
            values = encode_fixed(list(frame[column]), SCORE_DECIMALS)
        except DataValidationError as exc:
            raise DataValidationError(f"{source}: column '{column}': {exc}; scores must be numbers") from None
        if column in clip:
            lo, hi = clip[column]
            values = [min(max(v, lo), hi) for v in values]
        for i, v in enumerate(values):
            if abs(v) > bound:
                raise DataValidationError(
                    f"{source}: row {i + 1}, column '{column}': score beyond ±{SCORE_MAX_ABS}; rescale the column"
                )
        matrix[:, j] = values
    return matrix


def record_pseudonyms(secret: LinkageSecret, kind: str, values: Sequence[str]) -> list[bytes]:
    """Each value's pseudonym (32 bytes), or 32 zero bytes where it is not a valid identifier of ``kind``."""
    normalise = normaliser_for(kind)
    normalised = [normalise(v) for v in values]
    valid = [i for i, v in enumerate(normalised) if v is not None]
    out = [NO_PSEUDONYM] * len(values)
    found = pseudonyms(derive_key(secret.secret, kind), [str(normalised[i]) for i in valid])
    for i, p in zip(valid, found):
        out[i] = p
    return out


def prepare_submission(
    me: PartyKey,
    schema: Schema,
    secret: LinkageSecret,
    records: pd.DataFrame,
    options: SubmitOptions,
    paillier: PaillierPublicKey | None = None,
    *,
    source: str = "data",
    engine: Engine | None = None,
    sign: bool = True,
) -> PreparedSubmission:
    """Encode, encrypt and sign this platform's records.

    Args:
        me: the platform's identity (signs the submission).
        schema: the consortium's linkage schema.
        secret: the platform's combined linkage secret.
        records: the platform's users, one row each, values as strings.
        options: id column, score columns and how to encrypt them.
        paillier: the authority's public key, verified (needed with score columns).
        source: how errors name ``records`` (its file).
        engine: where encoding and encryption run (:mod:`pprl.engine`; default: here). The CLKs are the same.
        sign: False leaves the submission unsealed, for a writer that signs another form of it
            (:func:`pprl.documents.chunked.write_chunked` signs the chunked form's trailer).

    Returns:
        The signed submission and the private token map.

    Raises:
        DataValidationError: a missing column, a repeated id, a score that is not a number.
        KeyMismatchError: the secret belongs to another party.
        OptionError: options that do not fit the key (records per ciphertext).
    """
    if secret.owner != me.name:
        raise KeyMismatchError(f"the linkage secret belongs to '{secret.owner}', not '{me.name}'")
    scores = options.scores
    extra = [options.pseudonym_column] if options.pseudonym_column else []
    frame = own_records(records, options.id_column, [*scores, *extra], source)
    if scores and paillier is None:
        raise DataValidationError("score columns were named but no Paillier public key was given")
    key = paillier if scores else None
    spec = score_packing(scores, key, options.records_per_ciphertext) if key is not None else None
    clip_fixed = clip_ranges(options.clip, scores)
    fixed = _fixed_point_scores(frame, scores, source, clip_fixed)
    linkage_secret = secret  # the one the CLKs are made with (its id goes into the header)
    if schema.rotate:
        if options.run is None:
            raise OptionError("the schema rotates its key per run (clkConfig.rotate): give {run}, the run the "
                              "bureau announced", "run")
        linkage_secret = secret.for_run(options.run)
    try:
        if engine is not None:
            encoded = engine.encode(frame, schema, secret.secret, run=options.run)
        else:
            encoded = encode_with_report(frame, schema, secret.secret, progress=options.progress, run=options.run)
    except DataValidationError as exc:
        raise DataValidationError(f"{source}: {exc}") from None
    # Records leave in a random order so the document says nothing about the table's order.
    order = random_permutation(len(frame))
    clks = encoded.clks[order]
    ids = frame[options.id_column].to_numpy()[order]
    method = "plain" if options.encryption == "plain" else None
    packed = None
    if key is not None and spec is not None:
        packed = (engine.encrypt_packed(key, fixed[order], spec, method=method) if engine is not None else
                  encrypt_packed(key, fixed[order], spec, progress=options.progress, method=method)).to_bytes()
    tokens = [secrets.token_hex(12) for _ in range(len(frame))]
    pseudonyms = None
    if options.pseudonym_column:
        found = record_pseudonyms(secret, options.pseudonym_kind, frame[options.pseudonym_column].tolist())
        pseudonyms = b"".join(found[int(i)] for i in order)  # in the records' (shuffled) order
    header = SubmissionHeader(
        platform=me.name,
        records=len(frame),
        schema_hash=schema.canonical_hash(),
        linkage_key_id=linkage_secret.key_id,
        clk_bytes=int(clks.shape[1]),
        paillier_fingerprint=key.fingerprint if key is not None else None,
        paillier_key=key.to_dict() if key is not None else None,
        score_columns=list(scores),
        score_decimals=SCORE_DECIMALS,
        packing=spec.to_dict() if spec is not None else None,
        clip={
            c: [str(v) for v in decode_fixed(list(clip_fixed[c]), SCORE_DECIMALS)] for c in scores if c in clip_fixed
        },
        pseudonym_kind=options.pseudonym_kind if pseudonyms is not None else None,
        run=options.run,
    )
    payload = SubmissionPayload(tokens=tokens, clks=np.ascontiguousarray(clks).tobytes(), scores_packed=packed,
                                pseudonyms=pseudonyms)
    submission = Submission(header=header, payload=payload)
    if sign:
        submission = seal(submission, me.identity, me.card)
    return PreparedSubmission(
        submission=submission,
        token_map=list(zip(tokens, (str(i) for i in ids))),
        notes=tuple(f"WARNING: {w}" for w in schema.leak_warnings) + tuple(encoded.report.messages()),
    )
