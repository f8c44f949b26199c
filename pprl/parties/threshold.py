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
    signed ``decryption-part``. The partial values themselves are wrapped for
    the combiner (by default the dealer, i.e. the authority that keeps the
    audit log): T parts reveal the aggregates, so whoever relays part files
    must not be able to read them.

``combine_release`` (the authority)
    Checks every part: signed by the holder it names, with the card the
    dealer recorded for that holder, for *this* release and key, addressed to
    the combiner, and with a valid proof for each column. Any bad part is
    refused with the holder's name; fewer than T good parts are refused. It
    returns the decrypted signed integers per column; writing the CSV and the
    audit entry is the caller's job, as in :func:`pprl.parties.authority.decrypt_release`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.identity import IdentityKey
from pprl.crypto.paillier import EncryptedVector, PaillierPublicKey
from pprl.crypto.threshold import (
    MAX_HOLDERS,
    PartialDecryption,
    PartialProof,
    ThresholdKeyShare,
    ThresholdPublicKey,
    combine_partials,
    deal,
    partial_decrypt,
    verify_partial,
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
    "CombinedRelease",
    "threshold_keygen",
    "load_threshold_public",
    "load_share",
    "partial_decrypt_release",
    "combine_release",
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


def load_threshold_public(
    path: PathLike, authority: Card | None = None, *, _allow_insecure: bool = False
) -> ThresholdSetup:
    """Read a signed threshold ``paillier.pub.json``; ``authority`` pins the dealer's card."""
    doc = read_document(path, "paillier-pub")
    dealer = verify_document(doc, None if authority is None else [authority], source=str(path), role="authority")
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
    return LoadedShare(setup, share)


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


def _part_document(
    me: PartyKey, loaded: LoadedShare, release: _Release, combiner: Card, *, workers: int | None, progress: bool
) -> dict[str, Any]:
    """The signed ``decryption-part`` for ``release`` (values wrapped for ``combiner``)."""
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
    wrapped = wrap(me.identity, me.name, combiner.public.agree_pub, combiner.name, b"".join(blobs),
                   _part_context(release.hash, share.index))
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
            "combiner": combiner.name,
            "score_columns": release.columns,
            "entities": len(release.doc["payload"]["entity_ids"]),
        },
        "payload": {"parts": b64e(wrapped), "proofs": proofs},
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

    ``cards`` pins the bureau's card, ``dealer`` the authority's; the part is
    wrapped for ``combiner`` (default: the dealer who signed the share).
    """
    loaded = load_share(me, share_path, dealer=dealer, _allow_insecure=_allow_insecure)
    release = _load_release(release_path, loaded.setup.public.public, cards, _allow_insecure)
    target = combiner if combiner is not None else loaded.setup.dealer
    doc = _part_document(me, loaded, release, target, workers=workers, progress=progress)
    return write_document(out, doc)


# --- combining ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CombinedRelease:
    """What :func:`combine_release` verified and decrypted.

    ``sums[column]`` are signed fixed-point integers in ``entity_ids`` order
    (apply ``decode_fixed(values, header["score_decimals"])``); ``release``
    is the verified release document (use it, not a re-read file, for the
    CSV and the audit entry); ``holders`` are the holders whose parts were
    verified, in index order. Unpacks as ``header, sums = result``.
    """

    header: dict[str, Any]
    sums: dict[str, list[int]] = field(repr=False)
    release: dict[str, Any] = field(repr=False)
    release_hash: str
    holders: tuple[str, ...]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.header, self.sums))


def combine_release(
    parts: Sequence[PathLike],
    release_path: PathLike,
    public_path: PathLike,
    *,
    me: PartyKey,
    cards: Sequence[Card] | None = None,
    authority: Card | None = None,
    workers: int | None = None,
    progress: bool = False,
    _allow_insecure: bool = False,
) -> CombinedRelease:
    """Verify T or more holders' parts of a release and decrypt its sums.

    ``me`` is the combiner the parts were wrapped for; ``cards`` pins the
    bureau's card, ``authority`` the dealer's card on ``public_path``. Every
    part must be signed by the holder it names with the card the dealer
    recorded, be for this release and key, and carry valid proofs; otherwise
    the error names the holder. PolicyError when fewer than T good parts remain.
    """
    setup = load_threshold_public(public_path, authority, _allow_insecure=_allow_insecure)
    tpk = setup.public
    release = _load_release(release_path, tpk.public, cards, _allow_insecure)
    chosen: dict[int, tuple[str, str, dict[str, Any], Card]] = {}
    for path in parts:
        source = str(path)
        pdoc = read_document(path, "decryption-part")
        try:
            signer = verify_document(pdoc, source=source)
        except (SignatureError, KeyFormatError) as exc:
            claimed = pdoc.get("header", {}).get("holder") if isinstance(pdoc.get("header"), dict) else None
            raise SignatureError(f"{exc} (part claims to be from holder '{claimed}')") from None
        name = signer.name
        if name not in setup.holders:
            raise SignatureError(f"{source}: signed by '{name}', who is not a holder of this threshold key")
        if signer.fingerprint != setup.fingerprints[name]:
            raise SignatureError(f"{source}: claims to be holder '{name}' but is not signed with that holder's card (forged)")
        header = pdoc.get("header")
        index = setup.index_of(name)
        if not isinstance(header, dict) or header.get("holder") != name or header.get("index") != index:
            raise DocumentError(f"{source}: part signed by holder '{name}' names another holder or index")
        if header.get("release_hash") != release.hash:
            raise DocumentError(f"{source}: part from holder '{name}' is for a different release")
        if header.get("paillier_pub_hash") != setup.pub_hash or header.get("paillier_fingerprint") != setup.fingerprint:
            raise KeyMismatchError(f"{source}: part from holder '{name}' is for a different threshold key")
        if header.get("combiner") != me.name:
            raise DecryptionError(f"{source}: part from holder '{name}' is addressed to '{header.get('combiner')}', not to '{me.name}'")
        if index in chosen:
            raise DocumentError(f"{source}: a second part from holder '{name}' (also {chosen[index][0]})")
        chosen[index] = (source, name, pdoc, signer)
    if len(chosen) < tpk.threshold:
        raise PolicyError(
            f"need {tpk.threshold} parts of the {tpk.holders} holders ({', '.join(setup.holders)}) "
            f"to decrypt, got {len(chosen)}"
        )
    public = tpk.public
    count = len(release.doc["payload"]["entity_ids"])
    width = public.ciphertext_bytes * count
    by_column: dict[str, list[PartialDecryption]] = {c: [] for c in release.columns}
    for index in sorted(chosen):
        source, name, pdoc, signer = chosen[index]
        try:
            payload = pdoc["payload"]
            blob = b64d(payload["parts"], f"{source}: parts")
            proofs = payload["proofs"]
            if not isinstance(proofs, dict):
                raise TypeError
        except (KeyError, TypeError):
            raise DocumentError(f"{source}: malformed part from holder '{name}'") from None
        try:
            data = unwrap(me.identity, me.name, signer.public.agree_pub, name, blob, _part_context(release.hash, index))
        except DecryptionError:
            raise DecryptionError(f"{source}: cannot open the part from holder '{name}' with this key (wrong key, or tampered)") from None
        if len(data) != width * len(release.columns):
            raise DecryptionError(f"{source}: part from holder '{name}' has the wrong number of values")
        for k, column in enumerate(release.columns):
            try:
                proof = PartialProof.from_dict(proofs.get(column))
                part = PartialDecryption.from_bytes(public, index, data[k * width : (k + 1) * width], proof)
                verify_partial(tpk, part, release.vectors[column], context=_proof_context(release.hash, column), workers=workers)
            except DecryptionError as exc:
                raise DecryptionError(f"{source}: part from holder '{name}', column '{column}': {exc}") from None
            by_column[column].append(part)
    sums = {
        column: combine_partials(tpk, by_column[column], release.vectors[column], verify=False,
                                 workers=workers, progress=progress)
        for column in release.columns
    }
    return CombinedRelease(
        header=dict(release.doc["header"]),
        sums=sums,
        release=release.doc,
        release_hash=release.hash,
        holders=tuple(chosen[i][1] for i in sorted(chosen)),
    )
