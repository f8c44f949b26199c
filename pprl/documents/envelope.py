"""The envelope every document travels in: signing, verifying, sealing, reading and writing.

Documents that travel between parties carry ``signer`` (the signing party's
public card fields) and ``signature``: Ed25519 over the canonical JSON of
everything else. :func:`seal` is the one place a document gets its envelope
(timestamp, signer, signature); :func:`verify` the one place a received one is
checked: signature, then that the signer is among the cards the reader chose
and has the role it expects. :func:`load` reads a file into its typed
document (kind and version, then the JSON Schema, then the fields); writes are
atomic and private documents are created 0600 from the start. Design notes:
docs/protocol.md#documents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from pprl.crypto.identity import IdentityKey
from pprl.documents.card import Card
from pprl.documents.model import (
    Document,
    b64d,
    b64e,
    canonical_json,
    check_header,
    parse_document,
    parse_json,
)
from pprl.documents.validation import validate_document
from pprl.errors import (
    DocumentError,
    KeyFormatError,
    SignatureError,
)

__all__ = [
    "load",
    "load_any",
    "load_bytes",
    "now",
    "read_document",
    "save",
    "seal",
    "sign_document",
    "check_signature",
    "verify",
    "verify_document",
    "atomic_writer",
    "write_atomic",
    "write_document",
]

SIGNATURE_DOMAIN = b"pprl-document-v1\n"

D = TypeVar("D", bound=Document)


def now() -> str:
    """The timestamp documents carry: UTC, to the second, ISO 8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str], *, private: bool = False) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temporary file beside it, synced and renamed into place when the
    block ends, removed if it raises; readers see the old file or the whole new one, never half. ``private``: mode
    0600 from the start."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes, *, private: bool = False) -> Path:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one, never half."""
    with atomic_writer(path, private=private) as fh:
        fh.write(data)
    return Path(path)


#: Documents up to this size (compact) are written indented, for people to read; larger ones compact, with the C
#: encoder (indenting forces Python's pure-Python JSON encoder: 1.5 s for a 20k x 20k linkage).
INDENT_LIMIT = 1 << 16


def write_document(path: str | os.PathLike[str], doc: Mapping[str, Any], *, private: bool = False) -> Path:
    """Write a document as UTF-8 JSON, atomically (indented when small); ``private`` means mode 0600."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    if len(text) <= INDENT_LIMIT:
        text = json.dumps(doc, indent=1, ensure_ascii=False)
    return write_atomic(path, (text + "\n").encode("utf-8"), private=private)


def _read_json(path: str | os.PathLike[str], kinds: tuple[str, ...]) -> Any:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise DocumentError(f"{p}: no such file") from None
    except OSError as exc:
        raise DocumentError(f"{p}: cannot read ({exc.strerror})") from None
    if not raw.strip():
        raise DocumentError(f"{p}: file is empty; expected a pprl {' or '.join(kinds)} document")
    return parse_json(raw, str(p), f"{p}: not a pprl document (not valid JSON; damaged or tampered?)")


def read_document(path: str | os.PathLike[str], kind: str | Sequence[str]) -> dict[str, Any]:
    """Load a document as a dict: kind and version checked, then its shape against the kind's JSON Schema.

    Nothing in it is trusted before these checks (see :mod:`pprl.documents.validation`);
    signatures and parameters are the caller's next step. :func:`load` gives the typed document.
    """
    kinds = (kind,) if isinstance(kind, str) else tuple(kind)
    doc = _read_json(path, kinds)
    check_header(doc, kinds, str(path))
    validate_document(doc, doc["kind"], str(path))
    return doc


def load(path: str | os.PathLike[str], cls: type[D]) -> D:
    """Read a file into its typed document (kind, version, schema checked; not yet the signature).

    Either form: JSON, or chunked (:mod:`pprl.documents.chunked`, for the kinds that have one).
    """
    from pprl.documents.chunked import is_chunked, read_chunked

    if is_chunked(path):
        return read_chunked(path, cls)
    return cls.from_dict(_read_json(path, (cls.KIND,)), str(path))


def load_bytes(data: bytes, cls: type[D], source: str) -> D:
    """A received document's bytes (an upload) into its typed document, either form, as :func:`load` reads a file."""
    from pprl.documents.chunked import MAGIC, parse_chunked

    if data[:len(MAGIC)] == MAGIC:
        return parse_chunked(data, cls, source=source)
    return cls.from_dict(parse_json(data, source, f"{source}: not a pprl document (not valid JSON)"), source)


def load_any(path: str | os.PathLike[str], kinds: Sequence[str] | None = None) -> Document:
    """Read a file into whichever registered kind it is (limited to ``kinds`` if given)."""
    names = tuple(kinds) if kinds else None
    from pprl.documents.chunked import is_chunked, read_chunked

    if is_chunked(path):
        return read_chunked(path, kinds=names)
    data = _read_json(path, names or ("",))
    return parse_document(data, names, str(path))


def save(path: str | os.PathLike[str], doc: Document) -> Path:
    """Write a typed document atomically (0600 when its kind is private)."""
    return write_document(path, doc.wire, private=doc.PRIVATE)


def sign_document(doc: dict[str, Any], key: IdentityKey, signer: Card) -> dict[str, Any]:
    """Return ``doc`` with ``signer`` and an Ed25519 ``signature`` over the rest."""
    body = {k: v for k, v in doc.items() if k not in ("signer", "signature")}
    body["signer"] = signer.to_signer()
    if key.public() != signer.public:
        raise KeyFormatError("private key does not belong to the signer's card")
    body["signature"] = b64e(key.sign(SIGNATURE_DOMAIN + canonical_json(body)))
    return body


def check_signature(doc: Mapping[str, Any], *, source: str = "document") -> Card:
    """Integrity only: the signature verifies under the card the document itself carries.

    This proves nothing about who signed. Use it only where the signer is then
    bound to something already trusted (a self-signed card read as a trust
    root, a holder's part checked against the dealer-signed key's holder
    fingerprints); everywhere else use :func:`verify_document` with pins.
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
    return signer


def verify_document(
    doc: Mapping[str, Any],
    trusted: Sequence[Card],
    *,
    source: str = "document",
    role: str | None = None,
) -> Card:
    """Check a received signed document against the cards its receiver pinned; return the pinned card.

    The signature must verify, and the signer must be one of ``trusted``
    with the same keys (authenticity). ``role`` is checked against the
    *pinned* card's role, never the role the document claims for its
    signer. There is no unpinned mode: ``trusted`` None is refused.
    """
    if trusted is None:
        raise SignatureError(f"{source}: no pinned cards to check its signer against (give the cards you trust)")
    signer = check_signature(doc, source=source)
    match = [c for c in trusted if c.name == signer.name and c.public == signer.public]
    if not match:
        raise SignatureError(f"{source}: signed by '{signer.name}', who is not among the given cards")
    pinned = match[0]
    if role is not None and pinned.role != role:
        raise SignatureError(f"{source}: signed by a {pinned.role}, expected a {role}")
    return pinned


def verify(doc: Document, trusted: Sequence[Card], *, role: str | None = None, source: str | None = None) -> Card:
    """Check a received document's signature, that its signer is among ``trusted`` and has ``role``.

    Returns the signer's pinned card. Raises SignatureError otherwise (one
    message naming ``source``, never which byte failed).
    """
    return verify_document(doc.wire, trusted, source=source or f"{doc.KIND} document", role=role)


def stamped(doc: D, created: str | None = None) -> D:
    """``doc`` with the timestamp its kind carries filled in (``created``, else now) unless it has one."""
    if doc.CREATED:
        doc = _with_created(doc, doc.CREATED.split("."), created or now())
    return doc


def seal(doc: D, key: IdentityKey | None = None, signer: Card | None = None, *, created: str | None = None) -> D:
    """Give a document its envelope: the timestamp its kind carries, then signer and signature.

    The one place documents are signed. ``key``/``signer`` may be None only for
    kinds that travel unsigned (keys, secrets).
    """
    doc = stamped(doc, created)
    if not doc.SIGNED:
        return doc
    if key is None or signer is None:
        raise KeyFormatError(f"a {doc.KIND} document must be signed; no key was given")
    if key.public() != signer.public:
        raise KeyFormatError("private key does not belong to the signer's card")
    body = {k: v for k, v in doc.to_dict().items() if k not in ("signer", "signature")}
    body["signer"] = signer.to_signer()
    signature = key.sign(SIGNATURE_DOMAIN + canonical_json(body))
    sealed: D = dataclasses.replace(cast(Any, doc), signer=signer, signature=signature)
    sealed.__dict__["wire"] = {**body, "signature": b64e(signature)}  # what to_dict() gives, computed once
    return sealed


def _with_created(node: Any, path: list[str], value: str) -> Any:
    head, rest = path[0], path[1:]
    if not rest:
        return node if getattr(node, head) else dataclasses.replace(node, **{head: value})
    return dataclasses.replace(node, **{head: _with_created(getattr(node, head), rest, value)})
