"""The authority's tamper-evident release log.

One JSON object per line. Each entry records who released what and when, is
signed by the releasing party, and carries the SHA-256 of the previous entry,
so deleting, reordering or editing any entry breaks the chain at that point.
Appending rewrites the file atomically after checking the chain so far.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pprl.crypto.identity import IdentityKey
from pprl.documents import Card, document_hash, sign_document, verify_document, write_atomic
from pprl.errors import DocumentError, PPRLError, SignatureError, UnsupportedVersionError

__all__ = ["GENESIS", "AuditReport", "append_entry", "read_log", "verify_log"]

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditReport:
    """Result of checking a log: how many entries, and the hash of the last one."""

    entries: int
    head: str


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Parse a log into entries (an absent file is an empty log)."""
    p = Path(path)
    if not p.exists():
        return []
    entries = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise DocumentError(f"{p}: entry {number} is not valid JSON (damaged or tampered)") from None
        if not isinstance(entry, dict) or entry.get("kind") != "audit-entry":
            raise DocumentError(f"{p}: entry {number} is not an audit entry")
        entries.append(entry)
    return entries


def verify_log(path: str | os.PathLike[str], trusted: Sequence[Card] | None = None) -> AuditReport:
    """Check every entry's signature and the hash chain; name the first bad entry."""
    previous = GENESIS
    entries = read_log(path)
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: entry {number}"
        if entry.get("version") != 1:
            raise UnsupportedVersionError(f"{where}: version {entry.get('version')!r} is not supported")
        if entry.get("seq") != number:
            raise DocumentError(f"{where}: sequence number is {entry.get('seq')!r}, expected {number} (entries removed or reordered)")
        if entry.get("prev") != previous:
            raise DocumentError(f"{where}: hash chain broken (an earlier entry was changed, removed or reordered)")
        try:
            verify_document(entry, trusted, source=where)
        except SignatureError as exc:
            raise SignatureError(str(exc)) from None
        previous = document_hash(entry)
    return AuditReport(entries=len(entries), head=previous)


def append_entry(
    path: str | os.PathLike[str],
    key: IdentityKey,
    signer: Card,
    event: str,
    details: Mapping[str, Any],
) -> dict[str, Any]:
    """Append a signed entry after checking the existing chain; return the entry."""
    try:
        report = verify_log(path)
    except PPRLError as exc:
        raise DocumentError(f"refusing to append to a damaged audit log: {exc}") from None
    entry = {
        "kind": "audit-entry",
        "version": 1,
        "seq": report.entries + 1,
        "prev": report.head,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "event": event,
        **dict(details),
    }
    entry = sign_document(entry, key, signer)
    p = Path(path)
    existing = p.read_bytes() if p.exists() else b""
    if existing and not existing.endswith(b"\n"):
        existing += b"\n"
    line = json.dumps(entry, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    write_atomic(p, existing + line)
    return entry
