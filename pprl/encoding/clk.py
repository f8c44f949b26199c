"""Encode records into CLKs (cryptographic long-term keys), bit-identical to clkhash.

The public API (:func:`encode_records`, :func:`encode_with_report`) and the
report of missing or refused values per feature. Every value is checked against
its feature's format first; a bad value is reported by row and column only,
never by value. The work is column-major (:mod:`pprl.encoding.masks`,
:mod:`pprl.encoding.columns`, :mod:`pprl.encoding.workers`).

Design: docs/design.md#clk-encoding
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from Crypto.Cipher import AES

from pprl.encoding.columns import hashed_columns
from pprl.encoding.keys import derive_feature_keys, run_secret, secret_bytes
from pprl.encoding.masks import (
    Counts,
    add_counts,
    build_encoders,
    encode_chunk,
    gc_paused,
)
from pprl.encoding.schema import Feature, Schema
from pprl.encoding.workers import encode_parallel, progress_bar
from pprl.errors import DataValidationError, DocumentError, PPRLError

__all__ = [
    "EncodeReport",
    "EncodeResult",
    "FeatureReport",
    "encode_records",
    "encode_with_report",
    "from_clkhash_json",
    "to_clkhash_json",
]

PARALLEL_THRESHOLD = 20_000  # rows; below this, process start-up costs more than it saves
SERIAL_CHUNK = 8_192
PROGRESS_THRESHOLD = 10_000


@dataclass(frozen=True)
class FeatureReport:
    """What happened to one hashed feature's values during encoding (counts only).

    ``missing``: values that were empty (or the ``missingValue`` sentinel) or
    that the normaliser found empty; ``invalid``: non-empty values the
    feature's normaliser refused, which were encoded as missing (no bits).
    Values that break the feature's format are not counted: they stop the
    encoding with a ``DataValidationError``.
    """

    identifier: str
    column: str
    normaliser: str | None
    missing: int
    invalid: int


@dataclass(frozen=True)
class EncodeReport:
    """Per-feature counts from one ``encode_with_report`` call, in schema order."""

    records: int
    features: tuple[FeatureReport, ...]

    def feature(self, identifier: str) -> FeatureReport:
        """The report of one hashed feature (``DataValidationError`` if there is none)."""
        for f in self.features:
            if f.identifier == identifier:
                return f
        raise DataValidationError(f"no hashed feature {identifier!r} in this report "
                                  f"(features: {', '.join(f.identifier for f in self.features)})")

    def messages(self) -> list[str]:
        """One line per feature with invalid values, e.g. for ``pprl submit`` to print."""
        return [f"{f.identifier}: {f.invalid} invalid value{'s' if f.invalid != 1 else ''} "
                f"treated as missing" for f in self.features if f.invalid]


@dataclass(frozen=True)
class EncodeResult:
    """CLKs (as ``encode_records`` returns them) and the ``EncodeReport`` of the run."""

    clks: np.ndarray
    report: EncodeReport


def encode_records(data: Any, schema: Schema, secret: bytes | str, *, progress: bool = False,
                   workers: int | None = None, run: str | None = None) -> np.ndarray:
    """CLKs of ``data`` under ``schema`` and ``secret``: uint8 array, one row per record.

    ``data`` is a pandas DataFrame (hashed features picked by column name;
    NaN/None mean ``''``) or a sequence of rows matching *all* schema features
    by position (clkhash style; with derived features, all of
    ``schema.columns``). Values must be strings. Row ``i`` of the
    result equals clkhash's ``bitarray.tobytes()`` for record ``i`` (for a
    schema without pprl extensions); the width is ``ceil(l / 8)`` bytes.
    ``secret`` bytes (or a str, UTF-8 encoded as clkhash does). ``workers``:
    processes to use (None: all cores for more than 20000 rows, else 1).
    ``run``: the run id, needed by a schema that rotates its key per run
    (``clkConfig.rotate``) and ignored by any other.
    Raises ``DataValidationError`` naming the row (1-based) and column of the
    first bad value, never the value. ``encode_with_report`` also returns
    per-feature counts of missing and invalid values.
    """
    return encode_with_report(data, schema, secret, progress=progress, workers=workers, run=run).clks


def encode_with_report(data: Any, schema: Schema, secret: bytes | str, *, progress: bool = False,
                       workers: int | None = None, run: str | None = None) -> EncodeResult:
    """``encode_records``, plus an ``EncodeReport`` of missing and invalid values per feature.

    The CLKs are exactly those ``encode_records`` gives. ``report.messages()``
    gives lines such as ``"resident_id: 12 invalid values treated as missing"``.
    """
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a pprl Schema (see load_schema), not {type(schema).__name__}")
    key = secret_bytes(secret)
    if not key:
        raise PPRLError("the linkage secret must not be empty")
    if schema.rotate:
        if not run:
            raise PPRLError("this schema rotates its key per run (clkConfig.rotate): give the run id "
                            "(pprl submit --run, pprl encode --run)")
        key = run_secret(key, run)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PPRLError("workers must be a positive integer (or None for automatic)")
    columns, n = hashed_columns(data, schema)
    width = (schema.l + 7) // 8
    hashed = [f for f in schema.features if not f.ignored]
    counts: Counts = [(0, 0)] * len(hashed)
    if n == 0:
        return EncodeResult(np.zeros((0, width), dtype=np.uint8), _report(0, hashed, counts))
    keys = derive_feature_keys(key, len(schema.features), hash_name=schema.kdf_hash,
                               salt=schema.kdf_salt, info=schema.kdf_info,
                               key_size=schema.kdf_key_size)
    if workers is None:
        workers = (os.cpu_count() or 1) if n > PARALLEL_THRESHOLD else 1
    for f in hashed:
        if f.normalise is not None:
            f.normalise.prepare()
    show = progress and n >= PROGRESS_THRESHOLD
    out = bytearray(n * width)
    if workers > 1:
        encode_parallel(columns, n, schema, keys, workers, out, show, counts)
    else:
        encoders = build_encoders(schema, keys)
        with progress_bar(n, show) as bar:
            for start in range(0, n, SERIAL_CHUNK):
                part = [col[start:start + SERIAL_CHUNK] for col in columns]
                with gc_paused():
                    blob, part_counts = encode_chunk(part, encoders, schema, start)
                out[start * width:start * width + len(blob)] = blob
                add_counts(counts, part_counts)
                bar.update(len(part[0]))
    clks = np.frombuffer(out, dtype=np.uint8).reshape(n, width)
    clks = harden(clks, schema)
    return EncodeResult(clks, _report(n, hashed, counts))


def harden(clks: np.ndarray, schema: Schema) -> np.ndarray:
    """The schema's hardenings, in order: BLIP bit flips, then balancing (the complement appended).

    BLIP's flips come from AES-CTR under a key from :mod:`secrets` (fresh every call): the bureau cannot
    predict or undo them; the same record encoded twice differs.
    """
    if schema.blip:
        clks = _blip(clks, schema.l, schema.blip)
    if schema.balance:
        complement = np.bitwise_not(clks)
        pad = clks.shape[1] * 8 - schema.l
        if pad:  # the last byte's padding bits stay zero
            complement[:, -1] &= np.uint8((0xFF << pad) & 0xFF)
        clks = np.concatenate([clks, complement], axis=1)
    return np.ascontiguousarray(clks)


def _blip(clks: np.ndarray, length: int, f: float) -> np.ndarray:
    n, width = clks.shape
    cipher = AES.new(secrets.token_bytes(32), AES.MODE_CTR, nonce=b"")
    limit = int(round(f * 65536))
    out = np.unpackbits(clks, axis=1)[:, :length]
    draws = np.frombuffer(cipher.encrypt(bytes(2 * out.size)), dtype=">u2").reshape(out.shape)
    out ^= (draws < limit).astype(np.uint8)
    return np.packbits(out, axis=1)[:, :width]


def _report(n: int, hashed: list[Feature], counts: Counts) -> EncodeReport:
    return EncodeReport(n, tuple(
        FeatureReport(f.identifier, f.column, f.normalise.type if f.normalise else None,
                      missing, invalid)
        for f, (missing, invalid) in zip(hashed, counts)))


def to_clkhash_json(clks: np.ndarray) -> dict:
    """``{"clks": [base64, ...]}``, the layout of clkhash's CLK output file."""
    arr = np.asarray(clks)
    if arr.dtype != np.uint8 or arr.ndim != 2:
        raise DataValidationError("clks must be a 2-D uint8 array with one row per CLK")
    return {"clks": [base64.b64encode(row.tobytes()).decode("ascii") for row in arr]}


def from_clkhash_json(obj: Mapping[str, Any] | str | bytes) -> np.ndarray:
    """Parse clkhash's ``{"clks": [...]}`` (a dict or its JSON text) into a uint8 array."""
    if isinstance(obj, (str, bytes, bytearray)):
        try:
            obj = json.loads(obj)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DocumentError(f"CLK file is not valid JSON ({e})") from None
    if not isinstance(obj, Mapping) or not isinstance(obj.get("clks"), list):
        raise DocumentError("CLK document must be an object with a 'clks' list")
    rows = []
    for i, item in enumerate(obj["clks"]):
        if not isinstance(item, str):
            raise DocumentError(f"clks[{i}] is not a base64 string")
        try:
            rows.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise DocumentError(f"clks[{i}] is not valid base64") from None
    if not rows:
        return np.zeros((0, 0), dtype=np.uint8)
    width = len(rows[0])
    if any(len(r) != width for r in rows):
        raise DocumentError("CLKs in one document must all have the same length")
    return np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), width).copy()
