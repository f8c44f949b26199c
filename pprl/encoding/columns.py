"""The records to encode, read into one list of strings per hashed feature.

A salted feature's values come with the record's salt in front: a tag of
:data:`SALT_WIDTH` hex digits (see :func:`salt_tags`), which the feature's
encoder strips and puts in front of every token instead.

Part of :mod:`pprl.encoding.clk`: ``data`` is a pandas DataFrame (hashed
features picked by column name) or a sequence of rows matching the schema's
columns by position.  Missing markers (None, NaN, pandas' NA) become ``''``;
any other value that is not a string is refused, naming its row and column,
never the value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from hashlib import blake2b
from typing import Any

import numpy as np

from pprl.encoding.schema import Feature, Schema
from pprl.errors import DataValidationError

__all__ = ["SALT_WIDTH", "hashed_columns", "salt_tags"]

#: Hex digits of the tag that carries a record's salt in front of a salted feature's values.
SALT_WIDTH = 16


def _to_text(value: Any, row: int, identifier: str) -> str:
    """A non-``str`` value: missing markers become ``''``, anything else is refused."""
    if value is None:
        return ""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return ""
    pd = sys.modules.get("pandas")
    if pd is not None and not isinstance(value, (list, tuple, dict, set, bytes, bytearray)):
        try:
            missing = pd.isna(value)
        except (TypeError, ValueError):
            missing = False
        if isinstance(missing, (bool, np.bool_)) and missing:
            return ""
    raise DataValidationError(
        f"row {row}, column {identifier!r}: expected text, got {type(value).__name__} "
        f"(read the data as strings, e.g. pandas dtype=str)")


def _texts(values: list, identifier: str) -> list[str]:
    if all(type(v) is str for v in values):
        return values
    return [v if type(v) is str else _to_text(v, r, identifier) for r, v in enumerate(values, start=1)]


def _is_dataframe(data: Any) -> bool:
    pd = sys.modules.get("pandas")  # if pandas was never imported, data is no DataFrame
    return pd is not None and isinstance(data, pd.DataFrame)


def hashed_columns(data: Any, schema: Schema) -> tuple[list[list[str]], int]:
    """One list of strings per hashed feature, and the number of rows.

    A derived feature gets its source column (the same list object: each
    column is read and converted once).
    """
    by_id = {f.identifier: f for f in schema.features}
    salts = [f.salt.feature for f in schema.features if not f.ignored and f.salt is not None]
    needed = list(dict.fromkeys([*(f.column for f in schema.features if not f.ignored),
                                 *(by_id[s].column for s in salts)]))
    if _is_dataframe(data):
        names = list(data.columns)
        missing = [ident for ident in needed if ident not in names]
        if missing:
            raise DataValidationError("missing column(s) required by the schema: "
                                      + ", ".join(repr(m) for m in missing))
        doubled = [ident for ident in needed if names.count(ident) > 1]
        if doubled:
            raise DataValidationError("column(s) appear more than once: "
                                      + ", ".join(repr(d) for d in doubled))
        texts = {ident: _texts(data[ident].tolist(), ident) for ident in needed}
        n = len(data)
    else:
        if isinstance(data, (str, bytes, Mapping)) or not hasattr(data, "__iter__"):
            raise DataValidationError("data must be a pandas DataFrame or a sequence of rows")
        rows = data if isinstance(data, Sequence) else list(data)
        positions = {ident: j for j, ident in enumerate(schema.columns)}
        width = len(positions)
        what = (f"{width} features" if width == len(schema.features) else
                f"{width} input columns (derived features take none)")
        for r, row in enumerate(rows, start=1):
            if isinstance(row, (str, bytes, Mapping)) or not hasattr(row, "__len__"):
                raise DataValidationError(f"row {r}: expected a sequence of values, got {type(row).__name__}")
            if len(row) != width:
                raise DataValidationError(f"row {r}: has {len(row)} values, the schema has {what}")
        texts = {ident: _texts([row[positions[ident]] for row in rows], ident) for ident in needed}
        n = len(rows)
    out = []
    tags: dict[tuple[str, int | None], list[str]] = {}
    for f in schema.features:
        if f.ignored:
            continue
        if f.salt is None:
            out.append(texts[f.column])
            continue
        spec = (f.salt.feature, f.salt.characters)
        if spec not in tags:
            source = by_id[f.salt.feature]
            tags[spec] = salt_tags(texts[source.column], source, f.salt.characters)
        out.append([t + v for t, v in zip(tags[spec], texts[f.column])])
    return out, n


def salt_tags(values: list[str], feature: Feature, characters: int | None) -> list[str]:
    """Each record's salt tag from its ``values`` of the salt ``feature``.

    The salt is the value as ``feature`` hashes it (after its ``normalise`` and its format; a
    missing or invalid value salts as ``''``), cut to its first ``characters``; the raw value,
    stripped, for an ignored feature. The tag is a BLAKE2b digest of it in :data:`SALT_WIDTH`
    hex digits, so the encoders can split it off whatever the salt's characters.
    """
    memo: dict[str, str] = {}
    out = []
    for v in values:
        tag = memo.get(v)
        if tag is None:
            text = _salt_text(v, feature)[:characters]
            tag = memo[v] = blake2b(text.encode("utf-8"), digest_size=SALT_WIDTH // 2,
                                    person=b"pprl-salt-v1").hexdigest()
        out.append(tag)
    return out


def _salt_text(value: str, feature: Feature) -> str:
    if feature.ignored or feature.format is None:
        return value.strip()
    missing = feature.hashing.missing_value if feature.hashing is not None else None
    if value == "" or (missing is not None and value == missing.sentinel):
        return ""
    if feature.normalise is not None:
        canonical = feature.normalise(value)
        if canonical is None:
            return ""
        value = canonical
    if feature.format.check(value):
        return ""
    return feature.format.normalise(value)
