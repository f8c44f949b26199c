"""PSI rounds, the platforms' steps: blind (round 1), re-blind another platform's list (one hop), read the reveal.

Part of the exact-identifier path (docs/psi.md).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import pandas as pd

from pprl.crypto import psi as psi_crypto
from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey, decode_fixed, encode_fixed
from pprl.documents import (
    PsiReveal,
    PsiRound,
    PsiRoundHeader,
    PsiRoundPayload,
    PsiSession,
    PsiState,
    PsiStatePayload,
    now,
    seal,
    verify,
)
from pprl.encoding.normalise import normaliser_for
from pprl.engine import Engine
from pprl.errors import (
    DataValidationError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    OptionError,
    PolicyError,
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.psi.session import Session, reopen_session, ring_order
from pprl.protocol.submit import ENCRYPTIONS, SCORE_DECIMALS, clip_ranges, score_packing
from pprl.protocol.tables import own_records

__all__ = [
    "BlindOptions",
    "Blinded",
    "ReblindOptions",
    "State",
    "VerifiedRound",
    "blind",
    "check_round",
    "open_state",
    "reblind",
    "reveal_table",
]


# --------------------------------------------------------------------------- rounds


@dataclass(frozen=True)
class VerifiedRound:
    """A verified ``psi-round``: one origin's list after the hops listed."""

    doc: PsiRound = field(repr=False)
    origin: str
    hops: tuple[str, ...]
    records: int
    elements: bytes = field(repr=False)
    scores: dict[str, bytes] = field(repr=False)
    tokens: list[str] | None = field(repr=False)

    @property
    def source(self) -> str:
        return self.doc.source

    @property
    def hash(self) -> str:
        return self.doc.hash

    @property
    def header(self) -> PsiRoundHeader:
        return self.doc.header

    @property
    def complete(self) -> bool:
        return bool(self.doc.header.complete)


def check_round(doc: PsiRound, session: Session) -> VerifiedRound:
    """Check a round before use: signature by the platform whose hop it is, session, ring order, sizes, encodings."""
    source = doc.source
    signer = verify(doc, list(session.platforms), source=source, role="platform")
    header, payload = doc.header, doc.payload
    if header.session_id != session.session_id or header.session_hash != session.hash:
        raise DocumentError(f"{source}: belongs to another PSI session than {session.source}")
    origin, hops, n, columns = header.origin, tuple(header.hops), header.records, list(header.score_columns)
    elements, tokens = payload.elements, payload.tokens
    if columns and "packed" not in payload.scores:
        raise DocumentError(f"{source}: round is missing header or payload fields")
    scores = {"packed": payload.scores["packed"]} if columns else {}
    names = session.names
    if origin not in names:
        raise DocumentError(f"{source}: origin '{origin}' is not a platform of this session")
    if not hops or list(hops) != ring_order(names, origin)[: len(hops)]:
        raise DocumentError(f"{source}: hops do not follow the session's ring order")
    if signer.name != hops[-1]:
        raise DocumentError(f"{source}: signed by '{signer.name}' but the last hop is '{hops[-1]}'")
    if header.complete is not (len(hops) == len(names)):
        raise DocumentError(f"{source}: 'complete' does not match its hops")
    if n < 1 or psi_crypto.check_elements(elements, f"{source}: elements") != n:
        raise DocumentError(f"{source}: record count and elements disagree")
    if len(set(columns)) != len(columns):
        raise DocumentError(f"{source}: a score column is listed twice")
    if columns:
        if not isinstance(header.paillier_key, dict):
            raise DocumentError(f"{source}: has scores but no Paillier key")
        key = PaillierPublicKey.from_dict(header.paillier_key)
        if key.fingerprint != header.paillier_fingerprint:
            raise KeyMismatchError(f"{source}: Paillier key does not match its fingerprint")
        if header.score_decimals != SCORE_DECIMALS:
            raise DocumentError(f"{source}: score precision {header.score_decimals!r} is not {SCORE_DECIMALS}")
        try:
            spec = PackingSpec.from_dict(header.packing)
        except (DataValidationError, DocumentError, KeyError, TypeError, ValueError):
            raise DocumentError(f"{source}: has scores but no valid packing spec") from None
        if spec != score_packing(columns, key):
            raise DocumentError(f"{source}: packing spec is not the consortium's for {len(columns)} score columns")
        if len(scores["packed"]) != n * key.ciphertext_bytes:
            raise DocumentError(f"{source}: scores do not hold one packed ciphertext per record")
    if session.reveal_intersection:
        if (
            not isinstance(tokens, list)
            or len(tokens) != n
            or not all(isinstance(t, str) and len(t) == 32 for t in tokens)
            or len(set(tokens)) != n
        ):
            raise DocumentError(f"{source}: tokens are missing or malformed (the session reveals the intersection)")
    elif tokens is not None:
        raise DocumentError(f"{source}: carries tokens but the session does not reveal the intersection")
    return VerifiedRound(doc, origin, hops, n, elements, scores, tokens)


def _permute_rows(blob: bytes, order: np.ndarray, width: int) -> bytes:
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, width)
    return np.ascontiguousarray(arr[order]).tobytes()


# --------------------------------------------------------------------------- platform: blind


@dataclass(frozen=True)
class BlindOptions:
    """A platform's choices for round 1; checked once, here.

    Attributes:
        id_column: the platform's own user id column (kept only in its state).
        identifier_column: the column holding the session's identifier (default: the identifier's name).
        identifier: if given, the identifier kind the platform expects the session to match on.
        scores: score columns to encrypt.
        encryption: "djn" or "plain" (as for submissions).
        workers: threads/processes (None: every CPU).
        progress: show progress bars.
        clip: {score column: (lo, hi)}: clip before encryption and declare the ranges in the signed
            round header, which is what release noise is calibrated to (as for submissions).
        engine: where the blinding and encryption run (:mod:`pprl.engine`); None: here. The elements are the
            same.
    """

    id_column: str
    identifier_column: str | None = None
    identifier: str | None = None
    scores: tuple[str, ...] = ()
    encryption: str = "djn"
    workers: int | None = None
    progress: bool = False
    clip: Mapping[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    engine: Engine | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "scores", tuple(self.scores))
        for column in self.clip:
            if column not in self.scores:
                raise OptionError(f"{{clip}} names '{column}', which is not one of the {{scores}} columns",
                                  "clip", "scores")
        if len(set(self.scores)) != len(self.scores):
            raise DataValidationError("a score column is named twice")
        if self.encryption not in ENCRYPTIONS:
            raise OptionError(f"encryption must be one of {', '.join(ENCRYPTIONS)}, not '{self.encryption}'")
        if self.workers is not None and (isinstance(self.workers, bool) or self.workers < 1):
            raise OptionError("{workers} must be at least 1", "workers")


@dataclass(frozen=True)
class Blinded:
    """Round 1 of one platform: its signed list for the ring and its private state (0600, the key)."""

    round: PsiRound
    state: PsiState = field(repr=False)
    records: int
    skipped: int
    score_columns: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)


def blind(
    me: PartyKey,
    session: Session,
    records: pd.DataFrame,
    options: BlindOptions,
    paillier: PaillierPublicKey | None = None,
    *,
    source: str = "data",
) -> Blinded:
    """Round 1 (platform): normalise, hash, blind with a fresh key, shuffle, attach encrypted scores.

    Rows whose identifier is missing or invalid are left out (counted in
    ``skipped``); two rows with the same normalised identifier are refused.

    Raises:
        KeyMismatchError: not a platform of this session, or the session matches on another identifier.
        DataValidationError: missing columns, repeated ids or identifiers, scores that are not numbers.
    """
    mine = session.card(me.name)
    if mine is None or mine.public != me.card.public or me.role != "platform":
        raise KeyMismatchError(f"{session.source}: '{me.name}' is not one of this session's platforms")
    if options.identifier is not None and options.identifier != session.identifier:
        raise KeyMismatchError(
            f"{session.source}: the session matches on '{session.identifier}', not '{options.identifier}'"
        )
    kind = session.identifier
    column = options.identifier_column or kind
    scores, id_column = options.scores, options.id_column
    frame = own_records(records, id_column, [column, *scores], source)
    if scores and paillier is None:
        raise DataValidationError("score columns were named but no Paillier public key was given")
    key = paillier if scores else None

    normalise = normaliser_for(kind)
    normalised = [normalise(v) for v in frame[column].tolist()]
    valid = np.array([v is not None for v in normalised], dtype=bool)
    if not valid.any():
        raise DataValidationError(f"{source}: no row has a valid {kind} in column '{column}'")
    kept = np.flatnonzero(valid)
    values = pd.Series([normalised[i] for i in kept])
    repeats = values.duplicated(keep=False).to_numpy()
    if repeats.any():
        rows = sorted(int(kept[i]) + 1 for i in np.flatnonzero(repeats))[:2]
        raise DataValidationError(
            f"{source}: rows {rows[0]} and {rows[1]} have the same {kind} after normalisation; "
            "merge or remove duplicates first"
        )
    fixed: dict[str, list[int]] = {}
    clip = clip_ranges(options.clip, scores)
    for c in scores:
        try:
            fixed[c] = encode_fixed([frame[c].iloc[i] for i in kept], SCORE_DECIMALS)
        except DataValidationError as exc:
            raise DataValidationError(f"{source}: column '{c}': {exc}; scores must be numbers") from None
        if c in clip:
            lo, hi = clip[c]
            fixed[c] = [min(max(v, lo), hi) for v in fixed[c]]
    spec = score_packing(scores, key) if key is not None and scores else None

    order = psi_crypto.random_permutation(len(kept))
    psi_key = psi_crypto.PSIKey.generate()
    started = time.perf_counter()
    ordered = [values.iloc[int(i)] for i in order]
    if options.engine is not None:
        elements = options.engine.psi_blind(psi_key, ordered, session.domain)
    else:
        elements = psi_crypto.blind(psi_key, ordered, session.domain, workers=options.workers,
                                    progress=options.progress)
    blinded = time.perf_counter()
    ciphertexts = {}
    if key is not None and spec is not None:
        # one packed ciphertext per record holds every score column (and a count slot)
        matrix = np.array([fixed[c] for c in scores], dtype=object).T[order]
        method = "plain" if options.encryption == "plain" else None
        ciphertexts["packed"] = (
            options.engine.encrypt_packed(key, matrix, spec, method=method) if options.engine is not None else
            encrypt_packed(key, matrix, spec, workers=options.workers, progress=options.progress, method=method)
        ).to_bytes()
    timings = {"blind": blinded - started, "encrypt": time.perf_counter() - blinded}
    user_ids = frame[id_column].to_numpy()[kept][order].tolist()
    tokens = [secrets.token_hex(16) for _ in range(len(kept))] if session.reveal_intersection else None
    header = PsiRoundHeader(
        session_id=session.session_id,
        session_hash=session.hash,
        origin=me.name,
        hops=[me.name],
        complete=False,
        records=len(kept),
        input_hash=None,
        paillier_fingerprint=key.fingerprint if key is not None else None,
        paillier_key=key.to_dict() if key is not None else None,
        score_columns=list(scores),
        score_decimals=SCORE_DECIMALS,
        packing=spec.to_dict() if spec is not None else None,
        clip={c: [str(v) for v in decode_fixed(list(clip[c]), SCORE_DECIMALS)] for c in scores if c in clip} or None,
    )
    payload = PsiRoundPayload(elements=elements, scores=ciphertexts, tokens=tokens)
    signed = seal(PsiRound(header=header, payload=payload), me.identity, me.card)
    state = seal(PsiState(
        platform=me.name,
        session_id=session.session_id,
        session_hash=session.hash,
        round_hash=signed.hash,
        id_column=id_column,
        secret=psi_key.to_bytes(),
        session=session.doc.wire,
        payload=PsiStatePayload(tokens=dict(zip(tokens, user_ids)) if tokens is not None else None),
    ))
    return Blinded(signed, state, len(kept), int((~valid).sum()), scores, timings)


# --------------------------------------------------------------------------- platform: state


@dataclass(frozen=True)
class State:
    """A platform's opened PSI state: its session key and token map."""

    source: str
    platform: str
    session: Session
    key: psi_crypto.PSIKey = field(repr=False)
    id_column: str
    tokens: dict[str, str] | None = field(repr=False)


def open_state(doc: PsiState, me: PartyKey) -> State:
    """Open this platform's state: its own, its session intact and naming this key."""
    source = doc.source
    if doc.platform != me.name:
        raise KeyMismatchError(f"{source}: belongs to '{doc.platform}', not '{me.name}'")
    if not isinstance(doc.session, dict) or doc.session.get("kind") != "psi-session":
        raise KeyFormatError(f"{source}: not a valid PSI state (no session)")
    session = reopen_session(PsiSession.from_dict(doc.session, f"{source}: session"))
    if session.session_id != doc.session_id or session.hash != doc.session_hash:
        raise KeyFormatError(f"{source}: session does not match the state (damaged)")
    mine = session.card(me.name)
    if mine is None or mine.public != me.card.public:
        raise KeyMismatchError(f"{source}: '{me.name}' with this key is not a platform of the session")
    if len(doc.secret) != 32:
        raise KeyFormatError(f"{source}: not a valid PSI state (key length)")
    tokens = doc.payload.tokens
    if tokens is not None and not isinstance(tokens, dict):
        raise KeyFormatError(f"{source}: not a valid PSI state (tokens)")
    return State(source, doc.platform, session, psi_crypto.PSIKey(doc.secret), doc.id_column, tokens)


# --------------------------------------------------------------------------- platform: reblind


@dataclass(frozen=True)
class ReblindOptions:
    """One hop's choices: ``rerandomize`` refreshes the ciphertexts' randomness; workers, progress; ``engine``:
    where the re-blinding runs (:mod:`pprl.engine`; the same elements)."""

    rerandomize: bool = True
    workers: int | None = None
    progress: bool = False
    engine: Engine | None = field(default=None, compare=False, repr=False)


def reblind(me: PartyKey, state: State, round: PsiRound, options: ReblindOptions) -> PsiRound:
    """One hop (platform): apply my key to another platform's list, reshuffle, sign.

    Refused unless the list belongs to this session, is not my own, and I am
    its next hop in ring order. Ciphertexts (and tokens) move with their element.
    """
    rnd = check_round(round, state.session)
    source = rnd.source
    if rnd.origin == me.name:
        raise PolicyError(f"{source}: is {me.name}'s own list; a platform never re-blinds its own list")
    if rnd.complete:
        raise PolicyError(f"{source}: is already blinded by every platform; it goes to the bureau")
    expected = ring_order(state.session.names, rnd.origin)[len(rnd.hops)]
    if expected != me.name:
        raise PolicyError(f"{source}: its next hop is '{expected}', not '{me.name}'")
    n = rnd.records
    if options.engine is not None:
        elements = options.engine.psi_reblind(state.key, rnd.elements, what=f"{source}: elements")
    else:
        elements = psi_crypto.reblind(state.key, rnd.elements, workers=options.workers, progress=options.progress,
                                      what=f"{source}: elements")
    order = psi_crypto.random_permutation(n)
    scores = dict(rnd.scores)
    if scores:
        pkey = PaillierPublicKey.from_dict(rnd.header.paillier_key or {})
        width = pkey.ciphertext_bytes
        if options.rerandomize:
            scores = {
                c: EncryptedVector.from_bytes(pkey, blob).rerandomize(workers=options.workers,
                                                                      progress=options.progress).to_bytes()
                for c, blob in scores.items()
            }
        scores = {c: _permute_rows(blob, order, width) for c, blob in scores.items()}
    tokens = [rnd.tokens[int(i)] for i in order] if rnd.tokens is not None else None
    hops = [*rnd.hops, me.name]
    header = dataclasses.replace(
        rnd.header, hops=hops, complete=len(hops) == len(state.session.names), input_hash=rnd.hash, created=now()
    )
    payload = PsiRoundPayload(elements=_permute_rows(elements, order, psi_crypto.ELEMENT_BYTES), scores=scores,
                              tokens=tokens)
    return seal(PsiRound(header=header, payload=payload), me.identity, me.card)


# --------------------------------------------------------------------------- platform: reveal


def reveal_table(me: PartyKey, state: State, doc: PsiReveal) -> tuple[bytes, int]:
    """Map the bureau's reveal back to my own users (platform): CSV ``<id column>,entity_id,contributors``.

    Returns the CSV (private: it names the platform's users) and its member count.
    """
    source = doc.source
    if state.tokens is None:
        raise PolicyError(f"{state.source}: this session does not reveal the intersection")
    verify(doc, [state.session.bureau], source=source, role="bureau")
    header, payload = doc.header, doc.payload
    if header.session_id != state.session.session_id or header.session_hash != state.session.hash:
        raise DocumentError(f"{source}: belongs to another PSI session")
    if header.platform != me.name:
        raise DocumentError(f"{source}: is addressed to '{header.platform}', not '{me.name}'")
    tokens, entities, contributors = payload.tokens, payload.entity_ids, payload.contributors
    if not (len(tokens) == len(entities) == len(contributors)):
        raise DocumentError(f"{source}: tokens, entities and contributors disagree")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([state.id_column, "entity_id", "contributors"])
    for t, e, c in zip(tokens, entities, contributors):
        user = state.tokens.get(t) if isinstance(t, str) else None
        if user is None:
            raise DocumentError(f"{source}: names a token this platform never issued")
        writer.writerow([user, e, c])
    return buffer.getvalue().encode("utf-8"), len(tokens)
