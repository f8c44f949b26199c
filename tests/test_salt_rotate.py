"""Two schema hardenings (pprl extensions): salting a feature with a stable one, and rotating the key per run."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pprl.encoding.clk import encode_records, encode_with_report
from pprl.encoding.schema import load_schema
from pprl.errors import PPRLError, SchemaError
from pprl.matching.dice.similarity import find_candidates
from pprl.matching.quality import evaluate_groups
from pprl.matching.solve import greedy_solve
from pprl.sim.synth import generate_population

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SHIPPED = json.loads((EXAMPLES / "schema-cn.json").read_text(encoding="utf-8"))
SECRET = b"correct horse battery staple"
COLUMNS = ["user_id", "name", "gender", "dob", "mobile", "resident_id", "address",
           "repay_score", "spend_score", "travel_score"]
NAME_SALTED = {"name": {"feature": "dob", "characters": 2}, "name_pinyin": {"feature": "dob", "characters": 2}}


def salted(salts: dict[str, dict] = NAME_SALTED, **cfg) -> dict:
    raw = copy.deepcopy(SHIPPED)
    for f in raw["features"]:
        if f["identifier"] in salts:
            f["salt"] = salts[f["identifier"]]
    raw["clkConfig"].update(cfg)
    return raw


def only(raw: dict, *keep: str) -> dict:
    """The schema with every feature but ``keep`` ignored (the salts' sources stay readable)."""
    out = copy.deepcopy(raw)
    out["features"] = [f if f["identifier"] in keep or not f.get("hashing") else
                       {"identifier": f["identifier"], "ignored": True} for f in out["features"]]
    return out


def frame(rows: list[list[str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=COLUMNS, dtype=str)


def person(name: str, dob: str, uid: str = "u") -> list[str]:
    return [uid, name, "男", dob, "13800138000", "", "北京市朝阳区建国路1号", "1", "1", "1"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    x, y = np.unpackbits(a), np.unpackbits(b)
    return 2 * int((x & y).sum()) / int(x.sum() + y.sum())


def test_a_salted_name_sets_different_bits_in_each_birth_year():
    rows = frame([person("王伟", "1990-03-07"), person("王伟", "1991-03-07"), person("李娜", "1990-03-07")])
    plain = encode_records(rows, load_schema(only(SHIPPED, "name", "dob")), SECRET)
    salt = encode_records(rows, load_schema(only(salted(), "name", "dob")), SECRET)
    # Unsalted, every 王伟 sets the same block of bits: one year apart, the two still look alike.
    assert dice(plain[0], plain[1]) > 0.8
    # Salted with the year (2 characters of YYMMDD), the same name sets unrelated bits in another year
    # and agrees no more than two different names do.
    assert dice(salt[0], salt[1]) < 0.55
    assert abs(dice(salt[0], salt[1]) - dice(salt[0], salt[2])) < 0.15
    # Within a year nothing changes: the same records agree as before.
    same_year = encode_records(frame([person("王伟", "1990-03-07"), person("王伟", "1990-11-30")]),
                               load_schema(only(salted(), "name")), SECRET)
    assert np.array_equal(same_year[0], same_year[1])


def test_the_salt_is_the_value_as_its_feature_hashes_it():
    # Different spellings of one date normalise alike, so they salt alike; with no characters given the
    # whole value is the salt, so a day apart the name's bits are unrelated.
    schema = load_schema(only(salted({"name": {"feature": "dob"}}), "name", "dob"))
    clks = encode_records(frame([person("王伟", "1990-03-07"), person("王伟", "1990年3月7日"),
                                 person("王伟", "1990-03-08")]), schema, SECRET)
    assert np.array_equal(clks[0], clks[1]) and dice(clks[0], clks[2]) < 0.6
    # A missing or invalid salt is the empty salt: such records agree with each other only.
    clks = encode_records(frame([person("王伟", ""), person("王伟", "not a date"), person("王伟", "1990-03-07")]),
                          schema, SECRET)
    assert np.array_equal(clks[0], clks[1]) and dice(clks[0], clks[2]) < 0.5


def test_an_ignored_feature_can_salt():
    schema = load_schema(only(salted({"name": {"feature": "gender"}}), "name"))
    rows = [person("王伟", "1990-03-07"), person("王伟", "1990-03-07"), person("王伟", "1990-03-07")]
    rows[1][2] = " 男 "
    rows[2][2] = "女"
    clks = encode_records(frame(rows), schema, SECRET)
    assert np.array_equal(clks[0], clks[1]) and not np.array_equal(clks[0], clks[2])


def test_salted_encoding_counts_missing_values_and_agrees_across_workers():
    df = generate_population(2500, 1, seed=3, corruption=0.8).platforms["platform_1"].copy()
    df.loc[::9, "name"] = ""
    schema = load_schema(salted())
    serial = encode_with_report(df, schema, SECRET, workers=1)
    parallel = encode_with_report(df, schema, SECRET, workers=2)
    assert np.array_equal(serial.clks, parallel.clks) and serial.report == parallel.report
    assert serial.report.feature("name").missing == int((df["name"] == "").sum())
    rows = df[schema.columns].values.tolist()
    assert np.array_equal(encode_records(rows, schema, SECRET), serial.clks)


def test_salting_with_the_birth_year_still_links():
    population = generate_population(600, 2, seed=8, corruption=0.2)
    schema = load_schema(salted())
    frames = [population.platforms[p] for p in ("platform_1", "platform_2")]
    clks = [encode_records(f, schema, SECRET) for f in frames]
    found = find_candidates(clks, 0.7)
    groups = greedy_solve(found)
    keys = [[(p, u) for u in f["user_id"]] for p, f in zip(("platform_1", "platform_2"), frames)]
    truth = {(p, u): who for p, u, who in population.truth[["platform", "user_id", "person"]].itertuples(index=False)}
    quality = evaluate_groups([[keys[d][r] for d, r in g] for g in groups], truth)
    assert quality.f1 > 0.97


@pytest.mark.parametrize("salt, message", [
    ({"feature": "name"}, "salt names the feature itself"),
    ({"feature": "nowhere"}, "is not a feature of this schema"),
    ({"feature": "dob", "characters": 0}, "salt.characters must be an integer >= 1"),
    ({"feature": "dob", "extra": 1}, "salt has unknown key 'extra'"),
    ("dob", "salt must be an object"),
])
def test_bad_salts_are_refused(salt, message):
    with pytest.raises(SchemaError, match=message):
        load_schema(salted({"name": salt}))


def test_a_salt_cannot_itself_be_salted_and_needs_the_extended_version():
    with pytest.raises(SchemaError, match="'dob' is itself salted"):
        load_schema(salted({"name": {"feature": "dob"}, "dob": {"feature": "mobile"}}))
    plain = json.loads((EXAMPLES / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    next(f for f in plain["features"] if f["identifier"] == "name")["salt"] = {"feature": "dob"}
    with pytest.raises(SchemaError, match="'salt' is a pprl extension"):
        load_schema(plain)


def test_a_rotating_schema_needs_the_run_and_gives_each_run_its_own_clks():
    schema = load_schema(salted({}, rotate=True))
    df = frame([person("王伟", "1990-03-07"), person("李娜", "1985-01-02")])
    with pytest.raises(PPRLError, match="give the run id"):
        encode_records(df, schema, SECRET)
    a1, a2, b = (encode_records(df, schema, SECRET, run=r) for r in ("2026-11", "2026-11", "2026-12"))
    assert np.array_equal(a1, a2)
    assert np.unpackbits(a1 & b).sum() < 0.7 * np.unpackbits(a1).sum()  # nothing shared beyond chance
    unrotated = encode_records(df, load_schema(SHIPPED), SECRET, run="2026-11")  # run ignored here
    assert np.array_equal(unrotated, encode_records(df, load_schema(SHIPPED), SECRET))
    with pytest.raises(SchemaError, match="clkConfig.rotate must be true or false"):
        load_schema(salted({}, rotate="yes"))


def test_pprl_encode_takes_the_run_of_a_rotating_schema(tmp_path):
    from cli_runner import refused, run

    schema = tmp_path / "rotating.json"
    schema.write_text(json.dumps(salted({}, rotate=True)), encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("correct horse battery staple\n", encoding="utf-8")
    data = tmp_path / "people.csv"
    frame([person("王伟", "1990-03-07"), person("李娜", "1985-01-02", "u2")]).to_csv(data, index=False)
    out = tmp_path / "clks.json"
    args = ["encode", "--schema", schema, "--clkhash-secret", secret, "--data", data, "--out", out]
    refused(run(*args, ok=False), out, "rotates its key per run", "--run")
    run(*args, "--run", "2026-12")
    clks = json.loads(out.read_text())["clks"]
    expected = encode_records(frame([person("王伟", "1990-03-07"), person("李娜", "1985-01-02", "u2")]),
                              load_schema(schema), SECRET, run="2026-12")
    assert len(clks) == 2 and clks[0] == base64.b64encode(expected[0].tobytes()).decode()
