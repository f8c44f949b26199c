"""The party steps over files: read and check the documents, run the step, write what it returns.

Each function here is a thin shell over a step that works on messages in
memory (:mod:`pprl.protocol.submit`, ``link``, ``aggregate``, ``decrypt``,
``secret``, ``identity``, ``audit``): it reads documents (kind, version and
JSON Schema checked by :func:`pprl.documents.load`), calls the step, and
writes its result atomically. Outputs are written only after the step
succeeded, so a refused step leaves nothing behind. The CLI and pipelines
that work with files use these; services and in-memory pipelines call the
steps directly.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pprl.crypto.identity import IdentityKey
from pprl.documents import (
    Answer,
    AnswerDecryption,
    Card,
    CardDocument,
    DecryptionPart,
    Document,
    IdentityKeyDocument,
    Linkage,
    LogHead,
    PaillierKeyDocument,
    PaillierPub,
    PaillierShare,
    PseudonymRequest,
    PseudonymResponse,
    PseudonymState,
    PsiReveal,
    PsiRound,
    PsiSession,
    PsiState,
    Release,
    SecretDocument,
    Share,
    Submission,
    load,
    load_any,
    now,
    parse_json,
    save,
    verify,
    write_atomic,
)
from pprl.errors import DataValidationError, DocumentError, KeyFormatError, OptionError, PPRLError
from pprl.protocol.audit import (
    AuditReport,
    check_chain,
    check_extends,
    check_witnessed,
    next_entry,
    verify_entries,
    witness_head,
)
from pprl.protocol.identity import PartyKey, card_document, create_identity, key_document, open_card, open_key
from pprl.protocol.link import (
    SAMPLE_SIZE,
    LinkOptions,
    LinkReport,
    VerifiedSubmission,
    link_submissions,
    open_linkage,
    open_submission,
)

if TYPE_CHECKING:  # the steps' own modules are imported where used: `pprl link` needs none of them
    import pandas as pd

    from pprl.crypto.paillier.vector import PaillierPrivateKey, PaillierPublicKey
    from pprl.encoding.schema import Schema
    from pprl.engine import Engine
    from pprl.protocol.decrypt import Decrypted, PsiEvidence, ReleaseEvidence
    from pprl.protocol.psi import IntersectionCounts, Session, State
    from pprl.protocol.query import AnswerPolicy
    from pprl.protocol.secret import LinkageSecret
    from pprl.protocol.threshold.combine import CombinedRelease
    from pprl.protocol.threshold.dealer import ThresholdSetup
    from pprl.protocol.threshold.holder import LoadedShare

__all__ = [
    "BlindResult",
    "audit_report",
    "decrypt_answer_file",
    "open_answer_file",
    "query_file",
    "PseudonymRequestResult",
    "evaluate_pseudonyms_file",
    "finish_pseudonyms_file",
    "request_pseudonyms_file",
    "ThresholdKeygenResult",
    "combine_release",
    "load_share",
    "load_threshold_public",
    "partial_decrypt_release",
    "threshold_keygen",
    "DecryptResult",
    "PsiReleaseResult",
    "ReblindResult",
    "RevealResult",
    "SessionResult",
    "aggregate_intersection",
    "blind_identifiers",
    "count_intersection",
    "init_session",
    "load_session",
    "load_state",
    "reblind_round",
    "reveal_members",
    "KeygenResult",
    "LinkResult",
    "ReleaseResult",
    "SubmitResult",
    "aggregate",
    "append_entry",
    "combine_release_parts",
    "combine_secrets",
    "decrypt_release",
    "init_party",
    "link",
    "load_card",
    "load_cards",
    "load_trust_store",
    "pinned_cards",
    "TRUST_ENV",
    "load_key",
    "load_linkage",
    "load_paillier_private",
    "load_paillier_public",
    "load_secret",
    "load_submission",
    "map_path_for",
    "paillier_keygen",
    "read_log",
    "share_secret",
    "submit",
    "verify_log",
    "witness_log",
    "release_evidence",
    "psi_evidence",
]

PathLike = str | os.PathLike[str]


# -- identities -------------------------------------------------------------------------------------


def init_party(name: str, role: str, directory: PathLike, *, force: bool = False) -> tuple[Path, Path]:
    """Create a fresh identity in ``directory``: NAME.key (0600) and NAME.card.json. Refuses to overwrite a key."""
    d = Path(directory)
    key_path, card_path = d / f"{name}.key", d / f"{name}.card.json"
    me = create_identity(name, role)
    if key_path.exists() and not force:
        raise DocumentError(f"{key_path}: already exists; refusing to overwrite an identity key")
    save(key_path, key_document(me))
    save(card_path, card_document(me))
    return key_path, card_path


def load_key(path: PathLike) -> PartyKey:
    """Read a private identity key file."""
    try:
        doc = load(path, IdentityKeyDocument)
    except KeyFormatError:
        raise KeyFormatError(f"{path}: not a valid pprl identity key") from None
    return open_key(doc)


def load_card(path: PathLike) -> Card:
    """Read a party card and check its self-signature and fingerprint."""
    return open_card(load(path, CardDocument))


def load_cards(paths: Iterable[PathLike]) -> list[Card]:
    """Read several cards; names must be unique."""
    cards: list[Card] = []
    for p in paths:
        card = load_card(p)
        if any(c.name == card.name for c in cards):
            raise DocumentError(f"{p}: a second card for party '{card.name}'")
        cards.append(card)
    return cards


#: The environment variable naming a party's trust store: a folder of the cards it pinned, set once.
TRUST_ENV = "PPRL_TRUST"


def load_trust_store(folder: PathLike) -> list[Card]:
    """Every ``*.card.json`` in ``folder``: the cards a party checked (fingerprints compared out of band) once."""
    path = Path(folder)
    if not path.is_dir():
        raise DocumentError(f"{path}: the trust store ({TRUST_ENV}) is not a folder")
    cards = load_cards(sorted(path.glob("*.card.json")))
    if not cards:
        raise DocumentError(f"{path}: the trust store ({TRUST_ENV}) holds no *.card.json")
    return cards


def pinned_cards(paths: Iterable[PathLike], option: str, what: str) -> list[Card]:
    """The cards given for ``option``, else the trust store named by ``PPRL_TRUST``.

    OptionError when there are neither: a received document is checked
    against cards its receiver chose, never accepted for being self-consistent.
    """
    given = list(paths)
    if given:
        return load_cards(given)
    store = os.environ.get(TRUST_ENV)
    if store:
        return load_trust_store(store)
    raise OptionError(f"pin {what}: give {{{option}}} (a card whose fingerprint you checked), or set {TRUST_ENV} "
                      "to your folder of pinned cards", option)


# -- the linkage secret -----------------------------------------------------------------------------


def share_secret(me: PartyKey, peers: Sequence[Card], out: PathLike, ceremony: str | None = None) -> Path:
    """Draw this platform's share and write it wrapped for itself and every peer (``ceremony``: see
    :func:`pprl.protocol.secret.default_ceremony`)."""
    from pprl.protocol.secret import make_share
    return save(out, make_share(me, peers, ceremony))


def combine_secrets(me: PartyKey, share_paths: Iterable[PathLike], out: PathLike) -> LinkageSecret:
    """Open every platform's share, check they agree, and write the combined secret (0600)."""
    from pprl.protocol.secret import combine_shares, secret_document
    secret = combine_shares(me, [load(p, Share) for p in share_paths])
    save(out, secret_document(secret))
    return secret


def load_secret(path: PathLike) -> LinkageSecret:
    """Read a combined linkage secret file."""
    from pprl.protocol.secret import open_secret
    return open_secret(load(path, SecretDocument))


# -- Paillier keys ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeygenResult:
    public_path: Path
    private_path: Path
    fingerprint: str


def paillier_keygen(me: PartyKey, bits: int, directory: PathLike) -> KeygenResult:
    """Generate the authority's Paillier keypair: DIR/paillier.pub.json (signed) and DIR/paillier.key (0600)."""
    from pprl.protocol.decrypt import new_paillier_key
    d = Path(directory)
    private_path = d / "paillier.key"
    if private_path.exists():
        raise DocumentError(f"{private_path}: already exists; refusing to overwrite a Paillier private key")
    pub, secret = new_paillier_key(me, bits)
    save(private_path, secret)
    public_path = save(d / "paillier.pub.json", pub)
    return KeygenResult(public_path=public_path, private_path=private_path, fingerprint=pub.fingerprint)


def _pin(cards: Card | Sequence[Card] | None, what: str, option: str) -> Card | Sequence[Card]:
    """The cards that pin ``what``; OptionError (naming ``option``) when none were given: trust is never optional."""
    if cards is None or (not isinstance(cards, Card) and not list(cards)):
        raise OptionError(f"pin {what}: give {{{option}}}, the card you checked", option)
    return cards


def load_paillier_public(path: PathLike, authority: Card | Sequence[Card]) -> PaillierPublicKey:
    """Read the authority's signed Paillier public key, verifying signature (by the pinned ``authority``) and
    fingerprint."""
    from pprl.protocol.submit import open_paillier_public
    return open_paillier_public(load(path, PaillierPub), authority)


def load_paillier_private(path: PathLike) -> PaillierPrivateKey:
    """Read the authority's Paillier private key."""
    from pprl.protocol.decrypt import open_paillier_private
    return open_paillier_private(load(path, PaillierKeyDocument))


# -- submit -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubmitResult:
    """What ``submit`` wrote."""

    path: Path
    map_path: Path
    records: int
    score_columns: tuple[str, ...]
    notes: tuple[str, ...] = ()
    score_bytes: int = 0  # encrypted scores as they travel (base64 text)


#: How ``submit`` and ``aggregate`` can write their document (``--format``).
DOCUMENT_FORMATS = ("json", "chunked")


def _is_chunked_format(format: str) -> bool:
    """Whether ``format`` (``--format``) asks for the chunked form; OptionError for one pprl does not write."""
    if format not in DOCUMENT_FORMATS:
        raise OptionError(f"--format '{format}': expected one of {', '.join(DOCUMENT_FORMATS)}")
    return format == "chunked"


def _write_signed(out: PathLike, doc: Document, me: PartyKey, chunked: bool) -> Path:
    """Write a document ``me`` made: sealed already (JSON), or unsealed, to be signed in its chunked form."""
    if not chunked:
        return save(out, doc)
    from pprl.documents import write_chunked

    write_chunked(out, doc, me.identity, me.card)
    return Path(out)


def map_path_for(out: PathLike) -> Path:
    """Where ``submit`` writes the private token map of submission ``out``."""
    return Path(f"{os.fspath(out)}.map.csv")


def submit(
    me: PartyKey,
    schema: Schema | PathLike,
    secret: LinkageSecret | PathLike,
    data: pd.DataFrame | PathLike,
    id_column: str,
    out: PathLike,
    *,
    paillier: PaillierPublicKey | PathLike | None = None,
    scores: Sequence[str] = (),
    authority: Card | Sequence[Card] | None = None,
    progress: bool = False,
    clip: Mapping[str, tuple[Decimal, Decimal]] | None = None,
    encryption: str | None = None,
    records_per_ciphertext: int = 1,
    pseudonym_column: str | None = None,
    pseudonym_kind: str = "resident_id",
    run: str | None = None,
    engine: Engine | None = None,
    format: str = "json",
) -> SubmitResult:
    """Encode, encrypt and sign this platform's records; write the submission and its token map (0600).

    Options as :class:`pprl.protocol.submit.SubmitOptions`; ``authority`` pins
    who must have signed ``paillier``; ``engine``: where encoding and encryption run (:mod:`pprl.engine`);
    ``format``: ``"json"`` or ``"chunked"`` (binary chunks and a signed trailer, for large submissions:
    :mod:`pprl.documents.chunked`; every reader of submissions takes both).
    """
    chunked = _is_chunked_format(format)
    from pprl.crypto.paillier.vector import PaillierPublicKey
    from pprl.encoding.schema import Schema, load_schema
    from pprl.protocol.secret import LinkageSecret
    from pprl.protocol.submit import SubmitOptions, prepare_submission
    from pprl.protocol.tables import load_records
    options = SubmitOptions(
        id_column=id_column, scores=tuple(scores), clip=dict(clip or {}), encryption=encryption or "djn",
        records_per_ciphertext=records_per_ciphertext, pseudonym_column=pseudonym_column,
        pseudonym_kind=pseudonym_kind, progress=progress, run=run,
    )
    schema = schema if isinstance(schema, Schema) else load_schema(schema)
    secret = secret if isinstance(secret, LinkageSecret) else load_secret(secret)
    source, frame = load_records(data)
    key = None
    if paillier is not None:
        key = paillier if isinstance(paillier, PaillierPublicKey) else load_paillier_public(
            paillier, _pin(authority, "the Paillier key's signer", "authority"))
    prepared = prepare_submission(me, schema, secret, frame, options, key, source=source, engine=engine,
                                  sign=not chunked)
    map_path = map_path_for(out)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["token", id_column])
    writer.writerows(prepared.token_map)
    write_atomic(map_path, buffer.getvalue().encode("utf-8"), private=True)
    try:
        path = _write_signed(out, prepared.submission, me, chunked)
    except BaseException:
        map_path.unlink(missing_ok=True)
        raise
    packed = prepared.submission.payload.scores_packed
    return SubmitResult(
        path=path, map_path=map_path, records=prepared.submission.header.records,
        score_columns=options.scores, notes=prepared.notes,
        score_bytes=0 if packed is None else (len(packed) if chunked else 4 * -(-len(packed) // 3)),
    )


# -- link and aggregate -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkResult(LinkReport):
    """What ``link`` wrote, with the figures the link report prints."""

    path: Path = Path()


def load_submission(path: PathLike, cards: Sequence[Card]) -> VerifiedSubmission:
    """Read and verify one submission; refuse it unless signed by one of ``cards``."""
    return open_submission(load(path, Submission), cards)


def load_linkage(path: PathLike, trusted: Sequence[Card]) -> Linkage:
    """Read and verify a linkage document (signed by a bureau among ``trusted``)."""
    return open_linkage(load(path, Linkage), trusted)


def link(
    me: PartyKey,
    cards: Sequence[Card],
    submissions: Sequence[PathLike],
    threshold: float | str,
    out: PathLike,
    *,
    blocking: str = "auto",
    progress: bool = False,
    sample_size: int | None = None,
    workers: int | None = None,
    run: str | None = None,
    engine: Engine | None = None,
) -> LinkResult:
    """Verify submissions, link them (:func:`pprl.protocol.link.link_submissions`), write the signed linkage.

    ``threshold`` is a Dice similarity in (0, 1] or ``"auto"``; ``run``: every submission must have been made
    for this run; ``engine``: where the comparisons run (:class:`pprl.protocol.link.LinkOptions`).
    """
    options = LinkOptions(threshold=LinkOptions.parse_threshold(threshold), blocking=blocking, workers=workers,
                          progress=progress, run=run, engine=engine,
                          sample_size=SAMPLE_SIZE if sample_size is None else sample_size)
    linked = link_submissions(me, cards, [load(p, Submission) for p in submissions], options)
    path = save(out, linked.linkage)
    return LinkResult(path=path, **vars(linked.report))


@dataclass(frozen=True)
class ReleaseResult:
    """What ``aggregate`` wrote and how many entities it released and held back."""

    path: Path
    released: int
    suppressed: int


def aggregate(
    me: PartyKey,
    linkage: PathLike,
    submissions: Sequence[PathLike],
    min_contributors: int,
    out: PathLike,
    *,
    cards: Sequence[Card],
    noise: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    progress: bool = False,
    audit_head: PathLike | None = None,
    engine: Engine | None = None,
    format: str = "json",
) -> ReleaseResult:
    """Sum each score column per entity under encryption (:func:`pprl.protocol.aggregate.aggregate_release`);
    ``audit_head``: a witnessed head of the decryptor's log (signed by one of ``cards``) for the release to carry;
    ``engine``: where the sums run (:mod:`pprl.engine`); ``format``: ``"json"`` or ``"chunked"``
    (:mod:`pprl.documents.chunked`; ``decrypt`` and the threshold steps read both)."""
    chunked = _is_chunked_format(format)
    from pprl.protocol.aggregate import AggregateOptions, aggregate_release
    options = AggregateOptions(min_contributors=min_contributors, noise=noise, epsilon=epsilon, delta=delta,
                               progress=progress)
    head = load(audit_head, LogHead) if audit_head is not None else None
    result = aggregate_release(
        me, load(linkage, Linkage), [load(p, Submission) for p in submissions], options, cards, head, engine=engine,
        sign=not chunked,
    )
    path = _write_signed(out, result.release, me, chunked)
    return ReleaseResult(path=path, released=result.released, suppressed=result.suppressed)


# -- the audit log ----------------------------------------------------------------------------------


def read_log(path: PathLike) -> list[dict[str, Any]]:
    """Parse a log into entries, one JSON object per line (an absent file is an empty log)."""
    entries = _read_lines(path)
    for number, entry in enumerate(entries, start=1):
        if entry.get("kind") != "audit-entry":
            raise DocumentError(f"{path}: entry {number} is not an audit entry")
    return entries


def verify_log(
    path: PathLike, trusted: Sequence[Card], witnesses: Sequence[PathLike] = (), keeper: str | None = None
) -> AuditReport:
    """Check every entry's signature and the hash chain; name the first bad entry.

    ``witnesses``: log-head documents (``pprl audit witness``) or releases that carry the log's head,
    each signed by one of ``trusted``; the log must extend every one (not truncated, not rewritten).
    ``keeper``: whose log it is (default: the signer of its last signed entry; for a log with none, which
    an emptied log is, the keeper the witnesses name).
    """
    entries = read_log(path)
    report = verify_entries(entries, trusted, source=str(path))
    if witnesses:
        owner = keeper or _keeper_of(entries)
        heads: list[LogHead] = []
        for w in witnesses:
            doc = load_any(w, ("log-head", "release"))
            if isinstance(doc, LogHead):
                heads.append(doc)
                continue
            if not isinstance(doc, Release):  # pragma: no cover - load_any read one of the two kinds
                raise DocumentError(f"{w}: neither a witnessed log head nor a release")
            anchor = doc.header.audit_head
            if anchor is None:
                raise DocumentError(f"{w}: this release carries no audit-log head")
            signer = verify(doc, trusted, source=str(w), role="bureau")
            if owner is not None and anchor["keeper"] != owner:
                raise DocumentError(f"{w}: carries {anchor['keeper']}'s log head, not {owner}'s")
            check_extends(entries, int(anchor["entries"]), str(anchor["head"]), source=str(path),
                          who=f"{signer.name}'s release {Path(w).name}")
        for head in heads:
            check_witnessed(entries, [head], trusted, owner or head.header.keeper, source=str(path))
    return report


def _keeper_of(entries: Sequence[Mapping[str, Any]]) -> str | None:
    for entry in reversed(entries):
        signer = entry.get("signer")
        if isinstance(signer, dict) and isinstance(signer.get("name"), str):
            return str(signer["name"])
    return None


def witness_log(
    me: PartyKey, path: PathLike, keeper: Card, trusted: Sequence[Card], out: PathLike
) -> tuple[Path, LogHead]:
    """Check ``keeper``'s log and write ``me``'s signed statement of its head (:func:`pprl.protocol.audit.witness_head`)."""
    head = witness_head(me, read_log(path), keeper, trusted, source=str(path))
    return save(out, head), head


def _append_line(path: PathLike, entry: Mapping[str, Any]) -> None:
    """Append one entry to the log file, atomically (the whole file is rewritten)."""
    p = Path(path)
    existing = p.read_bytes() if p.exists() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    write_atomic(p, existing + line)


def append_entry(
    path: PathLike, key: IdentityKey | None, signer: Card | None, event: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """Append an entry after checking the existing chain; return the entry."""
    try:
        entries = read_log(path)
    except DocumentError as exc:
        raise DocumentError(f"refusing to append to a damaged audit log: {exc}") from None
    entry = next_entry(entries, key, signer, event, details, source=str(path))
    _append_line(path, entry)
    return entry


# -- decrypt ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecryptResult:
    path: Path
    entities: int
    audit_entry: int
    unreadable: int = 0  # for the decryptor's eyes only (see pprl.protocol.decrypt.Decrypted)


def _log_then_write(decrypted: Decrypted, audit_log: PathLike, out: PathLike) -> DecryptResult:
    """Append the entry first, then write the table: no plaintext leaves without its log entry."""
    _append_line(audit_log, decrypted.entry)
    path = write_atomic(out, decrypted.table, private=True)  # per-entity sums: the decryptor's alone
    return DecryptResult(path=path, entities=decrypted.entities, audit_entry=int(decrypted.entry["seq"]),
                         unreadable=decrypted.unreadable)


def append_log_line(path: PathLike, entry: Mapping[str, Any]) -> None:
    """Append one entry to a party's log file (atomically: readers see the old or the new file)."""
    _append_line(path, entry)


def checked_audit_log(audit_log: PathLike) -> list[dict[str, Any]]:
    """An audit log's entries after checking its chain (DocumentError naming the file if it is damaged)."""
    return _checked_log(audit_log)


def read_log_lines(path: PathLike) -> list[dict[str, Any]]:
    """A log file's entries (none if it does not exist yet); DocumentError for a damaged line."""
    return _read_lines(path)


def _checked_log(audit_log: PathLike) -> list[dict[str, Any]]:
    """The log's entries after checking its chain (errors name the file)."""
    try:
        entries = read_log(audit_log)
        check_chain(entries, source=str(audit_log))
    except PPRLError as exc:
        raise DocumentError(f"refusing to use a damaged audit log: {exc}") from None
    return entries


def release_evidence(
    linkage: PathLike, submissions: Sequence[PathLike], platforms: Sequence[Card], min_contributors: int = 2
) -> ReleaseEvidence:
    """Read what a decryptor checks a release against (:class:`pprl.protocol.decrypt.ReleaseEvidence`)."""
    from pprl.protocol.decrypt import ReleaseEvidence
    return ReleaseEvidence(load(linkage, Linkage), [load(p, Submission) for p in submissions], list(platforms),
                           min_contributors)


def psi_evidence(
    session: PathLike, rounds: Sequence[PathLike], platforms: Sequence[Card], min_contributors: int = 2
) -> PsiEvidence:
    """Read what a decryptor checks a PSI release against (:class:`pprl.protocol.decrypt.PsiEvidence`)."""
    from pprl.protocol.decrypt import PsiEvidence
    return PsiEvidence(load(session, PsiSession), [load(p, PsiRound) for p in rounds], list(platforms),
                       min_contributors)


def decrypt_release(
    me: PartyKey,
    paillier_key: PaillierPrivateKey | PathLike,
    release: PathLike,
    audit_log: PathLike,
    out: PathLike,
    *,
    cards: Sequence[Card],
    progress: bool = False,
    max_epsilon: float | None = None,
    evidence: ReleaseEvidence | PsiEvidence | None,
) -> DecryptResult:
    """Verify a release, decrypt its per-entity sums, log the release, write the CSV.

    ``max_epsilon``: refuse (nothing written or logged) when the running
    epsilon of any score column in ``audit_log`` would exceed it, or the
    release carries no noise. ``evidence`` (:func:`release_evidence`): check the
    release against the signed linkage and submissions first.
    """
    from pprl.crypto.paillier.vector import PaillierPrivateKey
    from pprl.protocol.decrypt import DecryptOptions, decrypt_sums
    options = DecryptOptions(max_epsilon=max_epsilon, progress=progress, evidence=evidence)
    if me.role != "authority":
        raise KeyFormatError(f"only an authority decrypts releases; '{me.name}' is a {me.role}")
    private = paillier_key if isinstance(paillier_key, PaillierPrivateKey) else load_paillier_private(paillier_key)
    doc = load(release, Release)
    decrypted = decrypt_sums(me, private, doc, _checked_log(audit_log), options, cards)
    return _log_then_write(decrypted, audit_log, out)


def combine_release_parts(
    me: PartyKey | None,
    parts: Sequence[PathLike],
    release: PathLike,
    paillier_public: PathLike | None,
    audit_log: PathLike,
    out: PathLike,
    *,
    cards: Sequence[Card],
    authority: Card | Sequence[Card],
    progress: bool = False,
    max_epsilon: float | None = None,
    evidence: ReleaseEvidence | PsiEvidence | None,
) -> DecryptResult:
    """Combine T holders' verified partial decryptions of a release; log it and write the CSV.

    ``me`` (an authority) signs the audit entry and opens parts encrypted for
    it; without it the entry is attested by the holders' approvals alone.
    ``paillier_public`` defaults to the public key the parts carry;
    ``authority`` pins its dealer. ``max_epsilon`` and ``evidence`` as for :func:`decrypt_release`.
    """
    from pprl.protocol.decrypt import (
        DecryptOptions,
        check_evidence,
        check_release_packing,
        privacy_budget,
        publish,
        unpack_release,
    )
    options = DecryptOptions(max_epsilon=max_epsilon, progress=progress)
    if me is not None and me.role != "authority":
        raise KeyFormatError(f"only an authority combines decryption parts; '{me.name}' is a {me.role}")
    if evidence is not None:
        release_doc = load(release, Release)
        check_evidence(release_doc, evidence, [verify(release_doc, cards, source=str(release), role="bureau")])
    combined = combine_release(parts, release, paillier_public, me=me, cards=cards, authority=authority,
                               progress=progress)
    doc = combined.document or Release.from_dict(combined.release, str(release))
    spec = check_release_packing(doc)
    log = _checked_log(audit_log)
    budget = privacy_budget(doc, log, options.max_epsilon)
    if spec is not None:
        spec.check_key(combined.setup.public.public)  # a spec too big for the key could have wrapped
    columns = unpack_release(doc, combined.sums, spec)
    extra = {
        **budget,
        "threshold": combined.setup.public.threshold,
        "threshold_holders": list(combined.holders),
        "approvals": list(combined.approvals),
    }
    decrypted = publish(me, doc, columns, log, extra, release_hash=combined.release_hash)
    return _log_then_write(decrypted, audit_log, out)


# -- the exact path: PSI ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionResult:
    path: Path
    session_id: str
    platforms: tuple[str, ...]


def init_session(
    me: PartyKey, cards: Sequence[Card], out: PathLike, *, identifier: str = "resident_id",
    reveal_intersection: bool = False,
) -> SessionResult:
    """Open a PSI session (bureau) and write it: fresh id, the platforms in ring order, the identifier kind."""
    from pprl.protocol.psi import open_session
    doc = open_session(me, cards, identifier=identifier, reveal_intersection=reveal_intersection)
    path = save(out, doc)
    return SessionResult(path=path, session_id=doc.header.session_id,
                         platforms=tuple(p["name"] for p in doc.header.platforms))


def load_session(path: PathLike, bureau: Card | Sequence[Card], platforms: Sequence[Card]) -> Session:
    """Read and verify a session: signed by the pinned ``bureau``, every platform it lists pinned."""
    from pprl.protocol.psi import check_session
    return check_session(load(path, PsiSession), bureau, platforms)


def _own_session(path: PathLike, me: PartyKey) -> Session:
    """The bureau's own session: signed with its key; the platforms it lists are its own choice."""
    from pprl.protocol.psi import check_session
    doc = load(path, PsiSession)
    return check_session(doc, me.card, [Card.from_signer(p) for p in doc.header.platforms])


def load_state(path: PathLike, me: PartyKey) -> State:
    """Read and open this platform's PSI state."""
    from pprl.protocol.psi import open_state
    return open_state(load(path, PsiState), me)


@dataclass(frozen=True)
class BlindResult:
    path: Path
    state_path: Path
    records: int
    skipped: int
    score_columns: tuple[str, ...]
    timings: dict[str, float] = field(default_factory=dict)


def blind_identifiers(
    me: PartyKey,
    session: Session | PathLike,
    data: pd.DataFrame | PathLike,
    id_column: str,
    out: PathLike,
    state: PathLike,
    *,
    identifier: str | None = None,
    identifier_column: str | None = None,
    paillier: PaillierPublicKey | PathLike | None = None,
    scores: Sequence[str] = (),
    authority: Card | Sequence[Card] | None = None,
    bureau: Card | Sequence[Card] | None = None,
    platforms: Sequence[Card] = (),
    workers: int | None = None,
    progress: bool = False,
    encryption: str | None = None,
    clip: Mapping[str, tuple[Decimal, Decimal]] | None = None,
    engine: Engine | None = None,
) -> BlindResult:
    """Round 1 (platform): blind, shuffle and encrypt; write the signed round ``out`` and the private ``state`` (0600).

    ``clip``: as for :func:`submit` (what release noise is calibrated to); ``engine``: where the blinding and
    encryption run (:mod:`pprl.engine`)."""
    from pprl.crypto.paillier.vector import PaillierPublicKey
    from pprl.protocol.psi import BlindOptions, Session, blind
    from pprl.protocol.tables import load_records
    options = BlindOptions(id_column=id_column, identifier_column=identifier_column, identifier=identifier,
                           scores=tuple(scores), encryption=encryption or "djn", workers=workers, progress=progress,
                           clip=dict(clip or {}), engine=engine)
    sess = session if isinstance(session, Session) else load_session(
        session, _pin(bureau, "the session's signer", "bureau"), [me.card, *platforms])
    state_path = Path(state)
    if state_path.exists():
        raise DocumentError(f"{state_path}: already exists; refusing to overwrite a PSI state (it holds a session key)")
    source, frame = load_records(data)
    key = None
    if options.scores and paillier is not None:
        key = paillier if isinstance(paillier, PaillierPublicKey) else load_paillier_public(
            paillier, _pin(authority, "the Paillier key's signer", "authority"))
    blinded = blind(me, sess, frame, options, key, source=source)
    save(state_path, blinded.state)
    try:
        path = save(out, blinded.round)
    except BaseException:
        state_path.unlink(missing_ok=True)
        raise
    return BlindResult(path, state_path, blinded.records, blinded.skipped, blinded.score_columns, blinded.timings)


@dataclass(frozen=True)
class ReblindResult:
    path: Path
    origin: str
    hops: tuple[str, ...]
    records: int
    complete: bool


def reblind_round(
    me: PartyKey,
    state: PathLike,
    input: PathLike,
    out: PathLike,
    *,
    rerandomize: bool = True,
    workers: int | None = None,
    progress: bool = False,
    engine: Engine | None = None,
) -> ReblindResult:
    """One hop (platform): re-blind another platform's list and write it (:func:`pprl.protocol.psi.reblind`);
    ``engine``: where the re-blinding runs (:mod:`pprl.engine`)."""
    from pprl.protocol.psi import ReblindOptions, reblind
    options = ReblindOptions(rerandomize=rerandomize, workers=workers, progress=progress, engine=engine)
    doc = reblind(me, load_state(state, me), load(input, PsiRound), options)
    path = save(out, doc)
    h = doc.header
    return ReblindResult(path, h.origin, tuple(h.hops), h.records, h.complete)


def count_intersection(me: PartyKey, session: Session | PathLike, inputs: Sequence[PathLike], *,
                       engine: Engine | None = None) -> IntersectionCounts:
    """Cardinality only (bureau): persons on two or more platforms, by number of platforms; ``engine``: where the
    join runs (:mod:`pprl.engine`; the counts are the same)."""
    from pprl.protocol.psi import Session, count_rounds
    sess = session if isinstance(session, Session) else _own_session(session, me)
    return count_rounds(me, sess, [load(p, PsiRound) for p in inputs], engine=engine)


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
    session: Session | PathLike,
    inputs: Sequence[PathLike],
    min_contributors: int,
    out: PathLike,
    *,
    reveal_dir: PathLike | None = None,
    noise: str | None = None,
    epsilon: float | None = None,
    delta: float | None = None,
    engine: Engine | None = None,
) -> PsiReleaseResult:
    """Match and sum (bureau, :func:`pprl.protocol.psi.sum_rounds`); write the release and, for a revealing
    session, ``<platform>.reveal.json`` per platform into ``reveal_dir`` (default: the release's directory).
    ``noise``/``epsilon``/``delta``: as for :func:`aggregate` (every list must declare the same clip ranges);
    ``engine``: where the join and the sums run (:mod:`pprl.engine`; the release is the same).
    """
    from pprl.protocol.aggregate import AggregateOptions
    from pprl.protocol.psi import Session, sum_rounds
    sess = session if isinstance(session, Session) else _own_session(session, me)
    options = AggregateOptions(min_contributors=min_contributors, noise=noise, epsilon=epsilon, delta=delta)
    result = sum_rounds(me, sess, [load(p, PsiRound) for p in inputs], min_contributors, options, engine=engine)
    directory = Path(reveal_dir) if reveal_dir is not None else Path(out).parent
    written: list[Path] = []
    try:
        written.append(save(out, result.release))
        for platform, reveal in result.reveals.items():
            written.append(save(directory / f"{platform}.reveal.json", reveal))
    except BaseException:
        for w in written:
            w.unlink(missing_ok=True)
        raise
    return PsiReleaseResult(written[0], result.released, result.suppressed, result.intersection,
                            result.transcript_hash, tuple(written[1:]))


@dataclass(frozen=True)
class RevealResult:
    path: Path
    members: int


def reveal_members(me: PartyKey, state: PathLike, input: PathLike, out: PathLike) -> RevealResult:
    """Map the bureau's reveal back to my own users (platform): CSV ``<id column>,entity_id,contributors``, 0600."""
    from pprl.protocol.psi import reveal_table
    table, members = reveal_table(me, load_state(state, me), load(input, PsiReveal))
    return RevealResult(write_atomic(out, table, private=True), members)


# -- threshold decryption ---------------------------------------------------------------------------


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
    """Deal a T-of-n key (:func:`pprl.protocol.threshold.dealer.deal_threshold_key`) into ``directory``:
    ``paillier.pub.json`` and one ``<holder>.share.json`` (0600) per holder. Refuses existing files.
    """
    from pprl.protocol.threshold.dealer import deal_threshold_key
    d = Path(directory)
    public_path = d / "paillier.pub.json"
    share_paths = {c.name: d / f"{c.name}.share.json" for c in holders}
    for p in [public_path, *share_paths.values()]:
        if p.exists():
            raise DocumentError(f"{p}: already exists; refusing to overwrite a key file")
    dealt = deal_threshold_key(me, bits, threshold, holders, allow_insecure=_allow_insecure)
    for name, share in dealt.shares.items():
        save(share_paths[name], share)
    save(public_path, dealt.pub)
    return ThresholdKeygenResult(public_path=public_path, share_paths=share_paths, fingerprint=dealt.fingerprint,
                                 threshold=dealt.threshold, holders=dealt.holders)


def load_threshold_public(
    path: PathLike, authority: Card | Sequence[Card], *, _allow_insecure: bool = False
) -> ThresholdSetup:
    """Read a signed threshold ``paillier.pub.json``; ``authority`` pins the dealer."""
    from pprl.protocol.threshold.dealer import open_threshold_public
    return open_threshold_public(load(path, PaillierPub), authority, allow_insecure=_allow_insecure)


def load_share(
    me: PartyKey, path: PathLike, *, dealer: Card | Sequence[Card], _allow_insecure: bool = False
) -> LoadedShare:
    """Read and open ``me``'s share file in memory (``dealer`` pins the authority's card)."""
    from pprl.protocol.threshold.holder import open_share
    return open_share(me, load(path, PaillierShare), dealer=dealer, allow_insecure=_allow_insecure)


def partial_decrypt_release(
    me: PartyKey,
    share_path: PathLike,
    release_path: PathLike,
    out: PathLike,
    *,
    cards: Sequence[Card],
    dealer: Card | Sequence[Card],
    combiner: Card | None = None,
    workers: int | None = None,
    progress: bool = False,
    evidence: ReleaseEvidence | PsiEvidence | None,
    _allow_insecure: bool = False,
) -> Path:
    """Write ``me``'s signed decryption part of a release (:func:`pprl.protocol.threshold.holder.decryption_part`);
    ``evidence`` as for :func:`decrypt_release`: a holder checks the release itself before its part."""
    from pprl.protocol.decrypt import check_evidence
    from pprl.protocol.threshold.dealer import ThresholdOptions
    from pprl.protocol.threshold.holder import decryption_part
    if evidence is not None:
        release_doc = load(release_path, Release)
        check_evidence(release_doc, evidence, [verify(release_doc, cards, source=str(release_path), role="bureau")])
    share = load_share(me, share_path, dealer=dealer, _allow_insecure=_allow_insecure)
    options = ThresholdOptions(workers=workers, progress=progress, allow_insecure=_allow_insecure)
    part = decryption_part(me, share, load(release_path, Release), options, cards=cards, combiner=combiner)
    return save(out, part)


def combine_release(
    parts: Sequence[PathLike],
    release_path: PathLike,
    public_path: PathLike | None = None,
    *,
    me: PartyKey | None = None,
    cards: Sequence[Card],
    authority: Card | Sequence[Card],
    workers: int | None = None,
    progress: bool = False,
    _allow_insecure: bool = False,
) -> CombinedRelease:
    """Read T or more holders' parts and the release; verify and combine them
    (:func:`pprl.protocol.threshold.combine.combine_parts`).
    """
    from pprl.protocol.threshold.combine import combine_parts
    from pprl.protocol.threshold.dealer import ThresholdOptions
    docs = [load(p, DecryptionPart) for p in parts]
    public = load(public_path, PaillierPub) if public_path is not None else None
    options = ThresholdOptions(workers=workers, progress=progress, allow_insecure=_allow_insecure)
    return combine_parts(docs, load(release_path, Release), public, options, me=me, cards=cards, authority=authority)


# -- pseudonyms for lenders -------------------------------------------------------------------------


@dataclass(frozen=True)
class PseudonymRequestResult:
    path: Path
    state_path: Path
    applicants: int
    invalid: int


def request_pseudonyms_file(
    me: PartyKey, applicants: PathLike, reference_column: str, identifier_column: str, out: PathLike,
    state: PathLike, *, identifier: str = "resident_id",
) -> PseudonymRequestResult:
    """Blind the applicants of a CSV (lender); write the request and the private state (0600)."""
    from pprl.protocol.pseudonym import request_pseudonyms
    from pprl.protocol.tables import load_records, require_columns
    state_path = Path(state)
    if state_path.exists():
        raise DocumentError(f"{state_path}: already exists; refusing to overwrite a pseudonym state")
    source, frame = load_records(applicants)
    require_columns(frame, [reference_column, identifier_column], source)
    pairs = list(zip(frame[reference_column].tolist(), frame[identifier_column].tolist()))
    try:
        made = request_pseudonyms(me, pairs, identifier)
    except DataValidationError as exc:
        raise DataValidationError(f"{source}: {exc}") from None
    save(state_path, made.state)
    try:
        path = save(out, made.request)
    except BaseException:
        state_path.unlink(missing_ok=True)
        raise
    return PseudonymRequestResult(path, state_path, made.request.header.count, made.invalid)


def evaluate_pseudonyms_file(
    me: PartyKey, secret: LinkageSecret | PathLike, request: PathLike, lenders: Sequence[Card], log: PathLike,
    out: PathLike, *, daily_quota: int | None = 10_000,
) -> Path:
    """Evaluate a lender's request (platform): append the use to ``log`` first, then write the response."""
    from pprl.protocol.pseudonym import EvaluatorOptions, evaluate_request
    from pprl.protocol.secret import LinkageSecret
    options = EvaluatorOptions(daily_quota=daily_quota)
    secret = secret if isinstance(secret, LinkageSecret) else load_secret(secret)
    entries = _read_lines(log)
    response, entry = evaluate_request(me, secret, load(request, PseudonymRequest), lenders, entries, options)
    _append_line(log, entry)
    return save(out, response)


def finish_pseudonyms_file(
    me: PartyKey, state: PathLike, response: PathLike, platforms: Sequence[Card], out: PathLike
) -> tuple[Path, int]:
    """Unblind a response (lender); write ``reference,pseudonym`` (hex) per applicant, 0600."""
    from pprl.protocol.pseudonym import finish_pseudonyms
    found = finish_pseudonyms(me, load(state, PseudonymState), load(response, PseudonymResponse), platforms)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["reference", "pseudonym"])
    writer.writerows((ref, p.hex()) for ref, p in found)
    return write_atomic(out, buffer.getvalue().encode("utf-8"), private=True), len(found)


def _read_lines(path: PathLike) -> list[dict[str, Any]]:
    """A JSON-lines log (absent: empty); DocumentError naming the entry that is not a JSON object."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        value = parse_json(line, f"{p}: entry {number}", f"{p}: entry {number} is not valid JSON (damaged or tampered)")
        if not isinstance(value, dict):
            raise DocumentError(f"{p}: entry {number} is not a log entry")
        out.append(value)
    return out


# -- the lender's query and the bureau's answer -----------------------------------------------------


def _pseudonym_table(path: PathLike) -> dict[str, bytes]:
    """reference -> pseudonym from a `pprl pseudonym finish` CSV."""
    from pprl.protocol.tables import read_table, require_columns
    table = read_table(path)
    require_columns(table, ["reference", "pseudonym"], str(path))
    out = {}
    for number, (ref, p) in enumerate(zip(table["reference"], table["pseudonym"]), start=1):
        try:
            raw = bytes.fromhex(p)
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise DataValidationError(f"{path}: row {number}: the pseudonym is not 64 hex digits")
        out[ref] = raw
    return out


def query_file(me: PartyKey, pseudonyms: PathLike, consents: PathLike, purpose: str, out: PathLike) -> Path:
    """Write the lender's signed query: every applicant of ``pseudonyms`` with its consent from ``consents``
    (CSV: reference, consent, purpose, issued, expires). An applicant without a consent row is refused."""
    from pprl.protocol.query import Consent, make_query
    from pprl.protocol.tables import read_table, require_columns
    found = _pseudonym_table(pseudonyms)
    table = read_table(consents)
    require_columns(table, ["reference", "consent", "purpose", "issued", "expires"], str(consents))
    by_ref = {r["reference"]: r for r in table.to_dict("records")}
    items = []
    for number, (ref, p) in enumerate(found.items(), start=1):
        row = by_ref.get(ref)
        if row is None:
            raise DataValidationError(f"{consents}: no consent for applicant {number} of {pseudonyms}; "
                                      "a lender asks only about consenting applicants")
        try:
            consent = Consent(row["consent"], row["purpose"], row["issued"], row["expires"])
        except PPRLError as exc:
            raise DataValidationError(f"{consents}: applicant {number}: {exc}") from None
        items.append((p, consent))
    return save(out, make_query(me, items, purpose))


def load_policy(path: PathLike) -> AnswerPolicy:
    """Read a release policy file (JSON, see :class:`pprl.protocol.query.AnswerPolicy`)."""
    from pprl.protocol.query import AnswerPolicy
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{path}: no such release policy file") from None
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read the release policy ({exc.strerror})") from None
    data = parse_json(raw, str(path), f"{path}: not a JSON release policy")
    return AnswerPolicy.from_dict(data, str(path))


def decrypt_answer_file(
    me: PartyKey, paillier_key: PaillierPrivateKey | PathLike, answer: PathLike, cards: Sequence[Card],
    audit_log: PathLike, out: PathLike, *, policy: AnswerPolicy | None = None,
) -> Path:
    """The authority decrypts an answer's masked sums for the lender: logs the use first, then writes them."""
    from pprl.crypto.paillier.vector import PaillierPrivateKey
    from pprl.protocol.query import decrypt_answer
    private = paillier_key if isinstance(paillier_key, PaillierPrivateKey) else load_paillier_private(paillier_key)
    bureaus = [c for c in cards if c.role == "bureau"]
    lenders = [c for c in cards if c.role == "lender"]
    decryption, entry = decrypt_answer(me, private, load(answer, Answer), _checked_log(audit_log), bureaus, lenders,
                                       policy)
    _append_line(audit_log, entry)
    return save(out, decryption)


def answer_part_file(
    me: PartyKey, share: PathLike, answer: PathLike, cards: Sequence[Card], audit_log: PathLike, out: PathLike, *,
    policy: AnswerPolicy | None = None, workers: int | None = None, progress: bool = False,
    _allow_insecure: bool = False,
) -> Path:
    """A threshold holder's part of an answer, encrypted for its lender: logs the use first, then writes it.

    ``cards`` hold the bureau's, the lenders' and the dealer's (an authority other than ``me``) cards.
    """
    from pprl.protocol.query import answer_part
    from pprl.protocol.threshold.dealer import ThresholdOptions
    dealers = [c for c in cards if c.role == "authority" and c.fingerprint != me.card.fingerprint]
    if len(dealers) != 1:
        raise OptionError("give the dealer's card (the authority that dealt the key) once in {cards}", "cards")
    loaded = load_share(me, share, dealer=dealers[0], _allow_insecure=_allow_insecure)
    options = ThresholdOptions(workers=workers, progress=progress, allow_insecure=_allow_insecure)
    part, entry = answer_part(me, loaded, load(answer, Answer), _checked_log(audit_log),
                              [c for c in cards if c.role == "bureau"], [c for c in cards if c.role == "lender"],
                              policy, options)
    _append_line(audit_log, entry)
    return save(out, part)


def open_answer_file(
    me: PartyKey, answer: PathLike, decryption: PathLike | Sequence[PathLike], pseudonyms: PathLike,
    cards: Sequence[Card], out: PathLike, *, _allow_insecure: bool = False,
) -> tuple[Path, int, int]:
    """The lender reads its answer: ``app_id,found,contributors,<score>_sum...`` (0600), then, with
    per-platform answers, ``<platform>:<score>`` columns; returns (path, asked, found).

    ``decryption`` is the authority's decryption, or T holders' parts (a list) under a threshold key.
    """
    from pprl.protocol.query import open_answer
    from pprl.protocol.threshold.dealer import ThresholdOptions
    doc = load(answer, Answer)
    given: AnswerDecryption | list[DecryptionPart]
    if isinstance(decryption, list | tuple):
        given = [load(p, DecryptionPart) for p in decryption]
    else:
        given = load(cast("PathLike", decryption), AnswerDecryption)
    rows = open_answer(me, doc, given, [c for c in cards if c.role == "bureau"],
                       [c for c in cards if c.role == "authority"],
                       ThresholdOptions(allow_insecure=_allow_insecure))
    refs = {p.hex(): ref for ref, p in _pseudonym_table(pseudonyms).items()}
    columns = doc.header.released_columns
    platforms = sorted(doc.header.contributions) if doc.header.per_platform else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["app_id", "found", "contributors", *[f"{c}_sum" for c in columns],
                     *[f"{p}:{c}" for p in platforms for c in columns]])
    for item, row in zip(doc.payload.query["payload"]["items"], rows):
        ref = refs.get(item["pseudonym"])
        if ref is None:
            raise DataValidationError(f"{pseudonyms}: lacks an applicant the query asked about")
        found = row.status == "found"
        writer.writerow([
            ref, {"found": "yes", "not-found": "no"}.get(row.status, row.status),
            row.contributors if found else "", *[str(row.sums[c]) if found else "" for c in columns],
            *[str(row.platforms[p][c]) if p in row.platforms else "" for p in platforms for c in columns],
        ])
    path = write_atomic(out, buffer.getvalue().encode("utf-8"), private=True)
    return path, len(rows), sum(1 for r in rows if r.status == "found")


# -- the regulator's report -------------------------------------------------------------------------


def audit_report(logs: Sequence[PathLike], cards: Sequence[Card], out: PathLike) -> tuple[Path, bool]:
    """Check each log against ``cards`` and write the regulator's HTML page; returns (path, every log verifies)."""
    from pprl.protocol.report import CheckedLog, render_report
    checked = []
    for path in logs:
        try:
            entries = read_log(path)
        except DocumentError as exc:
            checked.append(CheckedLog(str(path), [], False, str(exc)))
            continue
        try:
            verify_entries(entries, cards, source=str(path))
            checked.append(CheckedLog(str(path), entries, True, ""))
        except PPRLError as exc:
            checked.append(CheckedLog(str(path), entries, False, str(exc).splitlines()[0]))
    page = render_report(checked, generated=now())
    return write_atomic(out, page.encode("utf-8")), all(c.ok for c in checked)
