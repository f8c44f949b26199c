"""Values to Bloom-filter masks and masks to CLK bytes: the hot path of :mod:`pprl.encoding.clk`.

The work is column-major: each hashed feature has a :class:`FeatureEncoder`,
a memo from value to filter mask (and, inside its ``TokenHasher``, from
token to mask).  On a miss a value is normalised (schemas with pprl
extensions), checked against its feature's format, tokenised and its tokens
hashed; :meth:`FeatureEncoder.prefetch` does that for all new values of a
chunk at once, hashing new tokens in batches.  :func:`encode_chunk` OR-s the
masks of each row as Python ints, folds them and writes the CLK bytes.
Where the C extension ``pprl.encoding._bloom`` covers a feature (see
:func:`pprl.encoding.bloom.native_masker`), ``prefetch`` hands it the new
values' checked texts and it returns their masks (tokenising and hashing in
C, same results); otherwise, or with ``PPRL_NO_BLOOM`` set, the Python path
below does it.

A value that breaks its feature's format raises ``DataValidationError``
naming its row and column only -- the value is personal data and never
appears in a message.
"""

from __future__ import annotations

import gc
import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce
from itertools import chain, repeat
from operator import itemgetter, or_
from typing import Any, cast

from pprl.encoding.bloom import TokenHasher, bloom_enabled, fold_masks, masks_to_bytes, native_masker
from pprl.encoding.columns import SALT_WIDTH
from pprl.encoding.field_formats import FieldFormat, StringFormat
from pprl.encoding.normalise import Normaliser
from pprl.encoding.schema import Feature, Hashing, Schema
from pprl.errors import DataValidationError

__all__ = [
    "VALUE_CACHE_SIZE",
    "Counts",
    "FeatureEncoder",
    "add_counts",
    "build_encoders",
    "encode_chunk",
    "gc_paused",
]

VALUE_CACHE_SIZE = 1 << 16


class _Invalid(Exception):
    """Internal: a value breaks its feature's format. Carries no value."""


class FeatureEncoder(dict):
    """value -> filter mask for one hashed feature; normalises and validates on a cache miss."""

    __slots__ = ("format", "hasher", "hashing", "identifier", "native", "normaliser", "refused", "salted")

    def __init__(self, feature: Feature, keys: tuple[bytes, bytes], length: int) -> None:
        super().__init__()
        hashing = cast(Hashing, feature.hashing)  # only built for hashed features
        self.identifier = feature.identifier
        self.format = cast(FieldFormat, feature.format)
        self.hashing = hashing
        self.normaliser: Normaliser | None = feature.normalise
        # A salted feature's values start with the record's salt tag (see columns.salt_tags): it is
        # split off before the checks and put in front of every token.
        self.salted = feature.salt is not None
        # Every value the normaliser mapped to None since this was last emptied ->
        # True if it had content (a letter or digit): refused rather than empty.
        # Only emptied between chunks, together with the memo (see start_chunk), so
        # every value of a chunk that hits the memo has its verdict here.
        self.refused: dict[str, bool] = {}
        self.hasher = TokenHasher(hashing.hash_type, keys, feature.encoding, length,
                                  hashing.prevent_singularity)
        # The C masker (same masks as the hasher's), if it covers this feature.
        self.native = None if self.salted else native_masker(hashing, keys[0], feature.encoding, length)

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
        plain = [v[SALT_WIDTH:] for v in values] if self.salted else values
        if self.normaliser is None:
            missing = plain.count("")
            if sentinel:
                missing += plain.count(sentinel)
            return missing, 0
        if not self.refused and sentinel is None:
            return 0, 0
        missing = invalid = 0
        tally = Counter(values)
        if sentinel is not None:
            missing += plain.count(sentinel)
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
        key = value
        salt = ""
        if self.salted:
            salt, value = value[:SALT_WIDTH], value[SALT_WIDTH:]
        if missing is not None and value == missing.sentinel:
            text = missing.replace_with  # clkhash neither checks nor normalises these
        elif self.normaliser is not None:
            canonical = self.normaliser(value)
            if canonical is None:  # missing or refused by the normaliser: no bits
                self.refused[key] = any(ch.isalnum() for ch in value)
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
        if salt:
            tokens = [salt + t for t in tokens]
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
        if plain and isinstance(fmt, StringFormat):  # plain implies it
            min_len = fmt.min_length or 0
            max_len = fmt.max_length if fmt.max_length is not None else math.inf
            text_encoding = fmt.encoding
        # Formats whose normalise is the identity (strings, enums) skip the call.
        fnorm = None if getattr(fmt, "normalise_is_identity", False) else fmt.normalise
        normaliser = self.normaliser
        refused = self.refused
        zeros: list[str] = []  # values without bits (refused by the normaliser, or no tokens)
        valid: list[str] = []  # the memo keys of the values that pass the checks
        texts: list[str] = []  # and their texts, to tokenise
        keys = list(new)
        # ``key``: the memo's key (with a salted feature, the salt tag and the value).
        raw = [key[SALT_WIDTH:] for key in keys] if self.salted else keys
        # The normaliser's outputs, all at once (values equal to the sentinel are not used).
        canon = raw if normaliser is None else normaliser.many(raw)
        for key, value, canonical in zip(keys, raw, canon):
            if value == sentinel:
                text = replacement  # clkhash neither checks nor normalises these
            else:
                if canonical is None:  # missing or refused by the normaliser: no bits
                    refused[key] = any(ch.isalnum() for ch in value)
                    zeros.append(key)
                    continue
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
            valid.append(key)
            texts.append(cast(str, text))
        native = self.native
        if native is not None and texts and bloom_enabled():
            try:
                masks = native.masks(texts)
            except UnicodeError:
                pass  # a text the feature's encoding cannot carry: the Python path reports it
            else:
                if len(self) + len(zeros) + len(valid) > VALUE_CACHE_SIZE:
                    self.clear()
                self.update(dict.fromkeys(zeros, 0))
                self.update(zip(valid, masks))
                return
        self._hash_new(valid, texts, zeros)

    def _hash_new(self, valid: list[str], texts: list[str], zeros: list[str]) -> None:
        """``prefetch``'s Python path: tokenise ``texts``, hash new tokens in batches, memoise
        the masks of ``valid`` (and 0 for ``zeros``)."""
        hashing = self.hashing
        comparison = hashing.comparison
        tokenize = getattr(comparison, "tokenizer", comparison.tokenize)
        per_token = hashing.strategy == "bitsPerToken"
        bits = hashing.bits
        salted = self.salted
        # Valid values grouped by their number of tokens, which fixes how many bits
        # each token gets: number of tokens -> (values, their token lists).
        by_len: dict[int, tuple[list[str], list[list[str]]]] = {}
        for key, text in zip(valid, texts):
            try:
                tokens = tokenize(text)
            except (ValueError, OverflowError):
                continue  # invalid: raises when looked up
            if salted and tokens:
                salt = key[:SALT_WIDTH]
                tokens = [salt + t for t in tokens]
            group = by_len.get(len(tokens))
            if group is None:
                group = by_len[len(tokens)] = ([], [])
            group[0].append(key)
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
def gc_paused() -> Iterator[None]:
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


def build_encoders(schema: Schema, keys: tuple[tuple[bytes, bytes], ...]) -> list[FeatureEncoder]:
    length = schema.hash_length
    return [FeatureEncoder(f, k, length) for f, k in zip(schema.features, keys) if not f.ignored]


Counts = list[tuple[int, int]]  # (missing, invalid) per hashed feature


def encode_chunk(columns: list[list[str]], encoders: list[FeatureEncoder], schema: Schema,
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


def add_counts(total: Counts, part: Counts) -> None:
    """Add one chunk's (missing, invalid) counts to the running ``total``, in place."""
    for i, (missing, invalid) in enumerate(part):
        total[i] = (total[i][0] + missing, total[i][1] + invalid)
