"""The lender product: consented queries, answers only the lender can read, every use on the record.

A lender asks about applicants by pseudonym, each with the consent it holds
(:func:`make_query`). The bureau checks the query (:func:`check_query`: a
registered lender, consent present, of the query's purpose, given to this
lender, issued and not expired), sums each found applicant's packed score
ciphertexts and adds a uniform mask under encryption, wrapping the masks for
the lender alone (:func:`build_answer`; replays and quotas are the registry's,
which holds the history). The authority decrypts only masked values
(:func:`decrypt_answer`), after its own checks and an audit entry; the lender
removes the masks (:func:`open_answer`). Neither the bureau, nor the
authority, nor any platform learns an answer. Design: docs/registry.md#queries.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.paillier.packing import PackingSpec, mask_sums, unmask_packed
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    decode_fixed,
    decrypt_raw,
)
from pprl.documents import (
    Answer,
    AnswerDecryption,
    AnswerDecryptionHeader,
    AnswerHeader,
    AnswerPayload,
    Card,
    Query,
    QueryHeader,
    QueryPayload,
    Receipt,
    ReceiptHeader,
    ValuesPayload,
    now,
    seal,
    verify,
)
from pprl.errors import DecryptionError, DocumentError, KeyFormatError, KeyMismatchError, OptionError, PolicyError
from pprl.protocol.audit import next_entry
from pprl.protocol.identity import PartyKey

__all__ = [
    "PURPOSES",
    "AnswerPolicy",
    "Consent",
    "Found",
    "build_answer",
    "check_query",
    "decrypt_answer",
    "make_query",
    "make_receipts",
    "open_answer",
    "open_receipt",
]

#: What a lender may ask for (the consent's purpose must be the query's).
PURPOSES = ("loan-application", "credit-limit-review", "post-loan-monitoring")
_MASK_CONTEXT = b"pprl-answer-masks-v1"
_VALUES_CONTEXT = b"pprl-answer-values-v1"


def _lender_card(lenders: Sequence[Card], name: str) -> Card:
    found = [c for c in lenders if c.name == name and c.role == "lender"]
    if not found:
        raise DocumentError(f"the answer is for lender '{name}', whose card was not given")
    return found[0]


@dataclass(frozen=True)
class Consent:
    """A consent record a lender holds for one applicant.

    Attributes:
        reference: SHA-256 (hex) of the applicant's signed authorisation.
        purpose: one of :data:`PURPOSES`.
        issued, expires: ISO 8601 UTC timestamps.
    """

    reference: str
    purpose: str
    issued: str
    expires: str

    def __post_init__(self) -> None:
        if len(self.reference) != 64 or any(c not in "0123456789abcdef" for c in self.reference):
            raise OptionError("a consent {reference} is the SHA-256 (64 hex digits) of the authorisation", "reference")
        if self.purpose not in PURPOSES:
            raise OptionError(f"a consent {{purpose}} is one of {', '.join(PURPOSES)}, not '{self.purpose}'", "purpose")
        if not _instant(self.issued, "issued") < _instant(self.expires, "expires"):
            raise OptionError("a consent expires after it is {issued}", "issued")


def _instant(text: Any, what: str) -> datetime:
    """An ISO 8601 time with its UTC offset, comparable whatever offset it was written with."""
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise OptionError(f"a consent's {{{what}}} is not an ISO 8601 time", what) from None
    if value.tzinfo is None:
        raise OptionError(f"a consent's {{{what}}} needs its UTC offset", what)
    return value


def make_query(me: PartyKey, items: Sequence[tuple[bytes, Consent]], purpose: str) -> Query:
    """The lender's signed query: per applicant its pseudonym and the consent it holds."""
    if me.role != "lender":
        raise KeyFormatError(f"only a lender queries the bureau; '{me.name}' is a {me.role}")
    if purpose not in PURPOSES:
        raise OptionError(f"{{purpose}} must be one of {', '.join(PURPOSES)}, not '{purpose}'", "purpose")
    body = [
        {"pseudonym": p.hex(), "consent": {"reference": c.reference, "purpose": c.purpose, "issued": c.issued,
                                           "expires": c.expires, "lender": me.name}}
        for p, c in items
    ]
    header = QueryHeader(lender=me.name, purpose=purpose, count=len(body), nonce=secrets.token_hex(16))
    return seal(Query(header=header, payload=QueryPayload(items=body)), me.identity, me.card)


def check_query(query: Query, lenders: Sequence[Card], at: str | None = None) -> Card:
    """A query's checks that need no history: signed by a registered lender, every consent present, of the
    query's purpose, given to this lender, issued and not expired ``at`` (default now). Returns the lender."""
    source = query.source
    lender = verify(query, lenders, source=source, role="lender")
    header = query.header
    if header.lender != lender.name:
        raise DocumentError(f"{source}: names lender '{header.lender}' but '{lender.name}' signed it")
    if header.purpose not in PURPOSES:
        raise PolicyError(f"{source}: purpose '{header.purpose}' is not one a lender may ask for")
    items = query.payload.items
    if len(items) != header.count:
        raise DocumentError(f"{source}: holds {len(items)} applicants, not the {header.count} it declares")
    moment = at or now()
    references = set()
    for number, item in enumerate(items, start=1):
        consent = item.get("consent")
        if not isinstance(consent, dict):
            raise PolicyError(f"{source}: applicant {number} has no consent; nothing is answered")
        if consent.get("lender") != lender.name:
            raise PolicyError(f"{source}: applicant {number}: the consent was given to another lender")
        if consent.get("purpose") != header.purpose:
            raise PolicyError(f"{source}: applicant {number}: the consent is for {consent.get('purpose')}, "
                              f"not {header.purpose}")
        issued, expires = _instant(consent.get("issued"), "issued"), _instant(consent.get("expires"), "expires")
        if not issued <= _instant(moment, "time") < expires:
            raise PolicyError(f"{source}: applicant {number}: the consent is expired or not yet valid")
        if consent["reference"] in references:
            raise PolicyError(f"{source}: applicant {number}: a consent is used twice in one query")
        references.add(consent["reference"])
    return lender


@dataclass(frozen=True)
class AnswerPolicy:
    """The bureau's release policy for answers.

    Attributes:
        min_platforms: answer an applicant only when at least this many platforms hold a record of them.
        daily_quota: most applicants one lender may ask about per UTC day.
    """

    min_platforms: int = 1
    daily_quota: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.min_platforms, bool) or not isinstance(self.min_platforms, int) or self.min_platforms < 1:
            raise OptionError("{min_platforms} must be at least 1", "min_platforms")
        if isinstance(self.daily_quota, bool) or not isinstance(self.daily_quota, int) or self.daily_quota < 0:
            raise OptionError("{daily_quota} must be a whole number >= 0", "daily_quota")


@dataclass(frozen=True)
class Found:
    """What the registry holds for one query item: (platform, packed ciphertext) per record, or nothing."""

    records: list[tuple[str, bytes]] = field(default_factory=list, repr=False)


def build_answer(
    me: PartyKey,
    query: Query,
    lender: Card,
    found: Sequence[Found],
    parameters: Mapping[str, Any],
    policy: AnswerPolicy,
) -> Answer:
    """The bureau's answer: per item found / not-found / withheld; masked sums; masks wrapped for the lender."""
    if me.role != "bureau":
        raise KeyFormatError(f"only the bureau answers queries; '{me.name}' is a {me.role}")
    if not parameters.get("score_columns") or parameters.get("paillier_key") is None:
        raise PolicyError("the registry holds no encrypted scores; nothing can be answered")
    key = PaillierPublicKey.from_dict(parameters["paillier_key"])
    status: list[str] = []
    groups: list[list[int]] = []
    blobs: list[bytes] = []
    contributions: dict[str, int] = {}
    position = 0
    for item in found:
        platforms = {p for p, _ in item.records}
        if not item.records:
            status.append("not-found")
            continue
        if len(platforms) < policy.min_platforms:
            status.append("withheld")
            continue
        status.append("found")
        groups.append(list(range(position, position + len(item.records))))
        for platform, ct in item.records:
            blobs.append(ct)
            contributions[platform] = contributions.get(platform, 0) + 1
        position += len(item.records)
    if blobs:
        sums = EncryptedVector.from_bytes(key, b"".join(blobs)).sum_groups(groups)
        masked, masks = mask_sums(sums)
        sums_bytes = masked.to_bytes()
    else:
        sums_bytes, masks = b"", []
    width = (key.n.bit_length() + 7) // 8
    mask_bytes = b"".join(int(r).to_bytes(width, "big") for r in masks)
    wrapped = wrap(me.identity, me.name, lender.public.agree_pub, lender.name, mask_bytes,
                   _MASK_CONTEXT + bytes.fromhex(query.hash))
    header = AnswerHeader(
        query_hash=query.hash, lender=lender.name, purpose=query.header.purpose, count=len(status),
        found=status.count("found"), min_platforms=policy.min_platforms, contributions=dict(sorted(contributions.items())),
        paillier_fingerprint=key.fingerprint, paillier_key=key.to_dict(),
        score_columns=list(parameters["score_columns"]), score_decimals=int(parameters["score_decimals"]),
        packing=dict(parameters["packing"]),
    )
    payload = AnswerPayload(status=status, sums=sums_bytes, masks=wrapped, query=query.wire)
    return seal(Answer(header=header, payload=payload), me.identity, me.card)


def make_receipts(me: PartyKey, answer: Answer) -> dict[str, Receipt]:
    """The bureau's signed receipt to each platform whose records went into ``answer``."""
    header = answer.header
    return {
        platform: seal(Receipt(header=ReceiptHeader(
            platform=platform, lender=header.lender, purpose=header.purpose, records=count,
            query_hash=header.query_hash, answer_hash=answer.hash,
        )), me.identity, me.card)
        for platform, count in header.contributions.items()
    }


def open_receipt(me: PartyKey, receipt: Receipt, bureaus: Sequence[Card]) -> Receipt:
    """A platform checks a receipt: signed by a pinned bureau and addressed to it."""
    verify(receipt, bureaus, source=receipt.source, role="bureau")
    if receipt.header.platform != me.name:
        raise DocumentError(f"{receipt.source}: is addressed to '{receipt.header.platform}', not '{me.name}'")
    return receipt


def _check_answer(answer: Answer, bureaus: Sequence[Card], lenders: Sequence[Card]) -> Query:
    """An answer signed by a pinned bureau, carrying the lender's signed query it names, consistent in its counts."""
    source = answer.source
    verify(answer, bureaus, source=source, role="bureau")
    query = Query.from_dict(answer.payload.query, f"{source}: query")
    lender = check_query(query, lenders, at=answer.header.created)
    header = answer.header
    if header.query_hash != query.hash or header.lender != lender.name or header.purpose != query.header.purpose:
        raise DocumentError(f"{source}: does not answer the query it carries")
    status = answer.payload.status
    if len(status) != query.header.count or header.found != status.count("found"):
        raise DocumentError(f"{source}: its statuses do not match the query's applicants")
    return query


def decrypt_answer(
    me: PartyKey,
    private: PaillierPrivateKey,
    answer: Answer,
    log: Sequence[Mapping[str, Any]],
    bureaus: Sequence[Card],
    lenders: Sequence[Card],
) -> tuple[AnswerDecryption, dict[str, Any]]:
    """The authority decrypts an answer's masked sums for the lender; returns them and the audit entry to append first.

    Checked first: the answer is a pinned bureau's, for a registered lender's
    signed query with valid consents, under this key. The authority sees only
    uniform values mod n.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority decrypts answers; '{me.name}' is a {me.role}")
    query = _check_answer(answer, bureaus, lenders)
    header = answer.header
    if header.paillier_fingerprint != private.public_key.fingerprint:
        raise KeyMismatchError(f"{answer.source}: encrypted under a different Paillier key than this one")
    key = private.public_key
    found = header.found
    if len(answer.payload.sums) != found * key.ciphertext_bytes:
        raise DocumentError(f"{answer.source}: holds {len(answer.payload.sums) // key.ciphertext_bytes} sums for "
                            f"{found} applicants found")
    values = decrypt_raw(private, EncryptedVector.from_bytes(key, answer.payload.sums)) if found else []
    width = (key.n.bit_length() + 7) // 8
    decryption = seal(AnswerDecryption(
        header=AnswerDecryptionHeader(answer_hash=answer.hash, query_hash=query.hash, lender=header.lender,
                                      count=found),
        # wrapped for the lender: the bureau, which relays documents, holds the masks
        payload=ValuesPayload(values=wrap(
            me.identity, me.name, _lender_card(lenders, header.lender).public.agree_pub, header.lender,
            b"".join(v.to_bytes(width, "big") for v in values), _VALUES_CONTEXT + bytes.fromhex(answer.hash),
        )),
    ), me.identity, me.card)
    signer = answer.signer
    entry = next_entry(log, me.identity, me.card, "answer", {
        "release_hash": answer.hash,
        "linkage_hash": query.hash,
        "bureau": signer.name if signer is not None else "",
        "paillier_fingerprint": header.paillier_fingerprint,
        "entities": found,
        "score_columns": header.score_columns,
        "min_contributors": header.min_platforms,
        "packing": header.packing,
        "output_sha256": decryption.hash,
        "noise": None,
        "privacy_budget": {},
        "composition": "none (masked answer to one lender)",
        "lender": header.lender,
        "purpose": header.purpose,
        "applicants": header.count,
        "contributions": header.contributions,
        "consents": [item["consent"]["reference"] for item in query.payload.items],
    })
    return decryption, entry


def open_answer(
    me: PartyKey,
    answer: Answer,
    decryption: AnswerDecryption,
    bureaus: Sequence[Card],
    authorities: Sequence[Card],
) -> list[tuple[str, int, dict[str, Decimal]]]:
    """The lender removes the masks: per query item (status, contributors, {column: sum}), in query order."""
    query = _check_answer(answer, bureaus, [me.card])
    verify(decryption, authorities, source=decryption.source, role="authority")
    if decryption.header.answer_hash != answer.hash or decryption.header.count != answer.header.found:
        raise DocumentError(f"{decryption.source}: decrypts another answer than {answer.source}")
    masks_raw = _open_for_me(me, answer, answer.payload.masks, _MASK_CONTEXT + bytes.fromhex(query.hash), "masks")
    values = _open_for_me(me, decryption, decryption.payload.values, _VALUES_CONTEXT + bytes.fromhex(answer.hash),
                          "values")
    key = PaillierPublicKey.from_dict(answer.header.paillier_key)
    width = (key.n.bit_length() + 7) // 8
    count = answer.header.found
    if len(values) != count * width or len(masks_raw) != count * width:
        raise DocumentError(f"{decryption.source}: does not hold one value per applicant found")
    masked = [int.from_bytes(values[i * width : (i + 1) * width], "big") for i in range(count)]
    masks = [int.from_bytes(masks_raw[i * width : (i + 1) * width], "big") for i in range(count)]
    spec = PackingSpec.from_dict(answer.header.packing)
    sums: Any = unmask_packed(masked, masks, key.n, spec) if count else []
    columns, decimals = answer.header.score_columns, answer.header.score_decimals
    out: list[tuple[str, int, dict[str, Decimal]]] = []
    k = 0
    for status in answer.payload.status:
        if status != "found":
            out.append((status, 0, {}))
            continue
        values_fixed = [int(v) for v in sums[k]]
        contributors = _count_of(masked[k], masks[k], key.n, spec)  # from the count slot
        out.append((status, contributors, dict(zip(columns, decode_fixed(values_fixed, decimals)))))
        k += 1
    return out


def _open_for_me(me: PartyKey, doc: Answer | AnswerDecryption, blob: bytes, context: bytes, what: str) -> bytes:
    """Unwrap what ``doc``'s (verified) signer wrapped for ``me``."""
    signer = doc.signer
    if signer is None:
        raise DocumentError(f"{doc.source}: not signed")
    try:
        return unwrap(me.identity, me.name, signer.public.agree_pub, signer.name, blob, context)
    except DecryptionError:
        raise DecryptionError(f"{doc.source}: cannot open the {what} with this key (not for you, or tampered)") from None


def _count_of(masked: int, mask: int, n: int, spec: PackingSpec) -> int:
    """The records summed, from the packed value's count slot."""
    x = (masked - mask) % n
    return x >> (spec.slots * spec.slot_bits)
