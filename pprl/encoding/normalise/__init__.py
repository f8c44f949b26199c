"""Normalisers: bring real-world values to one canonical form before they are tokenised.

A schema feature may name one normaliser (the pprl schema extension
``"normalise"``); this module holds the schema block (:func:`parse_normaliser`)
and the registry of types (``cn_resident_id``, ``cn_mobile``, ``cn_name``,
``cn_address``, ``date``, ``gender``, ``text``). A normaliser returns the canonical text, or
``None`` (treated as missing); every one is idempotent, never raises on a string,
never logs a value, and is memoised per distinct value.

Design: docs/schema.md#normalising-chinese-identifiers-pprl-schema-extension
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pprl.encoding.normalise.chinese import (
    address_cn,
    name_han,
    name_han_only,
    name_pinyin,
    name_pinyin_words,
    normalise_name,
    pinyin_table,
    simplify,
    simplify_table,
    tables_fingerprint,
    to_pinyin,
)
from pprl.encoding.normalise.identifiers import (
    IDENTIFIER_KINDS,
    MOBILE_PATTERN,
    normalise_mobile,
    normalise_resident_id,
    normalise_resident_ids,
    normaliser_for,
    resident_id_check_char,
)
from pprl.encoding.normalise.values import (
    normalise_date,
    normalise_gender,
    normalise_text,
)
from pprl.errors import SchemaError

__all__ = [
    "IDENTIFIER_KINDS",
    "NORMALISER_TYPES",
    "Normaliser",
    "clear_caches",
    "normalise_date",
    "normalise_gender",
    "normalise_mobile",
    "normalise_name",
    "normalise_resident_id",
    "normalise_text",
    "normaliser_for",
    "parse_normaliser",
    "resident_id_check_char",
    "simplify",
    "tables_fingerprint",
    "to_pinyin",
]

CACHE_SIZE = 1 << 16
_cached_resident_id = lru_cache(maxsize=CACHE_SIZE)(normalise_resident_id)
_cached_mobile = lru_cache(maxsize=CACHE_SIZE)(normalise_mobile)


def clear_caches() -> None:
    """Forget every memoised value (they are personal data; also for fair benchmarks)."""
    for fn in (name_han, name_han_only, name_pinyin, name_pinyin_words, address_cn, normalise_date, normalise_gender, normalise_text,
               _cached_resident_id, _cached_mobile):
        fn.cache_clear()


#: type -> {option: (allowed values, default)}
_OPTIONS: dict[str, dict[str, tuple[tuple[Any, ...], Any]]] = {
    "cn_resident_id": {},
    "cn_mobile": {},
    "cn_name": {"output": (("han", "pinyin"), "han"), "han_only": ((True, False), False),
                "words": ((True, False), False)},
    "cn_address": {},
    "date": {"output": (("iso", "compact"), "iso")},
    "gender": {},
    "text": {"simplify": ((True, False), True), "lower": ((True, False), True),
             "strip": (("punctuation", "space", "none"), "punctuation")},
}
NORMALISER_TYPES = tuple(_OPTIONS)

# A canonical output of each normaliser (synthetic values): the loader checks that the
# feature's format accepts it, so a schema cannot silently reject every normalised value.
_SAMPLES = {
    "cn_resident_id": "11010519491231002X",
    "cn_mobile": "13800138000",
    "cn_name:han": "张伟",
    "cn_name:pinyin": "zhangwei",
    "cn_name:pinyin:words": "zhang wei",
    "cn_address": "朝阳区建国路1号",
    "date:iso": "1990-03-07",
    "date:compact": "19900307",
    "gender": "M",
    "text": "北京市朝阳区1号",
}


@dataclass(frozen=True)
class Normaliser:
    """A feature's ``normalise`` block: ``type`` and its options.

    ``options`` may leave out defaults; they are filled in (in a fixed order),
    so equal normalisers compare equal. Calling it maps a raw string to its
    canonical form, or None (missing). Use ``parse_normaliser`` for schema
    JSON; building one directly with an unknown type or option raises
    ``SchemaError``.
    """

    type: str
    options: tuple[tuple[str, Any], ...] = ()
    _fn: Callable[[str], str | None] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        allowed = _OPTIONS.get(self.type)
        if allowed is None:
            raise SchemaError(f"normaliser type {self.type!r} is not one of {', '.join(NORMALISER_TYPES)}")
        given = dict(self.options)
        unknown = sorted(set(given) - set(allowed))
        if unknown:
            raise SchemaError(f"normaliser {self.type!r} has no option {unknown[0]!r}")
        for name, value in given.items():
            if not any(type(value) is type(v) and value == v for v in allowed[name][0]):
                raise SchemaError(f"normaliser option {name!r} must be one of "
                                  f"{', '.join(_show(v) for v in allowed[name][0])}")
        full = tuple((name, given.get(name, default)) for name, (_, default) in allowed.items())
        if self.type == "cn_name":
            out = dict(full)
            if out["words"] and out["output"] != "pinyin":
                raise SchemaError("normaliser option 'words' needs \"output\": \"pinyin\"")
            if out["han_only"] and out["output"] != "han":
                raise SchemaError("normaliser option 'han_only' needs \"output\": \"han\"")
        object.__setattr__(self, "options", full)
        object.__setattr__(self, "_fn", _function(self.type, dict(full)))

    def option(self, name: str) -> Any:
        """The value of one option (its default when the schema left it out)."""
        return dict(self.options)[name]

    @property
    def sample(self) -> str:
        """A synthetic canonical output, for checking the feature's format at load time."""
        key = self.type
        if key in ("cn_name", "date"):
            key += ":" + self.option("output")
        if key == "cn_name:pinyin" and self.option("words"):
            key += ":words"
        return _SAMPLES[key]

    def __call__(self, value: str) -> str | None:
        return self._fn(value)

    def many(self, values: list[str]) -> list[str | None]:
        """``[self(v) for v in values]``, with less work per value (the encoder's hot path).

        Resident IDs in their common form are checked in bulk, mobile numbers already in
        canonical form pass through; the results are always those of calling it per value.
        """
        if self.type == "cn_resident_id":
            return normalise_resident_ids(values)
        if self.type == "cn_mobile":
            match, fn = MOBILE_PATTERN.fullmatch, self._fn
            return [v if match(v) else fn(v) for v in values]
        return list(map(self._fn, values))

    def prepare(self) -> None:
        """Load what this normaliser needs (OpenCC, pypinyin) now rather than on first use.

        The encoder calls it before starting worker processes, so forked workers
        inherit the loaded tables instead of each loading them again.
        """
        if self.type in ("cn_name", "cn_address") or (self.type == "text" and self.option("simplify")):
            simplify_table()
        if self.type == "cn_name" and self.option("output") == "pinyin":
            pinyin_table()

    def __reduce__(self) -> tuple[Any, ...]:
        return (Normaliser, (self.type, self.options))


def _function(ntype: str, full: dict[str, Any]) -> Callable[[str], str | None]:
    if ntype == "cn_resident_id":
        return _cached_resident_id
    if ntype == "cn_mobile":
        return _cached_mobile
    if ntype == "cn_name":
        if full["output"] == "pinyin":
            return name_pinyin_words if full["words"] else name_pinyin
        return name_han_only if full["han_only"] else name_han
    if ntype == "cn_address":
        return address_cn
    if ntype == "date":
        compact = full["output"] == "compact"
        return (lambda v: normalise_date(v, "compact")) if compact else normalise_date
    if ntype == "gender":
        return normalise_gender
    simplify_chars, lower, strip = full["simplify"], full["lower"], full["strip"]
    return lambda v: normalise_text(v, simplify_chars, lower, strip)


def parse_normaliser(obj: Any, problems: list[str]) -> Normaliser | None:
    """Parse a feature's ``normalise`` block; append every problem found to ``problems``.

    An unknown type or option is a problem, never ignored: a normaliser that
    silently did nothing would make two platforms' encodings disagree.
    """
    if not isinstance(obj, dict):
        problems.append("normalise must be an object such as {\"type\": \"cn_name\"}")
        return None
    ntype = obj.get("type")
    if not isinstance(ntype, str) or ntype not in _OPTIONS:
        if "type" not in obj:
            problems.append("normalise.type is missing")
        else:
            problems.append(f"normalise.type {ntype!r} is not one of {', '.join(NORMALISER_TYPES)}")
        return None
    before = len(problems)
    allowed = _OPTIONS[ntype]
    for key in sorted(set(obj) - {"type"} - set(allowed)):
        offer = f" (options: {', '.join(allowed)})" if allowed else " (it takes no options)"
        problems.append(f"normalise has unknown key {key!r} for type {ntype!r}{offer}")
    options = []
    for name, (values, _default) in allowed.items():
        if name not in obj:
            continue
        value = obj[name]
        if not any(type(value) is type(v) and value == v for v in values):
            problems.append(f"normalise.{name} must be one of {', '.join(_show(v) for v in values)}")
        else:
            options.append((name, value))
    if len(problems) > before:
        return None
    try:
        return Normaliser(ntype, tuple(options))
    except SchemaError as e:  # options that do not go together
        problems.append(str(e))
        return None


def _show(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else repr(v)
