"""A threshold key holder's step: open its share, partially decrypt a release, sign the part.

``partial_decrypt_release`` checks the bureau's signature on a release,
opens the holder's own share in memory, computes its partial decryption of
every score column with a zero-knowledge proof bound to the release hash and
column, and writes a signed ``decryption-part`` carrying the dealer-signed
public key and the holder's signed approval of the release. The partial
values are encrypted for a named combiner when one is given (``--for
CARD``); otherwise anyone holding T parts can combine them (Shoup's public
combining), so parts go only to the combiner. Dealing is in
:mod:`pprl.protocol.threshold.dealer`, combining in :mod:`pprl.protocol.threshold.combine`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.paillier.threshold.partials import (
    ThresholdKeyShare,
    partial_decrypt,
)
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
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
)
from pprl.protocol.identity import PartyKey
from pprl.protocol.threshold.dealer import (
    PathLike,
    ThresholdSetup,
    parse_setup,
    part_context,
    proof_context,
    share_context,
    verify_embedded_public,
)

__all__ = ["LoadedShare", "ReleaseSums", "approval_document", "load_release", "load_share", "partial_decrypt_release"]


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
    setup = parse_setup(doc, source, pub_hash, signer, _allow_insecure)
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
                     share_context(setup.fingerprint, index, pub_hash))
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
    signer = verify_embedded_public(pub, f"{source}: embedded public key", [dealer])
    if signer.fingerprint != dealer.fingerprint or document_hash(pub) != pub_hash:
        raise KeyMismatchError(f"{source}: embedded public key is not the one this share belongs to")
    return pub


@dataclass(frozen=True)
class ReleaseSums:
    """A verified release with every column's sums parsed under the threshold key."""

    doc: dict[str, Any]
    hash: str
    columns: list[str]
    vectors: dict[str, EncryptedVector]


def load_release(
    path: PathLike, public: PaillierPublicKey, cards: Sequence[Card] | None, allow_small: bool
) -> ReleaseSums:
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
    return ReleaseSums(doc, document_hash(doc), list(columns), vectors)


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
    me: PartyKey, loaded: LoadedShare, release: ReleaseSums, combiner: Card | None, *, workers: int | None,
    progress: bool,
) -> dict[str, Any]:
    """The signed ``decryption-part`` for ``release`` (values wrapped for ``combiner`` if one is named)."""
    share, setup = loaded.share, loaded.setup
    public = setup.public.public
    blobs, proofs = [], {}
    for column in release.columns:
        part = partial_decrypt(
            share, release.vectors[column], context=proof_context(release.hash, column),
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
                                     part_context(release.hash, share.index)))
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
    release = load_release(release_path, loaded.setup.public.public, cards, _allow_insecure)
    doc = _part_document(me, loaded, release, combiner, workers=workers, progress=progress)
    return write_document(out, doc)


