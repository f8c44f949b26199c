"""A party's public card: its name, role and the keys that speak for it."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pprl.crypto.identity import PublicIdentity
from pprl.errors import KeyFormatError

__all__ = ["Card"]


def _key(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError, ValueError):
        raise KeyFormatError(f"{what} is not valid base64") from None


@dataclass(frozen=True)
class Card:
    """A party's public card: who it is and the keys that speak for it."""

    name: str
    role: str
    public: PublicIdentity

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    def to_signer(self) -> dict[str, str]:
        """The ``signer`` object a signed document carries."""
        return {
            "name": self.name,
            "role": self.role,
            "sign_pub": base64.b64encode(self.public.sign_pub).decode("ascii"),
            "agree_pub": base64.b64encode(self.public.agree_pub).decode("ascii"),
        }

    @classmethod
    def from_signer(cls, fields: Mapping[str, Any], what: str = "signer") -> Card:
        """Read a ``signer`` object; KeyFormatError (naming ``what``) if it lacks a field, a key is not base64 or
        not a valid public key (a small-order Ed25519 key included)."""
        try:
            name, role = str(fields["name"]), str(fields["role"])
            sign_pub = _key(fields["sign_pub"], f"{what}.sign_pub")
            agree_pub = _key(fields["agree_pub"], f"{what}.agree_pub")
        except (KeyError, TypeError):
            raise KeyFormatError(f"{what} lacks name, role or public keys") from None
        try:
            public = PublicIdentity(sign_pub=sign_pub, agree_pub=agree_pub)
        except KeyFormatError as exc:
            raise KeyFormatError(f"{what}: {exc}") from None
        return cls(name=name, role=role, public=public)
