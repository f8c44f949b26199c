"""PSI sessions: the bureau opens one (platforms in ring order, identifier kind, reveal flag); everyone checks it.

Part of the exact-identifier path (docs/psi.md).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from pprl.crypto import psi as psi_crypto
from pprl.documents import Card, PsiSession, PsiSessionHeader, check_signature, seal, verify
from pprl.encoding.normalise import IDENTIFIER_KINDS, normaliser_for
from pprl.errors import DocumentError, KeyFormatError, PolicyError, SignatureError
from pprl.protocol.identity import PartyKey

__all__ = [
    "PROTOCOL",
    "Session",
    "check_session",
    "open_session",
    "reopen_session",
    "reblind_schedule",
    "ring_order",
]

#: Names the construction (group, hash to group, document layout); refused if different.
PROTOCOL = "pprl-ecdh-psi/curve25519-x25519/rfc9380-curve25519_XMD:SHA-512_ELL2_RO_/v2"


@dataclass(frozen=True)
class Session:
    """A verified session: who takes part, in which ring order, on which identifier."""

    doc: PsiSession = field(repr=False)
    session_id: str
    bureau: Card
    platforms: tuple[Card, ...]
    identifier: str
    reveal_intersection: bool

    @property
    def source(self) -> str:
        return self.doc.source

    @property
    def hash(self) -> str:
        return self.doc.hash

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.platforms]

    @property
    def domain(self) -> bytes:
        """The hash-to-group domain: protocol, identifier kind and session id."""
        return psi_crypto.make_domain(PROTOCOL, self.identifier, self.session_id)

    def card(self, name: str) -> Card | None:
        return next((c for c in self.platforms if c.name == name), None)


def open_session(
    me: PartyKey, cards: Sequence[Card], *, identifier: str = "resident_id", reveal_intersection: bool = False
) -> PsiSession:
    """Open a PSI session (bureau): fresh id, the platforms in ring order, the identifier kind."""
    if me.role != "bureau":
        raise KeyFormatError(f"only a bureau opens a PSI session; '{me.name}' is a {me.role}")
    normaliser_for(identifier)
    cards = list(cards)
    if len(cards) < 2:
        raise PolicyError("a PSI session needs at least two platforms (give one card per platform)")
    names = [c.name for c in cards]
    if len(set(names)) != len(names):
        raise DocumentError("a platform is listed twice")
    for c in cards:
        if c.role != "platform":
            raise KeyFormatError(f"'{c.name}' is a {c.role}, not a platform")
    header = PsiSessionHeader(
        session_id=secrets.token_hex(16),
        protocol=PROTOCOL,
        identifier=identifier,
        reveal_intersection=bool(reveal_intersection),
        platforms=[c.to_signer() for c in cards],
    )
    return seal(PsiSession(header=header), me.identity, me.card)


def check_session(doc: PsiSession, bureau: Card | Sequence[Card], platforms: Sequence[Card]) -> Session:
    """A session after its checks: signed by the pinned ``bureau``, every platform it lists among the pinned
    ``platforms`` (so the bureau cannot plant a platform of its own), parameters valid."""
    source = doc.source
    signer = verify(doc, [bureau] if isinstance(bureau, Card) else bureau, source=source, role="bureau")
    session = _fields(doc, signer)
    pinned = {(c.name, c.fingerprint) for c in platforms if c.role == "platform"}
    for card in session.platforms:
        if (card.name, card.fingerprint) not in pinned:
            raise SignatureError(f"{source}: lists platform '{card.name}', whose card you have not pinned "
                                 "(a platform the bureau added?); nothing was blinded")
    return session


def reopen_session(doc: PsiSession) -> Session:
    """A session this platform checked against its pins before and kept in its own private state."""
    return _fields(doc, check_signature(doc.wire, source=doc.source))


def _fields(doc: PsiSession, signer: Card) -> Session:
    source = doc.source
    header = doc.header
    if header.protocol != PROTOCOL:
        raise DocumentError(f"{source}: PSI protocol {header.protocol!r} is not supported (this pprl speaks {PROTOCOL})")
    platforms = tuple(
        Card.from_signer(s, what=f"{source}: platform {i}") for i, s in enumerate(header.platforms, start=1)
    )
    identifier, reveal, session_id = header.identifier, header.reveal_intersection, header.session_id
    if identifier not in IDENTIFIER_KINDS or not isinstance(reveal, bool) or len(platforms) < 2:
        raise DocumentError(f"{source}: session parameters are not valid")
    if len({c.name for c in platforms}) != len(platforms) or any(c.role != "platform" for c in platforms):
        raise DocumentError(f"{source}: session lists a platform twice or a party that is not a platform")
    if len(session_id) != 32 or any(ch not in "0123456789abcdef" for ch in session_id):
        raise DocumentError(f"{source}: session id is malformed")
    return Session(doc, session_id, signer, platforms, identifier, reveal)


def ring_order(names: Sequence[str], origin: str) -> list[str]:
    """The platforms in the order they must blind origin's list: origin, then its successors."""
    i = list(names).index(origin)
    return [*names[i:], *names[:i]]


def reblind_schedule(session: Session) -> list[list[tuple[str, str]]]:
    """Per step s = 1..K-1: (platform, origin of the list it re-blinds), one pair per platform.

    Each platform handles every other platform's list exactly once; after
    step K-1 the bureau holds all K lists fully blinded.
    """
    names = session.names
    k = len(names)
    return [[(names[j], names[(j - s) % k]) for j in range(k)] for s in range(1, k)]
