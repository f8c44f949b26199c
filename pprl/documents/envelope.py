"""Versioned, typed, optionally signed pprl documents, read and written safely.

Every file a party writes is a JSON object that starts with ``kind`` and
``version``. Documents that travel between parties also carry ``signer`` (the
signing party's public card fields) and ``signature``: Ed25519 over the
canonical JSON of everything else. Readers check kind and version first, then
the document's shape against its kind's JSON Schema (:mod:`pprl.documents.validation`),
then the signature, then (where the caller has cards) that the signer is a
party they already trust. Writes are atomic (temp file in the same directory, fsync,
rename), and private documents are created with mode 0600 from the start.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pprl.crypto.identity import IdentityKey, PublicIdentity
from pprl.documents.validation import validate_document
from pprl.errors import (
    DocumentError,
    KeyFormatError,
    SignatureError,
    UnsupportedVersionError,
)

__all__ = [
    "Card",
    "b64e",
    "b64d",
    "canonical_json",
    "document_hash",
    "write_atomic",
    "write_document",
    "read_document",
    "sign_document",
    "verify_document",
    "header_of",
]

FORMAT_VERSION = 1
SIGNATURE_DOMAIN = b"pprl-document-v1\n"


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str, what: str = "field") -> bytes:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError, ValueError):
        raise DocumentError(f"{what} is not valid base64") from None


def canonical_json(obj: Any) -> bytes:
    """The byte string that signatures and hashes are computed over."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def document_hash(doc: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a document's canonical form, signature included."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


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
        return {
            "name": self.name,
            "role": self.role,
            "sign_pub": b64e(self.public.sign_pub),
            "agree_pub": b64e(self.public.agree_pub),
        }

    @classmethod
    def from_signer(cls, fields: Mapping[str, Any], what: str = "signer") -> "Card":
        try:
            return cls(
                name=str(fields["name"]),
                role=str(fields["role"]),
                public=PublicIdentity(
                    sign_pub=b64d(fields["sign_pub"], f"{what}.sign_pub"),
                    agree_pub=b64d(fields["agree_pub"], f"{what}.agree_pub"),
                ),
            )
        except (KeyError, TypeError):
            raise KeyFormatError(f"{what} lacks name, role or public keys") from None


def write_atomic(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never half."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return target


def write_document(path: str | os.PathLike[str], doc: Mapping[str, Any], *, private: bool = False) -> Path:
    """Write a document as indented UTF-8 JSON, atomically; ``private`` means mode 0600."""
    text = json.dumps(doc, indent=1, ensure_ascii=False) + "\n"
    return write_atomic(path, text.encode("utf-8"), private=private)


def read_document(path: str | os.PathLike[str], kind: str | Sequence[str]) -> dict[str, Any]:
    """Load a document, check its kind and version, then its shape against the kind's JSON Schema.

    Nothing in it is trusted before these checks (see :mod:`pprl.documents.validation`);
    signatures and parameters are the caller's next step.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{p}: no such file") from None
    except OSError as exc:
        raise DocumentError(f"{p}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise DocumentError(f"{p}: file is empty; expected a pprl {' or '.join(kinds)} document")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DocumentError(f"{p}: not a pprl document (not valid JSON; damaged or tampered?)") from None
    if not isinstance(doc, dict) or "kind" not in doc or "version" not in doc:
        raise DocumentError(f"{p}: not a pprl document (no kind/version)")
    if doc["kind"] not in kinds:
        raise DocumentError(f"{p}: is a '{doc['kind']}' document; expected {' or '.join(kinds)}")
    if doc["version"] != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{p}: {doc['kind']} version {doc['version']!r} is not supported (this pprl reads version {FORMAT_VERSION})"
        )
    validate_document(doc, doc["kind"], str(p))
    return doc


def sign_document(doc: dict[str, Any], key: IdentityKey, signer: Card) -> dict[str, Any]:
    """Return ``doc`` with ``signer`` and an Ed25519 ``signature`` over the rest."""
    body = {k: v for k, v in doc.items() if k not in ("signer", "signature")}
    body["signer"] = signer.to_signer()
    if key.public() != signer.public:
        raise KeyFormatError("private key does not belong to the signer's card")
    body["signature"] = b64e(key.sign(SIGNATURE_DOMAIN + canonical_json(body)))
    return body


def verify_document(
    doc: Mapping[str, Any],
    trusted: Sequence[Card] | None = None,
    *,
    source: str = "document",
    role: str | None = None,
) -> Card:
    """Check a signed document; return the signer's card.

    The signature is checked against the signer's embedded key (integrity);
    with ``trusted`` cards, the signer must also be one of them, with the same
    keys (authenticity). ``role`` pins the signer's role.
    """
    if "signature" not in doc or "signer" not in doc:
        raise SignatureError(f"{source}: not signed")
    signer = Card.from_signer(doc["signer"], what=f"{source}: signer")
    body = {k: v for k, v in doc.items() if k != "signature"}
    try:
        signature = b64d(doc["signature"], "signature")
    except DocumentError:
        raise SignatureError(f"{source}: signature does not verify (tampered?)") from None
    try:
        signer.public.verify(SIGNATURE_DOMAIN + canonical_json(body), signature)
    except SignatureError:
        raise SignatureError(f"{source}: signature does not verify (tampered?)") from None
    if trusted is not None:
        match = [c for c in trusted if c.name == signer.name]
        if not match or match[0].public != signer.public:
            raise SignatureError(
                f"{source}: signed by '{signer.name}', who is not among the given cards"
            )
    if role is not None and signer.role != role:
        raise SignatureError(f"{source}: signed by a {signer.role}, expected a {role}")
    return signer


def header_of(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What ``pprl inspect`` shows: everything but payloads and secrets."""
    hidden = {"payload", "signature", "sign_seed", "agree_seed", "secret", "p", "q"}
    out = {k: v for k, v in doc.items() if k not in hidden}
    if "signer" in doc and isinstance(doc["signer"], Mapping):
        signer = Card.from_signer(doc["signer"])
        out["signer"] = {"name": signer.name, "role": signer.role, "fingerprint": signer.fingerprint}
    return out
