"""PSI rounds, the platforms' steps: blind (round 1), re-blind another platform's list (one hop), read the reveal.

Part of the exact-identifier path described in :mod:`pprl.protocol.psi`.
"""

from __future__ import annotations

import csv
import io
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pprl.crypto import psi as psi_crypto
from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPublicKey,
    encode_fixed,
)
from pprl.documents import (
    Card,
    b64d,
    b64e,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_atomic,
    write_document,
)
from pprl.errors import (
    DataValidationError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
)
from pprl.encoding.normalise.identifiers import normaliser_for
from pprl.protocol.identity import PartyKey
from pprl.protocol.files import load_paillier_public
from pprl.protocol.submit import SCORE_DECIMALS, score_packing
from pprl.protocol.psi.session import (
    REVEAL_KIND,
    ROUND_KIND,
    SESSION_KIND,
    STATE_KIND,
    PsiSession,
    _now,
    load_session,
    ring_order,
    session_from_doc,
)
from pprl.protocol.tables import load_records, require_columns

__all__ = [
    "BlindResult",
    "LoadedRound",
    "ReblindResult",
    "RevealResult",
    "blind_identifiers",
    "load_round",
    "reblind_round",
    "reveal_members",
]


# --------------------------------------------------------------------------- rounds


@dataclass(frozen=True)
class LoadedRound:
    """A verified ``psi-round``: one origin's list after the hops listed."""

    path: str
    doc: dict[str, Any] = field(repr=False)
    hash: str
    origin: str
    hops: tuple[str, ...]
    records: int
    elements: bytes = field(repr=False)
    scores: dict[str, bytes] = field(repr=False)
    tokens: list[str] | None = field(repr=False)
    header: dict[str, Any] = field(repr=False)

    @property
    def complete(self) -> bool:
        return bool(self.header.get("complete"))


def load_round(path: str | os.PathLike[str], session: PsiSession) -> LoadedRound:
    """Read a round file and check everything before use: signature by the platform whose
    hop it is, session, ring order, sizes, encodings."""
    source = str(path)
    doc = read_document(path, ROUND_KIND)
    signer = verify_document(doc, list(session.platforms), source=source, role="platform")
    header, payload = doc.get("header"), doc.get("payload")
    try:
        if header["session_id"] != session.session_id or header["session_hash"] != session.hash:
            raise DocumentError(f"{source}: belongs to another PSI session than {session.path}")
        origin = str(header["origin"])
        hops = tuple(str(h) for h in header["hops"])
        n = int(header["records"])
        columns = list(header["score_columns"])
        elements = b64d(payload["elements"], f"{source}: elements")
        packing = header.get("packing")
        scores = {"packed": b64d(payload["scores"]["packed"], f"{source}: scores.packed")} if columns else {}
        tokens = payload.get("tokens")
        complete = header["complete"]
        fingerprint = header["paillier_fingerprint"]
        key_dict = header["paillier_key"]
        decimals = header["score_decimals"]
    except (KeyError, TypeError, ValueError, AttributeError):
        raise DocumentError(f"{source}: round is missing header or payload fields") from None
    names = session.names
    if origin not in names:
        raise DocumentError(f"{source}: origin '{origin}' is not a platform of this session")
    if not hops or list(hops) != ring_order(names, origin)[: len(hops)]:
        raise DocumentError(f"{source}: hops do not follow the session's ring order")
    if signer.name != hops[-1]:
        raise DocumentError(f"{source}: signed by '{signer.name}' but the last hop is '{hops[-1]}'")
    if complete is not (len(hops) == len(names)):
        raise DocumentError(f"{source}: 'complete' does not match its hops")
    if n < 1 or psi_crypto.check_elements(elements, f"{source}: elements") != n:
        raise DocumentError(f"{source}: record count and elements disagree")
    if len(set(columns)) != len(columns):
        raise DocumentError(f"{source}: a score column is listed twice")
    if columns:
        if not isinstance(key_dict, dict):
            raise DocumentError(f"{source}: has scores but no Paillier key")
        key = PaillierPublicKey.from_dict(key_dict)
        if key.fingerprint != fingerprint:
            raise KeyMismatchError(f"{source}: Paillier key does not match its fingerprint")
        if decimals != SCORE_DECIMALS:
            raise DocumentError(f"{source}: score precision {decimals!r} is not {SCORE_DECIMALS}")
        try:
            spec = PackingSpec.from_dict(packing)
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
    return LoadedRound(source, doc, document_hash(doc), origin, hops, n, elements, scores, tokens, header)


def _permute_rows(blob: bytes, order: np.ndarray, width: int) -> bytes:
    arr = np.frombuffer(blob, dtype=np.uint8).reshape(-1, width)
    return np.ascontiguousarray(arr[order]).tobytes()


# --------------------------------------------------------------------------- platform: blind


@dataclass(frozen=True)
class BlindResult:
    path: Path
    state_path: Path
    records: int
    skipped: int
    score_columns: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)


def _row_numbers(mask: np.ndarray) -> list[int]:
    return (np.flatnonzero(mask) + 1).tolist()


def blind_identifiers(
    me: PartyKey,
    session: PsiSession | str | os.PathLike[str],
    data: pd.DataFrame | str | os.PathLike[str],
    id_column: str,
    out: str | os.PathLike[str],
    state: str | os.PathLike[str],
    *,
    identifier: str | None = None,
    identifier_column: str | None = None,
    paillier: PaillierPublicKey | str | os.PathLike[str] | None = None,
    scores: Sequence[str] = (),
    authority: Card | None = None,
    bureau: Card | None = None,
    workers: int | None = None,
    progress: bool = False,
    encryption: str | None = None,
) -> BlindResult:
    """Round 1 (platform): normalise, hash, blind with a fresh key, shuffle, attach encrypted scores.

    Rows whose identifier is missing or invalid are left out (counted in
    ``skipped``); two rows with the same normalised identifier are refused.
    Writes the signed round ``out`` and the private ``state`` (0600, the key).
    """
    sess = session if isinstance(session, PsiSession) else load_session(session, bureau)
    mine = sess.card(me.name)
    if mine is None or mine.public != me.card.public or me.role != "platform":
        raise KeyMismatchError(f"{sess.path}: '{me.name}' is not one of this session's platforms")
    if identifier is not None and identifier != sess.identifier:
        raise KeyMismatchError(
            f"{sess.path}: the session matches on '{sess.identifier}', not '{identifier}'"
        )
    kind = sess.identifier
    column = identifier_column or kind
    state_path = Path(state)
    if state_path.exists():
        raise DocumentError(f"{state_path}: already exists; refusing to overwrite a PSI state (it holds a session key)")
    source, frame = load_records(data)
    scores = tuple(scores)
    if len(set(scores)) != len(scores):
        raise DataValidationError("a score column is named twice")
    require_columns(frame, [id_column, column, *scores], source)
    duplicated = frame[id_column].duplicated().to_numpy()
    if duplicated.any():
        row = _row_numbers(duplicated)[0]
        raise DataValidationError(f"{source}: row {row}: id column '{id_column}' repeats an earlier id; ids must be unique")
    if scores and paillier is None:
        raise DataValidationError("score columns were named but no Paillier public key was given")
    key = None
    if scores:
        key = paillier if isinstance(paillier, PaillierPublicKey) else load_paillier_public(paillier, authority)

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
    for c in scores:
        try:
            fixed[c] = encode_fixed([frame[c].iloc[i] for i in kept], SCORE_DECIMALS)
        except DataValidationError as exc:
            raise DataValidationError(f"{source}: column '{c}': {exc}; scores must be numbers") from None
    spec = score_packing(scores, key) if key is not None and scores else None

    order = psi_crypto.random_permutation(len(kept))
    psi_key = psi_crypto.PSIKey.generate()
    started = time.perf_counter()
    elements = psi_crypto.blind(
        psi_key, [values.iloc[int(i)] for i in order], sess.domain, workers=workers, progress=progress
    )
    blinded = time.perf_counter()
    ciphertexts = {}
    if spec is not None:
        # one packed ciphertext per record holds every score column (and a count slot)
        matrix = np.array([fixed[c] for c in scores], dtype=object).T[order]
        ciphertexts["packed"] = encrypt_packed(
            key, matrix, spec, workers=workers, progress=progress, method=encryption
        ).to_bytes()
    timings = {"blind": blinded - started, "encrypt": time.perf_counter() - blinded}
    user_ids = frame[id_column].to_numpy()[kept][order].tolist()
    tokens = [secrets.token_hex(16) for _ in range(len(kept))] if sess.reveal_intersection else None

    payload: dict[str, Any] = {
        "elements": b64e(elements),
        "scores": {c: b64e(v) for c, v in ciphertexts.items()},
    }
    if tokens is not None:
        payload["tokens"] = tokens
    doc = {
        "kind": ROUND_KIND,
        "version": 1,
        "header": {
            "session_id": sess.session_id,
            "session_hash": sess.hash,
            "origin": me.name,
            "hops": [me.name],
            "complete": False,
            "records": len(kept),
            "input_hash": None,
            "created": _now(),
            "paillier_fingerprint": key.fingerprint if key is not None else None,
            "paillier_key": key.to_dict() if key is not None else None,
            "score_columns": list(scores),
            "score_decimals": SCORE_DECIMALS,
            "packing": spec.to_dict() if spec is not None else None,
        },
        "payload": payload,
    }
    signed = sign_document(doc, me.identity, me.card)
    state_doc = {
        "kind": STATE_KIND,
        "version": 1,
        "platform": me.name,
        "session_id": sess.session_id,
        "session_hash": sess.hash,
        "round_hash": document_hash(signed),
        "id_column": id_column,
        "created": _now(),
        "secret": b64e(psi_key.to_bytes()),
        "session": sess.doc,
        "payload": {"tokens": dict(zip(tokens, user_ids)) if tokens is not None else None},
    }
    write_document(state_path, state_doc, private=True)
    try:
        path = write_document(out, signed)
    except BaseException:
        state_path.unlink(missing_ok=True)
        raise
    return BlindResult(path, state_path, len(kept), int((~valid).sum()), scores, timings)


# --------------------------------------------------------------------------- platform: state


@dataclass(frozen=True)
class _State:
    path: str
    platform: str
    session: PsiSession
    key: psi_crypto.PSIKey = field(repr=False)
    id_column: str
    tokens: dict[str, str] | None = field(repr=False)


def _load_state(path: str | os.PathLike[str], me: PartyKey) -> _State:
    source = str(path)
    doc = read_document(path, STATE_KIND)
    try:
        platform = str(doc["platform"])
        secret = b64d(doc["secret"], f"{source}: secret")
        session_doc = doc["session"]
        id_column = str(doc["id_column"])
        tokens = doc["payload"]["tokens"]
    except (KeyError, TypeError):
        raise KeyFormatError(f"{source}: not a valid PSI state") from None
    if platform != me.name:
        raise KeyMismatchError(f"{source}: belongs to '{platform}', not '{me.name}'")
    if not isinstance(session_doc, dict) or session_doc.get("kind") != SESSION_KIND:
        raise KeyFormatError(f"{source}: not a valid PSI state (no session)")
    session = session_from_doc(session_doc, f"{source}: session", None)
    if session.session_id != doc.get("session_id") or session.hash != doc.get("session_hash"):
        raise KeyFormatError(f"{source}: session does not match the state (damaged)")
    mine = session.card(me.name)
    if mine is None or mine.public != me.card.public:
        raise KeyMismatchError(f"{source}: '{me.name}' with this key is not a platform of the session")
    if len(secret) != 32:
        raise KeyFormatError(f"{source}: not a valid PSI state (key length)")
    if tokens is not None and not isinstance(tokens, dict):
        raise KeyFormatError(f"{source}: not a valid PSI state (tokens)")
    return _State(source, platform, session, psi_crypto.PSIKey(secret), id_column, tokens)


# --------------------------------------------------------------------------- platform: reblind


@dataclass(frozen=True)
class ReblindResult:
    path: Path
    origin: str
    hops: tuple[str, ...]
    records: int
    complete: bool


def reblind_round(
    me: PartyKey,
    state: str | os.PathLike[str],
    input: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    rerandomize: bool = False,
    workers: int | None = None,
    progress: bool = False,
) -> ReblindResult:
    """One hop (platform): apply my key to another platform's list, reshuffle, sign.

    Refused unless the list belongs to this session, is not my own, and I am
    its next hop in ring order. Ciphertexts (and tokens) move with their
    element; ``rerandomize`` also refreshes the ciphertexts' randomness.
    """
    st = _load_state(state, me)
    rnd = load_round(input, st.session)
    if rnd.origin == me.name:
        raise PolicyError(f"{input}: is {me.name}'s own list; a platform never re-blinds its own list")
    if rnd.complete:
        raise PolicyError(f"{input}: is already blinded by every platform; it goes to the bureau")
    expected = ring_order(st.session.names, rnd.origin)[len(rnd.hops)]
    if expected != me.name:
        raise PolicyError(f"{input}: its next hop is '{expected}', not '{me.name}'")
    n = rnd.records
    elements = psi_crypto.reblind(st.key, rnd.elements, workers=workers, progress=progress, what=f"{input}: elements")
    order = psi_crypto.random_permutation(n)
    scores = dict(rnd.scores)
    if scores:
        pkey = PaillierPublicKey.from_dict(rnd.header["paillier_key"])
        width = pkey.ciphertext_bytes
        if rerandomize:
            scores = {
                c: EncryptedVector.from_bytes(pkey, blob).rerandomize(workers=workers, progress=progress).to_bytes()
                for c, blob in scores.items()
            }
        scores = {c: _permute_rows(blob, order, width) for c, blob in scores.items()}
    payload: dict[str, Any] = {
        "elements": b64e(_permute_rows(elements, order, psi_crypto.ELEMENT_BYTES)),
        "scores": {c: b64e(v) for c, v in scores.items()},
    }
    if rnd.tokens is not None:
        payload["tokens"] = [rnd.tokens[int(i)] for i in order]
    hops = (*rnd.hops, me.name)
    complete = len(hops) == len(st.session.names)
    header = dict(rnd.header)
    header.update({"hops": list(hops), "complete": complete, "input_hash": rnd.hash, "created": _now()})
    doc = {"kind": ROUND_KIND, "version": 1, "header": header, "payload": payload}
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return ReblindResult(path, rnd.origin, hops, n, complete)


# --------------------------------------------------------------------------- platform: reveal


@dataclass(frozen=True)
class RevealResult:
    path: Path
    members: int


def reveal_members(
    me: PartyKey, state: str | os.PathLike[str], input: str | os.PathLike[str], out: str | os.PathLike[str]
) -> RevealResult:
    """Map the bureau's reveal back to my own users (platform): CSV ``<id column>,entity_id,contributors``, 0600."""
    st = _load_state(state, me)
    if st.tokens is None:
        raise PolicyError(f"{state}: this session does not reveal the intersection")
    doc = read_document(input, REVEAL_KIND)
    verify_document(doc, [st.session.bureau], source=str(input), role="bureau")
    try:
        header, payload = doc["header"], doc["payload"]
        if header["session_id"] != st.session.session_id or header["session_hash"] != st.session.hash:
            raise DocumentError(f"{input}: belongs to another PSI session")
        if header["platform"] != me.name:
            raise DocumentError(f"{input}: is addressed to '{header['platform']}', not '{me.name}'")
        tokens, entities, contributors = payload["tokens"], payload["entity_ids"], payload["contributors"]
    except (KeyError, TypeError):
        raise DocumentError(f"{input}: reveal is missing header or payload fields") from None
    if not (len(tokens) == len(entities) == len(contributors)):
        raise DocumentError(f"{input}: tokens, entities and contributors disagree")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([st.id_column, "entity_id", "contributors"])
    for t, e, c in zip(tokens, entities, contributors):
        user = st.tokens.get(t) if isinstance(t, str) else None
        if user is None:
            raise DocumentError(f"{input}: names a token this platform never issued")
        writer.writerow([user, e, c])
    path = write_atomic(out, buffer.getvalue().encode("utf-8"), private=True)
    return RevealResult(path, len(tokens))
