"""A threshold key holder's step: open its share, partially decrypt a release, sign the part.

:func:`decryption_part` checks the bureau's signature on a release, opens the
holder's own share in memory, computes its partial decryption of every score
column with a zero-knowledge proof bound to the release hash and column, and
signs a ``decryption-part`` carrying the dealer-signed public key and the
holder's signed approval of the release. The partial values are encrypted for
a named combiner when one is given; otherwise anyone holding T parts can
combine them (Shoup's public combining), so parts go only to the combiner.
Design: docs/threshold.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.paillier.threshold.partials import ThresholdKeyShare, partial_decrypt
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
from pprl.documents import (
    Card,
    DecryptionApproval,
    DecryptionPart,
    DecryptionPartHeader,
    DecryptionPartPayload,
    PaillierShare,
    Release,
    document_hash,
    seal,
    verify,
)
from pprl.errors import DecryptionError, DocumentError, KeyFormatError, KeyMismatchError
from pprl.protocol.identity import PartyKey
from pprl.protocol.threshold.dealer import (
    ThresholdOptions,
    ThresholdSetup,
    parse_setup,
    part_context,
    proof_context,
    share_context,
    verify_embedded_public,
)

__all__ = ["LoadedShare", "ReleaseSums", "approval_document", "check_release", "decryption_part", "open_share"]


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


def open_share(
    me: PartyKey, doc: PaillierShare, *, dealer: Card | Sequence[Card], allow_insecure: bool = False
) -> LoadedShare:
    """Open ``me``'s share in memory: dealer's signature, addressee, unwrap, v_i check.

    ``dealer`` pins the authority's card. DecryptionError if the share is for
    someone else or cannot be opened with ``me``'s key.
    """
    source = doc.source
    signer = verify(doc, [dealer] if isinstance(dealer, Card) else dealer, source=source, role="authority")
    if doc.holder != me.name:
        raise DecryptionError(f"{source}: this share is addressed to '{doc.holder}', not to '{me.name}'")
    pub_hash = doc.paillier_pub_hash
    setup = parse_setup(doc.wire, source, pub_hash, signer, allow_insecure)
    index = setup.index_of(me.name)
    if doc.index != index:
        raise DocumentError(f"{source}: share index disagrees with the holder list")
    if setup.fingerprints[me.name] != me.card.fingerprint:
        raise DecryptionError(f"{source}: share was made for another card named '{me.name}', not this key")
    try:
        raw = unwrap(me.identity, me.name, doc.ephemeral_pub, signer.name, doc.wrapped_share,
                     share_context(setup.fingerprint, index, pub_hash))
    except (DecryptionError, ValueError):
        raise DecryptionError(f"{source}: cannot open the share with this key (wrong key, or tampered)") from None
    try:
        share = ThresholdKeyShare.from_bytes(setup.public, index, raw)
    except (KeyFormatError, KeyMismatchError):
        raise KeyMismatchError(f"{source}: share does not match its verification key (damaged)") from None
    return LoadedShare(setup, share, _embedded_public(doc.wire, source, pub_hash, signer))


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

    doc: Release
    hash: str
    columns: list[str]
    vectors: dict[str, EncryptedVector]


def check_release(
    release: Release, public: PaillierPublicKey, cards: Sequence[Card], allow_small: bool
) -> ReleaseSums:
    """Check a bureau-signed release under ``public``; parse every column's sums."""
    source = release.source
    verify(release, cards, source=source, role="bureau")
    header, payload = release.header, release.payload
    ids, sums = payload.entity_ids, payload.sums
    # A packed release carries one ciphertext per entity holding every column.
    columns = ["packed"] if header.packing is not None else list(header.score_columns)
    if header.paillier_fingerprint != public.fingerprint:
        raise KeyMismatchError(f"{source}: encrypted under a different Paillier key than this threshold key")
    if PaillierPublicKey.from_dict(header.paillier_key, allow_small=allow_small) != public:
        raise KeyMismatchError(f"{source}: carries a different Paillier key than this threshold key")
    if not columns:
        raise DocumentError(f"{source}: release names no score columns")
    if len(set(columns)) != len(columns):
        raise DocumentError(f"{source}: release repeats a score column")
    vectors = {}
    for column in columns:
        if column not in sums:
            raise DocumentError(f"{source}: not a well-formed release")
        enc = EncryptedVector.from_bytes(public, sums[column])
        if len(enc) != len(ids):
            raise DocumentError(f"{source}: column '{column}' has {len(enc)} sums for {len(ids)} entities")
        vectors[column] = enc
    return ReleaseSums(release, release.hash, columns, vectors)


def approval_document(me: PartyKey, release_hash: str, setup: ThresholdSetup, index: int) -> DecryptionApproval:
    """A holder's small signed statement that it helped decrypt this release (kept in the audit log)."""
    doc = DecryptionApproval(
        release_hash=release_hash, paillier_fingerprint=setup.fingerprint, paillier_pub_hash=setup.pub_hash,
        holder=me.name, index=index,
    )
    return seal(doc, me.identity, me.card)


def decryption_part(
    me: PartyKey,
    share: LoadedShare,
    release: Release,
    options: ThresholdOptions | None = None,
    *,
    cards: Sequence[Card],
    combiner: Card | None = None,
) -> DecryptionPart:
    """``me``'s signed decryption part of a bureau-signed release.

    ``cards`` pins the bureau's card. With ``combiner``, the partial values
    are encrypted for that card, so only it can combine them; without, the
    part is signed and proved but readable by whoever holds T parts (Shoup's
    public combining): send it only to the combiner. Either way the part
    carries the holder's signed approval and the dealer-signed public key,
    so a combiner needs nothing else.
    """
    options = options or ThresholdOptions()
    checked = check_release(release, share.setup.public.public, cards, options.allow_insecure)
    key_share, setup = share.share, share.setup
    public = setup.public.public
    blobs, proofs = [], {}
    for column in checked.columns:
        part = partial_decrypt(
            key_share, checked.vectors[column], context=proof_context(checked.hash, column),
            workers=options.workers, progress=options.progress,
        )
        blobs.append(part.values_to_bytes(public))
        proofs[column] = part.proof.to_dict()
    values = b"".join(blobs)
    approval = approval_document(me, checked.hash, setup, key_share.index).wire
    wrapped = None
    if combiner is not None:
        wrapped = wrap(me.identity, me.name, combiner.public.agree_pub, combiner.name, values,
                       part_context(checked.hash, key_share.index))
    payload = DecryptionPartPayload(
        proofs=proofs, approval=approval, values=values if combiner is None else None, parts=wrapped,
        paillier_pub=share.pub_doc,
    )
    header = DecryptionPartHeader(
        release_hash=checked.hash,
        paillier_fingerprint=public.fingerprint,
        paillier_pub_hash=setup.pub_hash,
        holder=me.name,
        index=key_share.index,
        threshold=setup.public.threshold,
        combiner=None if combiner is None else combiner.name,
        score_columns=checked.columns,
        entities=len(release.payload.entity_ids),
    )
    return seal(DecryptionPart(header=header, payload=payload), me.identity, me.card)
