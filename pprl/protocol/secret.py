"""The contributory linkage secret, agreed among the platforms only.

Each platform draws a random 32-byte share, commits to it, and wraps it for
every participating platform (itself included) with X25519 from a one-time
key (forward secrecy: a later theft of its identity key does not open it) +
HKDF + AES-GCM bound to both names and the ceremony. Every share names its
ceremony; shares of different ceremonies are never combined, so a share
replayed from an earlier ceremony is refused. Anyone may relay the share files (the bureau
usually does) but only the named platforms can open them. Combining every
share gives all platforms the same secret; no single platform chooses it.

A share file lists the participants' public keys as its author saw them. A
platform combining checks that every share lists exactly the participants its
own share lists and is signed by the key its own share names, so a relay that
swaps keys or files is caught.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from pprl.crypto.exchange import hkdf_sha256, unwrap, wrap
from pprl.crypto.identity import IdentityKey
from pprl.documents import Card, SecretDocument, Share, SharePayload, canonical_json, check_signature, seal, verify
from pprl.encoding.keys import run_secret
from pprl.errors import DecryptionError, DocumentError, KeyFormatError, KeyMismatchError
from pprl.protocol.identity import PartyKey

__all__ = [
    "LinkageSecret",
    "combine_shares",
    "default_ceremony",
    "make_share",
    "open_secret",
    "secret_document",
    "secret_fingerprint",
]

SHARE_BYTES = 32
_CONTEXT = b"pprl-linkage-secret-share-v1"


def secret_fingerprint(secret: bytes) -> str:
    """Short digest of a secret for platforms to compare; reveals nothing usable."""
    digest = hashlib.sha256(b"pprl-secret-fingerprint-v1" + secret).hexdigest()
    return ":".join(digest[i : i + 4] for i in range(0, 24, 4))


def _commitment(share: bytes) -> str:
    return hashlib.sha256(b"pprl-share-commitment-v1" + share).hexdigest()


@dataclass(frozen=True)
class LinkageSecret:
    """A combined linkage secret held by one platform."""

    owner: str
    participants: tuple[str, ...]
    secret: bytes

    def __repr__(self) -> str:
        return f"LinkageSecret(owner={self.owner!r}, participants={self.participants!r}, fingerprint={self.fingerprint!r})"

    @property
    def fingerprint(self) -> str:
        return secret_fingerprint(self.secret)

    @property
    def key_id(self) -> str:
        """Public identifier of the secret: lets the bureau check platforms used the same one."""
        return hkdf_sha256(self.secret, 16, salt=b"pprl-key-id-v1", info=b"linkage").hex()

    def for_run(self, run: str) -> LinkageSecret:
        """The secret of one run under a schema that rotates its key (``clkConfig.rotate``).

        Its ``key_id`` differs from run to run, so a registry (which compares CLKs across runs) refuses
        such submissions rather than linking nothing.
        """
        return LinkageSecret(self.owner, self.participants, run_secret(self.secret, run))


def default_ceremony(participants: Sequence[Card], day: str | None = None) -> str:
    """The ceremony id every participant derives alike: the sorted card fingerprints and the UTC date.

    Agree an explicit one (``pprl secret share --ceremony``) to run two ceremonies in a day, or across midnight.
    """
    day = day or datetime.now(timezone.utc).date().isoformat()
    material = "|".join(sorted(c.fingerprint for c in participants)) + "|" + day
    return hashlib.sha256(b"pprl-ceremony-v1|" + material.encode()).hexdigest()[:32]


def _check_ceremony(ceremony: str) -> str:
    if not isinstance(ceremony, str) or len(ceremony) != 32 or any(c not in "0123456789abcdef" for c in ceremony):
        raise KeyFormatError("a ceremony id is 32 lower-case hex digits")
    return ceremony


def make_share(me: PartyKey, peers: Sequence[Card], ceremony: str | None = None) -> Share:
    """Draw this platform's share and wrap it, under a one-time key, for itself and every peer."""
    if me.role != "platform":
        raise KeyFormatError(f"only platforms take part in the linkage secret; '{me.name}' is a {me.role}")
    participants = [me.card] + [p for p in peers if p.name != me.name]
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise DocumentError("two peer cards share a name")
    for p in participants:
        if p.role != "platform":
            raise KeyFormatError(f"card '{p.name}' is a {p.role}; only platforms may receive linkage-secret shares")
    ceremony = _check_ceremony(ceremony) if ceremony is not None else default_ceremony(participants)
    share = secrets.token_bytes(SHARE_BYTES)
    ephemeral = IdentityKey.generate()  # wraps this share only, then is dropped
    context = _CONTEXT + bytes.fromhex(ceremony)
    wrapped = {p.name: wrap(ephemeral, me.name, p.public.agree_pub, p.name, share, context) for p in participants}
    doc = Share(
        participants=sorted((p.to_signer() for p in participants), key=lambda s: s["name"]),
        ceremony=ceremony,
        ephemeral_pub=ephemeral.public().agree_pub,
        commitment=_commitment(share),
        payload=SharePayload(wrapped=wrapped),
    )
    del ephemeral
    return seal(doc, me.identity, me.card)


def combine_shares(me: PartyKey, shares: Sequence[Share]) -> LinkageSecret:
    """Open every platform's share, check they agree, and derive the combined secret.

    The trust root is this platform's own share: signed with ``me``'s key, it
    lists the peers' cards ``me`` pinned when it shared (``pprl secret share
    --peers``); every other share must be signed by one of them.
    """
    for doc in shares:
        if me.name not in doc.payload.wrapped:
            raise DecryptionError(
                f"{doc.source}: '{me.name}' is not among this share's recipients; only the participating "
                "platforms can open it"
            )
    own = [d for d in shares if d.signer is not None and d.signer.name == me.name]
    if not own:
        raise DocumentError(f"your own share (signed by '{me.name}') is missing from the shares")
    pinned = [me.card]
    for doc in own:
        if check_signature(doc.wire, source=doc.source).public == me.card.public:
            pinned = [me.card, *(Card.from_signer(p) for p in doc.participants if p.get("name") != me.name)]
            break
    loaded: list[tuple[Share, Card]] = []
    for doc in shares:
        signer = verify(doc, pinned, source=doc.source, role="platform")
        loaded.append((doc, signer))
    if not loaded:
        raise DocumentError("no share files given")
    mine = [entry for entry in loaded if entry[1].name == me.name]
    if not mine:
        raise DocumentError(f"your own share (signed by '{me.name}') is missing from the shares")
    own_doc, own_signer = mine[0]
    if own_signer.public != me.card.public:
        raise KeyMismatchError(f"{own_doc.source}: signed as '{me.name}' but not with this key")
    participants = own_doc.participants
    ceremony = own_doc.ceremony
    by_name = {p["name"]: Card.from_signer(p) for p in participants}
    opened: dict[str, bytes] = {}
    for doc, signer in loaded:
        if canonical_json(doc.participants) != canonical_json(participants):
            raise KeyMismatchError(f"{doc.source}: lists different participants or keys than your own share")
        if doc.ceremony != ceremony:
            raise KeyMismatchError(f"{doc.source}: belongs to ceremony {doc.ceremony}, not {ceremony} (your own "
                                   "share's): a share from another ceremony, or agree one with --ceremony")
        if signer.name in opened:
            raise DocumentError(f"{doc.source}: a second share from '{signer.name}'")
        if by_name[signer.name].public != signer.public:
            raise KeyMismatchError(f"{doc.source}: signed by a key that is not '{signer.name}''s")
        blob = doc.payload.wrapped[me.name]
        try:
            share = unwrap(me.identity, me.name, doc.ephemeral_pub, signer.name, blob,
                           _CONTEXT + bytes.fromhex(ceremony))
        except DecryptionError:
            raise DecryptionError(f"{doc.source}: cannot open the share with this key (wrong key, or tampered)") from None
        if _commitment(share) != doc.commitment:
            raise DecryptionError(f"{doc.source}: share does not match its commitment (tampered)")
        opened[signer.name] = share
    missing = sorted(set(by_name) - set(opened))
    if missing:
        raise DocumentError(f"missing share from {', '.join(missing)}; every participant's share is needed")
    names = tuple(sorted(opened))
    ikm = b"".join(opened[n] for n in names)
    secret = hkdf_sha256(ikm, 32, salt=b"pprl-linkage-secret-v1",
                         info=canonical_json({"participants": participants, "ceremony": ceremony}))
    return LinkageSecret(owner=me.name, participants=names, secret=secret)


def secret_document(secret: LinkageSecret) -> SecretDocument:
    """The combined secret as its private document (written 0600)."""
    return SecretDocument(
        owner=secret.owner, participants=list(secret.participants), fingerprint=secret.fingerprint,
        secret=secret.secret,
    )


def open_secret(doc: SecretDocument) -> LinkageSecret:
    """The secret a document holds, checked against its fingerprint."""
    result = LinkageSecret(owner=doc.owner, participants=tuple(doc.participants), secret=doc.secret)
    if result.fingerprint != doc.fingerprint:
        raise KeyFormatError(f"{doc.source}: secret does not match its fingerprint (damaged)")
    return result
