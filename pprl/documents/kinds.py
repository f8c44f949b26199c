"""Every document kind pprl reads and writes, one class each, mirroring its JSON Schema.

Field meanings are in the schemas (``pprl/documents/schemas/<kind>.schema.json``)
and in docs/protocol.md#documents. Values the crypto layer serialises itself
(Paillier keys, packing specs, noise parameters) stay JSON objects here; the
protocol steps turn them into crypto types.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, ClassVar

from pprl.documents.model import OPTIONAL, Document, Part, SignedDocument, part

__all__ = [
    "Answer",
    "AnswerDecryption",
    "AnswerDecryptionHeader",
    "AnswerHeader",
    "AnswerPayload",
    "AuditEntry",
    "CardDocument",
    "DecryptionApproval",
    "DecryptionPart",
    "DecryptionPartHeader",
    "DecryptionPartPayload",
    "Entity",
    "IdentityKeyDocument",
    "Linkage",
    "LinkageHeader",
    "LinkagePayload",
    "LinkedSubmission",
    "LogHead",
    "LogHeadHeader",
    "PaillierKeyDocument",
    "PaillierPub",
    "PaillierShare",
    "ElementsPayload",
    "PseudonymRequest",
    "PseudonymRequestHeader",
    "PseudonymResponse",
    "PseudonymResponseHeader",
    "PseudonymState",
    "PsiReveal",
    "Query",
    "QueryHeader",
    "QueryPayload",
    "Receipt",
    "ReceiptHeader",
    "ValuesPayload",
    "PsiRevealHeader",
    "PsiRevealPayload",
    "PsiRound",
    "PsiRoundHeader",
    "PsiRoundPayload",
    "PsiSession",
    "PsiSessionHeader",
    "PsiState",
    "PsiStatePayload",
    "Release",
    "ReleaseHeader",
    "ReleasePayload",
    "SecretDocument",
    "Share",
    "SharePayload",
    "Submission",
    "SubmissionHeader",
    "SubmissionPayload",
    "Table",
]

_WHOLE_HEADER = ("header",)


# -- identities and the linkage secret ---------------------------------------------------------


@part
class IdentityKeyDocument(Document):
    """``NAME.key``: a party's private identity seeds (0600)."""

    KIND: ClassVar[str] = "key"
    PUBLIC: ClassVar[tuple[str, ...]] = ("name", "role")
    PRIVATE: ClassVar[bool] = True

    name: str
    role: str
    sign_seed: bytes = field(repr=False)
    agree_seed: bytes = field(repr=False)


@part
class CardDocument(SignedDocument):
    """``NAME.card.json``: a party's public card, self-signed."""

    KIND: ClassVar[str] = "card"
    PUBLIC: ClassVar[tuple[str, ...]] = ("fingerprint",)

    fingerprint: str


@part
class SharePayload(Part):
    """The ``payload`` of a :class:`Share` (fields as in the kind's schema)."""
    wrapped: dict[str, bytes]


@part
class Share(SignedDocument):
    """One platform's share of the linkage secret, wrapped for each other participant."""

    KIND: ClassVar[str] = "share"
    PUBLIC: ClassVar[tuple[str, ...]] = ("participants", "commitment")

    participants: list[dict[str, Any]]
    ceremony: str
    ephemeral_pub: bytes
    commitment: str
    payload: SharePayload


@part
class SecretDocument(Document):
    """A platform's combined linkage secret (0600)."""

    KIND: ClassVar[str] = "secret"
    PUBLIC: ClassVar[tuple[str, ...]] = ("owner", "participants", "fingerprint")
    PRIVATE: ClassVar[bool] = True

    owner: str
    participants: list[str]
    fingerprint: str
    secret: bytes = field(repr=False)


# -- Paillier keys --------------------------------------------------------------------------------


@part
class PaillierPub(SignedDocument):
    """The authority's signed Paillier public key (with the threshold set-up under a threshold key)."""

    KIND: ClassVar[str] = "paillier-pub"
    PUBLIC: ClassVar[tuple[str, ...]] = ("fingerprint", "key", "threshold")

    fingerprint: str
    key: dict[str, Any]
    threshold: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@part
class PaillierKeyDocument(Document):
    """The authority's Paillier private key (0600); ``p`` and ``q`` as the crypto layer writes them."""

    KIND: ClassVar[str] = "paillier-key"
    PUBLIC: ClassVar[tuple[str, ...]] = ("owner", "fingerprint", "public_key")
    PRIVATE: ClassVar[bool] = True

    owner: str
    fingerprint: str
    public_key: dict[str, Any]
    p: str = field(repr=False)
    q: str = field(repr=False)


@part
class PaillierShare(SignedDocument):
    """One key holder's share of a threshold Paillier key, wrapped for that holder."""

    KIND: ClassVar[str] = "paillier-share"
    PUBLIC: ClassVar[tuple[str, ...]] = ("holder", "index", "fingerprint", "paillier_pub_hash", "threshold")
    PRIVATE: ClassVar[bool] = True

    holder: str
    index: int
    fingerprint: str
    paillier_pub_hash: str
    key: dict[str, Any]
    threshold: dict[str, Any]
    paillier_pub: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    ephemeral_pub: bytes
    wrapped_share: bytes = field(repr=False)


# -- the CLK path: submission -> linkage -> release ------------------------------------------------


@part
class SubmissionHeader(Part):
    """The ``header`` of a :class:`Submission` (fields as in the kind's schema)."""
    platform: str
    created: str = ""
    records: int
    schema_hash: str
    linkage_key_id: str
    clk_bytes: int
    paillier_fingerprint: str | None
    paillier_key: dict[str, Any] | None
    score_columns: list[str]
    score_decimals: int
    packing: dict[str, Any] | None = None
    clip: dict[str, list[str]] = field(default_factory=dict)
    pseudonym_kind: str | None = field(default=None, metadata=OPTIONAL)
    run: str | None = field(default=None, metadata=OPTIONAL)


@part
class SubmissionPayload(Part):
    """The ``payload`` of a :class:`Submission` (fields as in the kind's schema)."""
    tokens: list[str]
    clks: bytes = field(repr=False)
    scores_packed: bytes | None = field(repr=False)
    pseudonyms: bytes | None = field(default=None, metadata=OPTIONAL, repr=False)


@part
class Submission(SignedDocument):
    """A platform's records for the bureau: tokens, CLKs and packed ciphertexts; nothing raw."""

    KIND: ClassVar[str] = "submission"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: SubmissionHeader
    payload: SubmissionPayload


@part
class LinkedSubmission(Part):
    """A submission a linkage was built from."""

    platform: str
    records: int
    hash: str


@part
class Entity(Part):
    """A linked entity: [platform, token, similarity] per member."""

    entity_id: str
    members: list[list[Any]]
    match_probability: float | None


@part
class Table(Part):
    """A table carried as CSV text."""

    columns: list[str]
    csv: str


@part
class LinkageHeader(Part):
    """The ``header`` of a :class:`Linkage` (fields as in the kind's schema)."""
    created: str = ""
    threshold: float
    threshold_method: str
    threshold_choice: dict[str, Any]
    method: str
    schema_hash: str
    linkage_key_id: str
    paillier_fingerprint: str | None
    submissions: list[LinkedSubmission]
    blocking: dict[str, Any]
    candidate_pairs: int
    entities: int
    run: str | None = field(default=None, metadata=OPTIONAL)


@part
class LinkagePayload(Part):
    """The ``payload`` of a :class:`Linkage` (fields as in the kind's schema)."""
    entities: list[Entity]
    candidates: Table
    sample: Table


@part
class Linkage(SignedDocument):
    """The bureau's linked entities, with the candidate pairs and threshold sample behind them."""

    KIND: ClassVar[str] = "linkage"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: LinkageHeader
    payload: LinkagePayload


@part
class ReleaseHeader(Part):
    """The ``header`` of a :class:`Release` (fields as in the kind's schema)."""
    created: str = ""
    linkage_hash: str
    paillier_fingerprint: str
    paillier_key: dict[str, Any]
    score_columns: list[str]
    score_decimals: int
    packing: dict[str, Any] | None = None
    min_contributors: int
    clip: dict[str, list[str]] | None = None
    noise: dict[str, Any] | None = None
    entities: int
    suppressed: int
    platforms: list[str] | None = field(default=None, metadata=OPTIONAL)
    audit_head: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@part
class ReleasePayload(Part):
    """The ``payload`` of a :class:`Release` (fields as in the kind's schema)."""
    entity_ids: list[str]
    contributors: list[int]
    sums: dict[str, bytes] = field(repr=False)
    added_proof: dict[str, Any] | None = field(default=None, metadata=OPTIONAL, repr=False)
    join_index: list[int] | None = field(default=None, metadata=OPTIONAL, repr=False)


@part
class Release(SignedDocument):
    """Per-entity ciphertext sums the bureau asks the authority (or holders) to decrypt."""

    KIND: ClassVar[str] = "release"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: ReleaseHeader
    payload: ReleasePayload


# -- threshold decryption -------------------------------------------------------------------------


@part
class DecryptionApproval(SignedDocument):
    """A key holder's signed approval of one release under one key."""

    KIND: ClassVar[str] = "decryption-approval"
    PUBLIC: ClassVar[tuple[str, ...]] = (
        "created", "release_hash", "paillier_fingerprint", "paillier_pub_hash", "holder", "index",
    )
    CREATED: ClassVar[str] = "created"

    created: str = ""
    release_hash: str
    paillier_fingerprint: str
    paillier_pub_hash: str
    holder: str
    index: int


@part
class DecryptionPartHeader(Part):
    """The ``header`` of a :class:`DecryptionPart` (fields as in the kind's schema)."""
    created: str = ""
    release_hash: str
    paillier_fingerprint: str
    paillier_pub_hash: str
    holder: str
    index: int
    threshold: int
    combiner: str | None
    score_columns: list[str]
    entities: int


@part
class DecryptionPartPayload(Part):
    """The ``payload`` of a :class:`DecryptionPart` (fields as in the kind's schema)."""
    proofs: dict[str, Any]
    approval: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    values: bytes | None = field(default=None, metadata=OPTIONAL, repr=False)
    parts: bytes | None = field(default=None, metadata=OPTIONAL, repr=False)
    paillier_pub: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)


@part
class DecryptionPart(SignedDocument):
    """One holder's partial decryptions of a release, with proofs (encrypted for the combiner if named)."""

    KIND: ClassVar[str] = "decryption-part"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: DecryptionPartHeader
    payload: DecryptionPartPayload


# -- the exact path: PSI --------------------------------------------------------------------------


@part
class PsiSessionHeader(Part):
    """The ``header`` of a :class:`PsiSession` (fields as in the kind's schema)."""
    session_id: str
    created: str = ""
    protocol: str
    identifier: Any
    reveal_intersection: bool
    platforms: list[dict[str, Any]]


@part
class PsiSession(SignedDocument):
    """The bureau's announcement of a PSI session: its platforms, in ring order."""

    KIND: ClassVar[str] = "psi-session"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: PsiSessionHeader


@part
class PsiRoundHeader(Part):
    """The ``header`` of a :class:`PsiRound` (fields as in the kind's schema)."""
    session_id: str
    session_hash: str
    origin: str
    hops: list[str]
    complete: bool
    records: int
    input_hash: str | None
    created: str = ""
    paillier_fingerprint: str | None
    paillier_key: dict[str, Any] | None
    score_columns: list[str]
    score_decimals: int
    packing: dict[str, Any] | None
    clip: dict[str, list[str]] | None = field(default=None, metadata=OPTIONAL)


@part
class PsiRoundPayload(Part):
    """The ``payload`` of a :class:`PsiRound` (fields as in the kind's schema)."""
    elements: bytes = field(repr=False)
    scores: dict[str, bytes] = field(repr=False)
    tokens: list[str] | None = field(default=None, metadata=OPTIONAL)


@part
class PsiRound(SignedDocument):
    """One platform's list of blinded elements (and ciphertexts) on its way round the ring."""

    KIND: ClassVar[str] = "psi-round"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: PsiRoundHeader
    payload: PsiRoundPayload


@part
class PsiRevealHeader(Part):
    """The ``header`` of a :class:`PsiReveal` (fields as in the kind's schema)."""
    session_id: str
    session_hash: str
    platform: str
    release_hash: str
    min_contributors: int
    members: int
    created: str = ""


@part
class PsiRevealPayload(Part):
    """The ``payload`` of a :class:`PsiReveal` (fields as in the kind's schema)."""
    tokens: list[str]
    entity_ids: list[str]
    contributors: list[int]


@part
class PsiReveal(SignedDocument):
    """The bureau's note to one platform of which of its tokens are in released intersection entities."""

    KIND: ClassVar[str] = "psi-reveal"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: PsiRevealHeader
    payload: PsiRevealPayload


@part
class PsiStatePayload(Part):
    """The ``payload`` of a :class:`PsiState` (fields as in the kind's schema)."""
    tokens: dict[str, str] | None


@part
class PsiState(Document):
    """A platform's private state between PSI steps: its blinding secret and token map (0600)."""

    KIND: ClassVar[str] = "psi-state"
    PUBLIC: ClassVar[tuple[str, ...]] = ("platform", "session_id", "session_hash", "round_hash", "created")
    PRIVATE: ClassVar[bool] = True
    CREATED: ClassVar[str] = "created"

    platform: str
    session_id: str
    session_hash: str
    round_hash: str
    id_column: str
    created: str = ""
    secret: bytes = field(repr=False)
    session: dict[str, Any]
    payload: PsiStatePayload = field(repr=False)


# -- finding an applicant: pseudonyms through the OPRF --------------------------------------------


@part
class PseudonymRequestHeader(Part):
    """The ``header`` of a :class:`PseudonymRequest` (fields as in the kind's schema)."""
    created: str = ""
    lender: str
    identifier: str
    count: int
    nonce: str


@part
class ElementsPayload(Part):
    """The ``payload`` of :class:`PseudonymRequest` and :class:`PseudonymResponse` (fields as in their schemas)."""
    elements: bytes = field(repr=False)


@part
class PseudonymRequest(SignedDocument):
    """A lender's blinded applicant identifiers for a platform to evaluate the pseudonym OPRF on."""

    KIND: ClassVar[str] = "pseudonym-request"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: PseudonymRequestHeader
    payload: ElementsPayload


@part
class PseudonymResponseHeader(Part):
    """The ``header`` of a :class:`PseudonymResponse` (fields as in the kind's schema)."""
    created: str = ""
    platform: str
    lender: str
    request_hash: str
    identifier: str
    count: int


@part
class PseudonymResponse(SignedDocument):
    """A platform's evaluation of a pseudonym request, bound to it; only the lender can unblind it."""

    KIND: ClassVar[str] = "pseudonym-response"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: PseudonymResponseHeader
    payload: ElementsPayload


@part
class PseudonymState(Document):
    """A lender's private state between request and response: its applicants and the unblinding scalars (0600)."""

    KIND: ClassVar[str] = "pseudonym-state"
    PUBLIC: ClassVar[tuple[str, ...]] = ("lender", "created", "request_hash", "identifier")
    PRIVATE: ClassVar[bool] = True
    CREATED: ClassVar[str] = "created"

    lender: str
    created: str = ""
    request_hash: str
    identifier: str
    applicants: list[str] = field(repr=False)
    inputs: list[str] = field(repr=False)
    unblind: bytes = field(repr=False)


# -- the lender's query and the bureau's answer -------------------------------------------------------


@part
class QueryHeader(Part):
    """The ``header`` of a :class:`Query` (fields as in the kind's schema)."""
    created: str = ""
    lender: str
    purpose: str
    count: int
    nonce: str


@part
class QueryPayload(Part):
    """The ``payload`` of a :class:`Query` (fields as in the kind's schema)."""
    items: list[dict[str, Any]]


@part
class Query(SignedDocument):
    """A lender's question about consenting applicants: pseudonyms and consent records, never IDs."""

    KIND: ClassVar[str] = "query"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: QueryHeader
    payload: QueryPayload


@part
class AnswerHeader(Part):
    """The ``header`` of an :class:`Answer` (fields as in the kind's schema)."""
    created: str = ""
    query_hash: str
    lender: str
    purpose: str
    count: int
    found: int
    sums: int
    min_platforms: int
    released_columns: list[str]
    per_platform: bool
    contributions: dict[str, int]
    paillier_fingerprint: str
    paillier_key: dict[str, Any]
    score_columns: list[str]
    score_decimals: int
    packing: dict[str, Any]


@part
class AnswerPayload(Part):
    """The ``payload`` of an :class:`Answer` (fields as in the kind's schema)."""
    status: list[str]
    sums: bytes = field(repr=False)
    masks: bytes = field(repr=False)
    platforms: bytes | None = field(default=None, metadata=OPTIONAL, repr=False)
    query: dict[str, Any] = field(repr=False)


@part
class Answer(SignedDocument):
    """The bureau's answer: masked encrypted sums for the found applicants; the masks are the lender's alone."""

    KIND: ClassVar[str] = "answer"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: AnswerHeader
    payload: AnswerPayload


@part
class AnswerDecryptionHeader(Part):
    """The ``header`` of an :class:`AnswerDecryption` (fields as in the kind's schema)."""
    created: str = ""
    answer_hash: str
    query_hash: str
    lender: str
    count: int


@part
class ValuesPayload(Part):
    """The ``payload`` of an :class:`AnswerDecryption` (fields as in the kind's schema)."""
    values: bytes = field(repr=False)


@part
class AnswerDecryption(SignedDocument):
    """The key holder's decryption of an answer's masked sums, for the lender (uniform without the masks)."""

    KIND: ClassVar[str] = "answer-decryption"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: AnswerDecryptionHeader
    payload: ValuesPayload


@part
class ReceiptHeader(Part):
    """The ``header`` of a :class:`Receipt` (fields as in the kind's schema)."""
    created: str = ""
    platform: str
    lender: str
    purpose: str
    records: int
    query_hash: str
    answer_hash: str


@part
class Receipt(SignedDocument):
    """The bureau's signed statement to a platform that its records went into an answer."""

    KIND: ClassVar[str] = "receipt"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: ReceiptHeader


# -- the audit log --------------------------------------------------------------------------------


@part
class LogHeadHeader(Part):
    """The ``header`` of a :class:`LogHead` (fields as in the kind's schema)."""
    created: str = ""
    keeper: str
    keeper_fingerprint: str
    entries: int
    head: str


@part
class LogHead(SignedDocument):
    """A party's signed statement that a keeper's audit log had ``entries`` entries ending in ``head``."""

    KIND: ClassVar[str] = "log-head"
    PUBLIC: ClassVar[tuple[str, ...]] = _WHOLE_HEADER
    CREATED: ClassVar[str] = "header.created"

    header: LogHeadHeader


@part
class AuditEntry(SignedDocument):
    """One line of the hash-chained audit log: a decrypted release, signed or attested by holders."""

    KIND: ClassVar[str] = "audit-entry"
    PUBLIC: ClassVar[tuple[str, ...]] = (
        "seq", "prev", "time", "event", "release_hash", "linkage_hash", "bureau", "paillier_fingerprint",
        "entities", "score_columns", "min_contributors", "packing", "output_sha256", "noise",
        "privacy_budget", "composition", "threshold", "threshold_holders",
    )
    CREATED: ClassVar[str] = "time"

    seq: int
    prev: str
    time: str = ""
    event: str
    # releases and answers (a key left out stays out when the entry is written back)
    release_hash: str | None = None
    linkage_hash: str | None = None
    bureau: str | None = None
    paillier_fingerprint: str | None = None
    entities: int | None = None
    score_columns: list[str] | None = None
    min_contributors: int | None = None
    packing: dict[str, Any] | None = None
    output_sha256: str | None = None
    noise: dict[str, Any] | None = None
    privacy_budget: dict[str, Any] | None = None
    composition: str | None = None
    threshold: int | None = field(default=None, metadata=OPTIONAL)
    threshold_holders: list[str] | None = field(default=None, metadata=OPTIONAL)
    approvals: list[dict[str, Any]] | None = field(default=None, metadata=OPTIONAL)
    lender: str | None = field(default=None, metadata=OPTIONAL)
    purpose: str | None = field(default=None, metadata=OPTIONAL)
    applicants: int | None = field(default=None, metadata=OPTIONAL)
    contributions: dict[str, int] | None = field(default=None, metadata=OPTIONAL)
    consents: list[str] | None = field(default=None, metadata=OPTIONAL)
    per_platform: bool | None = field(default=None, metadata=OPTIONAL)
    platforms: list[str] | None = field(default=None, metadata=OPTIONAL)
    # registry updates and queries (the bureau's log)
    platform: str | None = field(default=None, metadata=OPTIONAL)
    submission_hash: str | None = field(default=None, metadata=OPTIONAL)
    records: int | None = field(default=None, metadata=OPTIONAL)
    new: int | None = field(default=None, metadata=OPTIONAL)
    updated: int | None = field(default=None, metadata=OPTIONAL)
    removed: int | None = field(default=None, metadata=OPTIONAL)
    unchanged: int | None = field(default=None, metadata=OPTIONAL)
    query_hash: str | None = field(default=None, metadata=OPTIONAL)
    answer_hash: str | None = field(default=None)
    found: int | None = field(default=None, metadata=OPTIONAL)
    outcome: str | None = field(default=None, metadata=OPTIONAL)
    reason: str | None = field(default=None, metadata=OPTIONAL)
    expiries: list[str] | None = field(default=None, metadata=OPTIONAL)
