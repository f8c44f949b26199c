"""Party identities on disk: ``NAME.key`` (private, 0600) and ``NAME.card.json``.

A card is self-signed, which proves the card's author holds the private key;
whether the card really is "the bureau" is settled out of band by comparing
the printed fingerprint.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pprl.crypto.identity import IdentityKey
from pprl.documents import (
    Card,
    b64d,
    b64e,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import DocumentError, KeyFormatError

__all__ = ["ROLES", "PartyKey", "init_party", "load_key", "load_card", "load_cards"]

ROLES = ("platform", "bureau", "authority")
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


def _check_name_role(name: str, role: str) -> None:
    if not _NAME.match(name):
        raise KeyFormatError(
            f"party name {name!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if role not in ROLES:
        raise KeyFormatError(f"role {role!r} must be one of {', '.join(ROLES)}")


def init_party(name: str, role: str, directory: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Create a fresh identity; return (key path, card path). Refuses to overwrite a key."""
    _check_name_role(name, role)
    d = Path(directory)
    key_path, card_path = d / f"{name}.key", d / f"{name}.card.json"
    if key_path.exists() and not force:
        raise DocumentError(f"{key_path}: already exists; refusing to overwrite an identity key")
    identity = IdentityKey.generate()
    card = Card(name=name, role=role, public=identity.public())
    write_document(
        key_path,
        {
            "kind": "key",
            "version": 1,
            "name": name,
            "role": role,
            "sign_seed": b64e(identity.sign_seed),
            "agree_seed": b64e(identity.agree_seed),
        },
        private=True,
    )
    card_doc = sign_document({"kind": "card", "version": 1, "fingerprint": card.fingerprint}, identity, card)
    write_document(card_path, card_doc)
    return key_path, card_path


def load_key(path: str | os.PathLike[str]) -> PartyKey:
    """Read a private identity key file."""
    doc = read_document(path, "key")
    try:
        identity = IdentityKey(
            sign_seed=b64d(doc["sign_seed"], f"{path}: sign_seed"),
            agree_seed=b64d(doc["agree_seed"], f"{path}: agree_seed"),
        )
        name, role = str(doc["name"]), str(doc["role"])
    except (KeyError, DocumentError, KeyFormatError):
        raise KeyFormatError(f"{path}: not a valid pprl identity key") from None
    _check_name_role(name, role)
    return PartyKey(card=Card(name=name, role=role, public=identity.public()), identity=identity)


def load_card(path: str | os.PathLike[str]) -> Card:
    """Read a party card and check its self-signature and fingerprint."""
    doc = read_document(path, "card")
    card = verify_document(doc, source=str(path))
    if doc.get("fingerprint") != card.fingerprint:
        raise KeyFormatError(f"{path}: fingerprint does not match the card's keys")
    _check_name_role(card.name, card.role)
    return card


def load_cards(paths: Iterable[str | os.PathLike[str]]) -> list[Card]:
    """Read several cards; names must be unique."""
    cards: list[Card] = []
    for p in paths:
        card = load_card(p)
        if any(c.name == card.name for c in cards):
            raise DocumentError(f"{p}: a second card for party '{card.name}'")
        cards.append(card)
    return cards
