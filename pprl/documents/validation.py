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
import numbers
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

from pprl._native import disabled
from pprl.errors import DocumentError

if TYPE_CHECKING:
    from referencing import Registry

# jsonschema and referencing are imported on first use, not here: commands that
# read no document (init, synth, --help) then start without their ~40 ms import.
# A document that passes is accepted by a direct check of the same schema
# (_conforms: the keywords pprl's schemas use, with jsonschema's semantics);
# jsonschema itself runs for the error message of one that fails, and decides
# wherever the direct check meets something it does not implement.

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
    folder: Any = Path(__file__).with_name("schemas")
    if not folder.is_dir():  # installed in a zip: through importlib.resources (which imports zipfile)
        from importlib import resources

        folder = resources.files(_PACKAGE).joinpath("schemas")
    return sorted((f for f in folder.iterdir() if f.name.endswith(".schema.json")), key=lambda f: f.name)


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
    if kind not in SCHEMA_KINDS:
        raise DocumentError(f"{source}: no schema for document kind '{kind}'")
    try:
        instance = doc if full else _bounded(doc)
        if _conforms(instance, kind):
            return
        from jsonschema.exceptions import best_match

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


# --------------------------------------------------------------------------- the direct check


class _Unsure(Exception):
    """The direct check met a keyword or reference it does not implement: jsonschema decides."""


#: Keywords that assert nothing (annotations) in Draft 2020-12 as pprl validates it (no format checker).
_ANNOTATIONS = frozenset({
    "$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples", "deprecated",
    "readOnly", "writeOnly", "format", "contentEncoding", "contentMediaType", "contentSchema",
})


def _conforms(instance: Any, kind: str) -> bool:
    """Whether ``instance`` is valid against the schema of ``kind``, decided without jsonschema.

    Exactly jsonschema's verdict for the keywords it implements (the differential test in
    tests/test_document_schemas.py compares the two on mutated documents of every kind); False where it is
    not sure, so that jsonschema decides (and words the error). ``PPRL_NO_FAST_SCHEMA=1`` always asks jsonschema.
    """
    if disabled("PPRL_NO_FAST_SCHEMA"):
        return False
    schema = _schemas()[kind]
    if not _resources():
        return False
    try:
        return _valid(instance, schema, schema["$id"])
    except (_Unsure, RecursionError):
        return False


@functools.cache
def _resources() -> dict[str, dict[str, Any]]:
    """The schemas by ``$id``; empty (so every check is left to jsonschema) if one holds an embedded
    resource or anchor, which the direct check does not resolve."""
    def embedded(node: Any, top: bool) -> bool:
        if isinstance(node, dict):
            if not top and ("$id" in node or "$anchor" in node or "$dynamicAnchor" in node):
                return True
            return any(embedded(v, False) for k, v in node.items() if k not in ("const", "enum", "examples",
                                                                               "default"))
        return isinstance(node, list) and any(embedded(v, False) for v in node)

    schemas = _schemas().values()
    if any(embedded(schema, True) for schema in schemas):
        return {}
    return {schema["$id"]: schema for schema in schemas}


@functools.lru_cache(maxsize=512)
def _resolve(base: str, ref: str) -> tuple[Any, str]:
    """The subschema ``ref`` names (relative to the resource ``base``) and the resource it sits in."""
    uri, _, fragment = urljoin(base, ref).partition("#")
    resource = _resources().get(uri)
    if resource is None or "~" in fragment or "%" in fragment or (fragment and not fragment.startswith("/")):
        raise _Unsure(ref)
    node: Any = resource
    for part in fragment.split("/")[1:]:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise _Unsure(ref)
    if isinstance(node, Mapping) and "$id" in node and node is not resource:
        raise _Unsure(ref)
    return node, uri


def _is_type(instance: Any, name: str) -> bool:
    """jsonschema's Draft 2020-12 type checker (an integral float is an integer; a bool is no number)."""
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if name == "integer":
        if isinstance(instance, bool):
            return False
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    if name == "number":
        return isinstance(instance, numbers.Number) and not isinstance(instance, bool)
    if name == "boolean":
        return isinstance(instance, bool)
    if name == "null":
        return instance is None
    raise _Unsure(name)


_TRUE, _FALSE = object(), object()


def _unbool(value: Any) -> Any:
    return _TRUE if value is True else _FALSE if value is False else value


def _equal(one: Any, two: Any) -> bool:
    """jsonschema's ``equal``: JSON equality (1 == 1.0, but True is not 1)."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(_equal(i, j) for i, j in zip(one, two))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(k in two and _equal(v, two[k]) for k, v in one.items())
    return bool(_unbool(one) == _unbool(two))


def _unique(items: list[Any]) -> bool:
    """jsonschema's ``uniq`` (its sorted path, then pairwise), step for step."""
    try:
        ordered = sorted(_unbool(i) for i in items)
        return not any(_equal(i, j) for i, j in zip(ordered, ordered[1:]))
    except (NotImplementedError, TypeError):
        seen: list[Any] = []
        for e in items:
            e = _unbool(e)
            if any(_equal(i, e) for i in seen):
                return False
            seen.append(e)
        return True


def _valid(instance: Any, schema: Any, base: str) -> bool:
    """Whether ``instance`` is valid against ``schema`` (in the resource ``base``); _Unsure when unsure."""
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict):
        raise _Unsure("schema")
    for key, value in schema.items():
        if key in _ANNOTATIONS:
            continue
        check = _KEYWORDS.get(key)
        if check is None:
            if key in ("then", "else") and "if" in schema:
                continue
            raise _Unsure(key)
        if not check(value, instance, schema, base):
            return False
    return True


def _ref(ref: Any, instance: Any, schema: Any, base: str) -> bool:
    target, where = _resolve(base, ref)
    return _valid(instance, target, where)


def _type(types: Any, instance: Any, schema: Any, base: str) -> bool:
    return any(_is_type(instance, t) for t in ([types] if isinstance(types, str) else types))


def _properties(props: Any, instance: Any, schema: Any, base: str) -> bool:
    if not isinstance(instance, dict):
        return True
    return all(_valid(instance[name], sub, base) for name, sub in props.items() if name in instance)


def _additional(extra: Any, instance: Any, schema: Any, base: str) -> bool:
    if not isinstance(instance, dict):
        return True
    if "patternProperties" in schema:
        raise _Unsure("patternProperties")
    known = schema.get("properties", {})
    extras = [k for k in instance if k not in known]
    if isinstance(extra, dict):
        return all(_valid(instance[k], extra, base) for k in extras)
    return bool(extra) or not extras


def _items(items: Any, instance: Any, schema: Any, base: str) -> bool:
    if not isinstance(instance, list):
        return True
    prefix = len(schema.get("prefixItems", []))
    if len(instance) <= prefix:
        return True
    if items is False:
        return False
    return all(_valid(v, items, base) for v in instance[prefix:])


def _prefix_items(subs: Any, instance: Any, schema: Any, base: str) -> bool:
    if not isinstance(instance, list):
        return True
    return all(_valid(v, sub, base) for v, sub in zip(instance, subs))


def _if(cond: Any, instance: Any, schema: Any, base: str) -> bool:
    if _valid(instance, cond, base):
        return "then" not in schema or _valid(instance, schema["then"], base)
    return "else" not in schema or _valid(instance, schema["else"], base)


def _one_of(subs: Any, instance: Any, schema: Any, base: str) -> bool:
    return sum(1 for sub in subs if _valid(instance, sub, base)) == 1


def _number(check: Any) -> Any:
    def keyword(bound: Any, instance: Any, schema: Any, base: str) -> bool:
        return not _is_type(instance, "number") or bool(check(instance, bound))
    return keyword


_KEYWORDS: dict[str, Any] = {
    "$ref": _ref,
    "type": _type,
    "const": lambda want, instance, schema, base: _equal(instance, want),
    "enum": lambda options, instance, schema, base: any(_equal(each, instance) for each in options),
    "properties": _properties,
    "additionalProperties": _additional,
    "required": lambda names, instance, schema, base: (
        not isinstance(instance, dict) or all(n in instance for n in names)),
    "dependentRequired": lambda deps, instance, schema, base: (
        not isinstance(instance, dict)
        or all(each in instance for name, needs in deps.items() if name in instance for each in needs)),
    "propertyNames": lambda sub, instance, schema, base: (
        not isinstance(instance, dict) or all(_valid(k, sub, base) for k in instance)),
    "minProperties": lambda n, instance, schema, base: not isinstance(instance, dict) or len(instance) >= n,
    "maxProperties": lambda n, instance, schema, base: not isinstance(instance, dict) or len(instance) <= n,
    "items": _items,
    "prefixItems": _prefix_items,
    "minItems": lambda n, instance, schema, base: not isinstance(instance, list) or len(instance) >= n,
    "maxItems": lambda n, instance, schema, base: not isinstance(instance, list) or len(instance) <= n,
    "uniqueItems": lambda on, instance, schema, base: not on or not isinstance(instance, list) or _unique(instance),
    "pattern": lambda pattern, instance, schema, base: (
        not isinstance(instance, str) or re.search(pattern, instance) is not None),
    "minLength": lambda n, instance, schema, base: not isinstance(instance, str) or len(instance) >= n,
    "maxLength": lambda n, instance, schema, base: not isinstance(instance, str) or len(instance) <= n,
    "minimum": _number(lambda x, b: not x < b),
    "maximum": _number(lambda x, b: not x > b),
    "exclusiveMinimum": _number(lambda x, b: not x <= b),
    "exclusiveMaximum": _number(lambda x, b: not x >= b),
    "allOf": lambda subs, instance, schema, base: all(_valid(instance, sub, base) for sub in subs),
    "anyOf": lambda subs, instance, schema, base: any(_valid(instance, sub, base) for sub in subs),
    "oneOf": _one_of,
    "not": lambda sub, instance, schema, base: not _valid(instance, sub, base),
    "if": _if,
}


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
