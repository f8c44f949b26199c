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

import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pprl.crypto.exchange import unwrap, wrap
from pprl.crypto.paillier.packing import PackingSpec, column_masks, mask_sums, unmask_packed
from pprl.crypto.paillier.threshold.partials import partial_decrypt
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
    DecryptionPart,
    DecryptionPartHeader,
    DecryptionPartPayload,
    Query,
    QueryHeader,
    QueryPayload,
    Receipt,
    ReceiptHeader,
    ValuesPayload,
    now,
    parse_json,
    seal,
    verify,
)
from pprl.errors import DecryptionError, DocumentError, KeyFormatError, KeyMismatchError, OptionError, PolicyError
from pprl.protocol.audit import next_entry
from pprl.protocol.identity import PartyKey
from pprl.protocol.threshold.combine import combine_vectors, parts_setup
from pprl.protocol.threshold.dealer import ThresholdOptions, part_context, proof_context
from pprl.protocol.threshold.holder import LoadedShare, approval_document

__all__ = [
    "PURPOSES",
    "AnswerPolicy",
    "AnswerRow",
    "Consent",
    "Found",
    "PurposePolicy",
    "ReleaseRule",
    "answer_part",
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
_LABELS_CONTEXT = b"pprl-answer-platforms-v1"
#: The name a threshold part of an answer gives its one vector (bound into the holders' proofs).
_ANSWER_COLUMN = "answer"


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
class PurposePolicy:
    """What answers for one purpose release.

    Attributes:
        columns: the score columns released (None: every column the registry holds).
        per_platform: each platform's sums as well as the total (which platforms hold the applicant shows).
        min_platforms: the floor for this purpose (None: the policy's).
    """

    columns: tuple[str, ...] | None = None
    per_platform: bool = False
    min_platforms: int | None = None

    def __post_init__(self) -> None:
        if self.columns is not None:
            if isinstance(self.columns, str) or not all(isinstance(c, str) and c for c in self.columns):
                raise OptionError("{columns} is a list of score column names", "columns")
            if not self.columns or len(set(self.columns)) != len(self.columns):
                raise OptionError("{columns} names at least one score column, each once", "columns")
            object.__setattr__(self, "columns", tuple(self.columns))
        if not isinstance(self.per_platform, bool):
            raise OptionError("{per_platform} is true or false", "per_platform")
        if self.min_platforms is not None and (
            isinstance(self.min_platforms, bool) or not isinstance(self.min_platforms, int) or self.min_platforms < 1
        ):
            raise OptionError("{min_platforms} must be at least 1", "min_platforms")


@dataclass(frozen=True)
class ReleaseRule:
    """One purpose's rule, resolved against the registry's score columns (what :func:`build_answer` applies)."""

    columns: list[str]
    hidden: list[int]
    per_platform: bool
    min_platforms: int


@dataclass(frozen=True)
class AnswerPolicy:
    """The bureau's release policy for answers.

    Attributes:
        min_platforms: answer an applicant only when at least this many platforms hold a record of them.
        daily_quota: most applicants one lender may ask about per UTC day.
        purposes: per purpose, what its answers release; None answers every purpose with every column's
            sums. A purpose left out of a given mapping is not answered.

    A policy file (``pprl answer --policy``) is its JSON form, e.g.
    ``{"daily_quota": 1000, "min_platforms": 1, "purposes": {"loan-application": {"columns": ["repay_score"],
    "per_platform": false, "min_platforms": 2}}}``; every key is optional.
    """

    min_platforms: int = 1
    daily_quota: int = 1000
    purposes: Mapping[str, PurposePolicy] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.min_platforms, bool) or not isinstance(self.min_platforms, int) or self.min_platforms < 1:
            raise OptionError("{min_platforms} must be at least 1", "min_platforms")
        if isinstance(self.daily_quota, bool) or not isinstance(self.daily_quota, int) or self.daily_quota < 0:
            raise OptionError("{daily_quota} must be a whole number >= 0", "daily_quota")
        if self.purposes is not None:
            for purpose, rule in self.purposes.items():
                if purpose not in PURPOSES:
                    raise OptionError(f"{{purposes}} names '{purpose}', not one of {', '.join(PURPOSES)}", "purposes")
                if not isinstance(rule, PurposePolicy):
                    raise OptionError("{purposes} maps a purpose to a PurposePolicy", "purposes")
            object.__setattr__(self, "purposes", dict(self.purposes))

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> AnswerPolicy:
        """A policy from its JSON form; PolicyError naming ``source`` and the key for anything else."""
        if not isinstance(data, dict):
            raise PolicyError(f"{source}: a release policy is a JSON object")
        unknown = set(data) - {"min_platforms", "daily_quota", "purposes"}
        if unknown:
            raise PolicyError(f"{source}: unknown key '{sorted(unknown)[0]}' (allowed: min_platforms, daily_quota, "
                              "purposes)")
        purposes = data.get("purposes")
        try:
            rules = None
            if purposes is not None:
                if not isinstance(purposes, dict):
                    raise PolicyError(f"{source}: 'purposes' maps each purpose to its rule")
                rules = {}
                for purpose, rule in purposes.items():
                    if not isinstance(rule, dict) or set(rule) - {"columns", "per_platform", "min_platforms"}:
                        raise PolicyError(f"{source}: purpose '{purpose}': a rule has the keys columns, per_platform, "
                                          "min_platforms")
                    columns = rule.get("columns")
                    if columns is not None and not isinstance(columns, list):
                        raise PolicyError(f"{source}: purpose '{purpose}': 'columns' is a list of score columns")
                    rules[purpose] = PurposePolicy(
                        tuple(columns) if columns is not None else None, rule.get("per_platform", False),
                        rule.get("min_platforms"),
                    )
            return cls(data.get("min_platforms", 1), data.get("daily_quota", 1000), rules)
        except OptionError as exc:
            raise PolicyError(f"{source}: {str(exc).replace('{', '').replace('}', '')}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :meth:`from_dict` reads)."""
        out: dict[str, Any] = {"min_platforms": self.min_platforms, "daily_quota": self.daily_quota}
        if self.purposes is not None:
            out["purposes"] = {
                p: {"columns": list(r.columns) if r.columns is not None else None, "per_platform": r.per_platform,
                    "min_platforms": r.min_platforms}
                for p, r in self.purposes.items()
            }
        return out

    def release(self, purpose: str, score_columns: Sequence[str]) -> ReleaseRule:
        """What an answer for ``purpose`` releases of ``score_columns``; PolicyError if the policy refuses it."""
        rule = PurposePolicy() if self.purposes is None else self.purposes.get(purpose)
        if rule is None:
            raise PolicyError(f"the release policy answers no queries for purpose {purpose}")
        columns = list(rule.columns) if rule.columns is not None else list(score_columns)
        missing = [c for c in columns if c not in score_columns]
        if missing:
            raise PolicyError(f"the release policy for {purpose} names column '{missing[0]}', which the registry "
                              "does not hold")
        return ReleaseRule(
            columns=[c for c in score_columns if c in columns],
            hidden=[j for j, c in enumerate(score_columns) if c not in columns],
            per_platform=rule.per_platform,
            min_platforms=rule.min_platforms if rule.min_platforms is not None else self.min_platforms,
        )

    def allows(self, purpose: str, columns: Sequence[str], per_platform: bool, min_platforms: int) -> str | None:
        """Why an answer released this way exceeds the policy (None if it does not): a decryptor's own check."""
        rule = PurposePolicy() if self.purposes is None else self.purposes.get(purpose)
        if rule is None:
            return f"the policy answers no queries for purpose {purpose}"
        extra = [c for c in columns if rule.columns is not None and c not in rule.columns]
        if extra:
            return f"column '{extra[0]}' is not released for {purpose}"
        if per_platform and not rule.per_platform:
            return f"per-platform sums are not released for {purpose}"
        floor = rule.min_platforms if rule.min_platforms is not None else self.min_platforms
        if min_platforms < floor:
            return f"answers for {purpose} need at least {floor} platforms, not {min_platforms}"
        return None


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
    """The bureau's answer: per item found / not-found / withheld; masked sums; masks wrapped for the lender.

    The purpose's rule (:meth:`AnswerPolicy.release`) decides the columns the
    lender can read (the others get a hiding mask it never sees), whether it
    gets each platform's sums (in platform-name order; which platforms they
    are is wrapped for it too) and the minimum number of platforms.
    """
    if me.role != "bureau":
        raise KeyFormatError(f"only the bureau answers queries; '{me.name}' is a {me.role}")
    if not parameters.get("score_columns") or parameters.get("paillier_key") is None:
        raise PolicyError("the registry holds no encrypted scores; nothing can be answered")
    key = PaillierPublicKey.from_dict(parameters["paillier_key"])
    columns = list(parameters["score_columns"])
    rule = policy.release(query.header.purpose, columns)
    spec = PackingSpec.from_dict(parameters["packing"])
    if rule.hidden and not spec.maskable:
        raise PolicyError(f"the release policy for {query.header.purpose} hides columns, but the registry's scores "
                          "were packed without masking room; platforms must re-submit with this version of pprl")
    status: list[str] = []
    groups: list[list[int]] = []
    labels: list[list[str]] = []
    blobs: list[bytes] = []
    contributions: dict[str, int] = {}
    for item in found:
        platforms = sorted({p for p, _ in item.records})
        if not item.records:
            status.append("not-found")
            continue
        if len(platforms) < rule.min_platforms:
            status.append("withheld")
            continue
        status.append("found")
        start = len(blobs)
        by_platform: dict[str, list[int]] = {}
        for offset, (platform, ct) in enumerate(item.records):
            blobs.append(ct)
            by_platform.setdefault(platform, []).append(start + offset)
            contributions[platform] = contributions.get(platform, 0) + 1
        if rule.per_platform:
            groups.extend(by_platform[p] for p in platforms)
            labels.append(platforms)
        else:
            groups.append(list(range(start, len(blobs))))
    if blobs:
        sums = EncryptedVector.from_bytes(key, b"".join(blobs)).sum_groups(groups)
        hiding = column_masks(spec, rule.hidden, len(groups)) if rule.hidden else None
        masked, masks = mask_sums(sums, hiding=hiding)
        sums_bytes = masked.to_bytes()
    else:
        sums_bytes, masks = b"", []
    width = (key.n.bit_length() + 7) // 8
    context = bytes.fromhex(query.hash)
    mask_bytes = b"".join(int(r).to_bytes(width, "big") for r in masks)
    wrapped = wrap(me.identity, me.name, lender.public.agree_pub, lender.name, mask_bytes, _MASK_CONTEXT + context)
    wrapped_labels = None
    if rule.per_platform:
        wrapped_labels = wrap(me.identity, me.name, lender.public.agree_pub, lender.name,
                              json.dumps(labels, separators=(",", ":")).encode(), _LABELS_CONTEXT + context)
    header = AnswerHeader(
        query_hash=query.hash, lender=lender.name, purpose=query.header.purpose, count=len(status),
        found=status.count("found"), sums=len(groups), min_platforms=rule.min_platforms,
        released_columns=rule.columns, per_platform=rule.per_platform,
        contributions=dict(sorted(contributions.items())),
        paillier_fingerprint=key.fingerprint, paillier_key=key.to_dict(),
        score_columns=columns, score_decimals=int(parameters["score_decimals"]),
        packing=dict(parameters["packing"]),
    )
    payload = AnswerPayload(status=status, sums=sums_bytes, masks=wrapped, platforms=wrapped_labels,
                            query=query.wire)
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


def _check_answer(
    answer: Answer, bureaus: Sequence[Card], lenders: Sequence[Card], policy: AnswerPolicy | None = None
) -> Query:
    """An answer signed by a pinned bureau, carrying the lender's signed query it names, consistent in its
    counts, and (with ``policy``, a decryptor's own) releasing no more than that policy allows."""
    source = answer.source
    verify(answer, bureaus, source=source, role="bureau")
    query = Query.from_dict(answer.payload.query, f"{source}: query")
    lender = check_query(query, lenders, at=answer.header.created)
    header, payload = answer.header, answer.payload
    if header.query_hash != query.hash or header.lender != lender.name or header.purpose != query.header.purpose:
        raise DocumentError(f"{source}: does not answer the query it carries")
    status = payload.status
    if len(status) != query.header.count or header.found != status.count("found"):
        raise DocumentError(f"{source}: its statuses do not match the query's applicants")
    if not set(header.released_columns) <= set(header.score_columns):
        raise DocumentError(f"{source}: releases a column the registry does not hold")
    if header.per_platform != (payload.platforms is not None) or (
        header.sums != header.found if not header.per_platform else header.sums < header.found
    ):
        raise DocumentError(f"{source}: its sums do not match the applicants found")
    if policy is not None:
        why = policy.allows(header.purpose, header.released_columns, header.per_platform, header.min_platforms)
        if why is not None:
            raise PolicyError(f"{source}: releases more than the release policy allows: {why}")
    return query


def _answer_entry(
    me: PartyKey, answer: Answer, query: Query, log: Sequence[Mapping[str, Any]], output: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decryptor's audit entry for an answer (appended before anything is released)."""
    header, signer = answer.header, answer.signer
    return next_entry(log, me.identity, me.card, "answer", {
        "release_hash": answer.hash,
        "linkage_hash": query.hash,
        "bureau": signer.name if signer is not None else "",
        "paillier_fingerprint": header.paillier_fingerprint,
        "entities": header.found,
        "score_columns": header.released_columns,
        "min_contributors": header.min_platforms,
        "packing": header.packing,
        "output_sha256": output,
        "noise": None,
        "privacy_budget": {},
        "composition": "none (masked answer to one lender)",
        "lender": header.lender,
        "purpose": header.purpose,
        "applicants": header.count,
        "contributions": header.contributions,
        "consents": [item["consent"]["reference"] for item in query.payload.items],
        "per_platform": header.per_platform,
        **(extra or {}),
    })


def _answer_sums(answer: Answer, key: PaillierPublicKey) -> EncryptedVector:
    """The answer's masked ciphertexts, as many as its header declares, under ``key``."""
    count = answer.header.sums
    if len(answer.payload.sums) != count * key.ciphertext_bytes:
        raise DocumentError(f"{answer.source}: holds {len(answer.payload.sums) // key.ciphertext_bytes} sums, "
                            f"not the {count} it declares")
    return EncryptedVector.from_bytes(key, answer.payload.sums)


def decrypt_answer(
    me: PartyKey,
    private: PaillierPrivateKey,
    answer: Answer,
    log: Sequence[Mapping[str, Any]],
    bureaus: Sequence[Card],
    lenders: Sequence[Card],
    policy: AnswerPolicy | None = None,
) -> tuple[AnswerDecryption, dict[str, Any]]:
    """The authority decrypts an answer's masked sums for the lender; returns them and the audit entry to append first.

    Checked first: the answer is a pinned bureau's, for a registered lender's
    signed query with valid consents, under this key, and releases no more
    than ``policy`` (the authority's own; default :class:`AnswerPolicy`)
    allows. The authority sees only uniform values mod n.
    """
    if me.role != "authority":
        raise KeyFormatError(f"only an authority decrypts answers; '{me.name}' is a {me.role}")
    query = _check_answer(answer, bureaus, lenders, policy or AnswerPolicy())
    header = answer.header
    if header.paillier_fingerprint != private.public_key.fingerprint:
        raise KeyMismatchError(f"{answer.source}: encrypted under a different Paillier key than this one")
    key = private.public_key
    enc = _answer_sums(answer, key)
    values = decrypt_raw(private, enc) if header.sums else []
    width = (key.n.bit_length() + 7) // 8
    decryption = seal(AnswerDecryption(
        header=AnswerDecryptionHeader(answer_hash=answer.hash, query_hash=query.hash, lender=header.lender,
                                      count=header.sums),
        # wrapped for the lender: the bureau, which relays documents, holds the masks
        payload=ValuesPayload(values=wrap(
            me.identity, me.name, _lender_card(lenders, header.lender).public.agree_pub, header.lender,
            b"".join(v.to_bytes(width, "big") for v in values), _VALUES_CONTEXT + bytes.fromhex(answer.hash),
        )),
    ), me.identity, me.card)
    return decryption, _answer_entry(me, answer, query, log, decryption.hash)


def answer_part(
    me: PartyKey,
    share: LoadedShare,
    answer: Answer,
    log: Sequence[Mapping[str, Any]],
    bureaus: Sequence[Card],
    lenders: Sequence[Card],
    policy: AnswerPolicy | None = None,
    options: ThresholdOptions | None = None,
) -> tuple[DecryptionPart, dict[str, Any]]:
    """A threshold key holder's part of an answer, encrypted for its lender; returns it and the audit entry.

    The same checks as :func:`decrypt_answer`, under the threshold key the
    share belongs to. The part's values are wrapped for the lender, so only
    it can combine T parts (into masked values, which its masks open).
    """
    options = options or ThresholdOptions()
    query = _check_answer(answer, bureaus, lenders, policy or AnswerPolicy())
    setup, key_share = share.setup, share.share
    public = setup.public.public
    header = answer.header
    if header.paillier_fingerprint != public.fingerprint or PaillierPublicKey.from_dict(
        header.paillier_key, allow_small=options.allow_insecure
    ) != public:
        raise KeyMismatchError(f"{answer.source}: encrypted under a different Paillier key than this threshold key")
    enc = _answer_sums(answer, public)
    part = partial_decrypt(key_share, enc, context=proof_context(answer.hash, _ANSWER_COLUMN),
                           workers=options.workers, progress=options.progress)
    lender = _lender_card(lenders, header.lender)
    wrapped = wrap(me.identity, me.name, lender.public.agree_pub, lender.name, part.values_to_bytes(public),
                   part_context(answer.hash, key_share.index))
    doc = seal(DecryptionPart(
        header=DecryptionPartHeader(
            release_hash=answer.hash, paillier_fingerprint=public.fingerprint, paillier_pub_hash=setup.pub_hash,
            holder=me.name, index=key_share.index, threshold=setup.public.threshold, combiner=lender.name,
            score_columns=[_ANSWER_COLUMN], entities=header.sums,
        ),
        payload=DecryptionPartPayload(
            proofs={_ANSWER_COLUMN: part.proof.to_dict()},
            approval=approval_document(me, answer.hash, setup, key_share.index).wire,
            values=None, parts=wrapped, paillier_pub=share.pub_doc,
        ),
    ), me.identity, me.card)
    entry = _answer_entry(me, answer, query, log, doc.hash, {
        "threshold": setup.public.threshold, "threshold_holders": list(setup.holders),
    })
    return doc, entry


@dataclass(frozen=True)
class AnswerRow:
    """What the lender reads for one query item.

    ``status`` is found / not-found / withheld, or unreadable (a platform's value out of range made the sum
    undecodable; nothing else is said about it); for one found, ``contributors``
    (records summed), ``sums`` per released column and, with per-platform
    answers, ``platforms[name][column]``.
    """

    status: str
    contributors: int = 0
    sums: dict[str, Decimal] = field(default_factory=dict)
    platforms: dict[str, dict[str, Decimal]] = field(default_factory=dict)


def open_answer(
    me: PartyKey,
    answer: Answer,
    decryption: AnswerDecryption | Sequence[DecryptionPart],
    bureaus: Sequence[Card],
    authorities: Sequence[Card],
    options: ThresholdOptions | None = None,
) -> list[AnswerRow]:
    """The lender removes the masks: one :class:`AnswerRow` per query item, in query order.

    ``decryption`` is the authority's (single key) or T holders' parts
    encrypted for this lender (threshold key; ``authorities`` then pins the
    dealer who signed the threshold key).
    """
    query = _check_answer(answer, bureaus, [me.card])
    header = answer.header
    key = PaillierPublicKey.from_dict(header.paillier_key, allow_small=options is not None and options.allow_insecure)
    count = header.sums
    width = (key.n.bit_length() + 7) // 8
    if isinstance(decryption, AnswerDecryption):
        verify(decryption, authorities, source=decryption.source, role="authority")
        if decryption.header.answer_hash != answer.hash or decryption.header.count != count:
            raise DocumentError(f"{decryption.source}: decrypts another answer than {answer.source}")
        values = _open_for_me(me, decryption, decryption.payload.values,
                              _VALUES_CONTEXT + bytes.fromhex(answer.hash), "values")
        if len(values) != count * width:
            raise DocumentError(f"{decryption.source}: does not hold one value per sum")
        masked = [int.from_bytes(values[i * width : (i + 1) * width], "big") for i in range(count)]
    else:
        opts = options or ThresholdOptions()
        setup = parts_setup(decryption, None, list(authorities), opts)
        if setup.public.public != key:
            raise KeyMismatchError(f"{answer.source}: is not under the threshold key the parts are for")
        sums_by, _, _ = combine_vectors(decryption, setup, answer.hash, {_ANSWER_COLUMN: _answer_sums(answer, key)},
                                        opts, me=me, signed=False)
        masked = sums_by[_ANSWER_COLUMN]
    masks_raw = _open_for_me(me, answer, answer.payload.masks, _MASK_CONTEXT + bytes.fromhex(query.hash), "masks")
    if len(masks_raw) != count * width:
        raise DocumentError(f"{answer.source}: does not hold one mask per sum")
    masks = [int.from_bytes(masks_raw[i * width : (i + 1) * width], "big") for i in range(count)]
    labels: list[list[str]] | None = None
    if header.per_platform and answer.payload.platforms is not None:
        raw = _open_for_me(me, answer, answer.payload.platforms, _LABELS_CONTEXT + bytes.fromhex(query.hash),
                           "platform names")
        labels = parse_json(raw, f"{answer.source}: platform names")
        if (not isinstance(labels, list) or len(labels) != header.found
                or not all(isinstance(x, list) and all(isinstance(p, str) for p in x) for x in labels)
                or sum(len(x) for x in labels) != count):
            raise DocumentError(f"{answer.source}: its platform names do not match its sums")
    spec = PackingSpec.from_dict(header.packing)
    columns, decimals = header.score_columns, header.score_decimals
    hidden = [j for j, c in enumerate(columns) if c not in header.released_columns]
    # a row that does not decode (a platform's value out of range) is marked, not raised: see packing.unpack
    sums: Any = unmask_packed(masked, masks, key.n, spec, hidden=hidden, invalid="mark") if count else []
    rows = [
        (None if any(x is None for x in sums[i]) else
         {c: v for c, v in zip(columns, decode_fixed([int(x) for x in sums[i]], decimals))
          if c in header.released_columns}, _count_of(masked[i], masks[i], key.n, spec))
        for i in range(count)
    ]
    out: list[AnswerRow] = []
    k = f = 0
    for status in answer.payload.status:
        if status != "found":
            out.append(AnswerRow(status))
            continue
        names = labels[f] if labels is not None else [""]
        parts = rows[k : k + len(names)]
        if any(p[0] is None for p in parts):
            out.append(AnswerRow("unreadable"))
        else:
            total = {c: sum((p[0][c] for p in parts if p[0] is not None), Decimal(0))
                     for c in header.released_columns}
            platforms = {name: p[0] for name, p in zip(names, parts) if p[0] is not None} if labels else {}
            out.append(AnswerRow(status, sum(p[1] for p in parts), total, platforms))
        k += len(names)
        f += 1
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
    return x >> (spec.slots * spec.position_bits)
