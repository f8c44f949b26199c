"""Party identities: a private identity key and a public, self-signed card.

A card proves its author holds the private key; whether the card really is
"the bureau" is settled out of band by comparing the printed fingerprint.
Files: :func:`pprl.protocol.files.init_party`, ``load_key``, ``load_card``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pprl.crypto.identity import IdentityKey
from pprl.documents import Card, CardDocument, IdentityKeyDocument, check_signature, seal
from pprl.errors import KeyFormatError
from pprl.protocol.roles import ROLES

__all__ = ["ROLES", "PartyKey", "card_document", "check_name_role", "create_identity", "key_document",
           "open_card", "open_key"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class PartyKey:
    """A party's private identity together with its public card."""

    card: Card
    identity: IdentityKey

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def role(self) -> str:
        return self.card.role


def check_name_role(name: str, role: str) -> None:
    """KeyFormatError unless ``name`` is a valid party name and ``role`` a known role."""
    if not _NAME.match(name):
        raise KeyFormatError(
            f"party name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if role not in ROLES:
        raise KeyFormatError(f"role {role!r} must be one of {', '.join(ROLES)}")


def create_identity(name: str, role: str) -> PartyKey:
    """A fresh identity (Ed25519 + X25519 seeds from the OS) for party ``name`` in ``role``."""
    check_name_role(name, role)
    identity = IdentityKey.generate()
    return PartyKey(card=Card(name=name, role=role, public=identity.public()), identity=identity)


def key_document(me: PartyKey) -> IdentityKeyDocument:
    """The private key document (written 0600)."""
    return IdentityKeyDocument(
        name=me.name, role=me.role, sign_seed=me.identity.sign_seed, agree_seed=me.identity.agree_seed
    )


def card_document(me: PartyKey) -> CardDocument:
    """The public card, self-signed."""
    return seal(CardDocument(fingerprint=me.card.fingerprint), me.identity, me.card)


def open_key(doc: IdentityKeyDocument) -> PartyKey:
    """The identity a key document holds; KeyFormatError if it is not a valid one."""
    try:
        identity = IdentityKey(sign_seed=doc.sign_seed, agree_seed=doc.agree_seed)
    except KeyFormatError:
        raise KeyFormatError(f"{doc.source}: not a valid pprl identity key") from None
    check_name_role(doc.name, doc.role)
    return PartyKey(card=Card(name=doc.name, role=doc.role, public=identity.public()), identity=identity)


def open_card(doc: CardDocument) -> Card:
    """A card after checking its self-signature and fingerprint."""
    card = check_signature(doc.wire, source=doc.source)  # a card is the trust root: it vouches for itself
    if doc.fingerprint != card.fingerprint:
        raise KeyFormatError(f"{doc.source}: fingerprint does not match the card's keys")
    check_name_role(card.name, card.role)
    return card
