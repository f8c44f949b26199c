"""The authority's tamper-evident release log.

One JSON object per line. Each entry records who released what and when, is
signed by the releasing party, and carries the SHA-256 of the previous entry,
so deleting, reordering or editing any entry breaks the chain at that point.
Appending rewrites the file atomically after checking the chain so far.

A release decrypted with a threshold key also carries the T holders' signed
``decryption-approval`` documents, each bound to the release hash. When the
parts were combined without a combiner key (no combiner key), those approvals are the entry's only signatures: the
entry is then "attested" rather than signed, and ``verify_log`` requires at
least the threshold's number of valid approvals from distinct holders (with
trusted cards, from those cards: list the holders' cards then). Such
an entry's own fields are protected by the chain from the next signed entry
on; give a combiner key when the log's head must be signed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pprl.crypto.identity import IdentityKey
from pprl.documents import (
    Card,
    LogHead,
    LogHeadHeader,
    check_signature,
    document_hash,
    now,
    seal,
    sign_document,
    verify,
    verify_document,
)
from pprl.errors import DocumentError, PPRLError, SignatureError, UnsupportedVersionError
from pprl.protocol.identity import PartyKey

__all__ = [
    "GENESIS",
    "AuditReport",
    "check_chain",
    "check_extends",
    "check_witnessed",
    "make_entry",
    "next_entry",
    "verify_approval",
    "verify_entries",
    "witness_head",
]

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditReport:
    """Result of checking a log: how many entries, and the hash of the last one."""

    entries: int
    head: str


def verify_entries(
    entries: Sequence[Mapping[str, Any]], trusted: Sequence[Card], *, source: str = "audit log"
) -> AuditReport:
    """Check every entry's signature (or holder approvals) against the pinned ``trusted`` cards, and the hash
    chain; name the first bad entry."""
    if trusted is None:
        raise SignatureError(f"{source}: no pinned cards to check its entries' signers against")
    return _check(entries, trusted, source)


def check_chain(entries: Sequence[Mapping[str, Any]], *, source: str = "audit log") -> AuditReport:
    """The keeper's check of its own log before it appends: chain, sequence and signatures' integrity.

    Signers are not checked against pins (the keeper wrote the entries); a
    reader of someone else's log uses :func:`verify_entries`.
    """
    return _check(entries, None, source)


def _check(entries: Sequence[Mapping[str, Any]], trusted: Sequence[Card] | None, source: str) -> AuditReport:
    previous = GENESIS
    for number, entry in enumerate(entries, start=1):
        where = f"{source}: entry {number}"
        if entry.get("version") != 1:
            raise UnsupportedVersionError(f"{where}: version {entry.get('version')!r} is not supported")
        if entry.get("seq") != number:
            raise DocumentError(
                f"{where}: sequence number is {entry.get('seq')!r}, expected {number} (entries removed or reordered)"
            )
        if entry.get("prev") != previous:
            raise DocumentError(f"{where}: hash chain broken (an earlier entry was changed, removed or reordered)")
        if "signature" in entry or "approvals" not in entry:
            try:
                if trusted is None:
                    check_signature(entry, source=where)
                else:
                    verify_document(entry, trusted, source=where)
            except SignatureError as exc:
                raise SignatureError(str(exc)) from None
        if "approvals" in entry:
            # a signed entry's signer vouches for its approvals; an attested one has only them
            _verify_approvals(entry, None if "signature" in entry else trusted, where)
        previous = document_hash(entry)
    return AuditReport(entries=len(entries), head=previous)


def verify_approval(
    approval: Any, release_hash: str, fingerprint: str, *, source: str, trusted: Sequence[Card] | None = None
) -> Card:
    """Check a holder's signed ``decryption-approval`` of ``release_hash``; return the holder's card.

    With ``trusted`` the holder must be pinned; without, only the signature's
    integrity is checked and the caller binds the returned card (to a part's
    signer, or to the signed entry that carries the approval).
    """
    if not isinstance(approval, dict) or approval.get("kind") != "decryption-approval" or approval.get("version") != 1:
        raise DocumentError(f"{source}: not a decryption approval")
    signer = (check_signature(approval, source=source) if trusted is None
              else verify_document(approval, trusted, source=source))
    if approval.get("holder") != signer.name:
        raise SignatureError(f"{source}: approval names '{approval.get('holder')}' but is signed by '{signer.name}'")
    if approval.get("release_hash") != release_hash or approval.get("paillier_fingerprint") != fingerprint:
        raise DocumentError(f"{source}: approval by '{signer.name}' is for a different release or key")
    return signer


def _verify_approvals(entry: Mapping[str, Any], trusted: Sequence[Card] | None, where: str) -> None:
    """An entry's holder approvals: valid, distinct holders, at least its threshold of them."""
    approvals, threshold = entry.get("approvals"), entry.get("threshold")
    if not isinstance(approvals, list) or isinstance(threshold, bool) or not isinstance(threshold, int):
        raise DocumentError(f"{where}: malformed approvals")
    holders = set()
    for number, approval in enumerate(approvals, start=1):
        signer = verify_approval(
            approval, str(entry.get("release_hash")), str(entry.get("paillier_fingerprint")),
            source=f"{where}: approval {number}", trusted=trusted,
        )
        holders.add(signer.fingerprint)
    if len(holders) < max(threshold, 1):
        raise SignatureError(f"{where}: {len(holders)} distinct holder approvals, the key needs {threshold}")


def next_entry(
    entries: Sequence[Mapping[str, Any]],
    key: IdentityKey | None,
    signer: Card | None,
    event: str,
    details: Mapping[str, Any],
    *,
    source: str = "audit log",
) -> dict[str, Any]:
    """The entry that extends ``entries`` (checked first): signed by ``key`` as ``signer``.

    With no key, ``details`` must carry holder approvals that attest it (see the module notes).
    Entries stay JSON objects: an event's details are its own (a release's are
    :class:`pprl.documents.AuditEntry`'s fields).
    """
    try:
        report = check_chain(entries, source=source)
    except PPRLError as exc:
        raise DocumentError(f"refusing to append to a damaged audit log: {exc}") from None
    if key is None or signer is None:
        entry = make_entry(report.entries + 1, report.head, None, None, event, details)
        _verify_approvals(entry, None, "new audit entry")
        return entry
    return make_entry(report.entries + 1, report.head, key, signer, event, details)


def make_entry(
    seq: int, prev: str, key: IdentityKey | None, signer: Card | None, event: str, details: Mapping[str, Any]
) -> dict[str, Any]:
    """The entry number ``seq`` after the entry whose hash is ``prev``, signed when a key is given.

    For a log whose keeper already holds it checked (the registry's own log); :func:`next_entry`
    checks the chain first.
    """
    entry = {"kind": "audit-entry", "version": 1, "seq": seq, "prev": prev, "time": now(), "event": event,
             **dict(details)}
    if key is not None and signer is not None:
        return sign_document(entry, key, signer)
    return entry


# -- anchoring a log outside its keeper ---------------------------------------------------------------


def witness_head(
    me: PartyKey, entries: Sequence[Mapping[str, Any]], keeper: Card, trusted: Sequence[Card], *,
    source: str = "audit log",
) -> LogHead:
    """``me``'s signed statement of the head of ``keeper``'s log, after checking the whole log.

    ``trusted``: the cards that may sign its entries (the keeper's, and holders' for attested entries).
    Whoever keeps such a statement (a regulator, the bureau, a platform, a release) can later show that
    the log was truncated or rewritten: :func:`check_witnessed`.
    """
    report = verify_entries(entries, [keeper, *trusted], source=source)
    header = LogHeadHeader(keeper=keeper.name, keeper_fingerprint=keeper.fingerprint, entries=report.entries,
                           head=report.head)
    return seal(LogHead(header=header), me.identity, me.card)


def _hash_at(entries: Sequence[Mapping[str, Any]], count: int) -> str | None:
    """The head hash after the first ``count`` entries (None if the log is shorter)."""
    if count > len(entries):
        return None
    return GENESIS if count == 0 else document_hash(entries[count - 1])


def check_extends(entries: Sequence[Mapping[str, Any]], count: int, head: str, *, source: str, who: str) -> None:
    """DocumentError unless the log's first ``count`` entries end in ``head`` (as ``who`` saw them)."""
    if count > len(entries):
        raise DocumentError(f"{source}: holds {len(entries)} entries, but {who} saw {count}: the log was truncated "
                            "(which would also reset its privacy budget)")
    if _hash_at(entries, count) != head:
        raise DocumentError(f"{source}: entry {count} is not the one {who} saw: the log was rewritten")


def check_witnessed(
    entries: Sequence[Mapping[str, Any]], heads: Sequence[LogHead], witnesses: Sequence[Card], keeper: str, *,
    source: str = "audit log",
) -> int:
    """Check the log against heads pinned witnesses signed for ``keeper``'s log; returns how many were checked."""
    for head in heads:
        signer = verify(head, witnesses, source=head.source)
        if head.header.keeper != keeper:
            raise DocumentError(f"{head.source}: witnesses {head.header.keeper}'s log, not {keeper}'s")
        check_extends(entries, head.header.entries, head.header.head, source=source,
                      who=f"{signer.name} (at {head.header.created})")
    return len(heads)
