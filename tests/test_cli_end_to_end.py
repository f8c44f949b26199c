"""Drive the CLI through every command on a small synthetic population.

The world is built once per module (identities, secret, Paillier key,
submissions); the error tests reuse it and check that each refusal is one
line naming the file, exits non-zero and leaves no output behind.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from cli_runner import cli_consortium, linked_members, refused, run
from click.testing import CliRunner

from pprl.cli import cli

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2", "platform_3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("world")
    key, card, combined = cli_consortium(w, PLATFORMS, seed=7)
    assert len({out.strip().split()[-1] for out in combined}) == 1  # one linkage secret fingerprint
    for name in PLATFORMS:
        plain = ["--plain-encryption"] if name == PLATFORMS[0] else []  # phe-style r^n; sums must not care
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", *plain,
            "--scores", "repay_score,spend_score", "--out", w / f"{name}.sub.json")
    return {"dir": w, "card": card, "key": key}


def _cards(world, names=PLATFORMS):
    return [a for n in names for a in ("--cards", world["card"][n])]


def _subs(world, names=PLATFORMS):
    return [a for n in names for a in ("--submissions", world["dir"] / f"{n}.sub.json")]


def test_full_flow_decrypts_exact_sums(world):
    w = world["dir"]
    run("link", "--me", world["key"]["bureau"], *_cards(world), *_subs(world), "--threshold", 0.8, "--out", w / "linkage.json")
    run("aggregate", "--me", world["key"]["bureau"], "--linkage", w / "linkage.json", *_subs(world), *_cards(world),
        "--min-contributors", 2, "--out", w / "release.json")
    run("decrypt", "--me", world["key"]["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "release.json", "--linkage", w / "linkage.json", *_subs(world), *_cards(world),
        "--cards", world["card"]["bureau"], "--audit-log", w / "audit.log", "--out", w / "aggregates.csv")
    run("audit", "verify", w / "audit.log", "--cards", world["card"]["authority"])

    # Plaintext truth: entity members -> platform user ids -> their scores.
    members, scores = linked_members(w, PLATFORMS)
    released = list(csv.DictReader((w / "aggregates.csv").read_text(encoding="utf-8").splitlines()))
    assert released, "no entity released"
    assert len(released) == sum(1 for m in members.values() if len(m) >= 2)
    for row in released:
        group = members[row["entity_id"]]
        assert int(row["contributors"]) == len(group)
        for column in ("repay_score", "spend_score"):
            assert Decimal(row[f"{column}_sum"]) == sum(Decimal(scores[m][column]) for m in group)

    header = json.loads(run("inspect", w / "release.json").stdout)
    assert header["kind"] == "release" and header["signer"]["name"] == "bureau"
    assert "payload" not in header


def test_submission_holds_no_identifier_or_score(world):
    w = world["dir"]
    text = (w / "platform_1.sub.json").read_text(encoding="utf-8")
    rows = list(csv.DictReader((w / "data" / "platform_1.csv").read_text(encoding="utf-8").splitlines()))
    for row in rows[:40]:
        for column in ("user_id", "name", "mobile", "resident_id", "address"):
            if len(row[column]) >= 4:
                assert row[column] not in text, column
    assert stat.S_IMODE(os.stat(w / "platform_1.sub.json.map.csv").st_mode) == 0o600
    assert stat.S_IMODE(os.stat(w / "authority" / "paillier.key").st_mode) == 0o600


def test_audit_verify_names_the_tampered_entry(world):
    w = world["dir"]
    log = w / "audit.log"
    if not log.exists():
        pytest.skip("runs after the full flow")
    bad = w / "bad.log"
    bad.write_text(log.read_text().replace('"entities": ', '"entities": 1'))
    result = run("audit", "verify", bad, "--cards", world["card"]["authority"], ok=False)
    assert result.exit_code != 0 and "entry 1" in result.stderr


def test_tampered_submission_isrefused(world, tmp_path):
    w = world["dir"]
    text = (w / "platform_2.sub.json").read_text(encoding="utf-8")
    at = text.index('"clks": "') + 40
    flipped = text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]
    bad = tmp_path / "tampered.json"
    bad.write_text(flipped, encoding="utf-8")
    subs = ["--submissions", w / "platform_1.sub.json", "--submissions", bad]
    out = tmp_path / "linkage.json"
    refused(run("link", "--me", world["key"]["bureau"], *_cards(world), *subs, "--out", out, ok=False), out, "tampered.json")


def test_submission_from_unknown_party_isrefused(world, tmp_path):
    out = tmp_path / "linkage.json"
    result = run("link", "--me", world["key"]["bureau"], *_cards(world, PLATFORMS[:2]), *_subs(world), "--out", out, ok=False)
    refused(result, out, "platform_3.sub.json", "not among the given cards")


def test_schema_mismatch_isrefused(world, tmp_path):
    w = world["dir"]
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    schema.setdefault("clkConfig", {})["l"] = 512
    other = tmp_path / "schema.json"
    other.write_text(json.dumps(schema), encoding="utf-8")
    sub = tmp_path / "p3.json"
    run("submit", "--me", world["key"]["platform_3"], "--schema", other, "--secret", w / "platform_3.secret",
        "--data", w / "data" / "platform_3.csv", "--id-column", "user_id", "--out", sub)
    out = tmp_path / "linkage.json"
    subs = [*_subs(world, PLATFORMS[:2]), "--submissions", sub]
    refused(run("link", "--me", world["key"]["bureau"], *_cards(world), *subs, "--out", out, ok=False), out, "p3.json", "schema")


def test_paillier_key_mismatch_isrefused(world, tmp_path):
    w = world["dir"]
    run("paillier", "keygen", "--me", world["key"]["authority"], "--dir", tmp_path / "other")
    sub = tmp_path / "p3.json"
    run("submit", "--me", world["key"]["platform_3"], "--schema", SCHEMA, "--secret", w / "platform_3.secret",
        "--paillier", tmp_path / "other" / "paillier.pub.json", "--authority", world["card"]["authority"],
        "--data", w / "data" / "platform_3.csv",
        "--id-column", "user_id", "--scores", "repay_score", "--out", sub)
    out = tmp_path / "linkage.json"
    subs = [*_subs(world, PLATFORMS[:2]), "--submissions", sub]
    refused(run("link", "--me", world["key"]["bureau"], *_cards(world), *subs, "--out", out, ok=False), out, "p3.json", "Paillier")


def _submit_bad_data(world, tmp_path, csv_text: str, *extra: str):
    w = world["dir"]
    data = tmp_path / "bad.csv"
    data.write_text(csv_text, encoding="utf-8")
    out = tmp_path / "sub.json"
    result = run("submit", "--me", world["key"]["platform_1"], "--schema", SCHEMA, "--secret", w / "platform_1.secret",
                 "--paillier", w / "authority" / "paillier.pub.json", "--authority", world["card"]["authority"],
                 "--data", data, "--id-column", "user_id",
                 "--out", out, *extra, ok=False)
    assert not Path(f"{out}.map.csv").exists()
    return result, out


def test_missing_column_isrefused(world, tmp_path):
    result, out = _submit_bad_data(world, tmp_path, "user_id,name\nu1,张三\n", "--scores", "repay_score")
    refused(result, out, "bad.csv", "repay_score")


def test_non_numeric_score_isrefused(world, tmp_path):
    w = world["dir"]
    lines = (w / "data" / "platform_1.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("repay_score")] = "high"
    text = "\n".join([lines[0], lines[1], lines[2], ",".join(row)]) + "\n"
    result, out = _submit_bad_data(world, tmp_path, text, "--scores", "repay_score")
    refused(result, out, "bad.csv", "repay_score", "3")
    assert "high" not in result.stderr


def test_empty_file_isrefused(world, tmp_path):
    result, out = _submit_bad_data(world, tmp_path, "", "--scores", "repay_score")
    refused(result, out, "bad.csv", "empty")


def test_wrong_key_for_share_isrefused(world, tmp_path):
    w = world["dir"]
    out = tmp_path / "bureau.secret"
    shares = [a for p in PLATFORMS for a in ("--shares", w / f"{p}.share.json")]
    result = run("secret", "combine", "--me", world["key"]["bureau"], *shares, "--out", out, ok=False)
    refused(result, out, "platform_1.share.json", "bureau")


def test_python_cli_shim_runs():
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--help"], capture_output=True, text=True, check=True)
    assert "Usage:" in result.stdout and "submit" in result.stdout


def test_plain_encryption_flag_uses_classic_randomness(world, monkeypatch, tmp_path):
    """--plain-encryption never touches the DJN path (which is made to fail here)."""
    import pprl.crypto.paillier.engine as engine

    def refuse(*_args, **_kwargs):
        raise AssertionError("DJN encryption used despite --plain-encryption")

    monkeypatch.setattr(engine, "djn_encrypt_chunk", refuse)
    w, key, card = world["dir"], world["key"], world["card"]
    args = ["submit", "--me", key["platform_2"], "--schema", SCHEMA, "--secret", w / "platform_2.secret",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--data", w / "data" / "platform_2.csv", "--id-column", "user_id", "--scores", "repay_score"]
    run(*args, "--plain-encryption", "--out", tmp_path / "plain.sub.json")
    assert (tmp_path / "plain.sub.json").exists()
    failed = CliRunner().invoke(cli, [str(a) for a in [*args, "--out", tmp_path / "djn.sub.json"]])
    assert failed.exit_code != 0 and not (tmp_path / "djn.sub.json").exists()
