"""Encode records into CLKs (cryptographic long-term keys), bit-identical to clkhash.

Why: platforms encode their customers' identifiers locally and send only the
CLKs; the bureau links CLKs from several sources, some of which may be made
with clkhash itself, so ours must match clkhash 0.18 byte for byte. Every
value is checked against its feature's format first, and a bad value is
reported by row and column only -- the value is personal data and never
appears in a message.

The work is column-major: each feature maps its values to filter masks
through a memo (value -> mask, and inside it token -> mask), the masks of a
row are OR-ed as Python ints, folded, and written out. Large inputs are
split over processes.

Schemas with pprl extensions (``"version": "3+pprl"``) add two steps: a
feature's ``normalise`` runs on each distinct raw value before the format
check (a value it refuses counts as missing: no bits), and a derived feature
(``source``) reads another feature's column. ``encode_with_report`` also
returns how many values of each feature were missing or refused, so a
caller can say "resident_id: 12 invalid values treated as missing" without
ever showing a value.
"""

from __future__ import annotations

import base64
import binascii
import gc
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import reduce
from itertools import chain, repeat
from operator import itemgetter, or_
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from pprl.errors import DataValidationError, DocumentError, PPRLError
from pprl.linkage.bloom import TokenHasher, fold_masks, masks_to_bytes
from pprl.linkage.field_formats import FieldFormat, StringFormat
from pprl.linkage.keys import derive_feature_keys, secret_bytes
from pprl.linkage.normalise import Normaliser
from pprl.linkage.schema import Feature, Hashing, Schema

__all__ = [
    "EncodeReport",
    "EncodeResult",
    "FeatureReport",
    "encode_records",
    "encode_with_report",
    "from_clkhash_json",
    "to_clkhash_json",
]

VALUE_CACHE_SIZE = 1 << 16
PARALLEL_THRESHOLD = 20_000  # rows; below this, process start-up costs more than it saves
SERIAL_CHUNK = 8_192
PROGRESS_THRESHOLD = 10_000


class _Invalid(Exception):
    """Internal: a value breaks its feature's format. Carries no value."""


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


class _FeatureEncoder(dict):
    """value -> filter mask for one hashed feature; normalises and validates on a cache miss."""

    __slots__ = ("format", "hasher", "hashing", "identifier", "normaliser", "refused")

    def __init__(self, feature: Feature, keys: tuple[bytes, bytes], length: int) -> None:
        super().__init__()
        hashing = cast(Hashing, feature.hashing)  # only built for hashed features
        self.identifier = feature.identifier
        self.format = cast(FieldFormat, feature.format)
        self.hashing = hashing
        self.normaliser: Normaliser | None = feature.normalise
        # Every value the normaliser mapped to None since this was last emptied ->
        # True if it had content (a letter or digit): refused rather than empty.
        # Only emptied between chunks, together with the memo (see start_chunk), so
        # every value of a chunk that hits the memo has its verdict here.
        self.refused: dict[str, bool] = {}
        self.hasher = TokenHasher(hashing.hash_type, keys, feature.encoding, length,
                                  hashing.prevent_singularity)

    def start_chunk(self) -> None:
        """Bound the memory of ``refused``: empty it (and the memo) when it has grown large."""
        if len(self.refused) >= VALUE_CACHE_SIZE:
            self.clear()
            self.refused.clear()

    def counts(self, values: list[str]) -> tuple[int, int]:
        """``(missing, invalid)`` among ``values`` (see ``FeatureReport``).

        Call after every value of the chunk has been looked up: the lookups
        record which values the normaliser refused.
        """
        sentinel = self.hashing.missing_value.sentinel if self.hashing.missing_value else None
        if self.normaliser is None:
            missing = values.count("")
            if sentinel:
                missing += values.count(sentinel)
            return missing, 0
        if not self.refused and sentinel is None:
            return 0, 0
        missing = invalid = 0
        tally = Counter(values)
        if sentinel is not None:
            missing += tally.get(sentinel, 0)
        for value in self.refused.keys() & tally.keys():
            if self.refused[value]:
                invalid += tally[value]
            else:
                missing += tally[value]
        return missing, invalid

    def __missing__(self, value: str) -> int:
        mask = self.compute(value)
        if len(self) >= VALUE_CACHE_SIZE:
            self.clear()
        self[value] = mask
        return mask

    def groups(self, value: str) -> list[tuple[int, list[str]]]:
        """Check, normalise and tokenise ``value``: ``[(k, tokens inserted k times), ...]``."""
        hashing = self.hashing
        missing = hashing.missing_value
        if missing is not None and value == missing.sentinel:
            text = missing.replace_with  # clkhash neither checks nor normalises these
        elif self.normaliser is not None:
            canonical = self.normaliser(value)
            if canonical is None:  # missing or refused by the normaliser: no bits
                self.refused[value] = any(ch.isalnum() for ch in value)
                return []
            problem = self.format.check(canonical)
            if problem:
                raise _Invalid(f"after normalise: {problem}")
            text = self.format.normalise(canonical)
        else:
            problem = self.format.check(value)
            if problem:
                raise _Invalid(problem)
            text = self.format.normalise(value)
        try:
            tokens = hashing.comparison.tokenize(text)
        except (ValueError, OverflowError):
            raise _Invalid("value is not a finite number (the feature uses numeric comparison)") from None
        if not tokens:
            return []
        if hashing.strategy == "bitsPerToken":
            return [(hashing.bits, tokens)]
        # bitsPerFeature: the first `extra` tokens get k + 1 bits, the rest k.
        k, extra = divmod(hashing.bits, len(tokens))
        out = [(k + 1, tokens[:extra])] if extra else []
        if k:
            out.append((k, tokens[extra:]))
        return out

    def _or(self, groups: list[tuple[int, list[str]]]) -> int:
        mask = 0
        for k, tokens in groups:
            mask = reduce(or_, map(self.hasher.cache(k).__getitem__, tokens), mask)
        return mask

    def compute(self, value: str) -> int:
        """Mask of one value, hashing any new tokens one at a time (no value memo)."""
        return self._or(self.groups(value))

    def prefetch(self, values: list[str]) -> None:
        """Memoise the masks of all new valid values, hashing their new tokens in batches.

        Invalid values are skipped here; they raise when looked up.
        """
        new = set(values).difference(self)
        if not new:
            return
        hashing = self.hashing
        missing = hashing.missing_value
        sentinel = missing.sentinel if missing is not None else None
        replacement = missing.replace_with if missing is not None else None
        fmt = self.format
        check = fmt.check
        # A plain string format (no pattern or case rule) is checked inline below:
        # length bounds and encodability, exactly what its ``check`` tests.
        plain = type(fmt) is StringFormat and fmt.pattern is None and fmt.case == "mixed"
        if plain:
            min_len = fmt.min_length or 0
            max_len = fmt.max_length if fmt.max_length is not None else math.inf
            text_encoding = fmt.encoding
        # Formats whose normalise is the identity (strings, enums) skip the call.
        fnorm = None if getattr(fmt, "normalise_is_identity", False) else fmt.normalise
        comparison = hashing.comparison
        tokenize = getattr(comparison, "tokenizer", comparison.tokenize)
        normaliser = self.normaliser
        refused = self.refused
        per_token = hashing.strategy == "bitsPerToken"
        bits = hashing.bits
        zeros: list[str] = []  # values without bits (no tokens, or refused by the normaliser)
        # Valid values grouped by their number of tokens, which fixes how many bits
        # each token gets: number of tokens -> (values, their token lists).
        by_len: dict[int, tuple[list[str], list[list[str]]]] = {}
        for value in new:
            if value == sentinel:
                text = replacement  # clkhash neither checks nor normalises these
            else:
                if normaliser is not None:
                    canonical = normaliser(value)
                    if canonical is None:  # missing or refused by the normaliser: no bits
                        refused[value] = any(ch.isalnum() for ch in value)
                        zeros.append(value)
                        continue
                else:
                    canonical = value
                if plain:
                    if not min_len <= len(canonical) <= max_len:
                        continue  # invalid: raises when looked up
                    try:
                        canonical.encode(text_encoding)
                    except UnicodeEncodeError:
                        continue
                elif check(canonical):
                    continue  # invalid: raises when looked up
                text = canonical if fnorm is None else fnorm(canonical)
            try:
                tokens = tokenize(text)
            except (ValueError, OverflowError):
                continue  # invalid: raises when looked up
            group = by_len.get(len(tokens))
            if group is None:
                group = by_len[len(tokens)] = ([], [])
            group[0].append(value)
            group[1].append(tokens)
        # Per group: [(k, token lists whose tokens are inserted k times), ...]; with
        # bitsPerFeature the first `extra` tokens of a value get k + 1 bits, the rest k.
        specs: list[tuple[list[str], list[tuple[int, list[list[str]]]]]] = []
        need: dict[int, list[list[list[str]]]] = {}
        for count, (vals, lists) in by_len.items():
            parts: list[tuple[int, list[list[str]]]] = []
            if count:
                if per_token:
                    if bits:
                        parts.append((bits, lists))
                else:
                    k, extra = divmod(bits, count)
                    if extra:
                        parts.append((k + 1, list(map(itemgetter(slice(None, extra)), lists))))
                    if k:
                        parts.append((k, list(map(itemgetter(slice(extra, None)), lists))
                                      if extra else lists))
            if not parts:
                zeros.extend(vals)
                continue
            specs.append((vals, parts))
            for k, token_lists in parts:
                need.setdefault(k, []).append(token_lists)
        if not specs and not zeros:
            return
        hasher = self.hasher
        getters: dict[int, Any] = {}
        for k, nested in need.items():
            cache = hasher.cache(k)
            wanted = set(chain.from_iterable(chain.from_iterable(nested)))
            hasher.fill(k, wanted.difference(cache))
            getters[k] = cache.__getitem__
        if len(self) + len(zeros) + sum(len(vals) for vals, _ in specs) > VALUE_CACHE_SIZE:
            self.clear()
        self.update(dict.fromkeys(zeros, 0))
        for vals, parts in specs:
            masks: Any = None
            for k, token_lists in parts:
                # reduce(or_, map(token -> mask, tokens)) for every value, all in C.
                part = map(reduce, repeat(or_), map(map, repeat(getters[k]), token_lists))
                masks = part if masks is None else map(or_, masks, part)
            self.update(zip(vals, masks))


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC: encoding allocates millions of acyclic objects (lists,
    ints, strings) and generational scans over the caller's data would otherwise
    cost more than the hashing itself."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _build_encoders(schema: Schema, keys: tuple[tuple[bytes, bytes], ...]) -> list[_FeatureEncoder]:
    length = schema.hash_length
    return [_FeatureEncoder(f, k, length) for f, k in zip(schema.features, keys) if not f.ignored]


Counts = list[tuple[int, int]]  # (missing, invalid) per hashed feature


def _encode_chunk(columns: list[list[str]], encoders: list[_FeatureEncoder], schema: Schema,
                  row_offset: int) -> tuple[bytes, Counts]:
    """CLK bytes of rows ``row_offset+1 ..`` given as one value list per hashed feature,
    and the (missing, invalid) counts of each feature over these rows."""
    for enc, col in zip(encoders, columns):
        enc.start_chunk()
        enc.prefetch(col)
    try:
        masks = list(map(encoders[0].__getitem__, columns[0]))
        for enc, col in zip(encoders[1:], columns[1:]):
            masks = list(map(or_, masks, map(enc.__getitem__, col)))
    except _Invalid:
        # Find the first bad value in reading order, to report it by row and column.
        for r in range(len(columns[0])):
            for enc, col in zip(encoders, columns):
                try:
                    enc[col[r]]
                except _Invalid as e:
                    raise DataValidationError(
                        f"row {row_offset + r + 1}, column {enc.identifier!r}: {e}") from None
        raise  # pragma: no cover - unreachable: the scan above re-finds the error
    masks = fold_masks(masks, schema.hash_length, schema.xor_folds)
    counts = [enc.counts(col) for enc, col in zip(encoders, columns)]
    return masks_to_bytes(masks, schema.l), counts


class _Bar(tqdm):
    """tqdm without its monitor thread: a live thread would make ``fork`` unsafe later."""

    monitor_interval = 0


def _progress(n: int, show: bool) -> Any:
    if not show:
        return nullcontext(SimpleNamespace(update=lambda _n: None))
    return _Bar(total=n, unit="rec", desc="encoding", file=sys.stderr)


# ------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(schema: Schema, keys: tuple[tuple[bytes, bytes], ...]) -> None:
    _WORKER["schema"] = schema
    _WORKER["encoders"] = _build_encoders(schema, keys)


def _work(columns: list[list[str]], row_offset: int) -> tuple[bytes, Counts]:
    with _gc_paused():
        return _encode_chunk(columns, _WORKER["encoders"], _WORKER["schema"], row_offset)


def _mp_context() -> Any:
    """``fork`` where it is safe (Linux, no other threads): nothing is re-imported, so
    unguarded scripts and notebooks work. Otherwise forkserver/spawn, which need the
    caller's script to guard its entry point with ``if __name__ == "__main__"``."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _add_counts(total: Counts, part: Counts) -> None:
    for i, (missing, invalid) in enumerate(part):
        total[i] = (total[i][0] + missing, total[i][1] + invalid)


def _encode_parallel(columns: list[list[str]], n: int, schema: Schema,
                     keys: tuple[tuple[bytes, bytes], ...], workers: int, out: bytearray,
                     progress: bool, counts: Counts) -> None:
    width = (schema.l + 7) // 8
    size = min(10_000, max(500, math.ceil(n / (workers * 4))))
    starts = range(0, n, size)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(starts)), mp_context=_mp_context(),
                                 initializer=_init_worker, initargs=(schema, keys)) as pool:
            # With fork, all workers start at the first submit, before any bar exists.
            futures = [pool.submit(_work, [col[s:s + size] for col in columns], s) for s in starts]
            try:
                with _progress(n, progress) as bar:
                    for s, fut in zip(starts, futures):
                        blob, part = fut.result()  # in order: the first bad row is reported
                        out[s * width:s * width + len(blob)] = blob
                        _add_counts(counts, part)
                        bar.update(len(blob) // width)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    except BrokenProcessPool as e:
        raise PPRLError("encoding worker processes failed to start or died; if this runs from a "
                        "script, guard its entry point with `if __name__ == \"__main__\":`, "
                        "or encode with workers=1") from e


# --------------------------------------------------------------------- input


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


def _columns(data: Any, schema: Schema) -> tuple[list[list[str]], int]:
    """One list of strings per hashed feature, and the number of rows.

    A derived feature gets its source column (the same list object: each
    column is read and converted once).
    """
    needed = list(dict.fromkeys(f.column for f in schema.features if not f.ignored))
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
    return [texts[f.column] for f in schema.features if not f.ignored], n


# --------------------------------------------------------------------- public


def encode_records(data: Any, schema: Schema, secret: bytes | str, *, progress: bool = False,
                   workers: int | None = None) -> np.ndarray:
    """CLKs of ``data`` under ``schema`` and ``secret``: uint8 array, one row per record.

    ``data`` is a pandas DataFrame (hashed features picked by column name;
    NaN/None mean ``''``) or a sequence of rows matching *all* schema features
    by position (clkhash style; with derived features, all of
    ``schema.columns``). Values must be strings. Row ``i`` of the
    result equals clkhash's ``bitarray.tobytes()`` for record ``i`` (for a
    schema without pprl extensions); the width is ``ceil(l / 8)`` bytes.
    ``secret`` bytes (or a str, UTF-8 encoded as clkhash does). ``workers``:
    processes to use (None: all cores for more than 20000 rows, else 1).
    Raises ``DataValidationError`` naming the row (1-based) and column of the
    first bad value, never the value. ``encode_with_report`` also returns
    per-feature counts of missing and invalid values.
    """
    return encode_with_report(data, schema, secret, progress=progress, workers=workers).clks


def encode_with_report(data: Any, schema: Schema, secret: bytes | str, *, progress: bool = False,
                       workers: int | None = None) -> EncodeResult:
    """``encode_records``, plus an ``EncodeReport`` of missing and invalid values per feature.

    The CLKs are exactly those ``encode_records`` gives. ``report.messages()``
    gives lines such as ``"resident_id: 12 invalid values treated as missing"``.
    """
    if not isinstance(schema, Schema):
        raise TypeError(f"schema must be a pprl Schema (see load_schema), not {type(schema).__name__}")
    key = secret_bytes(secret)
    if not key:
        raise PPRLError("the linkage secret must not be empty")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise PPRLError("workers must be a positive integer (or None for automatic)")
    columns, n = _columns(data, schema)
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
        _encode_parallel(columns, n, schema, keys, workers, out, show, counts)
    else:
        encoders = _build_encoders(schema, keys)
        with _progress(n, show) as bar:
            for start in range(0, n, SERIAL_CHUNK):
                part = [col[start:start + SERIAL_CHUNK] for col in columns]
                with _gc_paused():
                    blob, part_counts = _encode_chunk(part, encoders, schema, start)
                out[start * width:start * width + len(blob)] = blob
                _add_counts(counts, part_counts)
                bar.update(len(part[0]))
    clks = np.frombuffer(out, dtype=np.uint8).reshape(n, width)
    return EncodeResult(clks, _report(n, hashed, counts))


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
