"""Our CLK encoder against clkhash 0.18, bit for bit, over many schema shapes.

clkhash is the reference: for every schema below the same rows and secret
must give byte-identical filters. Also covers value errors (row/column named,
value never echoed), DataFrame input, multi-process encoding and the clkhash
JSON output format. Every test runs twice: with the C masker
(``pprl.encoding._bloom``) and with ``PPRL_NO_BLOOM=1`` (the Python path).
"""

from __future__ import annotations

import copy
import json
import pkgutil
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

clkhash_schema = pytest.importorskip("clkhash.schema")
clkhash_clk = pytest.importorskip("clkhash.clk")
from clkhash.serialization import serialize_bitarray

from pprl.encoding import bloom
from pprl.encoding.clk import encode_records, from_clkhash_json, to_clkhash_json
from pprl.encoding.schema import load_schema
from pprl.errors import DataValidationError, DocumentError, PPRLError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SECRET = b"correct horse battery staple"
N = 300
KDF = {
    "type": "HKDF",
    "hash": "SHA256",
    "salt": "SCbL2zHNnmsckfzchsNkZY9XoHk96P/G5nUBrM7ybymlEFsMV6PAeDZCNp3rfNUPCtLDMOGQHG4pCQpfhiHCyA==",
    "info": "c2NoZW1hX2V4YW1wbGU=",
    "keySize": 64,
}
HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗")


@pytest.fixture(autouse=True, params=["bloom", "python"])
def _masks_path(request, monkeypatch):
    """Both ways of computing value masks must match clkhash: the C masker and the Python path."""
    if request.param == "bloom":
        if not bloom.HAVE_BLOOM:
            pytest.skip("pprl.encoding._bloom is not built")
        monkeypatch.delenv(bloom.BLOOM_SWITCH, raising=False)
    else:
        monkeypatch.setenv(bloom.BLOOM_SWITCH, "1")
    return request.param


def clkhash_bytes(schema_dict: dict, rows: list, secret) -> np.ndarray:
    """Reference CLKs from clkhash as a uint8 array (clkhash mutates its input, so copy)."""
    schema = clkhash_schema.from_json_dict(copy.deepcopy(schema_dict))
    clks = clkhash_clk.generate_clks(rows, schema, secret, validate=True, max_workers=1)
    return np.array([list(c.tobytes()) for c in clks], dtype=np.uint8)


def assert_same(schema_dict: dict, rows: list, secret=SECRET) -> np.ndarray:
    ours = encode_records(rows, load_schema(schema_dict), secret)
    ref = clkhash_bytes(schema_dict, rows, secret)
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    mismatched = [i for i in range(len(rows)) if not np.array_equal(ours[i], ref[i])]
    assert not mismatched, f"rows differ from clkhash: {mismatched[:10]}"
    assert ours.any(axis=1).mean() > 0.5  # not trivially empty
    return ours


# ------------------------------------------------------------------ data


def han(rng: random.Random, lo: int, hi: int) -> str:
    return "".join(rng.choice(HAN) for _ in range(rng.randint(lo, hi)))


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def cn_rows(seed: int, n: int = N) -> list[list[str]]:
    """Rows for examples/schema-cn-clkhash.json: Han names/addresses, mixed date styles, gaps."""
    rng = random.Random(seed)

    def maybe(value: str, p: float = 0.1) -> str:
        return "" if rng.random() < p else value

    rows = []
    for i in range(n):
        y, m, d = rng.randint(1940, 2005), rng.randint(1, 12), rng.randint(1, 28)
        dob = rng.choice([f"{y}-{m:02d}-{d:02d}"] * 3 + [f"{y}/{m}/{d}", f"{y}{m:02d}{d:02d}"])
        rid = digits(rng, 17) + rng.choice("0123456789X")
        address = han(rng, 3, 8) + "路" + str(rng.randint(1, 999)) + "号" + han(rng, 0, 6)
        rows.append([
            f"u{i:05d}",
            maybe(han(rng, 2, 4), 0.05),
            maybe(rng.choice(["男", "女", "M", "F"])),
            maybe(dob),
            maybe("1" + digits(rng, 10)),
            maybe(rid),
            maybe(address),
            str(rng.randint(300, 900)),
            maybe(str(rng.randint(0, 100))),
            f"{rng.randint(0, 500000) / 100:.2f}",
        ])
    return rows


def latin_name(rng: random.Random) -> str:
    first = rng.choice(["Anna", "Bob", "Chen", "Dmitri", "Eve", "Fatima", "Grace", "Hiro", "Ines", "Jo"])
    last = rng.choice(["Smith", "Ng", "O'Brien", "Müller", "Garcia", "Kowalski", "Li", "Nguyen"])
    return f"{first} {last}"


# Feature kinds: (format, comparison, strategy, extra hashing keys, value generator).
KINDS = {
    "name2": ({"type": "string", "encoding": "utf-8"}, {"type": "ngram", "n": 2},
              {"bitsPerToken": 20}, {}, lambda r: r.choice([latin_name(r), han(r, 2, 4)])),
    "name3pos": ({"type": "string", "encoding": "utf-8", "maxLength": 40},
                 {"type": "ngram", "n": 3, "positional": True},
                 {"bitsPerFeature": 100}, {}, lambda r: latin_name(r)),
    "dob_iso": ({"type": "date", "format": "%Y-%m-%d"}, {"type": "ngram", "n": 1, "positional": True},
                {"bitsPerToken": 15}, {},
                lambda r: f"{r.randint(1930, 2010)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"),
    "dob_dot": ({"type": "date", "format": "%d.%m.%Y"}, {"type": "ngram", "n": 2},
                {"bitsPerFeature": 80}, {"missingValue": {"sentinel": "", "replaceWith": "19000101"}},
                lambda r: "" if r.random() < 0.1 else
                f"{r.randint(1, 28)}.{r.randint(1, 12)}.{r.randint(1930, 2010)}"),
    "gender": ({"type": "enum", "values": ["M", "F", "X"]}, {"type": "exact"},
               {"bitsPerToken": 30}, {"missingValue": {"sentinel": ""}},
               lambda r: r.choice(["M", "F", "X", ""])),
    "age": ({"type": "integer", "minimum": 0, "maximum": 150},
            {"type": "numeric", "thresholdDistance": 5, "resolution": 3},
            {"bitsPerToken": 8}, {},
            lambda r: r.choice(["{}", "+{}", " {}", "0{}", "{} "]).format(r.randint(0, 120))),
    "income": ({"type": "string", "pattern": r"-?[0-9]+(\.[0-9]{1,2})?"},
               {"type": "numeric", "thresholdDistance": 1000.5, "resolution": 2, "fractional_precision": 2},
               {"bitsPerFeature": 40}, {},
               lambda r: r.choice([str(r.randint(-500, 90000)), f"{r.uniform(0, 90000):.2f}"])),
    "postcode": ({"type": "string", "pattern": "[0-9]{4}|N/A"}, {"type": "ngram", "n": 1, "positional": True},
                 {"bitsPerToken": 15}, {"missingValue": {"sentinel": "N/A"}},
                 lambda r: "N/A" if r.random() < 0.15 else digits(r, 4)),
    "code": ({"type": "string", "encoding": "ascii", "case": "upper", "minLength": 2, "maxLength": 8},
             {"type": "exact"}, {"bitsPerFeature": 40}, {},
             lambda r: "".join(r.choice("ABCDEFXYZ0123") for _ in range(r.randint(2, 8)))),
    "city16": ({"type": "string", "encoding": "utf-16"}, {"type": "ngram", "n": 2},
               {"bitsPerToken": 10}, {}, lambda r: han(r, 2, 5)),
    "word_k3": ({"type": "string"}, {"type": "ngram", "n": 2}, {"bitsPerToken": 3}, {},
                lambda r: latin_name(r)),
    "email32": ({"type": "string", "encoding": "utf-32", "case": "lower"}, {"type": "ngram", "n": 2},
                {"bitsPerFeature": 60}, {},
                lambda r: f"{latin_name(r).split()[0].lower()}{r.randint(1, 99)}@example.org"),
}


def make_schema(kinds: list[tuple[str, dict | None]], *, l: int = 1024,  # noqa: E741
                xor_folds: int | None = None,
                kdf: dict | None = None, ignored_first: bool = True) -> dict:
    features = [{"identifier": "id", "ignored": True}] if ignored_first else []
    for name, hash_ in kinds:
        fmt, comparison, strategy, extra, _ = KINDS[name]
        hashing = {"comparison": dict(comparison), "strategy": dict(strategy), **copy.deepcopy(extra)}
        if hash_ is not None:
            hashing["hash"] = hash_
        features.append({"identifier": name, "format": dict(fmt), "hashing": hashing})
    cfg: dict = {"l": l, "kdf": kdf or KDF}
    if xor_folds is not None:
        cfg["xor_folds"] = xor_folds
    return {"version": 3, "clkConfig": cfg, "features": features}


def make_rows(schema: dict, seed: int, n: int = N) -> list[list[str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = []
        for f in schema["features"]:
            row.append(str(i) if f.get("ignored") else KINDS[f["identifier"]][4](rng))
        rows.append(row)
    return rows


BLAKE = {"type": "blakeHash"}
DOUBLE = {"type": "doubleHash"}
DOUBLE_NS = {"type": "doubleHash", "prevent_singularity": True}
DOUBLE_S = {"type": "doubleHash", "prevent_singularity": False}

CUSTOM = {
    "blake_mixed_formats": make_schema(
        [("name2", BLAKE), ("dob_iso", None), ("gender", BLAKE), ("age", BLAKE), ("postcode", None)]),
    "double_l1000": make_schema(
        [("name3pos", DOUBLE), ("dob_dot", DOUBLE), ("code", DOUBLE), ("income", DOUBLE)], l=1000),
    # l=64 with few bits per token: some tokens hit h_md5 == 0 (mod l), the singular case.
    "double_prevent_singularity_l64": make_schema(
        [("word_k3", DOUBLE_NS), ("gender", DOUBLE_NS)], l=64),
    "double_singular_l64": make_schema([("word_k3", DOUBLE_S), ("gender", DOUBLE)], l=64),
    "double_l44_not_byte_aligned": make_schema([("word_k3", DOUBLE), ("gender", DOUBLE_NS)], l=44),
    "xor1_sha512_nosalt_key32": make_schema(
        [("city16", BLAKE), ("email32", DOUBLE), ("name3pos", BLAKE)], l=512, xor_folds=1,
        kdf={"type": "HKDF", "hash": "SHA512", "keySize": 32}),
    "xor2_bits_per_feature": make_schema(
        [("name2", None), ("income", BLAKE), ("code", DOUBLE_NS)], l=256, xor_folds=2, ignored_first=False),
    "positional_only": make_schema([("name3pos", None), ("postcode", None)], l=2048,
                                   kdf={"type": "HKDF"}),
}


@pytest.mark.parametrize("name", sorted(CUSTOM))
def test_custom_schemas_match_clkhash(name):
    schema = CUSTOM[name]
    assert_same(schema, make_rows(schema, seed=sorted(CUSTOM).index(name)))


@pytest.mark.parametrize("resource", ["data/randomnames-schema.json", "data/randomnames-schema-v2.json"])
def test_clkhash_packaged_schemas_match(resource):
    schema = json.loads(pkgutil.get_data("clkhash", resource))
    rng = random.Random(7)
    rows = [[str(i), latin_name(rng),
             f"{rng.randint(1930, 2010)}/{rng.randint(1, 12):02d}/{rng.randint(1, 28):02d}",
             rng.choice("MF")] for i in range(N)]
    assert_same(schema, rows)


# The v3 FEBRL example from clkhash's documentation (docs/_static/febrl_schema_v3_final.json).
FEBRL_V3 = {
    "version": 3,
    "clkConfig": {"l": 1024, "kdf": KDF},
    "features": [
        {"identifier": "rec_id", "ignored": True},
        *[{"identifier": ident, "format": {"type": "string", "encoding": "utf-8", "maxLength": 64},
           "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerFeature": 200},
                       "hash": {"type": "doubleHash"}}} for ident in ("given_name", "surname")],
        {"identifier": "street_number", "format": {"type": "integer"},
         "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": True},
                     "strategy": {"bitsPerFeature": 100}, "missingValue": {"sentinel": ""}}},
        *[{"identifier": ident, "format": {"type": "string", "encoding": "utf-8"},
           "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerFeature": 100}}}
          for ident in ("address_1", "address_2", "suburb")],
        {"identifier": "postcode", "format": {"type": "integer", "minimum": 50, "maximum": 9999},
         "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": True},
                     "strategy": {"bitsPerFeature": 100}}},
        {"identifier": "state", "format": {"type": "string", "encoding": "utf-8"},
         "hashing": {"comparison": {"type": "ngram", "n": 2, "positional": True},
                     "strategy": {"bitsPerFeature": 100}, "missingValue": {"sentinel": ""}}},
        {"identifier": "date_of_birth", "format": {"type": "integer"},
         "hashing": {"comparison": {"type": "ngram", "n": 1, "positional": True},
                     "strategy": {"bitsPerFeature": 200}, "missingValue": {"sentinel": ""}}},
        {"identifier": "soc_sec_id", "ignored": True},
    ],
}


def test_clkhash_docs_febrl_v3_schema_matches():
    rng = random.Random(11)
    rows = []
    for i in range(N):
        rows.append([
            f"rec-{i}-org", latin_name(rng).split()[0], latin_name(rng).split()[1],
            rng.choice(["", str(rng.randint(1, 300))]), f"{rng.randint(1, 99)} main street",
            rng.choice(["", "unit 4"]), rng.choice(["kingsford", "lyneham", "red hill"]),
            str(rng.randint(50, 9999)), rng.choice(["nsw", "act", ""]),
            rng.choice(["", f"19{rng.randint(10, 99)}0{rng.randint(1, 9)}1{rng.randint(0, 9)}"]),
            digits(rng, 7),
        ])
    assert_same(FEBRL_V3, rows)


def test_v2_schema_is_converted_like_clkhash():
    schema = {
        "version": 2,
        "clkConfig": {"l": 1024, "kdf": KDF},
        "features": [
            {"identifier": "id", "ignored": True},
            {"identifier": "name", "format": {"type": "string", "encoding": "utf-8"},
             "hashing": {"ngram": 2, "strategy": {"k": 20}, "hash": {"type": "doubleHash"}}},
            {"identifier": "postcode", "format": {"type": "string", "pattern": "[0-9]{4}"},
             "hashing": {"ngram": 1, "positional": True, "strategy": {"numBits": 60}}},
        ],
    }
    rng = random.Random(3)
    assert_same(schema, [[str(i), latin_name(rng), digits(rng, 4)] for i in range(N)])


def test_schema_cn_with_chinese_rows_matches_clkhash():
    schema = json.loads((EXAMPLES / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    rows = cn_rows(seed=2024)
    ours = assert_same(schema, rows)
    # Filters land in a useful fill range for linkage (roughly 30-65 % of bits set).
    fill = np.unpackbits(ours, axis=1).mean()
    assert 0.3 < fill < 0.65


@pytest.mark.parametrize("secret", ["s3cret", "秘密-密钥"])
def test_str_and_bytes_secret_agree_with_clkhash(secret):
    schema = CUSTOM["blake_mixed_formats"]
    rows = make_rows(schema, seed=5, n=60)
    ref = clkhash_bytes(schema, rows, secret)  # clkhash UTF-8 encodes a str secret
    ours_bytes = encode_records(rows, load_schema(schema), secret.encode("utf-8"))
    ours_str = encode_records(rows, load_schema(schema), secret)
    assert np.array_equal(ours_bytes, ref) and np.array_equal(ours_str, ref)
    other = encode_records(rows, load_schema(schema), b"another secret")
    assert not np.array_equal(other, ref)


def test_dataframe_input_by_column_name():
    schema_dict = json.loads((EXAMPLES / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    schema = load_schema(schema_dict)
    rows = cn_rows(seed=99, n=200)
    ref = clkhash_bytes(schema_dict, rows, SECRET)
    df = pd.DataFrame(rows, columns=schema.identifiers, dtype=str)
    # Ignored columns may be absent, order does not matter, NaN/None mean "".
    df = df[list(reversed(schema.hashed_identifiers))].replace("", np.nan)
    df.loc[0, "gender"] = None
    rows[0][2] = ""
    ref[0] = clkhash_bytes(schema_dict, [rows[0]], SECRET)[0]
    assert np.array_equal(encode_records(df, schema, SECRET), ref)


def test_multiprocess_matches_serial():
    schema = load_schema(CUSTOM["xor2_bits_per_feature"])
    rows = make_rows(CUSTOM["xor2_bits_per_feature"], seed=8, n=3000)
    serial = encode_records(rows, schema, SECRET, workers=1)
    parallel = encode_records(rows, schema, SECRET, workers=2)
    assert np.array_equal(serial, parallel)
    rows[2345][1] = "not a number"
    with pytest.raises(DataValidationError, match=r"row 2346, column 'income'"):
        encode_records(rows, schema, SECRET, workers=2)


@pytest.mark.parametrize("name", ["double_l1000", "xor1_sha512_nosalt_key32", "blake_mixed_formats"])
def test_scalar_fallback_matches_batch_path(name, monkeypatch):
    """Tokens are normally hashed in numpy batches; the one-at-a-time path (few new
    tokens, error scans) and the no-bit-table path must give the same bits."""
    schema = load_schema(CUSTOM[name])
    rows = make_rows(CUSTOM[name], seed=21, n=120)
    batch = encode_records(rows, schema, SECRET)
    monkeypatch.setattr(bloom, "BATCH_MIN", 10**9)
    monkeypatch.setattr(bloom, "BIT_TABLE_MAX", 0)
    assert np.array_equal(encode_records(rows, schema, SECRET), batch)


def test_numpy_rows_are_accepted():
    schema = CUSTOM["blake_mixed_formats"]
    rows = make_rows(schema, seed=2, n=30)
    ref = clkhash_bytes(schema, rows, SECRET)
    assert np.array_equal(encode_records(np.array(rows, dtype=object), load_schema(schema), SECRET), ref)
    assert np.array_equal(encode_records(np.array(rows), load_schema(schema), SECRET), ref)


def test_progress_bar_goes_to_stderr(capsys):
    schema = load_schema(CUSTOM["blake_mixed_formats"])
    rows = make_rows(CUSTOM["blake_mixed_formats"], seed=1, n=50) * 220  # 11000 rows, cached values
    encode_records(rows, schema, SECRET, progress=True, workers=1)
    captured = capsys.readouterr()
    assert captured.out == "" and "11000" in captured.err


# ------------------------------------------------------------------ errors


SCHEMA_CN = load_schema(EXAMPLES / "schema-cn-clkhash.json")


@pytest.mark.parametrize("schema_name, column, bad, expected", [
    ("blake_mixed_formats", "dob_iso", "1990/03/07", "does not match date format '%Y-%m-%d'"),
    ("blake_mixed_formats", "gender", "female", "is not one of 'M', 'F', 'X'"),
    ("blake_mixed_formats", "age", "151", "above maximum 150"),
    ("blake_mixed_formats", "age", "forty", "not an integer"),
    ("blake_mixed_formats", "postcode", "20000", "does not match pattern"),
    ("double_l1000", "code", "abc", "not upper case"),
    ("double_l1000", "code", "ÄBC", "cannot be encoded as ascii"),
    ("double_l1000", "name3pos", "X" * 41, "longer than maxLength 40"),
    ("xor2_bits_per_feature", "income", "12.345", "does not match pattern"),
])
def test_bad_value_names_row_and_column_not_value(schema_name, column, bad, expected):
    schema_dict = CUSTOM[schema_name]
    rows = make_rows(schema_dict, seed=4, n=40)
    col = [f["identifier"] for f in schema_dict["features"]].index(column)
    rows[16][col] = bad
    with pytest.raises(DataValidationError) as info:
        encode_records(rows, load_schema(schema_dict), SECRET)
    message = str(info.value)
    assert message.startswith(f"row 17, column '{column}': value ")
    assert expected in message and "\n" not in message
    assert bad not in message


def test_first_bad_value_in_reading_order_is_reported():
    rows = cn_rows(seed=1, n=30)
    rows[20][3] = "x" * 40  # dob too long
    rows[9][6] = "地" * 600  # address too long, earlier row, later column
    with pytest.raises(DataValidationError, match=r"^row 10, column 'address': value is longer"):
        encode_records(rows, SCHEMA_CN, SECRET)


def test_numeric_comparison_on_non_number_is_a_data_error():
    schema = {"version": 3, "clkConfig": {"l": 64, "kdf": {"type": "HKDF"}},
              "features": [{"identifier": "amount", "format": {"type": "string"},
                            "hashing": {"comparison": {"type": "numeric", "thresholdDistance": 2,
                                                       "resolution": 1},
                                        "strategy": {"bitsPerToken": 4}}}]}
    with pytest.raises(DataValidationError, match=r"^row 2, column 'amount': value is not a finite number"):
        encode_records([["12"], ["nan"]], load_schema(schema), SECRET)


def test_dataframe_missing_column_and_bad_types():
    df = pd.DataFrame({"name": ["张三"], "gender": ["男"], "dob": ["1990-01-01"], "mobile": [""]})
    with pytest.raises(DataValidationError, match=r"'resident_id', 'address'"):
        encode_records(df, SCHEMA_CN, SECRET)
    df = df.assign(resident_id=[110101199001011234], address=["北京"])  # an int, not text
    with pytest.raises(DataValidationError, match=r"^row 1, column 'resident_id': expected text, got int"):
        encode_records(df, SCHEMA_CN, SECRET)


def test_row_shape_and_secret_errors():
    rows = cn_rows(seed=1, n=3)
    with pytest.raises(DataValidationError, match=r"^row 2: has 9 values, the schema has 10 features"):
        encode_records([rows[0], rows[1][:-1], rows[2]], SCHEMA_CN, SECRET)
    with pytest.raises(PPRLError, match="secret"):
        encode_records(rows, SCHEMA_CN, b"")
    with pytest.raises(TypeError):
        encode_records(rows, SCHEMA_CN, 1234)
    empty = encode_records([], SCHEMA_CN, SECRET)
    assert empty.shape == (0, 128) and empty.dtype == np.uint8


def test_sentinel_values_skip_validation_like_clkhash():
    schema = make_schema([("gender", None), ("postcode", None), ("dob_dot", None)])
    rows = [["1", "", "N/A", ""], ["2", "M", "1234", "3.4.1999"]]
    ours = assert_same(schema, rows)
    assert ours[0].any()  # "N/A" is hashed as itself, "" as the replaceWith date


# ------------------------------------------------------------------ clkhash JSON


def test_clkhash_json_round_trip():
    schema_dict = json.loads((EXAMPLES / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    rows = cn_rows(seed=5, n=25)
    clks = encode_records(rows, load_schema(schema_dict), SECRET)
    doc = to_clkhash_json(clks)
    ref = clkhash_clk.generate_clks(rows, clkhash_schema.from_json_dict(copy.deepcopy(schema_dict)),
                                    SECRET, max_workers=1)
    assert doc == {"clks": [serialize_bitarray(c) for c in ref]}
    assert np.array_equal(from_clkhash_json(doc), clks)
    assert np.array_equal(from_clkhash_json(json.dumps(doc)), clks)
    assert from_clkhash_json({"clks": []}).shape[0] == 0


@pytest.mark.parametrize("doc", [
    "not json", {"clk": []}, {"clks": "AAAA"}, {"clks": [1]}, {"clks": ["!!!!"]},
    {"clks": ["AAAA", "AAAAAAAA"]},
])
def test_bad_clkhash_json_is_a_document_error(doc):
    with pytest.raises(DocumentError):
        from_clkhash_json(doc)


def test_to_clkhash_json_rejects_wrong_arrays():
    with pytest.raises(DataValidationError):
        to_clkhash_json(np.zeros((2, 4), dtype=np.int64))
    with pytest.raises(DataValidationError):
        to_clkhash_json(np.zeros(4, dtype=np.uint8))
