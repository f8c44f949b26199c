"""The contributory linkage secret, agreed among the platforms only.

Each platform draws a random 32-byte share, commits to it, and wraps it for
every participating platform (itself included) with pairwise X25519 + HKDF +
AES-GCM bound to both names. Anyone may relay the share files (the bureau
usually does) but only the named platforms can open them. Combining every
share gives all platforms the same secret; no single platform chooses it.

A share file lists the participants' public keys as its author saw them. A
platform combining checks that every share lists exactly the participants its
own share lists and is signed by the key its own share names, so a relay that
swaps keys or files is caught.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pprl.crypto.exchange import hkdf_sha256, unwrap, wrap
from pprl.documents import (
    Card,
    b64d,
    b64e,
    canonical_json,
    read_document,
    sign_document,
    verify_document,
    write_document,
)
from pprl.errors import DecryptionError, DocumentError, KeyFormatError, KeyMismatchError
from pprl.protocol.identity import PartyKey

__all__ = ["LinkageSecret", "share_secret", "combine_secrets", "load_secret", "secret_fingerprint"]

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


def share_secret(me: PartyKey, peers: Sequence[Card], out: str | os.PathLike[str]) -> Path:
    """Draw this platform's share and write it wrapped for itself and every peer."""
    if me.role != "platform":
        raise KeyFormatError(f"only platforms take part in the linkage secret; '{me.name}' is a {me.role}")
    participants = [me.card] + [p for p in peers if p.name != me.name]
    names = [p.name for p in participants]
    if len(set(names)) != len(names):
        raise DocumentError("two peer cards share a name")
    for p in participants:
        if p.role != "platform":
            raise KeyFormatError(f"card '{p.name}' is a {p.role}; only platforms may receive linkage-secret shares")
    share = secrets.token_bytes(SHARE_BYTES)
    wrapped = {
        p.name: b64e(wrap(me.identity, me.name, p.public.agree_pub, p.name, share, _CONTEXT))
        for p in participants
    }
    doc = {
        "kind": "share",
        "version": 1,
        "participants": sorted((p.to_signer() for p in participants), key=lambda s: s["name"]),
        "commitment": _commitment(share),
        "payload": {"wrapped": wrapped},
    }
    return write_document(out, sign_document(doc, me.identity, me.card))


def combine_secrets(me: PartyKey, share_paths: Iterable[str | os.PathLike[str]], out: str | os.PathLike[str]) -> LinkageSecret:
    """Open every platform's share, check they agree, and write the combined secret (0600)."""
    loaded: list[tuple[str, dict[str, Any], Card]] = []
    for path in share_paths:
        doc = read_document(path, "share")
        signer = verify_document(doc, source=str(path), role="platform")
        if me.name not in doc.get("payload", {}).get("wrapped", {}):
            raise DecryptionError(
                f"{path}: '{me.name}' is not among this share's recipients; only the participating platforms can open it"
            )
        loaded.append((str(path), doc, signer))
    if not loaded:
        raise DocumentError("no share files given")
    mine = [entry for entry in loaded if entry[2].name == me.name]
    if not mine:
        raise DocumentError(f"your own share (signed by '{me.name}') is missing from --shares")
    own_doc, own_signer = mine[0][1], mine[0][2]
    if own_signer.public != me.card.public:
        raise KeyMismatchError(f"{mine[0][0]}: signed as '{me.name}' but not with this key")
    participants = own_doc["participants"]
    by_name = {p["name"]: Card.from_signer(p) for p in participants}
    opened: dict[str, bytes] = {}
    for path, doc, signer in loaded:
        if canonical_json(doc["participants"]) != canonical_json(participants):
            raise KeyMismatchError(f"{path}: lists different participants or keys than your own share")
        if signer.name in opened:
            raise DocumentError(f"{path}: a second share from '{signer.name}'")
        if by_name[signer.name].public != signer.public:
            raise KeyMismatchError(f"{path}: signed by a key that is not '{signer.name}''s")
        blob = b64d(doc["payload"]["wrapped"][me.name], f"{path}: wrapped share")
        try:
            share = unwrap(me.identity, me.name, signer.public.agree_pub, signer.name, blob, _CONTEXT)
        except DecryptionError:
            raise DecryptionError(f"{path}: cannot open the share with this key (wrong key, or tampered)") from None
        if _commitment(share) != doc["commitment"]:
            raise DecryptionError(f"{path}: share does not match its commitment (tampered)")
        opened[signer.name] = share
    missing = sorted(set(by_name) - set(opened))
    if missing:
        raise DocumentError(f"missing share from {', '.join(missing)}; every participant's share is needed")
    names = tuple(sorted(opened))
    ikm = b"".join(opened[n] for n in names)
    secret = hkdf_sha256(ikm, 32, salt=b"pprl-linkage-secret-v1", info=canonical_json(participants))
    result = LinkageSecret(owner=me.name, participants=names, secret=secret)
    write_document(
        out,
        {
            "kind": "secret",
            "version": 1,
            "owner": me.name,
            "participants": list(names),
            "fingerprint": result.fingerprint,
            "secret": b64e(secret),
        },
        private=True,
    )
    return result


def load_secret(path: str | os.PathLike[str]) -> LinkageSecret:
    """Read a combined linkage secret file."""
    doc = read_document(path, "secret")
    try:
        secret = b64d(doc["secret"], f"{path}: secret")
        result = LinkageSecret(owner=str(doc["owner"]), participants=tuple(doc["participants"]), secret=secret)
    except (KeyError, TypeError):
        raise KeyFormatError(f"{path}: not a valid linkage secret file") from None
    if result.fingerprint != doc.get("fingerprint"):
        raise KeyFormatError(f"{path}: secret does not match its fingerprint (damaged)")
    return result
