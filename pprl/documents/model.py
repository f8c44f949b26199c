"""Typed documents: one frozen dataclass per kind, built from and turned into the JSON that travels.

A kind's class mirrors its JSON Schema (``pprl/documents/schemas``) field for
field, so the shape is declared once in Python beside the schema and read as
attributes (``sub.header.records``), never as string keys. The mapping is
generic and driven by the type hints:

- a nested dataclass (``header``, ``payload``) is a JSON object;
- ``bytes`` is a base64 string (``dict[str, bytes]`` a map of them);
- :class:`~pprl.documents.envelope.Card` is the ``signer`` object;
- anything else is its JSON value as is.

A field declared with :data:`OPTIONAL` is left out of the JSON when it is
None (and None when absent); every other field is always written, except
that a document read without a key writes it back without it (so a
signature over it still verifies).
:meth:`Document.from_dict` runs the kind's JSON Schema check first, so a
document is only ever built from the right shape. Kinds register themselves:
:data:`KINDS` is the one list of what pprl reads and writes. Design notes:
docs/protocol.md#documents.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import json
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pprl.documents.card import Card
from pprl.documents.validation import validate_document
from pprl.errors import DocumentError, UnsupportedVersionError

__all__ = [
    "FORMAT_VERSION",
    "KINDS",
    "OPTIONAL",
    "Document",
    "Part",
    "SignedDocument",
    "b64d",
    "b64e",
    "document_class",
    "document_hash",
    "canonical_json",
    "check_header",
    "parse_document",
    "parse_json",
    "part",
]

#: The format version every kind is written in (and the only one read).
FORMAT_VERSION = 1

#: Field metadata: leave the key out of the JSON when the value is None.
OPTIONAL: Mapping[str, bool] = {"optional": True}

#: Every document kind, by its ``kind`` string (filled as the classes are defined).
KINDS: dict[str, type[Document]] = {}

D = TypeVar("D", bound="Document")
P = TypeVar("P", bound="Part")
T = TypeVar("T")


def canonical_json(obj: Any) -> bytes:
    """The byte string that signatures and hashes are computed over (no NaN or Infinity: they are not JSON)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


class _Duplicate(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Duplicate(key)
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _Duplicate(f"\x00{name}")


def parse_json(text: str | bytes, source: str, invalid: str | None = None) -> Any:
    """Parse received JSON strictly: DocumentError for invalid JSON (message ``invalid`` if given), a key
    given twice (two readers could see two different documents under one signature) or NaN / Infinity
    (not JSON; not canonical)."""
    try:
        raw = text.decode("utf-8") if isinstance(text, bytes) else text
        return json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except _Duplicate as exc:
        what = str(exc)
        if what.startswith("\x00"):
            raise DocumentError(f"{source}: holds {what[1:]}, which is not a JSON number; refused") from None
        raise DocumentError(f"{source}: a key is given twice ('{what[:40]}'); refused") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DocumentError(invalid or f"{source}: not valid JSON (damaged or tampered?)") from None


def document_hash(doc: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a document's canonical form, signature included."""
    return hashlib.sha256(canonical_json(doc)).hexdigest()


def b64e(data: bytes) -> str:
    """Bytes as base64 text (how binary fields travel)."""
    return base64.b64encode(data).decode("ascii")


def b64d(text: Any, what: str = "field") -> bytes:
    """Base64 text back to bytes; DocumentError naming ``what`` if it is not base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, AttributeError, ValueError):
        raise DocumentError(f"{what} is not valid base64") from None


_CODECS: dict[type, tuple[tuple[str, Any, bool], ...]] = {}


def _codecs(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, resolved type, optional) per field of a dataclass, in declaration order (computed once per class)."""
    found = _CODECS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.init]
        fields.sort(key=lambda f: f.name in _ENVELOPE)  # signer and signature last, as they are added
        found = _CODECS[cls] = tuple((f.name, hints[f.name], bool(f.metadata.get("optional"))) for f in fields)
    return found


_ENVELOPE = ("signer", "signature")

_FIELD_ENCODERS: dict[type, tuple[tuple[str, Any, bool], ...]] = {}


def _field_encoders(cls: type) -> tuple[tuple[str, Any, bool], ...]:
    """(name, encoder, optional) per field of a dataclass, as :func:`_codecs` orders them (computed once)."""
    found = _FIELD_ENCODERS.get(cls)
    if found is None:
        found = _FIELD_ENCODERS[cls] = tuple((name, _encoder(tp), opt) for name, tp, opt in _codecs(cls))
    return found


def _strip_none(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None was allowed)."""
    args = typing.get_args(tp)
    if args and type(None) in args and typing.get_origin(tp) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def _part_dict(value: Any) -> Any:
    """A field's value as is, or its JSON object when it is a :class:`Part` (whatever the declared type)."""
    return value.to_dict() if isinstance(value, Part) else value


_ENCODERS: dict[Any, Any] = {}


def _encoder(tp: Any) -> Any:
    """The function turning a (non-None) value of declared type ``tp`` into JSON, chosen once per type.

    ``bytes`` become base64, a :class:`Part` value its object (whatever the hint), a ``Card`` its
    ``signer`` object, ``dict[str, bytes]`` a map of base64, a list a list (of objects for
    ``list[Part]``), anything else stays as it is. Choosing once per type keeps ``typing`` out of
    the per-value work (a 20k-entity linkage has 45,000 values).
    """
    cached = _ENCODERS.get(tp)
    if cached is not None:
        return cached
    tp_bare, _ = _strip_none(tp)
    origin = typing.get_origin(tp_bare)
    found: Any
    if tp_bare is bytes:
        found = b64e
    elif tp_bare is Card:
        def found(value: Any) -> Any:
            return value.to_dict() if isinstance(value, Part) else value.to_signer()
    elif origin is dict and typing.get_args(tp_bare)[1:] == (bytes,):
        def found(value: Any) -> Any:
            if isinstance(value, Part):
                return value.to_dict()
            return {k: b64e(v) for k, v in value.items()}
    elif origin is list:
        (item,) = typing.get_args(tp_bare) or (Any,)
        if isinstance(item, type) and issubclass(item, Part):
            def found(value: Any) -> Any:
                if isinstance(value, Part):
                    return value.to_dict()
                return [v.to_dict() for v in value]
        else:
            def found(value: Any) -> Any:
                return value.to_dict() if isinstance(value, Part) else list(value)
    else:
        found = _part_dict
    _ENCODERS[tp] = found
    return found


def _decode(value: Any, tp: Any, where: str) -> Any:
    tp, nullable = _strip_none(tp)
    if value is None:
        return None
    if tp is bytes:
        return b64d(value, where)
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Part):
        return tp._build(value, where)
    if tp is Card:
        return Card.from_signer(value, what=where)
    if origin is dict and typing.get_args(tp)[1:] == (bytes,):
        return {k: b64d(v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        if isinstance(item, type) and issubclass(item, Part):
            return [item._build(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


_COMPARED: dict[type, tuple[str, ...]] = {}
_SHOWN: dict[type, tuple[str, ...]] = {}


def _compared(cls: type) -> tuple[str, ...]:
    found = _COMPARED.get(cls)
    if found is None:
        found = _COMPARED[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.compare)
    return found


def _shown(cls: type) -> tuple[str, ...]:
    found = _SHOWN.get(cls)
    if found is None:
        found = _SHOWN[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.repr)
    return found


if TYPE_CHECKING:
    from typing_extensions import dataclass_transform

    @dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(dataclasses.field,))
    def part(cls: type[T]) -> type[T]: ...

else:

    def part(cls):
        """How every kind and part is declared: ``@dataclass(frozen=True, kw_only=True)``, with ``__eq__``,
        ``__hash__`` and ``__repr__`` from :class:`Part` (what ``dataclass`` would generate, written once:
        generating them for ~60 classes was half of the import time of pprl.documents)."""
        return dataclasses.dataclass(frozen=True, kw_only=True, eq=False, repr=False)(cls)


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Part:
    """A JSON object inside a document (a header, a payload, a table row).

    Equality, hash and repr are the ones ``@dataclass(frozen=True)`` generates: the fields (those with
    ``compare``, ``repr``) in declaration order, equal only to an instance of the same class.
    """

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            names = _compared(self.__class__)
            return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n in _compared(self.__class__)))

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in _shown(self.__class__))
        return f"{self.__class__.__qualname__}({fields})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, fields in declaration order."""
        out: dict[str, Any] = {}
        fields = self.__dict__
        absent = fields.get("_absent", ())
        for name, encode, optional in _field_encoders(type(self)):
            value = fields[name] if name in fields else getattr(self, name)
            if value is None:
                if optional or name in absent:
                    continue
                out[name] = None
            else:
                out[name] = encode(value)
        return out

    @classmethod
    def _build(cls: type[P], data: Mapping[str, Any], where: str) -> P:
        """Build from a mapping that already passed the schema check."""
        kwargs = {}
        absent = []
        for name, tp, _optional in _codecs(cls):
            if name in data:
                kwargs[name] = _decode(data[name], tp, f"{where}: {name}")
            else:
                absent.append(name)
        try:
            built = cls(**kwargs)
        except TypeError:
            raise DocumentError(f"{where}: lacks fields a {cls.__name__} needs") from None
        # a key the document left out (an older writer) stays out when the document is written again
        built.__dict__["_absent"] = frozenset(absent)
        return built


@part
class Document(Part):
    """One kind of pprl document. Subclasses set the class attributes and declare their fields.

    Attributes:
        KIND: the ``kind`` string.
        PUBLIC: top-level fields ``pprl inspect`` prints (an allowlist); the
            signer is always shown as name, role and fingerprint.
        SIGNED: whether the document travels signed (``signer``, ``signature``).
        PRIVATE: whether it is written with mode 0600.
        CREATED: dotted path of the timestamp :func:`~pprl.documents.envelope.seal`
            fills in ("" for none).
    """

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = FORMAT_VERSION
    PUBLIC: ClassVar[tuple[str, ...]] = ()
    SIGNED: ClassVar[bool] = False
    PRIVATE: ClassVar[bool] = False
    CREATED: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.KIND:
            if cls.KIND in KINDS and KINDS[cls.KIND] is not cls:
                raise TypeError(f"document kind {cls.KIND!r} declared twice")
            KINDS[cls.KIND] = cls

    def to_dict(self) -> dict[str, Any]:
        """The whole document as it travels: kind, version, fields, then signer and signature."""
        return {"kind": self.KIND, "version": self.VERSION, **super().to_dict()}

    @property
    def source(self) -> str:
        """Where the document came from, for error messages: its file (set by ``from_dict``), else its kind."""
        return str(self.__dict__.get("_source") or f"the {self.KIND}")

    def from_source(self: D, source: str) -> D:
        """This document, naming ``source`` in the errors it leads to (not part of the document)."""
        self.__dict__["_source"] = source
        return self

    @functools.cached_property
    def wire(self) -> dict[str, Any]:
        """``to_dict()``, computed once (do not modify it)."""
        return self.to_dict()

    @functools.cached_property
    def hash(self) -> str:
        """Hex SHA-256 of the canonical form, signature included: how other documents cite this one."""
        return document_hash(self.wire)

    @classmethod
    def from_dict(cls: type[D], data: Any, source: str = "document", *, full: bool = False) -> D:
        """Check kind, version and the JSON Schema, then build the typed document.

        Raises:
            DocumentError: not a document of this kind, or not of its schema's shape.
            UnsupportedVersionError: a version this pprl cannot read.
        """
        check_header(data, (cls.KIND,), source)
        validate_document(data, cls.KIND, source, full=full)
        built = cls._build(data, source).from_source(source)
        # the JSON it was read from is its wire form (to_dict() gives it back, as the round-trip tests check):
        # signatures and hashes are checked over it without encoding the binary fields again
        built.__dict__["wire"] = data
        return built

    def public_header(self) -> dict[str, Any]:
        """What ``pprl inspect`` shows: kind, version, the PUBLIC fields and who signed."""
        wire = self.wire
        out: dict[str, Any] = {"kind": self.KIND, "version": self.VERSION}
        for name in self.PUBLIC:
            if name in wire:
                out[name] = wire[name]
        signer = getattr(self, "signer", None)
        if signer is not None:
            out["signer"] = {"name": signer.name, "role": signer.role, "fingerprint": signer.fingerprint}
        return out


@part
class SignedDocument(Document):
    """A kind that travels signed: :func:`~pprl.documents.envelope.seal` fills these two fields."""

    SIGNED: ClassVar[bool] = True

    signer: Card | None = dataclasses.field(default=None, metadata=OPTIONAL)
    signature: bytes | None = dataclasses.field(default=None, metadata=OPTIONAL)


def check_header(data: Any, kinds: tuple[str, ...], source: str) -> None:
    """DocumentError unless ``data`` is a pprl document of one of ``kinds``; UnsupportedVersionError for another version."""
    if not isinstance(data, dict) or "kind" not in data or "version" not in data:
        raise DocumentError(f"{source}: not a pprl document (no kind/version)")
    if data["kind"] not in kinds:
        raise DocumentError(f"{source}: is a '{data['kind']}' document; expected {' or '.join(kinds)}")
    if data["version"] != FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{source}: {data['kind']} version {data['version']!r} is not supported "
            f"(this pprl reads version {FORMAT_VERSION})"
        )


def document_class(kind: str) -> type[Document]:
    """The class of a kind; DocumentError for a kind pprl does not know."""
    _load_kinds()
    try:
        return KINDS[kind]
    except KeyError:
        raise DocumentError(f"'{kind}' is not a pprl document kind") from None


def parse_document(data: Any, kinds: tuple[str, ...] | None, source: str) -> Document:
    """Build whichever registered kind ``data`` is (limited to ``kinds`` if given)."""
    _load_kinds()
    check_header(data, kinds or tuple(KINDS), source)
    return KINDS[data["kind"]].from_dict(data, source)


def _load_kinds() -> None:
    import pprl.documents.kinds  # noqa: F401  (defines and registers every kind)
