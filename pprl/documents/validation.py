"""The JSON Schemas of pprl's documents (``schemas/<kind>.schema.json``, Draft 2020-12) and the check against them.

``$ref`` resolves through a local registry built from the packaged files;
nothing is fetched. Long arrays and strings are checked on a bounded prefix at
run time (``full=True`` checks everything). Errors are one-line
:class:`~pprl.errors.DocumentError`: the file, the JSON path of the first
problem and what was expected, never a value. Design: docs/protocol.md#schemas-and-how-readers-validate.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from pprl.errors import DocumentError

if TYPE_CHECKING:
    from referencing import Registry

# jsonschema and referencing are imported on first use, not here: commands that
# read no document (init, synth, --help) then start without their ~40 ms import.

__all__ = [
    "MAX_CHARS",
    "MAX_ITEMS",
    "SCHEMA_KINDS",
    "registry",
    "schema_for",
    "validate_document",
]

#: Document kinds with a schema (``audit-entry`` is one line of the audit log,
#: ``decryption-approval`` travels inside parts and audit entries).
SCHEMA_KINDS = (
    "key", "card", "share", "secret",
    "paillier-pub", "paillier-key", "paillier-share", "decryption-part", "decryption-approval",
    "submission", "linkage", "release", "audit-entry",
    "psi-session", "psi-round", "psi-state", "psi-reveal",
    "pseudonym-request", "pseudonym-response", "pseudonym-state",
    "query", "answer", "answer-decryption", "receipt", "log-head",
)
#: At run time, longer arrays (and objects) are checked on their first MAX_ITEMS entries.
MAX_ITEMS = 64
#: At run time, longer strings are checked on their first MAX_CHARS characters.
MAX_CHARS = 4096

_PACKAGE = "pprl.documents"
_SAFE_KEY = re.compile(r"^[\w.:-]{1,64}$")


def _schema_files() -> Iterable[Any]:
    return sorted(
        (f for f in resources.files(_PACKAGE).joinpath("schemas").iterdir() if f.name.endswith(".schema.json")),
        key=lambda f: f.name,
    )


@functools.cache
def _schemas() -> dict[str, dict[str, Any]]:
    """Every packaged schema by file stem (``submission``, ``common``, ...)."""
    return {f.name.removesuffix(".schema.json"): json.loads(f.read_text(encoding="utf-8")) for f in _schema_files()}


def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of a document kind (a fresh copy: callers may change it)."""
    if kind not in SCHEMA_KINDS:
        raise DocumentError(f"no schema for document kind '{kind}'")
    return json.loads(json.dumps(_schemas()[kind]))


@functools.cache
def registry() -> Registry[Any]:
    """A :class:`referencing.Registry` holding every packaged schema under its ``$id``; never retrieves."""
    from referencing import Registry, Resource

    return Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema)) for schema in _schemas().values()
    )


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator(_schemas()[kind], registry=registry())


def validate_document(doc: Any, kind: str, source: str, *, full: bool = False) -> None:
    """Check ``doc`` against the schema of ``kind``; DocumentError naming ``source`` and the first problem.

    Without ``full``, long arrays, objects and strings are checked on a
    bounded prefix (see the module docstring).
    """
    from jsonschema.exceptions import best_match

    if kind not in SCHEMA_KINDS:
        raise DocumentError(f"{source}: no schema for document kind '{kind}'")
    try:
        instance = doc if full else _bounded(doc)
        error = best_match(_validator(kind).iter_errors(instance))
    except RecursionError:
        raise DocumentError(f"{source}: not a valid {kind} document (nested too deeply)") from None
    if error is not None:
        where, expected = _describe(error, kind)
        raise DocumentError(f"{source}: not a valid {kind} document: {where}: {expected}")


def _bounded(value: Any) -> Any:
    """``value`` with arrays and objects cut to MAX_ITEMS entries and strings to MAX_CHARS characters."""
    if isinstance(value, dict):
        items: Iterable[tuple[Any, Any]] = value.items()
        if len(value) > MAX_ITEMS:
            items = itertools.islice(items, MAX_ITEMS)
        return {k: _bounded(v) for k, v in items}
    if isinstance(value, list):
        return [_bounded(v) for v in (value[:MAX_ITEMS] if len(value) > MAX_ITEMS else value)]
    if isinstance(value, str) and len(value) > MAX_CHARS:
        return value[:MAX_CHARS]
    return value


# --------------------------------------------------------------------------- error messages


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _path(segments: Sequence[Any]) -> str:
    """``header.records``, ``payload.entities[3].members``; keys that are not plain names are not shown."""
    out = ""
    for s in segments:
        if isinstance(s, int):
            out += f"[{s}]"
        else:
            out += ("." if out else "") + (s if _SAFE_KEY.match(str(s)) else "<field>")
    return out or "(top level)"


def _types(errors: Iterable[Any]) -> list[str]:
    """Every type the ``type`` errors among ``errors`` accept, in order."""
    out: list[str] = []
    for e in errors:
        out += [e.validator_value] if isinstance(e.validator_value, str) else list(e.validator_value)
    return list(dict.fromkeys(out))


def _settle(error: Any) -> tuple[Any, list[str] | None]:
    """The error worth reporting, and the types accepted when that is all that failed.

    Descends through anyOf/oneOf to the deepest branch error that is not a
    plain type mismatch; when every branch failed on its type, reports the
    alternatives together ("expected string or null").
    """
    while error.validator in ("anyOf", "oneOf") and error.context:
        branches = list(error.context)
        if all(e.validator == "type" and not e.relative_path for e in branches):
            return error, _types(branches)
        error = max((e for e in branches if e.validator != "type"), key=lambda e: len(e.absolute_path),
                    default=branches[0])
    if error.validator != "type":
        return error, None
    parent = error.parent
    if parent is not None and parent.validator in ("anyOf", "oneOf"):
        same = [e for e in parent.context if e.absolute_path == error.absolute_path]
        if all(e.validator == "type" for e in same):
            return error, _types(same)
    return error, _types([error])


def _describe(error: Any, kind: str) -> tuple[str, str]:
    """(JSON path, what was expected) for a validation error, without the instance's values."""
    error, types = _settle(error)
    path, rule, want, instance = list(error.absolute_path), error.validator, error.validator_value, error.instance
    if types is not None:
        return _path(path), f"expected {' or '.join(types)}, found {_json_type(instance)}"
    if rule == "required":
        missing = next((name for name in want if isinstance(instance, dict) and name not in instance), "?")
        return _path([*path, missing]), "required field is missing"
    if rule == "dependentRequired":
        for name, needs in want.items():
            gone = [n for n in needs if name in instance and n not in instance]
            if gone:
                return _path([*path, gone[0]]), f"required together with '{name}' but missing"
    if rule in ("additionalProperties", "unevaluatedProperties"):
        known = set(error.schema.get("properties", {}))
        extra = next((k for k in instance if k not in known), "?") if isinstance(instance, dict) else "?"
        return _path([*path, extra]), f"unknown field (the {kind} schema allows no other fields here)"
    messages = {
        "const": lambda: f"expected {json.dumps(want)}",
        "enum": lambda: f"expected one of {', '.join(json.dumps(v) for v in want)}",
        "pattern": lambda: f"expected a string matching {want}",
        "minimum": lambda: f"expected a number >= {want}",
        "exclusiveMinimum": lambda: f"expected a number > {want}",
        "maximum": lambda: f"expected a number <= {want}",
        "exclusiveMaximum": lambda: f"expected a number < {want}",
        "minItems": lambda: f"expected at least {want} items",
        "maxItems": lambda: f"expected at most {want} items",
        "items": lambda: f"expected at most {len(error.schema.get('prefixItems', []))} items",
        "minLength": lambda: f"expected at least {want} characters",
        "maxLength": lambda: f"expected at most {want} characters",
        "minProperties": lambda: f"expected at least {want} fields",
        "uniqueItems": lambda: "expected unique items (an item repeats)",
        "propertyNames": lambda: "a field name does not have the expected form",
        "oneOf": lambda: "expected exactly one of the allowed forms",
        "anyOf": lambda: "does not match any allowed form",
        "not": lambda: "not allowed here",
        None: lambda: "not allowed here",
    }
    describe = messages.get(rule)
    return _path(path), describe() if describe is not None else f"breaks the schema's '{rule}' rule"
