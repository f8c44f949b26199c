"""Combining T holders' decryption parts of a release (the last step of threshold decryption).

The combiner checks every part: signed by the holder it names, with the card
the dealer recorded for that holder, for *this* release and key, and with a
valid zero-knowledge proof for each column; any bad part is refused with the
holder's name, and fewer than T good parts are refused. Parts carry the
dealer-signed public key, so the combiner needs no copy of
``paillier.pub.json``; one given explicitly takes precedence and every part
must match it. Parts made for a named combiner are encrypted for that card and
need its key (``me``). The holders' signed approvals come back with the sums
so the audit entry records who agreed. Design: docs/threshold.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pprl.crypto.exchange import unwrap
from pprl.crypto.paillier.threshold.partials import (
    PartialDecryption,
    PartialProof,
    combine_partials,
    verify_partial,
)
from pprl.crypto.paillier.vector import EncryptedVector
from pprl.documents import Card, DecryptionPart, PaillierPub, Release, b64d, check_signature, document_hash
from pprl.errors import (
    DecryptionError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
    SignatureError,
)
from pprl.protocol.audit import verify_approval
from pprl.protocol.identity import PartyKey
from pprl.protocol.threshold.dealer import (
    ThresholdOptions,
    ThresholdSetup,
    dealer_pins,
    open_threshold_public,
    parse_setup,
    part_context,
    proof_context,
    verify_embedded_public,
)
from pprl.protocol.threshold.holder import check_release

__all__ = ["CombinedRelease", "combine_parts", "combine_vectors", "parts_setup"]


@dataclass(frozen=True)
class CombinedRelease:
    """What :func:`combine_parts` verified and decrypted.

    ``sums[column]`` are signed fixed-point integers in ``entity_ids`` order
    (apply ``decode_fixed(values, header["score_decimals"])``); ``release``
    is the verified release as JSON and ``document`` the typed release (use
    them, not a re-read file, for the CSV and the audit entry); ``holders`` are the holders whose parts were
    verified, in index order, and ``approvals`` their signed approvals;
    ``setup`` is the threshold key. Unpacks as ``header, sums = result``.
    """

    header: dict[str, Any]
    sums: dict[str, list[int]] = field(repr=False)
    release: dict[str, Any] = field(repr=False)
    release_hash: str
    holders: tuple[str, ...]
    setup: ThresholdSetup = field(repr=False)
    approvals: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    document: Release | None = field(default=None, repr=False, compare=False)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.header, self.sums))


def _setup_from_parts(
    docs: Sequence[tuple[str, dict[str, Any]]], authority: Card | Sequence[Card], allow_small: bool
) -> ThresholdSetup:
    """The threshold key from the first part that carries the dealer-signed public key."""
    for source, doc in docs:
        payload = doc.get("payload")
        pub = payload.get("paillier_pub") if isinstance(payload, dict) else None
        if pub is None:
            continue
        where = f"{source}: embedded public key"
        dealer = verify_embedded_public(pub, where, dealer_pins(authority))
        return parse_setup(pub, where, document_hash(pub), dealer, allow_small)
    raise DocumentError(
        "the parts carry no public key (made with an older pprl); give the key's signed public key as well"
    )


def _check_part(
    source: str, pdoc: dict[str, Any], setup: ThresholdSetup, release_hash: str, me: PartyKey | None
) -> tuple[str, int, Card]:
    """Signer, index and header of one part, or an error naming the holder."""
    try:
        signer = check_signature(pdoc, source=source)  # then bound to the dealer-signed holder list below
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
    if header.get("release_hash") != release_hash:
        raise DocumentError(f"{source}: part from holder '{name}' is for a different release")
    if header.get("paillier_pub_hash") != setup.pub_hash or header.get("paillier_fingerprint") != setup.fingerprint:
        raise KeyMismatchError(f"{source}: part from holder '{name}' is for a different threshold key")
    combiner = header.get("combiner")
    if combiner is not None:
        if me is None:
            raise DecryptionError(
                f"{source}: part from holder '{name}' is encrypted for '{combiner}'; combine with that party's key"
            )
        if combiner != me.name:
            raise DecryptionError(f"{source}: part from holder '{name}' is addressed to '{combiner}', not to '{me.name}'")
    return name, index, signer


def _part_values(
    source: str, pdoc: dict[str, Any], name: str, index: int, signer: Card, release_hash: str, me: PartyKey | None
) -> tuple[bytes, dict[str, Any], dict[str, Any] | None]:
    """(partial values, proofs, approval) of a checked part, unwrapping them if they were encrypted."""
    try:
        payload = pdoc["payload"]
        proofs, approval = payload["proofs"], payload.get("approval")
        if not isinstance(proofs, dict):
            raise TypeError
        if pdoc["header"].get("combiner") is None:
            return b64d(payload["values"], f"{source}: values"), proofs, approval
        blob = b64d(payload["parts"], f"{source}: parts")
    except (KeyError, TypeError):
        raise DocumentError(f"{source}: malformed part from holder '{name}'") from None
    if me is None:  # _check_part refuses this first; kept so the guarantee does not rest on call order
        raise DecryptionError(f"{source}: part from holder '{name}' is encrypted for a combiner; combine with its key")
    try:
        data = unwrap(me.identity, me.name, signer.public.agree_pub, name, blob, part_context(release_hash, index))
    except DecryptionError:
        raise DecryptionError(
            f"{source}: cannot open the part from holder '{name}' with this key (wrong key, or tampered)"
        ) from None
    return data, proofs, approval


def parts_setup(
    parts: Sequence[DecryptionPart],
    public: PaillierPub | None,
    authority: Card | Sequence[Card],
    options: ThresholdOptions,
) -> ThresholdSetup:
    """The threshold key the parts are for: ``public`` if given, else the dealer-signed copy they carry."""
    if public is not None:
        return open_threshold_public(public, authority, allow_insecure=options.allow_insecure)
    if parts:
        return _setup_from_parts([(p.source, p.wire) for p in parts], authority, options.allow_insecure)
    raise PolicyError("no decryption parts given")


def combine_vectors(
    parts: Sequence[DecryptionPart],
    setup: ThresholdSetup,
    target_hash: str,
    vectors: Mapping[str, EncryptedVector],
    options: ThresholdOptions,
    *,
    me: PartyKey | None = None,
    signed: bool = True,
) -> tuple[dict[str, list[int]], tuple[str, ...], tuple[dict[str, Any], ...]]:
    """Check T or more holders' parts of the document hashed ``target_hash`` and decrypt its ``vectors``.

    Returns (signed plaintexts per vector name, or raw ones in [0, n) when
    not ``signed``; holders used in index order; their signed approvals).
    Any bad part is refused with the holder's name.
    """
    tpk = setup.public
    chosen: dict[int, tuple[str, str, dict[str, Any], Card]] = {}
    for given in parts:
        source, pdoc = given.source, given.wire
        name, index, signer = _check_part(source, pdoc, setup, target_hash, me)
        if index in chosen:
            raise DocumentError(f"{source}: a second part from holder '{name}' (also {chosen[index][0]})")
        chosen[index] = (source, name, pdoc, signer)
    if len(chosen) < tpk.threshold:
        raise PolicyError(
            f"need {tpk.threshold} parts of the {tpk.holders} holders ({', '.join(setup.holders)}) "
            f"to decrypt, got {len(chosen)}"
        )
    key = tpk.public
    columns = list(vectors)
    widths = [key.ciphertext_bytes * len(vectors[c]) for c in columns]
    by_column: dict[str, list[PartialDecryption]] = {c: [] for c in columns}
    approvals = []
    for index in sorted(chosen):
        source, name, pdoc, signer = chosen[index]
        data, proofs, approval = _part_values(source, pdoc, name, index, signer, target_hash, me)
        if approval is not None:
            if verify_approval(approval, target_hash, setup.fingerprint, source=f"{source}: approval").fingerprint != signer.fingerprint:
                raise SignatureError(f"{source}: approval inside the part from holder '{name}' is signed by another card")
            approvals.append(approval)
        if len(data) != sum(widths):
            raise DecryptionError(f"{source}: part from holder '{name}' has the wrong number of values")
        offset = 0
        for column, width in zip(columns, widths, strict=True):
            try:
                proof = PartialProof.from_dict(proofs.get(column))
                part = PartialDecryption.from_bytes(key, index, data[offset : offset + width], proof)
                verify_partial(tpk, part, vectors[column], context=proof_context(target_hash, column),
                               workers=options.workers)
            except DecryptionError as exc:
                raise DecryptionError(f"{source}: part from holder '{name}', column '{column}': {exc}") from None
            by_column[column].append(part)
            offset += width
    sums = {
        column: combine_partials(tpk, by_column[column], vectors[column], verify=False,
                                 workers=options.workers, progress=options.progress, signed=signed)
        for column in columns
    }
    return sums, tuple(chosen[i][1] for i in sorted(chosen)), tuple(approvals)


def combine_parts(
    parts: Sequence[DecryptionPart],
    release: Release,
    public: PaillierPub | None = None,
    options: ThresholdOptions | None = None,
    *,
    me: PartyKey | None = None,
    cards: Sequence[Card],
    authority: Card | Sequence[Card],
) -> CombinedRelease:
    """Verify T or more holders' parts of a release and decrypt its sums.

    ``public`` is the key's signed public key (default: the copy the parts
    carry); ``me`` is needed only for parts encrypted for a named combiner;
    ``cards`` pins the bureau's card and ``authority`` the dealer (a card, or
    cards the dealer must be among). PolicyError when fewer than T good parts remain.
    """
    options = options or ThresholdOptions()
    setup = parts_setup(parts, public, authority, options)
    checked = check_release(release, setup.public.public, cards, options.allow_insecure)
    # packed sums come back raw, for the unpacking to judge (an overflow must not raise here, naming a position)
    sums, holders, approvals = combine_vectors(parts, setup, checked.hash, checked.vectors, options, me=me,
                                               signed=release.header.packing is None)
    return CombinedRelease(
        header=dict(release.wire["header"]),
        sums=sums,
        release=release.wire,
        release_hash=checked.hash,
        holders=holders,
        approvals=approvals,
        setup=setup,
        document=release,
    )
