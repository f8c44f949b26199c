"""A platform's step: turn its own users into one signed submission for the bureau.

Identifiers become CLKs under the linkage secret; a record's score columns
are packed into one Paillier plaintext (fixed-point slots with headroom, see
pprl.crypto.paillier.packing) and encrypted under the authority's key; each record gets a random
opaque token. The submission carries no raw identifier, no plaintext score
and no platform user id. The platform keeps ``SUBMISSION.map.csv`` (0600),
its private way back from token to its own user id.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed, fixed_bound
from pprl.crypto.paillier.vector import PaillierPublicKey, decode_fixed, encode_fixed
from pprl.crypto.shuffle import random_permutation
from pprl.documents import Card, b64e, read_document, sign_document, verify_document, write_atomic, write_document
from pprl.errors import DataValidationError, KeyMismatchError
from pprl.encoding.clk import encode_with_report
from pprl.encoding.schema import Schema, load_schema
from pprl.protocol.identity import PartyKey
from pprl.protocol.secret import LinkageSecret, load_secret
from pprl.protocol.tables import load_records, require_columns

__all__ = [
    "Submission",
    "SCORE_DECIMALS",
    "load_paillier_public",
    "parse_clip",
    "score_packing",
    "submit",
    "map_path_for",
]

SCORE_DECIMALS = 2
SCORE_MAX_ABS = 10**9  # largest |score| a platform may submit
MAX_CONTRIBUTORS = 64  # most records one entity may sum (one per platform)


@dataclass(frozen=True)
class Submission:
    """What ``submit`` wrote."""

    path: Path
    map_path: Path
    records: int
    score_columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    score_bytes: int = 0  # encrypted scores as they travel (base64 text)


def map_path_for(out: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(out)}.map.csv")


def load_paillier_public(path: str | os.PathLike[str], authority: Card | None = None) -> PaillierPublicKey:
    """Read the authority's signed Paillier public key, verifying signature and fingerprint."""
    doc = read_document(path, "paillier-pub")
    verify_document(doc, None if authority is None else [authority], source=str(path), role="authority")
    key = PaillierPublicKey.from_dict(doc["key"])
    if key.fingerprint != doc.get("fingerprint"):
        raise KeyMismatchError(f"{path}: key does not match its fingerprint")
    return key


def score_packing(columns: Sequence[str], key: PaillierPublicKey, records_per_ciphertext: int = 1) -> PackingSpec:
    """The consortium-wide packing of a record's score columns into one plaintext.

    Every platform derives the same spec from the column count (and the
    agreed records per ciphertext) alone, so the bureau can add any
    platforms' ciphertexts slot by slot. Headroom covers MAX_CONTRIBUTORS
    records per entity; a count slot lets the authority check the bureau's
    contributor counts. PolicyError, naming the key's maximum, when
    ``records_per_ciphertext`` records do not fit the key.
    """
    return PackingSpec.plan(
        fixed_bound(SCORE_MAX_ABS, SCORE_DECIMALS), len(columns), MAX_CONTRIBUTORS,
        key=key, decimals=SCORE_DECIMALS, count_slot=True, records_per_ciphertext=records_per_ciphertext,
    )


def parse_clip(specs: Sequence[str]) -> dict[str, tuple[Decimal, Decimal]]:
    """``COL=LO:HI`` strings (``--clip``) -> {column: (lo, hi)}; DataValidationError if malformed."""
    out: dict[str, tuple[Decimal, Decimal]] = {}
    for spec in specs:
        column, eq, bounds = spec.partition("=")
        lo_text, colon, hi_text = bounds.partition(":")
        column = column.strip()
        if not (column and eq and colon):
            raise DataValidationError(f"--clip '{spec}': expected COL=LO:HI, e.g. repay_score=0:1000")
        try:
            lo, hi = Decimal(lo_text.strip()), Decimal(hi_text.strip())
        except InvalidOperation:
            raise DataValidationError(f"--clip '{spec}': LO and HI must be numbers") from None
        if column in out:
            raise DataValidationError(f"--clip names column '{column}' twice")
        out[column] = (lo, hi)
    return out


def _clip_ranges(
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
            raise DataValidationError(f"--clip names '{column}', which is not one of the --scores columns")
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


def submit(
    me: PartyKey,
    schema: Schema | str | os.PathLike[str],
    secret: LinkageSecret | str | os.PathLike[str],
    data: pd.DataFrame | str | os.PathLike[str],
    id_column: str,
    out: str | os.PathLike[str],
    *,
    paillier: PaillierPublicKey | str | os.PathLike[str] | None = None,
    scores: Sequence[str] = (),
    authority: Card | None = None,
    progress: bool = False,
    clip: Mapping[str, tuple[Decimal, Decimal]] | None = None,
    encryption: str | None = None,
    records_per_ciphertext: int = 1,
) -> Submission:
    """Encode, encrypt and sign this platform's records; write the submission and its token map.

    ``clip`` ({score column: (lo, hi)}) clips those columns' values to
    [lo, hi] before encryption and declares the ranges in the signed header,
    so the bureau knows each record's contribution is bounded (what its
    optional release noise is calibrated to). ``encryption="plain"`` uses
    classic r^n randomness instead of the key's DJN base (see
    :mod:`pprl.crypto.paillier.djn` for when a platform might want that).
    ``records_per_ciphertext`` > 1 packs that many records into each
    ciphertext (:mod:`pprl.crypto.paillier.packing_records`): a submission that many
    times smaller and faster to make; every platform of a run must agree.
    """
    schema = schema if isinstance(schema, Schema) else load_schema(schema)
    secret = secret if isinstance(secret, LinkageSecret) else load_secret(secret)
    if secret.owner != me.name:
        raise KeyMismatchError(f"the linkage secret belongs to '{secret.owner}', not '{me.name}'")
    source, frame = load_records(data)
    scores = tuple(scores)
    require_columns(frame, [id_column, *scores], source)
    duplicated = frame[id_column].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0]) + 1
        raise DataValidationError(f"{source}: row {row}: id column '{id_column}' repeats an earlier id; ids must be unique")
    if scores and paillier is None:
        raise DataValidationError("score columns were named but no Paillier public key was given")
    key = None
    if paillier is not None:
        key = paillier if isinstance(paillier, PaillierPublicKey) else load_paillier_public(paillier, authority)

    if records_per_ciphertext != 1 and not (key is not None and scores):
        raise DataValidationError("records per ciphertext applies to encrypted scores: name --scores and --paillier")
    spec = score_packing(scores, key, records_per_ciphertext) if key is not None and scores else None
    clip_fixed = _clip_ranges(clip, scores)
    fixed = _fixed_point_scores(frame, scores, source, clip_fixed)
    try:
        encoded = encode_with_report(frame, schema, secret.secret, progress=progress)
    except DataValidationError as exc:
        raise DataValidationError(f"{source}: {exc}") from None
    clks = encoded.clks
    # Records leave in a random order so the file says nothing about the CSV's order.
    order = random_permutation(len(frame))
    clks = clks[order]
    ids = frame[id_column].to_numpy()[order]
    packed = (
        encrypt_packed(key, fixed[order], spec, progress=progress, method=encryption).to_bytes()
        if spec is not None else None
    )
    tokens = [secrets.token_hex(12) for _ in range(len(frame))]
    packed_text = b64e(packed) if packed is not None else None

    doc = {
        "kind": "submission",
        "version": 1,
        "header": {
            "platform": me.name,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "records": len(frame),
            "schema_hash": schema.canonical_hash(),
            "linkage_key_id": secret.key_id,
            "clk_bytes": int(clks.shape[1]),
            "paillier_fingerprint": key.fingerprint if key is not None else None,
            "paillier_key": key.to_dict() if key is not None else None,
            "score_columns": list(scores),
            "score_decimals": SCORE_DECIMALS,
            "packing": spec.to_dict() if spec is not None else None,
            "clip": {
                c: [str(v) for v in decode_fixed(list(clip_fixed[c]), SCORE_DECIMALS)]
                for c in scores if c in clip_fixed
            },
        },
        "payload": {
            "tokens": tokens,
            "clks": b64e(np.ascontiguousarray(clks).tobytes()),
            "scores_packed": packed_text,
        },
    }
    signed = sign_document(doc, me.identity, me.card)
    map_path = map_path_for(out)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["token", id_column])
    writer.writerows(zip(tokens, ids))
    write_atomic(map_path, buffer.getvalue().encode("utf-8"), private=True)
    try:
        path = write_document(out, signed)
    except BaseException:
        map_path.unlink(missing_ok=True)
        raise
    return Submission(
        path=path, map_path=map_path, records=len(frame), score_columns=scores,
        notes=tuple(encoded.report.messages()), score_bytes=len(packed_text or ""),
    )
