"""PSI sessions: the bureau opens one (platforms in ring order, identifier kind, reveal flag); everyone loads and checks it.

Part of the exact-identifier path described in :mod:`pprl.protocol.psi`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pprl.crypto import psi as psi_crypto
from pprl.documents import (
    Card,
    document_hash,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import (
    DocumentError,
    KeyFormatError,
    PolicyError,
)
from pprl.encoding.normalise.identifiers import IDENTIFIER_KINDS, normaliser_for
from pprl.protocol.identity import PartyKey

__all__ = [
    "PROTOCOL",
    "SESSION_KIND",
    "ROUND_KIND",
    "STATE_KIND",
    "REVEAL_KIND",
    "PsiSession",
    "SessionResult",
    "init_session",
    "load_session",
    "ring_order",
    "reblind_schedule",
    "session_from_doc",
]

#: Names the construction (group, hash to group, document layout); refused if different.
PROTOCOL = "pprl-ecdh-psi/curve25519-x25519/rfc9380-curve25519_XMD:SHA-512_ELL2_RO_/v2"
SESSION_KIND, ROUND_KIND, STATE_KIND, REVEAL_KIND = "psi-session", "psi-round", "psi-state", "psi-reveal"

def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- session


@dataclass(frozen=True)
class PsiSession:
    """A verified session: who takes part, in which ring order, on which identifier."""

    path: str
    doc: dict[str, Any] = field(repr=False)
    session_id: str
    hash: str
    bureau: Card
    platforms: tuple[Card, ...]
    identifier: str
    reveal_intersection: bool

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.platforms]

    @property
    def domain(self) -> bytes:
        """The hash-to-group domain: protocol, identifier kind and session id."""
        return psi_crypto.make_domain(PROTOCOL, self.identifier, self.session_id)

    def card(self, name: str) -> Card | None:
        return next((c for c in self.platforms if c.name == name), None)


@dataclass(frozen=True)
class SessionResult:
    path: Path
    session_id: str
    platforms: tuple[str, ...]


def init_session(
    me: PartyKey,
    cards: Sequence[Card],
    out: str | os.PathLike[str],
    *,
    identifier: str = "resident_id",
    reveal_intersection: bool = False,
) -> SessionResult:
    """Open a PSI session (bureau): fresh id, the platforms in ring order, the identifier kind."""
    if me.role != "bureau":
        raise KeyFormatError(f"only a bureau opens a PSI session; '{me.name}' is a {me.role}")
    normaliser_for(identifier)
    cards = list(cards)
    if len(cards) < 2:
        raise PolicyError("a PSI session needs at least two platforms (give --cards once per platform)")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise DocumentError("a platform is listed twice")
    for c in cards:
        if c.role != "platform":
            raise KeyFormatError(f"'{c.name}' is a {c.role}, not a platform")
    session_id = secrets.token_hex(16)
    doc = {
        "kind": SESSION_KIND,
        "version": 1,
        "header": {
            "session_id": session_id,
            "created": _now(),
            "protocol": PROTOCOL,
            "identifier": identifier,
            "reveal_intersection": bool(reveal_intersection),
            "platforms": [c.to_signer() for c in cards],
        },
    }
    path = write_document(out, sign_document(doc, me.identity, me.card))
    return SessionResult(path=path, session_id=session_id, platforms=tuple(names))


def session_from_doc(doc: dict[str, Any], source: str, bureau: Card | None) -> PsiSession:
    """A session from its document (read from a file or embedded in a platform's state), checked."""
    signer = verify_document(doc, None if bureau is None else [bureau], source=source, role="bureau")
    header = doc.get("header")
    try:
        if header["protocol"] != PROTOCOL:
            raise DocumentError(f"{source}: PSI protocol {header['protocol']!r} is not supported (this pprl speaks {PROTOCOL})")
        session_id = str(header["session_id"])
        identifier = str(header["identifier"])
        reveal = header["reveal_intersection"]
        platforms = tuple(
            Card.from_signer(s, what=f"{source}: platform {i}") for i, s in enumerate(header["platforms"], start=1)
        )
    except (KeyError, TypeError):
        raise DocumentError(f"{source}: session is missing header fields") from None
    if identifier not in IDENTIFIER_KINDS or not isinstance(reveal, bool) or len(platforms) < 2:
        raise DocumentError(f"{source}: session parameters are not valid")
    if len({c.name for c in platforms}) != len(platforms) or any(c.role != "platform" for c in platforms):
        raise DocumentError(f"{source}: session lists a platform twice or a party that is not a platform")
    if len(session_id) != 32 or any(ch not in "0123456789abcdef" for ch in session_id):
        raise DocumentError(f"{source}: session id is malformed")
    return PsiSession(source, doc, session_id, document_hash(doc), signer, platforms, identifier, reveal)


def load_session(path: str | os.PathLike[str], bureau: Card | None = None) -> PsiSession:
    """Read and verify a session; with ``bureau``, it must be the one who signed it."""
    doc = read_document(path, SESSION_KIND)
    return session_from_doc(doc, str(path), bureau)


def ring_order(names: Sequence[str], origin: str) -> list[str]:
    """The platforms in the order they must blind origin's list: origin, then its successors."""
    i = list(names).index(origin)
    return [*names[i:], *names[:i]]


def reblind_schedule(session: PsiSession) -> list[list[tuple[str, str]]]:
    """Per step s = 1..K-1: (platform, origin of the list it re-blinds), one pair per platform.

    Each platform handles every other platform's list exactly once; after
    step K-1 the bureau holds all K lists fully blinded.
    """
    names = session.names
    k = len(names)
    return [[(names[j], names[(j - s) % k]) for j in range(k)] for s in range(1, k)]
