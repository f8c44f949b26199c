"""`pprl attack`: the pattern-mining attack a bureau could run on CLKs, for deployers to check their schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run

from pprl.documents import save
from pprl.encoding.clk import encode_records
from pprl.encoding.schema import load_schema
from pprl.matching.attack import attack
from pprl.protocol.identity import create_identity
from pprl.protocol.secret import combine_shares, make_share
from pprl.protocol.submit import SubmitOptions, prepare_submission
from pprl.sim.synth import generate_population

SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "schema-cn.json"


@pytest.fixture(scope="module")
def frame():
    return generate_population(3000, 1, seed=3).platforms["platform_1"]


GENDER_HASHED = {  # how schema-cn.json hashed gender until December 2026
    "identifier": "gender", "normalise": {"type": "gender"}, "format": {"type": "enum", "values": ["M", "F"]},
    "hashing": {"comparison": {"type": "exact"}, "strategy": {"bitsPerToken": 20}, "hash": {"type": "blakeHash"}},
}


def _with_gender(tmp_path: Path) -> Path:
    d = json.loads(SCHEMA.read_text(encoding="utf-8"))
    d["features"] = [GENDER_HASHED if f["identifier"] == "gender" else f for f in d["features"]]
    path = tmp_path / "with-gender.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def test_a_two_valued_field_hashed_on_its_own_is_read_off_the_clks(frame, tmp_path):
    schema = load_schema(_with_gender(tmp_path))
    assert any("'gender' has only 2 possible values" in w for w in schema.leak_warnings)
    clks = encode_records(frame, schema, b"k" * 32)
    report = attack(clks, frequencies={"F": 0.51, "M": 0.49})
    assert report.leaks
    (attribute,) = [a for a in report.attributes if len(a.blocks) == 2]
    bits = np.unpackbits(clks, axis=1)
    truth = frame["gender"].map({"男": "M", "女": "F"}).to_numpy()
    for block, guess in zip(attribute.blocks, attribute.guesses, strict=True):
        present = bits[:, list(block.bits)].min(axis=1).astype(bool)
        labels = set(truth[present]) - {np.nan}
        share = (truth[present] == max(labels, key=lambda v: (truth[present] == v).sum())).mean()
        assert share >= 0.98  # each block is one gender, read off the CLKs with no key
        assert guess in ("F", "M")


def test_the_shipped_schema_gives_nothing_away_to_this_attack(frame):
    schema = load_schema(SCHEMA)
    assert not schema.leak_warnings
    assert not attack(encode_records(frame, schema, b"k" * 32)).leaks


def test_the_command_reports_and_can_fail_a_build(frame, tmp_path):
    p1, p2 = create_identity("platform_1", "platform"), create_identity("platform_2", "platform")
    secret = combine_shares(p1, [make_share(p1, [p2.card]), make_share(p2, [p1.card])])
    prepared = prepare_submission(p1, load_schema(_with_gender(tmp_path)), secret, frame,
                                  SubmitOptions(id_column="user_id"))
    assert any(note.startswith("WARNING: feature 'gender'") for note in prepared.notes)  # `pprl submit` says so
    path = save(tmp_path / "p1.sub.json", prepared.submission)
    (tmp_path / "gender.csv").write_text("value,frequency\nF,0.51\nM,0.49\n", encoding="utf-8")
    ok = run("attack", "--submissions", path, "--frequencies", tmp_path / "gender.csv")
    assert "ATTRIBUTE: 2 mutually exclusive blocks" in ok.stdout and "(F?)" in ok.stdout
    failed = run("attack", "--submissions", path, "--fail-on-leak", ok=False)
    assert failed.exit_code == 1 and "harden the schema" in failed.stderr
    (tmp_path / "bad.csv").write_text("F,lots\n", encoding="utf-8")
    bad = run("attack", "--submissions", path, "--frequencies", tmp_path / "bad.csv", ok=False)
    assert bad.exit_code == 1 and "bad.csv: row 1" in bad.stderr


def _dob_with_century(tmp_path: Path) -> Path:
    d = json.loads(SCHEMA.read_text(encoding="utf-8"))
    for f in d["features"]:
        if f["identifier"] == "dob":
            f["format"].pop("hashAs")
    path = tmp_path / "dob-century.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def _century_blocks(clks) -> list:
    return [b for b in attack(clks).blocks if len(b.bits) >= 20 and 0.05 < b.coverage < 0.95]


def test_the_century_of_a_birth_date_is_no_longer_a_block(frame, tmp_path):
    """Hashed as YYYYMMDD, the '19' bigram sets a block in every 20th-century birth date (87% of records):
    who was born after 1999 shows. The shipped schema hashes YYMMDD."""
    before = load_schema(_dob_with_century(tmp_path))
    after = load_schema(SCHEMA)
    for key in (b"a" * 32, b"b" * 32):
        assert any(0.8 < b.coverage < 0.92 for b in _century_blocks(encode_records(frame, before, key)))
        assert not _century_blocks(encode_records(frame, after, key))


def test_hash_as_is_checked_and_an_extension():
    d = json.loads(SCHEMA.read_text(encoding="utf-8"))
    dob = next(f for f in d["features"] if f["identifier"] == "dob")
    dob["format"]["hashAs"] = "%d%m"
    with pytest.raises(Exception, match="hashAs must be one of"):
        load_schema(d)
    plain = json.loads((SCHEMA.parent / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    dob = next(f for f in plain["features"] if f["identifier"] == "dob")
    dob["format"] = {"type": "date", "format": "%Y-%m-%d", "hashAs": "%y%m%d"}
    with pytest.raises(Exception, match="pprl extension"):
        load_schema(plain)


def _hardened(tmp_path: Path, **cfg) -> Path:
    d = json.loads(SCHEMA.read_text(encoding="utf-8"))
    d["clkConfig"].update(cfg)
    d["features"] = [GENDER_HASHED if f["identifier"] == "gender" else f for f in d["features"]]
    path = tmp_path / "hardened.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def test_blip_flips_bits_unpredictably_and_hides_the_gender_block(frame, tmp_path):
    schema = load_schema(_hardened(tmp_path, blip=0.05))
    plain = encode_records(frame, load_schema(_with_gender(tmp_path)), b"k" * 32)
    a, b = encode_records(frame, schema, b"k" * 32), encode_records(frame, schema, b"k" * 32)
    flipped = np.unpackbits(a ^ plain).mean()
    assert 0.04 < flipped < 0.06  # each bit flipped with probability 0.05
    assert (a != b).any()  # fresh, secret randomness every time: nothing to undo
    assert not attack(a).leaks  # the gender blocks no longer stand out to this attack


def test_balancing_doubles_the_filter_and_fixes_its_weight(frame, tmp_path):
    schema = load_schema(_hardened(tmp_path, balance=True))
    clks = encode_records(frame, schema, b"k" * 32)
    assert clks.shape[1] == 2 * (schema.l // 8)
    assert set(np.unpackbits(clks, axis=1).sum(axis=1).tolist()) == {schema.l}  # popcount says nothing


def test_hardenings_are_checked_and_extensions():
    d = json.loads(SCHEMA.read_text(encoding="utf-8"))
    for bad, message in (({"blip": 0.4}, "bit-flip probability"), ({"balance": "yes"}, "true or false")):
        with pytest.raises(Exception, match=message):
            load_schema({**d, "clkConfig": {**d["clkConfig"], **bad}})
    plain = json.loads((SCHEMA.parent / "schema-cn-clkhash.json").read_text(encoding="utf-8"))
    plain["clkConfig"]["blip"] = 0.02
    with pytest.raises(Exception, match="pprl extensions"):
        load_schema(plain)
