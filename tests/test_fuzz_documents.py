"""Every document parser, fed what an attacker can send: nothing but a one-line PPRLError comes out.

Hypothesis generates arbitrary JSON and mutations of real documents of every
kind (a key dropped, a value replaced by anything, a type changed); reading
them, and verifying the ones that still parse, may only refuse with a
PPRLError, never crash with another exception.
"""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from pprl.documents import KINDS, parse_json, verify  # noqa: E402
from pprl.documents.model import parse_document  # noqa: E402
from pprl.errors import PPRLError  # noqa: E402
from pprl.protocol.decrypt import new_paillier_key  # noqa: E402
from pprl.protocol.identity import create_identity  # noqa: E402
from pprl.protocol.query import Consent, make_query  # noqa: E402
from pprl.protocol.secret import make_share  # noqa: E402

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _real_documents() -> list[dict[str, Any]]:
    """A few real, signed documents of different kinds, made in memory."""
    p1, p2 = create_identity("platform_1", "platform"), create_identity("platform_2", "platform")
    authority = create_identity("authority", "authority")
    bank = create_identity("bank_a", "lender")
    pub, _secret = new_paillier_key(authority, 2048)
    share = make_share(p1, [p2.card])
    query = make_query(bank, [(bytes(32), Consent("ab" * 32, "loan-application", "2026-01-01T00:00:00+00:00",
                                                  "2099-01-01T00:00:00+00:00"))], "loan-application")
    return [pub.wire, share.wire, query.wire]


REAL = _real_documents()
PINS = [create_identity("authority", "authority").card]


def _only_pprl_errors(data: Any) -> None:
    try:
        doc = parse_document(data, None, "fuzz.json")
    except PPRLError:
        return
    with contextlib.suppress(PPRLError):
        verify(doc, PINS, source="fuzz.json")


@FUZZ
@given(JSON)
def test_arbitrary_json_is_refused_cleanly(data):
    _only_pprl_errors(data)


@FUZZ
@given(st.sampled_from(sorted(KINDS)), st.dictionaries(st.text(max_size=12), JSON, max_size=6))
def test_any_kind_with_arbitrary_fields_is_refused_cleanly(kind, fields):
    _only_pprl_errors({"kind": kind, "version": 1, **fields})


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node[:3]):
            out += _paths(v, (*prefix, i))
    return out


@FUZZ
@given(st.sampled_from(range(len(REAL))), st.data())
def test_mutated_real_documents_are_refused_cleanly(which, data):
    doc = copy.deepcopy(REAL[which])
    paths = [p for p in _paths(doc) if p]
    path = data.draw(st.sampled_from(paths))
    parent = doc
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["replace", "delete"]))
    if action == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(JSON)
    _only_pprl_errors(doc)


@FUZZ
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes_as_a_file_are_refused_cleanly(raw):
    try:
        data = parse_json(raw, "fuzz.json")
    except PPRLError:
        return
    _only_pprl_errors(data)


def test_the_real_documents_themselves_pass():
    for doc in REAL:
        parsed = parse_document(json.loads(json.dumps(doc)), None, "real.json")
        assert parsed.wire == doc


def _jsonschema_verdict(doc: Any, kind: str) -> bool:
    from jsonschema import Draft202012Validator

    from pprl.documents.validation import registry, schema_for

    return Draft202012Validator(schema_for(kind), registry=registry()).is_valid(doc)


@FUZZ
@given(st.sampled_from(range(len(REAL))), st.data())
def test_the_direct_schema_check_agrees_with_jsonschema_on_mutated_documents(which, data):
    from pprl.documents import validation

    doc = copy.deepcopy(REAL[which])
    paths = [p for p in _paths(doc) if p]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        parent = doc
        try:
            for step in path[:-1]:
                parent = parent[step]
        except (KeyError, IndexError, TypeError):
            continue
        last = path[-1]
        if isinstance(parent, dict) and isinstance(last, str):
            if data.draw(st.booleans()):
                parent.pop(last, None)
            else:
                parent[last] = data.draw(JSON)
        elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
            parent[last] = data.draw(JSON)
    kind = doc["kind"] if isinstance(doc.get("kind"), str) and doc["kind"] in validation.SCHEMA_KINDS else REAL[which]["kind"]
    schema = validation._schemas()[kind]
    assert validation._valid(doc, schema, schema["$id"]) is _jsonschema_verdict(doc, kind)
