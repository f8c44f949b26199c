"""Threshold decryption of releases: T of ℓ named holders must cooperate to open any sum.

Three steps, each a function the CLI wraps:

``threshold_keygen`` (the authority, once, as trusted dealer)
    Draws a threshold Paillier key (:mod:`pprl.crypto.threshold`), writes the
    signed public key ``DIR/paillier.pub.json`` (the ordinary ``paillier-pub``
    document, so platforms submit unchanged, plus a ``threshold`` object) and
    one ``DIR/<holder>.share.json`` per holder. Each share is wrapped for its
    holder's card with :func:`pprl.crypto.exchange.wrap` under a fresh
    *ephemeral* X25519 key that is discarded at once, so not even the dealer
    can reopen a share file later; the dealer's Ed25519 signature over the
    document authenticates it. No file ever holds p, q or d. Share files are
    written 0600 (they are encrypted, but are still the most sensitive thing
    here); a holder never writes its share out in the clear: it is unwrapped
    in memory each time it is used.

``partial_decrypt_release`` (each holder)
    Checks the bureau's signature on a release, opens the holder's own share,
    computes its partial decryption of every score column with a
    zero-knowledge proof bound to the release hash and column, and writes a
    signed ``decryption-part`` carrying the dealer-signed public key and the
    holder's signed approval of the release. The partial values are
    encrypted for a named combiner when one is given (``--for CARD``);
    otherwise anyone holding T parts can combine them (Shoup's public
    combining), so parts go only to the combiner.

Combining lives in :mod:`pprl.parties.threshold_combine`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.identity import IdentityKey
from pprl.crypto.paillier import EncryptedVector, PaillierPublicKey
from pprl.crypto.threshold import (
    MAX_HOLDERS,
    ThresholdKeyShare,
    ThresholdPublicKey,
    deal,
    partial_decrypt,
)
from pprl.documents import (
    Card,
    b64d,
    b64e,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import (
    DecryptionError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
    SignatureError,
)
from pprl.parties.identity import PartyKey

__all__ = [
    "MIN_THRESHOLD_BITS",
    "ThresholdKeygenResult",
    "ThresholdSetup",
    "LoadedShare",
    "threshold_keygen",
    "load_threshold_public",
    "load_share",
    "partial_decrypt_release",
    "approval_document",
    "dealer_pins",
]

MIN_THRESHOLD_BITS = 2048
_SHARE_CONTEXT = b"pprl-paillier-share-v1"
_PART_CONTEXT = b"pprl-decryption-part-v1"
_PROOF_CONTEXT = b"pprl-decryption-proof-v1"

PathLike = str | os.PathLike[str]


def _framed(*items: bytes) -> bytes:
    return b"".join(len(x).to_bytes(4, "big") + x for x in items)


def _share_context(fingerprint: str, index: int, pub_hash: str) -> bytes:
    return _framed(_SHARE_CONTEXT, fingerprint.encode(), index.to_bytes(4, "big"), pub_hash.encode())


def _part_context(release_hash: str, index: int) -> bytes:
    return _framed(_PART_CONTEXT, release_hash.encode(), index.to_bytes(4, "big"))


def _proof_context(release_hash: str, column: str) -> bytes:
    return _framed(_PROOF_CONTEXT, release_hash.encode(), column.encode("utf-8"))


# --- the public key with its threshold object --------------------------------------------


@dataclass(frozen=True)
class ThresholdSetup:
    """A threshold key as the documents describe it: key, holder names, cards, provenance.

    ``holders[i - 1]`` is holder i; ``fingerprints`` maps each holder to the
    card fingerprint the dealer wrapped its share for; ``pub_hash`` is the
    hash of the signed ``paillier.pub.json``; ``dealer`` signed it.
    """

    public: ThresholdPublicKey
    holders: tuple[str, ...]
    fingerprints: Mapping[str, str] = field(repr=False, compare=False)
    pub_hash: str
    dealer: Card = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """The Paillier key fingerprint (as in every submission and release header)."""
        return self.public.public.fingerprint

    def index_of(self, name: str) -> int:
        """1-based holder index of ``name``; SignatureError if not a holder."""
        if name not in self.holders:
            raise SignatureError(f"'{name}' is not a holder of threshold key {self.fingerprint}")
        return self.holders.index(name) + 1


def _threshold_object(tpk: ThresholdPublicKey, holders: Sequence[Card]) -> dict[str, Any]:
    width = tpk.element_bytes
    return {
        "t": tpk.threshold,
        "holders": [c.name for c in holders],
        "holder_fingerprints": {c.name: c.fingerprint for c in holders},
        "verification_base": b64e(tpk.verification_base.to_bytes(width, "big")),
        "verification_keys": {
            c.name: b64e(k.to_bytes(width, "big")) for c, k in zip(holders, tpk.verification_keys)
        },
        "delta": tpk.delta,
    }


def _parse_setup(
    doc: Mapping[str, Any], source: str, pub_hash: str, dealer: Card, allow_small: bool
) -> ThresholdSetup:
    """Rebuild a ThresholdSetup from a document's ``key`` and ``threshold`` fields."""
    try:
        key = PaillierPublicKey.from_dict(doc.get("key"), allow_small=allow_small)
    except KeyFormatError as exc:
        raise KeyFormatError(f"{source}: {exc}") from None
    if key.fingerprint != doc.get("fingerprint"):
        raise KeyMismatchError(f"{source}: key does not match its fingerprint")
    th = doc.get("threshold")
    if not isinstance(th, dict):
        raise DocumentError(f"{source}: not a threshold key (no 'threshold' object)")
    try:
        holders = th["holders"]
        fingerprints, vks = th["holder_fingerprints"], th["verification_keys"]
        if not (isinstance(holders, list) and all(isinstance(h, str) for h in holders)):
            raise TypeError
        if len(set(holders)) != len(holders) or set(fingerprints) != set(holders) or set(vks) != set(holders):
            raise DocumentError(f"{source}: threshold holder lists disagree or repeat a name")
        if th["delta"] != math.factorial(len(holders)):
            raise DocumentError(f"{source}: threshold 'delta' is not {len(holders)}!")
        width = key.ciphertext_bytes

        def element(text: Any, what: str) -> int:
            raw = b64d(text, f"{source}: {what}")
            if len(raw) != width:
                raise DocumentError(f"{source}: {what} has the wrong length for this key")
            return int.from_bytes(raw, "big")

        tpk = ThresholdPublicKey(
            key,
            th["t"],
            element(th["verification_base"], "verification_base"),
            tuple(element(vks[h], f"verification key of '{h}'") for h in holders),
        )
        prints = {h: str(fingerprints[h]) for h in holders}
    except (KeyError, TypeError, AttributeError):
        raise DocumentError(f"{source}: malformed 'threshold' object") from None
    except KeyFormatError as exc:
        raise KeyFormatError(f"{source}: {exc}") from None
    return ThresholdSetup(tpk, tuple(holders), prints, pub_hash, dealer)


def dealer_pins(authority: Card | Sequence[Card] | None) -> list[Card] | None:
    """``authority`` as the list of cards the dealer must be among (None: no pin)."""
    if authority is None:
        return None
    return [authority] if isinstance(authority, Card) else list(authority)


def load_threshold_public(
    path: PathLike, authority: Card | Sequence[Card] | None = None, *, _allow_insecure: bool = False
) -> ThresholdSetup:
    """Read a signed threshold ``paillier.pub.json``; ``authority`` pins the dealer (a card, or cards it must be among)."""
    doc = read_document(path, "paillier-pub")
    dealer = verify_document(doc, dealer_pins(authority), source=str(path), role="authority")
    return _parse_setup(doc, str(path), document_hash(doc), dealer, _allow_insecure)


# --- keygen ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdKeygenResult:
    """Where :func:`threshold_keygen` wrote the public key and each holder's share."""

    public_path: Path
    share_paths: dict[str, Path]
    fingerprint: str
    threshold: int
    holders: tuple[str, ...]


def threshold_keygen(
    me: PartyKey,
    bits: int,
    threshold: int,
    holders: Sequence[Card],
    directory: PathLike,
    *,
    _allow_insecure: bool = False,
) -> ThresholdKeygenResult:
    """Deal a T-of-ℓ Paillier key: signed ``paillier.pub.json`` and one wrapped share per holder.

    Holders are indexed 1..ℓ in the order given. Refuses a non-authority
    dealer, ``bits`` below 2048 (``_allow_insecure`` is for tests only),
    T outside 1..ℓ, a repeated holder (by name or by card), and existing
    output files. The full key exists only inside this call.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority deals the threshold key; '{me.name}' is a {me.role}")
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise KeyFormatError("--bits must be an integer")
    if bits < MIN_THRESHOLD_BITS and not _allow_insecure:
        raise KeyFormatError(f"--bits {bits} is too small; use {MIN_THRESHOLD_BITS} or more")
    cards = list(holders)
    if not 1 <= len(cards) <= MAX_HOLDERS:
        raise PolicyError(f"a threshold key needs 1 to {MAX_HOLDERS} holders, not {len(cards)}")
    for card in cards:
        if not isinstance(card, Card):
            raise KeyFormatError("holders must be party cards")
    for i, card in enumerate(cards):
        for other in cards[:i]:
            if card.name == other.name or card.fingerprint == other.fingerprint:
                raise DocumentError(f"holder '{card.name}' is listed twice; every holder needs its own card")
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= len(cards):
        raise PolicyError(f"--threshold {threshold} must be between 1 and the {len(cards)} holders")
    d = Path(directory)
    public_path = d / "paillier.pub.json"
    share_paths = {c.name: d / f"{c.name}.share.json" for c in cards}
    for p in [public_path, *share_paths.values()]:
        if p.exists():
            raise DocumentError(f"{p}: already exists; refusing to overwrite a key file")

    tpk, shares = deal(bits, threshold, len(cards), _allow_insecure=_allow_insecure)
    public = tpk.public
    th = _threshold_object(tpk, cards)
    pub_doc = sign_document(
        {"kind": "paillier-pub", "version": 1, "fingerprint": public.fingerprint, "key": public.to_dict(), "threshold": th},
        me.identity,
        me.card,
    )
    pub_hash = document_hash(pub_doc)
    for card, share in zip(cards, shares):
        ephemeral = IdentityKey.generate()  # only the holder can reopen the share, not the dealer
        blob = wrap(
            ephemeral, me.name, card.public.agree_pub, card.name, share.to_bytes(),
            _share_context(public.fingerprint, share.index, pub_hash),
        )
        share_doc = {
            "kind": "paillier-share",
            "version": 1,
            "holder": card.name,
            "index": share.index,
            "fingerprint": public.fingerprint,
            "paillier_pub_hash": pub_hash,
            "key": public.to_dict(),
            "threshold": th,
            # the signed public key travels with the share into every part, so a
            # combiner needs no separate copy of paillier.pub.json
            "paillier_pub": pub_doc,
            "ephemeral_pub": b64e(ephemeral.public().agree_pub),
            "wrapped_share": b64e(blob),
        }
        write_document(share_paths[card.name], sign_document(share_doc, me.identity, me.card), private=True)
        del ephemeral, blob
    del shares
    write_document(public_path, pub_doc)
    return ThresholdKeygenResult(
        public_path=public_path,
        share_paths=share_paths,
        fingerprint=public.fingerprint,
        threshold=tpk.threshold,
        holders=tuple(c.name for c in cards),
    )


# --- holders -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedShare:
    """A holder's opened share with the setup it belongs to. Never printed."""

    setup: ThresholdSetup
    share: ThresholdKeyShare = field(repr=False)
    #: The dealer-signed ``paillier-pub`` document the share carries (None for
    #: shares dealt before shares carried it).
    pub_doc: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def holder(self) -> str:
        return self.setup.holders[self.share.index - 1]


def load_share(
    me: PartyKey, path: PathLike, *, dealer: Card | None = None, _allow_insecure: bool = False
) -> LoadedShare:
    """Open ``me``'s share file in memory: dealer's signature, addressee, unwrap, v_i check.

    ``dealer`` pins the authority's card. DecryptionError if the share is for
    someone else or cannot be opened with ``me``'s key.
    """
    source = str(path)
    doc = read_document(path, "paillier-share")
    signer = verify_document(doc, None if dealer is None else [dealer], source=source, role="authority")
    holder = doc.get("holder")
    if holder != me.name:
        raise DecryptionError(f"{source}: this share is addressed to '{holder}', not to '{me.name}'")
    pub_hash = doc.get("paillier_pub_hash")
    if not isinstance(pub_hash, str):
        raise DocumentError(f"{source}: malformed share (no paillier_pub_hash)")
    setup = _parse_setup(doc, source, pub_hash, signer, _allow_insecure)
    index = setup.index_of(me.name)
    if doc.get("index") != index:
        raise DocumentError(f"{source}: share index disagrees with the holder list")
    if setup.fingerprints[me.name] != me.card.fingerprint:
        raise DecryptionError(f"{source}: share was made for another card named '{me.name}', not this key")
    try:
        ephemeral_pub = b64d(doc["ephemeral_pub"], f"{source}: ephemeral_pub")
        blob = b64d(doc["wrapped_share"], f"{source}: wrapped_share")
    except KeyError:
        raise DocumentError(f"{source}: malformed share (no wrapped share)") from None
    try:
        raw = unwrap(me.identity, me.name, ephemeral_pub, signer.name, blob,
                     _share_context(setup.fingerprint, index, pub_hash))
    except (DecryptionError, ValueError):
        raise DecryptionError(f"{source}: cannot open the share with this key (wrong key, or tampered)") from None
    try:
        share = ThresholdKeyShare.from_bytes(setup.public, index, raw)
    except (KeyFormatError, KeyMismatchError):
        raise KeyMismatchError(f"{source}: share does not match its verification key (damaged)") from None
    return LoadedShare(setup, share, _embedded_public(doc, source, pub_hash, signer))


def _embedded_public(doc: Mapping[str, Any], source: str, pub_hash: str, dealer: Card) -> dict[str, Any] | None:
    """The signed public key inside a share, checked: same dealer, the hash the share names."""
    pub = doc.get("paillier_pub")
    if pub is None:
        return None
    if not isinstance(pub, dict) or pub.get("kind") != "paillier-pub":
        raise DocumentError(f"{source}: malformed embedded public key")
    signer = verify_document(pub, [dealer], source=f"{source}: embedded public key", role="authority")
    if signer.fingerprint != dealer.fingerprint or document_hash(pub) != pub_hash:
        raise KeyMismatchError(f"{source}: embedded public key is not the one this share belongs to")
    return pub


@dataclass(frozen=True)
class _Release:
    doc: dict[str, Any]
    hash: str
    columns: list[str]
    vectors: dict[str, EncryptedVector]


def _load_release(
    path: PathLike, public: PaillierPublicKey, cards: Sequence[Card] | None, allow_small: bool
) -> _Release:
    """Read and check a bureau-signed release under ``public``; parse every column's sums."""
    source = str(path)
    doc = read_document(path, "release")
    verify_document(doc, cards, source=source, role="bureau")
    try:
        header, payload = doc["header"], doc["payload"]
        ids, sums = payload["entity_ids"], payload["sums"]
        # A packed release carries one ciphertext per entity holding every column.
        columns = ["packed"] if header.get("packing") is not None else header["score_columns"]
        if header["paillier_fingerprint"] != public.fingerprint:
            raise KeyMismatchError(f"{source}: encrypted under a different Paillier key than this threshold key")
        if PaillierPublicKey.from_dict(header["paillier_key"], allow_small=allow_small) != public:
            raise KeyMismatchError(f"{source}: carries a different Paillier key than this threshold key")
        if not (isinstance(columns, list) and columns and all(isinstance(c, str) for c in columns)):
            raise DocumentError(f"{source}: release names no score columns")
        if len(set(columns)) != len(columns):
            raise DocumentError(f"{source}: release repeats a score column")
        vectors = {}
        for column in columns:
            enc = EncryptedVector.from_bytes(public, b64d(sums[column], f"{source}: sums.{column}"))
            if len(enc) != len(ids):
                raise DocumentError(f"{source}: column '{column}' has {len(enc)} sums for {len(ids)} entities")
            vectors[column] = enc
    except (KeyError, TypeError):
        raise DocumentError(f"{source}: not a well-formed release") from None
    return _Release(doc, document_hash(doc), list(columns), vectors)


def approval_document(me: PartyKey, release_hash: str, setup: ThresholdSetup, index: int) -> dict[str, Any]:
    """A holder's small signed statement that it helped decrypt this release (kept in the audit log)."""
    doc = {
        "kind": "decryption-approval",
        "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "release_hash": release_hash,
        "paillier_fingerprint": setup.fingerprint,
        "paillier_pub_hash": setup.pub_hash,
        "holder": me.name,
        "index": index,
    }
    return sign_document(doc, me.identity, me.card)


def _part_document(
    me: PartyKey, loaded: LoadedShare, release: _Release, combiner: Card | None, *, workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The signed ``decryption-part`` for ``release`` (values wrapped for ``combiner`` if one is named)."""
    share, setup = loaded.share, loaded.setup
    public = setup.public.public
    blobs, proofs = [], {}
    for column in release.columns:
        part = partial_decrypt(
            share, release.vectors[column], context=_proof_context(release.hash, column),
            workers=workers, progress=progress,
        )
        blobs.append(part.values_to_bytes(public))
        proofs[column] = part.proof.to_dict()
    values = b"".join(blobs)
    payload: dict[str, Any] = {"proofs": proofs, "approval": approval_document(me, release.hash, setup, share.index)}
    if combiner is None:
        payload["values"] = b64e(values)
    else:
        payload["parts"] = b64e(wrap(me.identity, me.name, combiner.public.agree_pub, combiner.name, values,
                                     _part_context(release.hash, share.index)))
    if loaded.pub_doc is not None:
        payload["paillier_pub"] = loaded.pub_doc
    doc = {
        "kind": "decryption-part",
        "version": 1,
        "header": {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "release_hash": release.hash,
            "paillier_fingerprint": public.fingerprint,
            "paillier_pub_hash": setup.pub_hash,
            "holder": me.name,
            "index": share.index,
            "threshold": setup.public.threshold,
            "combiner": None if combiner is None else combiner.name,
            "score_columns": release.columns,
            "entities": len(release.doc["payload"]["entity_ids"]),
        },
        "payload": payload,
    }
    return sign_document(doc, me.identity, me.card)


def partial_decrypt_release(
    me: PartyKey,
    share_path: PathLike,
    release_path: PathLike,
    out: PathLike,
    *,
    cards: Sequence[Card] | None = None,
    dealer: Card | None = None,
    combiner: Card | None = None,
    workers: int | None = None,
    progress: bool = False,
    _allow_insecure: bool = False,
) -> Path:
    """Write ``me``'s signed decryption part of a bureau-signed release; return its path.

    ``cards`` pins the bureau's card, ``dealer`` the authority's. With
    ``combiner``, the partial values are encrypted for that card, so only it
    can combine them; without, the part is signed and proved but readable by
    whoever holds T parts (Shoup's public combining) — send it only to the
    combiner. Either way the part carries the holder's signed approval and
    the dealer-signed public key, so a combiner needs nothing else.
    """
    loaded = load_share(me, share_path, dealer=dealer, _allow_insecure=_allow_insecure)
    release = _load_release(release_path, loaded.setup.public.public, cards, _allow_insecure)
    doc = _part_document(me, loaded, release, combiner, workers=workers, progress=progress)
    return write_document(out, doc)


