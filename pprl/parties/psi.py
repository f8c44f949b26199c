"""The exact-identifier path: ECDH private set intersection-sum across K platforms, one step per party.

Roles are pprl's usual ones. The bureau opens a session and relays files;
each platform blinds its own normalised identifiers under a fresh session key
and re-blinds every other platform's list once; the bureau matches the fully
blinded lists and sums Paillier ciphertexts per matched person; the authority
decrypts the release with the unchanged ``pprl decrypt``.

Steps and documents (all signed, all written atomically)
    1. ``init_session`` (bureau) -> ``psi-session``: random session id, the
       platforms in ring order (their public cards), identifier kind,
       whether platforms get their own intersection members back.
    2. ``blind_identifiers`` (each platform) -> ``psi-round`` with hops
       [me]: its identifiers normalised, hashed to the group and raised to
       its key k_p, shuffled, each with its Paillier-encrypted scores
       (2-decimal fixed point, every column packed into one ciphertext per
       record with a count slot, exactly as ``submit`` packs them); plus a 0600 ``psi-state``
       holding k_p that never leaves the platform.
    3. ``reblind_round`` (each platform, K-1 times): the bureau hands
       platform j the list of origin j-s at step s = 1..K-1 (a ring:
       origin i visits i+1, i+2, ... in session order). Platform j checks it
       is the next hop, applies k_j to every element, reshuffles elements
       with their ciphertexts (and tokens) attached, signs.
    4. ``aggregate_intersection`` (bureau): takes the K complete lists
       (every element is now H(x)^(k_1···k_K)), groups equal elements, keeps
       persons on >= ``min_contributors`` platforms, sums their packed
       ciphertexts, and writes a ``release`` in exactly the format
       :func:`pprl.parties.bureau.aggregate` writes, so ``pprl decrypt``
       decrypts and audit-logs it unchanged. ``linkage_hash`` there is the
       hash of this PSI transcript (session hash + the K final lists' hashes).
       Entity ids are opaque: an HMAC of the fully blinded element under a
       key only the bureau can derive (so no platform can compute them).

Who learns what (honest-but-curious, non-colluding parties)
    - A platform learns the other platforms' list sizes, nothing else: every
      list it sees is blinded under at least one key it does not hold, and
      the ring order means no two lists it handles ever share the same set of
      keys, so it cannot compare them; its own list never comes back to it.
    - The bureau learns list sizes and, after the last hop, which platforms
      hold each matched person (counts per overlap pattern); never an
      identifier (it holds no key) nor a plaintext score (no Paillier key).
    - The authority learns the released per-person sums, as in the CLK path.
    - With ``reveal_intersection`` in the session (visible to every platform
      before it blinds), each platform also learns which of its own users
      were released, with their entity ids and how many platforms hold
      them, through a bureau-signed ``psi-reveal`` only it can map back
      (random tokens; map in its state). Not which other platforms: entity
      ids are keyed by the bureau, so the fully blinded lists a platform
      finalised itself cannot be matched against them.
    Ciphertexts ride unchanged with their element unless a hop passes
    ``rerandomize`` (one fixed-base Paillier exponentiation per element): the
    bureau could otherwise follow an element through the ring, which tells it
    nothing alone but would tell a bureau colluding with the origin platform
    which of that platform's users matched.

No raw identifier appears in any document that leaves a platform, nor in any
error message: rows are named by number, never by value.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import os
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pprl.crypto import psi as psi_crypto
from pprl.crypto.paillier import (
    EncryptedVector,
    PaillierPublicKey,
    encode_fixed,
)
from pprl.crypto.packing import PackingSpec, encrypt_packed
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
from pprl.linkage.identifiers import IDENTIFIER_KINDS, normaliser_for
from pprl.parties.identity import PartyKey
from pprl.parties.platform import SCORE_DECIMALS, load_paillier_public, score_packing
from pprl.parties.tables import read_table, require_columns

__all__ = [
    "PROTOCOL",
    "BlindResult",
    "IntersectionCounts",
    "LoadedRound",
    "PsiReleaseResult",
    "PsiSession",
    "ReblindResult",
    "RevealResult",
    "SessionResult",
    "aggregate_intersection",
    "blind_identifiers",
    "count_intersection",
    "init_session",
    "load_round",
    "load_session",
    "reblind_round",
    "reblind_schedule",
    "reveal_members",
    "ring_order",
]

#: Names the construction (group, hash to group, document layout); refused if different.
PROTOCOL = "pprl-ecdh-psi/curve25519-x25519/rfc9380-curve25519_XMD:SHA-512_ELL2_RO_/v2"
SESSION_KIND, ROUND_KIND, STATE_KIND, REVEAL_KIND = "psi-session", "psi-round", "psi-state", "psi-reveal"
_ENTITY_DOMAIN = b"pprl-psi-entity-v1"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- session


@dataclass(frozen=True)
class PsiSession:
    """A verified session: who takes part, in which ring order, on which identifier."""

    path: str
    doc: dict[str, Any] = field(repr=False)
    session_id: str
    hash: str
    bureau: Card
    platforms: tuple[Card, ...]
    identifier: str
    reveal_intersection: bool

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.platforms]

    @property
    def domain(self) -> bytes:
        """The hash-to-group domain: protocol, identifier kind and session id."""
        return psi_crypto.make_domain(PROTOCOL, self.identifier, self.session_id)

    def card(self, name: str) -> Card | None:
        return next((c for c in self.platforms if c.name == name), None)


@dataclass(frozen=True)
class SessionResult:
    path: Path
    session_id: str
    platforms: tuple[str, ...]


def init_session(
    me: PartyKey,
    cards: Sequence[Card],
    out: str | os.PathLike[str],
    *,
    identifier: str = "resident_id",
    reveal_intersection: bool = False,
) -> SessionResult:
    """Open a PSI session (bureau): fresh id, the platforms in ring order, the identifier kind."""
    if me.role != "bureau":
        raise KeyFormatError(f"only a bureau opens a PSI session; '{me.name}' is a {me.role}")
    normaliser_for(identifier)
    cards = list(cards)
    if len(cards) < 2:
        raise PolicyError("a PSI session needs at least two platforms (give --cards once per platform)")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise DocumentError("a platform is listed twice")
    for c in cards:
        if c.role != "platform":
            raise KeyFormatError(f"'{c.name}' is a {c.role}, not a platform")
    session_id = secrets.token_hex(16)
    doc = {
        "kind": SESSION_KIND,
        "version": 1,
        "header": {
            "session_id": session_id,
            "created": _now(),
            "protocol": PROTOCOL,
            "identifier": identifier,
            "reveal_intersection": bool(reveal_intersection),
            "platforms": [c.to_signer() for c in cards],
        },
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return SessionResult(path=path, session_id=session_id, platforms=tuple(names))


def _session_from_doc(doc: dict[str, Any], source: str, bureau: Card | None) -> PsiSession:
    signer = verify_document(doc, None if bureau is None else [bureau], source=source, role="bureau")
    header = doc.get("header")
    try:
        if header["protocol"] != PROTOCOL:
            raise DocumentError(f"{source}: PSI protocol {header['protocol']!r} is not supported (this pprl speaks {PROTOCOL})")
        session_id = str(header["session_id"])
        identifier = str(header["identifier"])
        reveal = header["reveal_intersection"]
        platforms = tuple(
            Card.from_signer(s, what=f"{source}: platform {i}") for i, s in enumerate(header["platforms"], start=1)
        )
    except (KeyError, TypeError):
        raise DocumentError(f"{source}: session is missing header fields") from None
    if identifier not in IDENTIFIER_KINDS or not isinstance(reveal, bool) or len(platforms) < 2:
        raise DocumentError(f"{source}: session parameters are not valid")
    if len({c.name for c in platforms}) != len(platforms) or any(c.role != "platform" for c in platforms):
        raise DocumentError(f"{source}: session lists a platform twice or a party that is not a platform")
    if len(session_id) != 32 or any(ch not in "0123456789abcdef" for ch in session_id):
        raise DocumentError(f"{source}: session id is malformed")
    return PsiSession(source, doc, session_id, document_hash(doc), signer, platforms, identifier, reveal)


def load_session(path: str | os.PathLike[str], bureau: Card | None = None) -> PsiSession:
    """Read and verify a session; with ``bureau``, it must be the one who signed it."""
    doc = read_document(path, SESSION_KIND)
    return _session_from_doc(doc, str(path), bureau)


def ring_order(names: Sequence[str], origin: str) -> list[str]:
    """The platforms in the order they must blind origin's list: origin, then its successors."""
    i = list(names).index(origin)
    return [*names[i:], *names[:i]]


def reblind_schedule(session: PsiSession) -> list[list[tuple[str, str]]]:
    """Per step s = 1..K-1: (platform, origin of the list it re-blinds), one pair per platform.

    Each platform handles every other platform's list exactly once; after
    step K-1 the bureau holds all K lists fully blinded.
    """
    names = session.names
    k = len(names)
    return [[(names[j], names[(j - s) % k]) for j in range(k)] for s in range(1, k)]


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
    source = "data" if isinstance(data, pd.DataFrame) else str(data)
    frame = data.fillna("").astype(str) if isinstance(data, pd.DataFrame) else read_table(data)
    if len(frame) == 0:
        raise DataValidationError(f"{source}: no records")
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
        ciphertexts["packed"] = encrypt_packed(key, matrix, spec, workers=workers, progress=progress).to_bytes()
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
    session = _session_from_doc(session_doc, f"{source}: session", None)
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

    The release has exactly the layout of :func:`pprl.parties.bureau.aggregate`'s,
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


# --------------------------------------------------------------------------- demo
