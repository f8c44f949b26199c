"""Schema loading/validation, and the building blocks (formats, tokens, keys)
checked piece by piece against clkhash 0.18."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import pkgutil
import random
from pathlib import Path

import pytest

clkhash_schema = pytest.importorskip("clkhash.schema")
from clkhash import comparators as ck_comparators
from clkhash import field_formats as ck_formats
from clkhash.key_derivation import generate_key_lists

from pprl.encoding.field_formats import parse_format
from pprl.encoding.keys import derive_feature_keys, hkdf
from pprl.encoding.schema import Schema, load_schema
from pprl.encoding.tokens import ExactComparison, NgramComparison, NumericComparison
from pprl.errors import SchemaError

HERE = Path(__file__).resolve().parent
SCHEMA_CN_PATH = HERE.parent / "examples" / "schema-cn-clkhash.json"
SCHEMA_CN = json.loads(SCHEMA_CN_PATH.read_text(encoding="utf-8"))
CN_COLUMNS = ["user_id", "name", "gender", "dob", "mobile", "resident_id", "address", "repay_score", "spend_score", "travel_score"]


def base_schema() -> dict:
    return copy.deepcopy(SCHEMA_CN)


# ------------------------------------------------------------------ loading


def test_schema_cn_loads_here_and_in_clkhash():
    ck = clkhash_schema.from_json_dict(base_schema())
    assert [f.identifier for f in ck.fields] == CN_COLUMNS
    schema = load_schema(SCHEMA_CN_PATH)
    assert schema.identifiers == CN_COLUMNS
    assert schema.hashed_identifiers == ["name", "gender", "dob", "mobile", "resident_id", "address"]
    assert [f.ignored for f in schema.features] == [True] + [False] * 6 + [True, True, True]
    assert (schema.l, schema.xor_folds, schema.kdf_hash, schema.kdf_key_size) == (1024, 0, "SHA256", 64)
    assert schema.kdf_salt and schema.kdf_info
    assert (schema.kdf_salt, schema.kdf_info, schema.kdf_key_size) == (ck.kdf_salt, ck.kdf_info, ck.kdf_key_size)
    by_id = {f.identifier: f for f in schema.features}
    assert by_id["name"].hashing.comparison == NgramComparison(2, False)
    assert by_id["mobile"].hashing.comparison == NgramComparison(2, False)
    assert by_id["dob"].format.type == "string"  # not a strict date: variants must still match
    assert by_id["resident_id"].hashing.comparison == ExactComparison()
    assert all(f.hashing.missing_value.sentinel == "" for f in schema.features if not f.ignored)
    assert all(f.hashing.hash_type == "blakeHash" for f in schema.features if not f.ignored)


def test_every_source_kind_gives_the_same_schema():
    text = SCHEMA_CN_PATH.read_text(encoding="utf-8")
    schemas = [
        load_schema(SCHEMA_CN_PATH),
        load_schema(str(SCHEMA_CN_PATH)),
        load_schema(text),
        load_schema(text.encode("utf-8")),
        load_schema(base_schema()),
    ]
    assert all(s == schemas[0] for s in schemas)
    assert {s.canonical_hash() for s in schemas} == {schemas[0].canonical_hash()}
    assert schemas[0].raw == SCHEMA_CN


def test_canonical_hash_definition_and_stability():
    schema = load_schema(base_schema())
    expected = hashlib.sha256(json.dumps(SCHEMA_CN, sort_keys=True, separators=(",", ":"),
                                         ensure_ascii=False).encode()).hexdigest()
    assert schema.canonical_hash() == expected
    reordered = json.loads(json.dumps(SCHEMA_CN), object_pairs_hook=lambda p: dict(reversed(p)))
    assert load_schema(json.dumps(reordered, indent=4)).canonical_hash() == expected
    changed = base_schema()
    changed["features"][1]["hashing"]["strategy"]["bitsPerFeature"] = 151
    assert load_schema(changed).canonical_hash() != expected


def test_schema_is_frozen_hashable_and_detached_from_input():
    source = base_schema()
    schema = load_schema(source)
    with pytest.raises(dataclasses.FrozenInstanceError):
        schema.l = 2048  # type: ignore[misc]
    assert hash(schema) == hash(load_schema(base_schema()))
    source["clkConfig"]["l"] = 2048
    assert schema.raw["clkConfig"]["l"] == 1024


@pytest.mark.parametrize("resource", ["data/randomnames-schema.json", "data/randomnames-schema-v2.json"])
def test_clkhash_packaged_schemas_load(resource):
    raw = json.loads(pkgutil.get_data("clkhash", resource))
    schema = load_schema(raw)
    assert schema.identifiers == ["INDEX", "NAME freetext", "DOB YYYY/MM/DD", "GENDER M or F"]
    dob = schema.features[2]
    assert dob.format.format == "%Y/%m/%d"
    assert dob.hashing.comparison == NgramComparison(1, True)
    assert dob.hashing.bits_per_token(3) == (30, 30, 30)
    assert schema.features[3].format.values == ("M", "F")


def test_v2_schema_is_converted():
    raw = {"version": 2, "clkConfig": {"l": 512, "kdf": {"type": "HKDF"}},
           "features": [{"identifier": "a", "format": {"type": "string"},
                         "hashing": {"ngram": 2, "positional": True, "strategy": {"numBits": 50},
                                     "hash": {"type": "doubleHash", "prevent_singularity": True}}}]}
    schema = load_schema(raw)
    h = schema.features[0].hashing
    assert (schema.version, h.comparison, h.strategy, h.bits) == (2, NgramComparison(2, True), "bitsPerFeature", 50)
    assert h.prevent_singularity and h.bits_per_token(3) == (17, 17, 16)
    assert schema.raw == raw  # canonical hash is over what was given


# ------------------------------------------------------------------ errors


def test_all_problems_reported_together():
    bad = base_schema()
    bad["clkConfig"]["l"] = 0
    bad["clkConfig"]["kdf"]["hash"] = "MD5"
    bad["features"][1]["hashing"]["strategy"] = {"bitsPerToken": 10, "bitsPerFeature": 10}
    bad["features"][2]["hashing"]["hash"] = {"type": "blakeHash", "prevent_singularity": True}
    bad["features"][3]["format"] = {"type": "dat", "format": "%Y-%m-%d"}
    bad["features"][4]["hashing"]["comparison"] = {"type": "ngram", "n": 0}
    bad["features"][5]["format"]["pattern"] = "[0-9"
    bad["features"][6]["format"]["encoding"] = "latin-1"
    bad["features"][7] = {"identifier": "repay_score", "ignored": "yes"}
    bad["features"].append({"identifier": "extra"})
    with pytest.raises(SchemaError) as info:
        load_schema(bad)
    message = str(info.value)
    expected = [
        "clkConfig.l must be an integer >= 1",
        "clkConfig.kdf.hash 'MD5' is not one of SHA256, SHA512",
        "feature 'name': hashing.strategy must have exactly one key",
        "feature 'gender': hashing.hash.prevent_singularity is only allowed with doubleHash",
        "feature 'dob': format.type 'dat' is not one of string, integer, date, enum",
        "feature 'mobile': hashing.comparison.n must be an integer >= 1",
        "feature 'resident_id': format.pattern cannot be combined with maxLength",
        "feature 'resident_id': format.pattern '[0-9' is not a valid regular expression",
        "feature 'address': format.encoding 'latin-1' is not one of ascii, utf-8, utf-16, utf-32",
        "feature 'repay_score': ignored must be true or false",
        "feature 'extra': format is missing",
        "feature 'extra': hashing is missing",
    ]
    assert message.startswith("schema: ")
    for fragment in expected:
        assert fragment in message
    assert len(info.value.problems) == len(expected)
    assert "; ".join(info.value.problems) == message[len("schema: "):]


def _mutate(path: str, value):
    def apply(d: dict) -> dict:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if value is KeyError:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return d
    return apply


@pytest.mark.parametrize("path, value, fragment", [
    ("version", 1, "version 1 is not supported"),
    ("version", KeyError, "version is missing"),
    ("clkConfig.kdf", KeyError, "clkConfig.kdf is missing"),
    ("clkConfig.kdf.type", "PBKDF2", "clkConfig.kdf.type must be 'HKDF'"),
    ("clkConfig.kdf.salt", "***", "clkConfig.kdf.salt is not valid base64"),
    ("clkConfig.kdf.keySize", 65, "keySize 65 is larger than blakeHash allows (64)"),
    ("clkConfig.kdf.keySize", 0, "clkConfig.kdf.keySize must be an integer >= 1"),
    ("clkConfig.l", 1000, "must be a power of two for blakeHash"),
    ("clkConfig.l", 1024.0, "clkConfig.l must be an integer"),
    ("clkConfig.xor_folds", -1, "clkConfig.xor_folds must be an integer from 0 to 16"),
    ("clkConfig.xorFolds", 1, "clkConfig.xorFolds is ignored by clkhash"),
    ("clkConfig.k", 20, "clkConfig has unknown key 'k'"),
    ("features", [], "features must not be empty"),
    ("features", {}, "features must be a list"),
    ("features.1.identifier", "dob", "feature 'dob': identifier is used by more than one feature"),
    ("features.1.identifier", KeyError, "feature #2: identifier is missing"),
    ("features.1.hashing.weight", 1, "feature 'name': hashing has unknown key 'weight'"),
    ("features.1.hashing.strategy", {"bitsPerToken": 0}, "hashing.strategy.bitsPerToken must be an integer >= 1"),
    ("features.1.hashing.hash", {"type": "sha1"}, "hashing.hash.type 'sha1' is not one of blakeHash, doubleHash"),
    ("features.1.hashing.comparison", {"type": "fuzzy"}, "hashing.comparison.type 'fuzzy' is not one of"),
    ("features.1.hashing.comparison", {"type": "numeric", "thresholdDistance": 0.001, "resolution": 2},
     "thresholdDistance rounds to 0"),
    ("features.1.hashing.missingValue", {"replaceWith": ""}, "hashing.missingValue.sentinel must be a string"),
    ("features.1.format.case", "title", "format.case 'title' is not one of upper, lower, mixed"),
    ("features.1.format.minLength", 99, "format.minLength is greater than format.maxLength"),
    ("features.2.format", {"type": "enum", "values": []}, "format.values must not be empty"),
    ("features.2.format", {"type": "integer", "minimum": "0"}, "format.minimum must be an integer"),
    ("features.3.format", {"type": "date"}, "format.format (a strptime format"),
    ("features.3.format", {"type": "date", "format": "%Y-%q"}, "is not a valid strptime format"),
    ("features.3.format", {"type": "date", "format": "%Y", "case": "upper"}, "format has unknown key 'case'"),
    ("features.0.comment", "x", "feature 'user_id': format is missing"),
])
def test_single_problem_is_named(path, value, fragment):
    with pytest.raises(SchemaError) as info:
        load_schema(_mutate(path, value)(base_schema()))
    assert fragment in str(info.value)


def test_too_many_features_for_hkdf():
    raw = base_schema()
    template = raw["features"][1]
    raw["features"] = [dict(copy.deepcopy(template), identifier=f"f{i}") for i in range(64)]
    with pytest.raises(SchemaError, match="is more than HKDF-SHA256 can derive"):
        load_schema(raw)
    raw["clkConfig"]["kdf"]["hash"] = "SHA512"
    assert len(load_schema(raw).features) == 64
    # clkhash only fails later, when it derives keys: 64 x 2 x 64 bytes > 255 x 32.
    with pytest.raises(ValueError):
        generate_key_lists(b"k", 64, key_size=64, hash_algo="SHA256")


def test_unreadable_sources(tmp_path):
    with pytest.raises(SchemaError, match=r"not valid JSON \(line 1, column 2"):
        load_schema("{version: 3}")
    with pytest.raises(SchemaError, match="cannot read"):
        load_schema(tmp_path / "nope.json")
    with pytest.raises(SchemaError, match="top level must be a JSON object"):
        load_schema("[1, 2]")
    with pytest.raises(SchemaError, match="expected a dict, JSON text or a file path"):
        load_schema(42)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match="not plain JSON data"):
        load_schema({"version": 3, "x": object()})
    with pytest.raises(SchemaError, match="key 'l' appears more than once"):
        load_schema('{"version": 3, "clkConfig": {"l": 1024, "l": 512, "kdf": {"type": "HKDF"}},'
                    ' "features": [{"identifier": "a", "ignored": true}]}')


def _paths(node, prefix=()):
    """Every (container path, key) in a JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, value in items:
        yield prefix, key
        if isinstance(value, (dict, list)):
            yield from _paths(value, (*prefix, key))


def test_junk_anywhere_gives_schema_error_or_a_clkhash_compatible_schema():
    """Fuzz: any value replaced by junk either loads (and then clkhash loads it too)
    or fails with SchemaError -- never another exception."""
    rng = random.Random(1234)
    junk = [None, [], {}, "", "x", -1, 0, 1.5, True, ["a"], {"type": "x"}, 10**30]
    paths = list(_paths(SCHEMA_CN))
    for _ in range(400):
        raw = base_schema()
        for _ in range(rng.randint(1, 3)):
            prefix, key = rng.choice(paths)
            node = raw
            try:
                for p in prefix:
                    node = node[p]
                node[key] = copy.deepcopy(rng.choice(junk))
            except (KeyError, IndexError, TypeError):
                pass
        try:
            load_schema(raw)
        except SchemaError as e:
            assert str(e).startswith("schema: ")
        else:
            clkhash_schema.from_json_dict(copy.deepcopy(raw))


def test_ignored_feature_with_full_config_is_validated_and_ignored():
    raw = base_schema()
    raw["features"][1]["ignored"] = True
    schema = load_schema(raw)
    assert schema.features[1].ignored and "name" not in schema.hashed_identifiers
    raw["features"][1]["format"]["type"] = "text"
    with pytest.raises(SchemaError, match="feature 'name': format.type 'text'"):
        load_schema(raw)


def test_all_ignored_is_refused():
    raw = base_schema()
    raw["features"] = [{"identifier": "a", "ignored": True}]
    with pytest.raises(SchemaError, match="no feature is hashed"):
        load_schema(raw)


# ------------------------------------------------------------------ parts vs clkhash


FORMAT_CASES = [
    ({"type": "string", "encoding": "ascii", "case": "upper", "minLength": 2, "maxLength": 5},
     ["AB", "ABCDE", "A", "ABCDEF", "Ab", "ÄB", "", "12"]),
    ({"type": "string", "case": "lower"}, ["abc", "aBc", "", "日本", "\ud800"]),
    ({"type": "string", "pattern": "[0-9]{3}"}, ["123", "1234", "12a", " 123", ""]),
    ({"type": "integer", "minimum": -5, "maximum": 100}, ["0", "+7", " 42", "-5", "-6", "101", "1_0", "4.0", "x", "", "٣"]),
    ({"type": "date", "format": "%Y-%m-%d"}, ["1990-03-07", "1990-3-7", "1990/03/07", "1990-02-30", ""]),
    ({"type": "enum", "values": ["M", "F"]}, ["M", "F", "m", "", "MF"]),
]


@pytest.mark.parametrize("fmt, values", FORMAT_CASES)
def test_format_check_and_normalise_match_clkhash(fmt, values):
    spec_json = {"identifier": "x", "format": fmt,
                 "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 1}}}
    ck = ck_formats.spec_from_json_dict(copy.deepcopy(spec_json))
    problems: list[str] = []
    ours = parse_format(fmt, problems)
    assert not problems
    for value in values:
        try:
            ck.validate(value)
            ck_ok = True
        except ck_formats.InvalidEntryError:
            ck_ok = False
        assert (ours.check(value) is None) == ck_ok, value
        if ck_ok:
            assert ours.normalise(value) == ck.format_value(value)
        else:
            assert value == "" or value not in ours.check(value)


def test_tokenizers_match_clkhash():
    rng = random.Random(0)
    alphabet = "abc 张王李-1"
    words = [""] + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 9))) for _ in range(200)]
    for n in (1, 2, 3, 4):
        for positional in (False, True):
            ck = ck_comparators.NgramComparison(n, positional)
            ours = NgramComparison(n, positional)
            for w in words:
                assert ours.tokenize(w) == list(ck.tokenize(w))
    assert NgramComparison(2).tokenize("clkhash") == [" c", "cl", "lk", "kh", "ha", "as", "sh", "h "]
    for w in words:
        assert ExactComparison().tokenize(w) == list(ck_comparators.ExactComparison().tokenize(w))
    numbers = ["0", "7", "-13", "+25", " 26 ", "24.99", "1e3", "-0.5", "123456789", "3.14159"]
    for threshold, resolution, precision in [(8, 2, 0), (5, 3, 0), (1000.5, 2, 2), (0.25, 4, 3)]:
        ck = ck_comparators.NumericComparison(threshold, resolution, precision)
        ours = NumericComparison(threshold, resolution, precision)
        for x in numbers:
            assert ours.tokenize(x) == list(ck.tokenize(x)), (threshold, x)


def test_hkdf_rfc5869_vector():
    v = json.loads((HERE / "vectors" / "rfc.json").read_text())["rfc5869_hkdf_sha256_test1"]
    okm = hkdf(bytes.fromhex(v["ikm"]), v["length"], "SHA256",
               bytes.fromhex(v["salt"]), bytes.fromhex(v["info"]))
    assert okm.hex() == v["okm"]


@pytest.mark.parametrize("hash_name, salt, info, key_size, count", [
    ("SHA256", b"salty", b"info", 64, 9),
    ("SHA256", None, None, 64, 3),
    ("SHA512", b"", b"ctx", 32, 5),
    ("SHA512", None, b"x" * 100, 17, 1),
])
def test_feature_keys_match_clkhash(hash_name, salt, info, key_size, count):
    secret = "pässwörd"
    ck = generate_key_lists(secret, count, key_size=key_size, salt=salt, info=info, hash_algo=hash_name)
    ours = derive_feature_keys(secret.encode("utf-8"), count, hash_name=hash_name, salt=salt,
                               info=info, key_size=key_size)
    assert ours == tuple(tuple(pair) for pair in ck)


def test_schema_type_is_exported():
    assert isinstance(load_schema(SCHEMA_CN_PATH), Schema)
