"""The chunked form of a large document: binary payload chunks, then a signed trailer over their digests.

A 1M-record submission is ~900 MB as JSON (base64 CLKs and ciphertexts), and
reading, canonicalising and signing it holds several copies in memory. The
chunked form carries the same document with its payload as raw bytes in
chunks of at most :data:`ROWS_PER_CHUNK` records, written and read one chunk
at a time, each chunk's SHA-256 listed in a trailer that is signed like any
document::

    MAGIC                                   b"PPRL-CHUNKED-1\\n"
    chunk 0, chunk 1, ...                   per chunk: its column pieces, back to back
    trailer                                 UTF-8 JSON (below)
    trailer length                          8 bytes, little-endian
    END                                     b"PPRL-END"

The trailer is the document without its payload, plus where the payload
went::

    {"kind": "submission", "version": 1, "header": {...},
     "chunked": {"format": "pprl-chunked-1", "columns": ["tokens", "clks", "scores_packed", "pseudonyms"],
                 "chunks": [{"rows": 65536, "sizes": [786432, 8388608, 33554432, 0], "sha256": "..."}, ...]},
     "signer": {...}, "signature": "..."}

The signature is Ed25519 over the trailer's canonical JSON (as for every
document: :func:`pprl.documents.envelope.sign_document`), so it covers the
header and, through the digests, every byte of the payload; a reader checks
every chunk against its digest as it reads it and refuses a file whose
lengths do not add up. The typed document read back is the same as the JSON
form's (the same payload bytes and tokens), with the trailer as its wire form:
its signature is verified (:func:`pprl.documents.envelope.verify`) and its
hash computed over the trailer, which commits to the payload. The two forms
of one document therefore have different hashes and signatures; each is
signed by its writer as written.

Only submissions have a chunked form so far (``pprl submit --format chunked``);
:func:`pprl.documents.envelope.load` reads either form of any kind, so every
command that reads a submission takes both. Column codecs per kind:

- ``tokens``: each token (24 lowercase hex characters) as its 12 bytes;
- ``clks``, ``pseudonyms``: the payload bytes of the chunk's records;
- ``scores_packed``: the ciphertexts of the chunk's records (chunks end on a
  ciphertext boundary when several records share one).

Design: docs/protocol.md#chunked-documents.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import struct
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from pprl.documents.card import Card
from pprl.documents.model import (
    Document,
    b64d,
    b64e,
    check_header,
    document_class,
    parse_json,
)
from pprl.errors import DocumentError

__all__ = [
    "END",
    "FORMAT",
    "MAGIC",
    "ROWS_PER_CHUNK",
    "is_chunked",
    "parse_chunked",
    "read_chunked",
    "write_chunked",
]

MAGIC = b"PPRL-CHUNKED-1\n"
END = b"PPRL-END"
FORMAT = "pprl-chunked-1"
#: Records per chunk the writer uses (a multiple of every records-per-ciphertext pprl writes, 1 to 64).
ROWS_PER_CHUNK = 1 << 16
#: The largest trailer a reader accepts (about 2,000 bytes per 100 chunks; 64 MiB is ~300M chunks' worth).
MAX_TRAILER = 64 << 20
TOKEN_BYTES = 12
_TAIL = struct.Struct("<Q")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")

D = TypeVar("D", bound=Document)

#: Kinds with a chunked form: their payload columns (name, codec, alignment), in the order chunks hold them.
#: Codecs: ``hex12`` (a 24-hex-character token as its 12 bytes), ``bytes`` (the field's bytes), ``json`` (one
#: JSON value per item, a line each). Alignment: ``row`` (item i is row i's), ``unit`` (a ciphertext shared by
#: ``records_per_ciphertext`` rows). ``sums/*`` is every key of the release's ``sums``.
COLUMNS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "submission": (("tokens", "hex12", "row"), ("clks", "bytes", "row"), ("scores_packed", "bytes", "unit"),
                   ("pseudonyms", "bytes", "row")),
    "release": (("entity_ids", "json", "row"), ("contributors", "json", "row"), ("sums/*", "bytes", "row"),
                ("join_index", "json", "row")),
}
#: The columns a document of the kind must have (the others may be absent, as their fields may be null).
REQUIRED: dict[str, tuple[str, ...]] = {"submission": ("tokens", "clks"), "release": ("entity_ids", "contributors")}
_SUMS = "sums/"
_KEY = re.compile(r"^[\w.:-]{1,64}$")


def is_chunked(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` starts like a chunked document (False if it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


# -- writing ----------------------------------------------------------------------------------------------------


def _column_values(doc: Document) -> tuple[int, int, list[tuple[str, str, str, Any]]]:
    """(rows, records per ciphertext, [(column, codec, alignment, value)]) of the columns ``doc`` has."""
    payload = cast(Any, doc).payload
    header = cast(Any, doc).header
    out = []
    for name, codec, align in COLUMNS[doc.KIND]:
        if name == "sums/*":
            for key, value in payload.sums.items():
                if not _KEY.match(key):
                    raise DocumentError(f"the {doc.KIND}'s sums column '{key[:64]}' cannot be named in the chunked form")
                out.append((_SUMS + key, codec, align, value))
            continue
        value = getattr(payload, name)
        if value is not None:
            out.append((name, codec, align, value))
    per_ct = 1
    if doc.KIND == "submission":
        rows = int(header.records)
        per_ct = int((header.packing or {}).get("records_per_ciphertext", 1) or 1)
    else:
        rows = len(payload.entity_ids)
    return rows, per_ct, out


def _slicer(kind: str, rows: int, per_ct: int, name: str, codec: str, align: str,
            value: Any) -> Callable[[int, int], bytes]:
    """A function giving column ``name``'s bytes for rows [a, b)."""
    units = rows if align == "row" else -(-rows // per_ct)
    if codec == "hex12":
        if len(value) != rows:
            raise DocumentError(f"the {kind} has {len(value)} {name} for {rows} records")

        def tokens(a: int, b: int) -> bytes:
            text = "".join(value[a:b])
            if len(text) != 2 * TOKEN_BYTES * (b - a) or not re.fullmatch(r"[0-9a-f]*", text):
                raise DocumentError(f"the {kind}'s {name} of records {a}-{b - 1} are not 24 hex characters each")
            return bytes.fromhex(text)

        return tokens
    if codec == "json":
        if len(value) != rows:
            raise DocumentError(f"the {kind} has {len(value)} {name} for {rows} entries")
        return lambda a, b: "".join(json.dumps(v, ensure_ascii=False, allow_nan=False) + "\n"
                                    for v in value[a:b]).encode("utf-8")
    if (units == 0 and len(value)) or (units and len(value) % units):
        raise DocumentError(f"the {kind}'s {name} are not the same size for every record")
    width = len(value) // units if units else 0
    view = memoryview(value)
    if align == "row":
        return lambda a, b: view[a * width:b * width]  # type: ignore[return-value]
    return lambda a, b: view[(a // per_ct) * width:(-(-b // per_ct)) * width]  # type: ignore[return-value]


def write_chunked(
    path: str | os.PathLike[str],
    doc: D,
    key: Any,
    signer: Card,
    *,
    rows_per_chunk: int = ROWS_PER_CHUNK,
    private: bool = False,
    created: str | None = None,
) -> D:
    """Write ``doc`` (unsealed or sealed) in the chunked form, signed by ``key`` as ``signer``; return it sealed.

    The file appears whole or not at all (a temporary file beside it, synced, then renamed); ``private``: mode
    0600 from the start. The returned document's wire form is the signed trailer.
    """
    from pprl.documents.envelope import atomic_writer, sign_document, stamped

    if doc.KIND not in COLUMNS:
        raise DocumentError(f"a {doc.KIND} document has no chunked form (only {', '.join(COLUMNS)} have)")
    if rows_per_chunk < 1:
        raise ValueError("rows_per_chunk must be at least 1")
    doc = stamped(doc, created)
    rows, per_ct, columns = _column_values(doc)
    slicers = [_slicer(doc.KIND, rows, per_ct, name, codec, align, value) for name, codec, align, value in columns]
    step = max(per_ct, rows_per_chunk - rows_per_chunk % per_ct)
    with atomic_writer(path, private=private) as fh:
        fh.write(MAGIC)
        index = []
        for a in range(0, rows, step):
            b = min(rows, a + step)
            digest = hashlib.sha256()
            sizes = []
            for piece in slicers:
                data = piece(a, b)
                digest.update(data)
                fh.write(data)
                sizes.append(len(data))
            index.append({"rows": b - a, "sizes": sizes, "sha256": digest.hexdigest()})
        body = _trailer_body(doc, [c[0] for c in columns])
        body["chunked"] = {"format": FORMAT, "columns": [c[0] for c in columns], "chunks": index}
        trailer = sign_document(body, key, signer)
        text = json.dumps(trailer, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        fh.write(text)
        fh.write(_TAIL.pack(len(text)))
        fh.write(END)
    sealed: D = dataclasses.replace(cast(Any, doc), signer=signer, signature=b64d(trailer["signature"]))
    sealed.__dict__["wire"] = trailer
    return sealed.from_source(str(path))


def _trailer_body(doc: Document, columns: list[str]) -> dict[str, Any]:
    """The document as JSON without its columns (never encoding them): kind, version, header and the rest of the
    payload: small fields (a release's proof) and the null ones the JSON form writes as null."""
    payload = cast(Any, doc).payload
    names = {n for n, _, _ in COLUMNS[doc.KIND] if n != "sums/*"}
    emptied: dict[str, Any] = {n: None for n in names}
    if doc.KIND == "release":
        emptied["sums"] = {}
    light = dataclasses.replace(cast(Any, doc), payload=dataclasses.replace(payload, **emptied))
    light.__dict__["_absent"] = doc.__dict__.get("_absent", frozenset())
    light.payload.__dict__["_absent"] = payload.__dict__.get("_absent", frozenset())
    whole = light.to_dict()
    body = {k: v for k, v in whole.items() if k not in ("payload", "signer", "signature")}
    body["payload"] = {k: v for k, v in whole["payload"].items() if k not in columns and k != "sums"}
    return body


# -- reading ----------------------------------------------------------------------------------------------------


def _trailer(fh: BinaryIO, size: int, source: str) -> tuple[dict[str, Any], int]:
    """The parsed trailer and where it starts; DocumentError for a file that does not frame one."""
    if size < len(MAGIC) + _TAIL.size + len(END):
        raise DocumentError(f"{source}: chunked document cut short (no trailer); write it again")
    fh.seek(size - len(END) - _TAIL.size)
    (length,) = _TAIL.unpack(fh.read(_TAIL.size))
    if fh.read(len(END)) != END:
        raise DocumentError(f"{source}: chunked document cut short or damaged (no end mark); write it again")
    start = size - len(END) - _TAIL.size - length
    if length > MAX_TRAILER or start < len(MAGIC):
        raise DocumentError(f"{source}: chunked document's trailer length is impossible (damaged or tampered?)")
    fh.seek(start)
    raw = fh.read(length)
    trailer = parse_json(raw, source, f"{source}: chunked document's trailer is not valid JSON (damaged or tampered?)")
    if not isinstance(trailer, dict):
        raise DocumentError(f"{source}: chunked document's trailer is not a JSON object (damaged or tampered?)")
    return trailer, start


def _codec_of(kind: str, name: str) -> tuple[str, str] | None:
    for column, codec, align in COLUMNS[kind]:
        if column == name or (column == "sums/*" and name.startswith(_SUMS) and _KEY.match(name[len(_SUMS):])):
            return codec, align
    return None


def _index(trailer: dict[str, Any], kind: str, source: str) -> tuple[list[str], list[tuple[int, list[int], str]]]:
    """The trailer's columns and chunk list, checked: (rows, sizes per column, sha256 hex) per chunk."""
    chunked = trailer.get("chunked")
    bad = DocumentError(f"{source}: chunked document's chunk list is malformed (damaged or tampered?)")
    if not isinstance(chunked, dict) or set(chunked) != {"format", "columns", "chunks"}:
        raise bad
    if chunked["format"] != FORMAT:
        raise DocumentError(f"{source}: chunked format {str(chunked['format'])[:40]!r} is not supported "
                            f"(this pprl reads {FORMAT})")
    columns = chunked["columns"]
    if (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
            or len(set(columns)) != len(columns) or any(_codec_of(kind, c) is None for c in columns)
            or not set(REQUIRED[kind]) <= set(columns) or not isinstance(chunked["chunks"], list)):
        raise bad
    order = [n for n, _, _ in COLUMNS[kind]]
    ranks = [order.index("sums/*" if c.startswith(_SUMS) and kind == "release" else c) for c in columns]
    if ranks != sorted(ranks):
        raise bad
    out = []
    for entry in chunked["chunks"]:
        if not isinstance(entry, dict) or set(entry) != {"rows", "sizes", "sha256"}:
            raise bad
        rows, sizes, digest = entry["rows"], entry["sizes"], entry["sha256"]
        if (type(rows) is not int or rows < 1 or not isinstance(sizes, list) or len(sizes) != len(columns)
                or any(type(x) is not int or x < 0 for x in sizes)
                or not isinstance(digest, str) or not _SHA256_HEX.match(digest)):
            raise bad
        out.append((rows, sizes, digest))
    return columns, out


def _read_chunks(fh: Any, index: list[tuple[int, list[int], str]], buffers: list[bytearray],
                 source: str) -> None:
    """Read every chunk into the column buffers, checking it against its digest as it arrives."""
    offsets = [0] * len(buffers)
    done = 0
    views = [memoryview(b) for b in buffers]
    for k, (rows, sizes, digest) in enumerate(index):
        h = hashlib.sha256()
        for c, size in enumerate(sizes):
            part = views[c][offsets[c]:offsets[c] + size]
            if fh.readinto(part) != size:
                raise DocumentError(f"{source}: chunked document cut short in chunk {k}; write it again")
            h.update(part)
            offsets[c] += size
        if h.hexdigest() != digest:
            raise DocumentError(f"{source}: chunk {k} (records {done}-{done + rows - 1}) does not match its digest "
                                "(damaged or tampered?); refused")
        done += rows


def read_chunked(path: str | os.PathLike[str], cls: type[D] | None = None,
                 kinds: tuple[str, ...] | None = None) -> D:
    """Read a chunked document of ``cls``'s kind (or of any of ``kinds``, or any kind with a chunked form):
    the trailer, then every chunk checked against its digest.

    Kind, version and the kind's JSON Schema are checked as for the JSON form (the payload's fields on the same
    bounded prefix); the signature is the caller's next step, as for every document
    (:func:`pprl.documents.envelope.verify`).
    """
    p = Path(path)
    try:
        fh = open(p, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        raise DocumentError(f"{p}: no such file") from None
    except OSError as exc:
        raise DocumentError(f"{p}: cannot read ({exc.strerror})") from None
    with fh:
        return _read(fh, os.fstat(fh.fileno()).st_size, str(p), cls, kinds)


def parse_chunked(data: bytes, cls: type[D] | None = None, kinds: tuple[str, ...] | None = None, *,
                  source: str = "document") -> D:
    """:func:`read_chunked` from bytes in memory (an upload), errors naming ``source``."""
    return _read(io.BytesIO(data), len(data), source, cls, kinds)


def _read(fh: Any, size: int, source: str, cls: type[D] | None, kinds: tuple[str, ...] | None) -> D:
    from pprl.documents.validation import validate_document

    if fh.read(len(MAGIC)) != MAGIC:
        raise DocumentError(f"{source}: not a chunked pprl document")
    trailer, start = _trailer(fh, size, source)
    check_header(trailer, (cls.KIND,) if cls is not None else kinds or tuple(COLUMNS), source)
    if trailer["kind"] not in COLUMNS:
        raise DocumentError(f"{source}: a {trailer['kind']} document has no chunked form")
    if cls is None:
        cls = cast(type[D], document_class(trailer["kind"]))
    columns, index = _index(trailer, cls.KIND, source)
    if not isinstance(trailer.get("header"), dict) or not isinstance(trailer.get("payload"), dict):
        raise DocumentError(f"{source}: chunked document's trailer lacks its header or payload "
                            "(damaged or tampered?)")
    named = {n for n, _, _ in COLUMNS[cls.KIND]} | {"sums"}
    if any(k in columns or (k in named and v is not None) for k, v in trailer["payload"].items()):
        raise DocumentError(f"{source}: chunked document's trailer carries a column's data (damaged or tampered?)")
    totals = [sum(sizes[c] for _, sizes, _ in index) for c in range(len(columns))]
    if len(MAGIC) + sum(totals) != start:
        raise DocumentError(f"{source}: chunked document's chunks do not fill the file as its trailer says "
                            "(damaged or tampered?)")
    fh.seek(len(MAGIC))
    buffers = [bytearray(t) for t in totals]
    _read_chunks(fh, index, buffers, source)
    rows = sum(r for r, _, _ in index)
    values = {}
    for name in columns:  # one column's copy at a time: the peak is the buffers and the largest column
        values[name] = _decode_column(cls.KIND, name, bytes(buffers[0]), rows, source)
        del buffers[0]
    validate_document(_bounded_view(trailer, values), cls.KIND, source)
    doc = _build(cls, trailer, values, source)
    doc.__dict__["wire"] = trailer
    return doc


def _decode_column(kind: str, name: str, data: bytes, rows: int, source: str) -> Any:
    """A column's bytes as the payload field holds them (hex tokens, a list of JSON values, or the bytes)."""
    codec, _ = cast(tuple[str, str], _codec_of(kind, name))
    if codec == "bytes":
        return data
    if codec == "hex12":
        if len(data) != TOKEN_BYTES * rows:
            raise DocumentError(f"{source}: chunked document's {name} are not {TOKEN_BYTES} bytes per record")
        text = data.hex()
        width = 2 * TOKEN_BYTES
        return [text[i:i + width] for i in range(0, len(text), width)]
    lines = data.split(b"\n")
    if lines[-1] != b"" or len(lines) - 1 != rows:
        raise DocumentError(f"{source}: chunked document's {name} do not hold one line per entry "
                            "(damaged or tampered?)")
    return [parse_json(line, source, f"{source}: chunked document's {name} hold a line that is not JSON")
            for line in lines[:-1]]


def _bounded_view(trailer: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The document as its JSON form would be validated at run time: the payload on a bounded prefix."""
    from pprl.documents.validation import MAX_CHARS, MAX_ITEMS

    cut = MAX_CHARS // 4 * 3
    payload = dict(trailer["payload"])
    for name, value in values.items():
        shown = b64e(value[:cut]) if isinstance(value, bytes) else value[:MAX_ITEMS]
        if name.startswith(_SUMS):
            payload.setdefault("sums", {})[name[len(_SUMS):]] = shown
        else:
            payload[name] = shown
    body = {k: v for k, v in trailer.items() if k != "chunked"}
    return {**body, "payload": payload}


def _build(cls: type[D], trailer: dict[str, Any], values: dict[str, Any], source: str) -> D:
    """The typed document: header and the trailer's payload fields as the JSON form builds them, then the
    columns (bytes as read, JSON columns as parsed)."""
    types = typing.get_type_hints(cls)
    header = types["header"]._build(trailer["header"], f"{source}: header")
    raw = {name: value for name, value in values.items() if not isinstance(value, bytes)}
    blobs = {name: value for name, value in values.items() if isinstance(value, bytes)}
    sums = {name[len(_SUMS):]: blobs.pop(name) for name in list(blobs) if name.startswith(_SUMS)}
    # bytes fields are set after building (the JSON form's builder would decode base64 text)
    stand_in = {**trailer["payload"], **raw, **{name: "" for name in blobs}}
    if sums:
        stand_in["sums"] = {key: "" for key in sums}
    payload = types["payload"]._build(stand_in, f"{source}: payload")
    payload = dataclasses.replace(payload, **blobs, **({"sums": sums} if sums else {}))
    signer, signature = trailer.get("signer"), trailer.get("signature")
    return cls(
        header=header,  # type: ignore[call-arg]
        payload=payload,
        signer=Card.from_signer(signer, what=f"{source}: signer") if signer is not None else None,
        signature=b64d(signature, f"{source}: signature") if signature is not None else None,
    ).from_source(source)
