"""Value formats of a clkhash linkage schema: parse the ``format`` block, check
and normalise single values.

Why: clkhash checks every value against its feature's ``format`` before hashing
and rewrites some of them (integers, dates) so that equal values hash equally.
Our CLKs are only bit-identical to clkhash's if we do exactly the same thing, so
each class here mirrors one of clkhash 0.18's ``FieldSpec`` subclasses. Unlike
clkhash, a failed check returns a message that never quotes the value itself:
values are personal data and error messages end up in logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, ClassVar, cast

__all__ = [
    "ENCODINGS",
    "FORMAT_TYPES",
    "DateFormat",
    "EnumFormat",
    "FieldFormat",
    "IntegerFormat",
    "StringFormat",
    "parse_format",
]

FORMAT_TYPES = ("string", "integer", "date", "enum")
ENCODINGS = ("ascii", "utf-8", "utf-16", "utf-32")
CASES = ("upper", "lower", "mixed")
# clkhash's DateSpec.OUTPUT_FORMAT: dates are hashed as digits only.
DATE_OUTPUT_FORMAT = "%Y%m%d"
#: What a date may be hashed as: clkhash's form, or without the century (a pprl extension).
DATE_HASH_FORMATS = (DATE_OUTPUT_FORMAT, "%y%m%d")
ISO_DATE = "%Y-%m-%d"
# Values strptime(ISO_DATE) parses exactly as date.fromisoformat does (which is ~20x faster).
_STRICT_ISO = re.compile(r"[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}", re.ASCII)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _encoding_problem(value: str, encoding: str) -> str | None:
    try:
        value.encode(encoding)
    except UnicodeEncodeError:
        return f"value cannot be encoded as {encoding}"
    return None


@dataclass(frozen=True)
class StringFormat:
    """``{"type": "string", ...}``: optional encoding, case, length bounds or a regex."""

    encoding: str = "utf-8"
    case: str = "mixed"
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    description: str | None = None
    type: ClassVar[str] = "string"
    normalise_is_identity: ClassVar[bool] = True  # lets the encoder skip the call
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.pattern is not None:
            object.__setattr__(self, "_regex", re.compile(self.pattern))

    def check(self, value: str) -> str | None:
        """Return why ``value`` breaks this format (without quoting it), or None."""
        try:
            value.encode(self.encoding)
        except UnicodeEncodeError:
            return f"value cannot be encoded as {self.encoding}"
        if self._regex is not None:
            if self._regex.fullmatch(value) is None:
                return f"value does not match pattern {self.pattern!r}"
            return None
        n = len(value)
        if self.min_length is not None and n < self.min_length:
            return f"value is shorter than minLength {self.min_length}"
        if self.max_length is not None and n > self.max_length:
            return f"value is longer than maxLength {self.max_length}"
        if self.case == "upper" and value.upper() != value:
            return "value is not upper case"
        if self.case == "lower" and value.lower() != value:
            return "value is not lower case"
        return None

    def normalise(self, value: str) -> str:
        """Strings are hashed as given."""
        return value


@dataclass(frozen=True)
class IntegerFormat:
    """``{"type": "integer"}``: a base-10 integer, hashed without sign/space noise."""

    minimum: int | None = None
    maximum: int | None = None
    description: str | None = None
    type: ClassVar[str] = "integer"
    encoding: ClassVar[str] = "utf-8"

    def check(self, value: str) -> str | None:
        """Return why ``value`` breaks this format (without quoting it), or None."""
        problem = _encoding_problem(value, self.encoding)
        if problem:
            return problem
        try:
            number = int(value, 10)
        except ValueError:
            return "value is not an integer"
        if self.minimum is not None and number < self.minimum:
            return f"value is below minimum {self.minimum}"
        if self.maximum is not None and number > self.maximum:
            return f"value is above maximum {self.maximum}"
        return None

    def normalise(self, value: str) -> str:
        """``'+13'``, ``' 13'`` and ``'13'`` all hash as ``'13'`` (as in clkhash)."""
        return str(int(value, 10))


@dataclass(frozen=True)
class DateFormat:
    """``{"type": "date", "format": "%Y-%m-%d"}``: hashed as ``YYYYMMDD``, or as ``"hashAs"`` says (a pprl
    extension: ``"%y%m%d"`` drops the century, whose bigram would otherwise form a block of bits in most
    records that tells the bureau who was born after 1999)."""

    format: str
    description: str | None = None
    hash_as: str = DATE_OUTPUT_FORMAT
    type: ClassVar[str] = "date"
    encoding: ClassVar[str] = "utf-8"

    def _parse(self, value: str) -> date:
        if self.format == ISO_DATE and _STRICT_ISO.fullmatch(value):
            return date.fromisoformat(value)  # same dates, same errors as strptime here
        return datetime.strptime(value, self.format)

    def check(self, value: str) -> str | None:
        """Return why ``value`` breaks this format (without quoting it), or None."""
        problem = _encoding_problem(value, self.encoding)
        if problem:
            return problem
        try:
            self._parse(value)
        except ValueError:
            return f"value does not match date format {self.format!r}"
        return None

    def normalise(self, value: str) -> str:
        """Re-render a checked date as ``%Y%m%d`` (clkhash's DateSpec output), or as ``hash_as``."""
        if self.format == ISO_DATE and _STRICT_ISO.fullmatch(value):
            day = date.fromisoformat(value)  # same dates, same errors as strptime here
            # strftime's own digits, without its call: %y is always two, %Y four from year 1000
            if self.hash_as == "%y%m%d":
                return value[2:4] + value[5:7] + value[8:10]
            if self.hash_as == DATE_OUTPUT_FORMAT and day.year >= 1000:
                return value[:4] + value[5:7] + value[8:10]
            return day.strftime(self.hash_as)
        return self._parse(value).strftime(self.hash_as)


@dataclass(frozen=True)
class EnumFormat:
    """``{"type": "enum", "values": [...]}``: one of a fixed set of strings."""

    values: tuple[str, ...]
    description: str | None = None
    type: ClassVar[str] = "enum"
    normalise_is_identity: ClassVar[bool] = True  # lets the encoder skip the call
    encoding: ClassVar[str] = "utf-8"
    _set: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_set", frozenset(self.values))

    def check(self, value: str) -> str | None:
        """Return why ``value`` breaks this format (without quoting it), or None."""
        problem = _encoding_problem(value, self.encoding)
        if problem:
            return problem
        if value not in self._set:
            shown = ", ".join(repr(v) for v in self.values[:10])
            more = ", ..." if len(self.values) > 10 else ""
            return f"value is not one of {shown}{more}"
        return None

    def normalise(self, value: str) -> str:
        """Enum values are hashed as given."""
        return value


FieldFormat = StringFormat | IntegerFormat | DateFormat | EnumFormat

_ALLOWED_KEYS = {
    "string": {"type", "encoding", "case", "minLength", "maxLength", "pattern", "description"},
    "integer": {"type", "minimum", "maximum", "description"},
    "date": {"type", "format", "description", "hashAs"},
    "enum": {"type", "values", "description"},
}


def _optional_int(fmt: dict, key: str, minimum: int | None, problems: list[str]) -> int | None:
    if key not in fmt:
        return None
    value = fmt[key]
    if not _is_int(value) or (minimum is not None and value < minimum):
        need = "an integer" if minimum is None else f"an integer >= {minimum}"
        problems.append(f"format.{key} must be {need}")
        return None
    return value


def _date_format_problem(fmt: str) -> str | None:
    """Catch strptime formats that can never match (bad directives)."""
    try:
        datetime.strptime(datetime(2001, 2, 3, 4, 5, 6).strftime(fmt), fmt)
    except ValueError as e:
        text = str(e)
        if "bad directive" in text or "stray %" in text:
            return f"format.format {fmt!r} is not a valid strptime format"
    return None


def parse_format(obj: Any, problems: list[str]) -> FieldFormat | None:
    """Parse a feature's ``format`` block; append every problem found to ``problems``.

    Problems are phrased relative to the feature (``"format.type ..."``); the
    caller adds which feature. Returns None when the block is unusable.
    """
    if not isinstance(obj, dict):
        problems.append("format must be an object")
        return None
    ftype = obj.get("type")
    if not isinstance(ftype, str) or ftype not in _ALLOWED_KEYS:
        if "type" not in obj:
            problems.append("format.type is missing")
        else:
            problems.append(f"format.type {ftype!r} is not one of {', '.join(FORMAT_TYPES)}")
        return None
    before = len(problems)
    unknown = sorted(set(obj) - _ALLOWED_KEYS[ftype])
    for key in unknown:
        problems.append(f"format has unknown key {key!r} for type {ftype!r}")
    description = obj.get("description")
    if "description" in obj and not isinstance(description, str):
        problems.append("format.description must be a string")
        description = None

    if ftype == "string":
        encoding = obj.get("encoding", "utf-8")
        if encoding not in ENCODINGS:
            problems.append(f"format.encoding {encoding!r} is not one of {', '.join(ENCODINGS)}")
        case = obj.get("case", "mixed")
        if case not in CASES:
            problems.append(f"format.case {case!r} is not one of {', '.join(CASES)}")
        min_length = _optional_int(obj, "minLength", 0, problems)
        max_length = _optional_int(obj, "maxLength", 1, problems)
        if min_length is not None and max_length is not None and min_length > max_length:
            problems.append("format.minLength is greater than format.maxLength")
        pattern = obj.get("pattern")
        if "pattern" in obj:
            clash = sorted({"case", "minLength", "maxLength"} & set(obj))
            if clash:
                problems.append(f"format.pattern cannot be combined with {', '.join(clash)}")
            if not isinstance(pattern, str):
                problems.append("format.pattern must be a string")
            else:
                try:
                    re.compile(pattern)
                except re.error as e:
                    problems.append(f"format.pattern {pattern!r} is not a valid regular expression ({e})")
        if len(problems) > before:
            return None
        return StringFormat(encoding, case, min_length, max_length, pattern, description)

    if ftype == "integer":
        minimum = _optional_int(obj, "minimum", None, problems)
        maximum = _optional_int(obj, "maximum", None, problems)
        if minimum is not None and maximum is not None and minimum > maximum:
            problems.append("format.minimum is greater than format.maximum")
        if len(problems) > before:
            return None
        return IntegerFormat(minimum, maximum, description)

    if ftype == "date":
        date_fmt = obj.get("format")
        if date_fmt is None:
            problems.append("format.format (a strptime format such as '%Y-%m-%d') is missing")
        elif not isinstance(date_fmt, str) or not date_fmt:
            problems.append("format.format must be a non-empty string")
        else:
            problem = _date_format_problem(date_fmt)
            if problem:
                problems.append(problem)
        hash_as = obj.get("hashAs", DATE_OUTPUT_FORMAT)
        if hash_as not in DATE_HASH_FORMATS:
            problems.append(f"format.hashAs must be one of {', '.join(DATE_HASH_FORMATS)}")
        if len(problems) > before:
            return None
        return DateFormat(cast(str, date_fmt), description, hash_as)  # checked above

    values = obj.get("values")
    if values is None:
        problems.append("format.values is missing")
    elif not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        problems.append("format.values must be a list of strings")
    elif not values:
        problems.append("format.values must not be empty")
    if len(problems) > before:
        return None
    return EnumFormat(tuple(cast(list[str], values)), description)  # checked above
