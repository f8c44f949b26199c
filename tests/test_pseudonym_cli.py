"""A lender finds consenting applicants in the bureau's registry by pseudonym: request, evaluate, finish (CLI)."""

from __future__ import annotations

import csv
import json
import os
import stat
from pathlib import Path

import pytest
from cli_runner import cli_consortium, refused, run

from pprl.encoding.normalise import normaliser_for
from pprl.registry import Registry
from pprl.sim.synth import resident_id_check_digit

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["platform_1", "platform_2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("pseudonyms")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=8)
    for name in ("bank_a", "bank_b"):
        run("init", name, "--role", "lender", "--dir", w / "keys")
        key[name], card[name] = w / "keys" / f"{name}.key", w / "keys" / f"{name}.card.json"
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--pseudonym-column", "resident_id",
            "--out", w / f"{n}.sub.json")
    registry = w / "registry.db"
    run("registry", "update", "--me", key["bureau"], "--registry", registry,
        *[a for n in PLATFORMS for a in ("--cards", card[n])],
        *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")])
    # the lender's applicants: two platform_1 users, a malformed ID and a valid ID nobody has
    normalise = normaliser_for("resident_id")
    rows = [r for r in csv.DictReader((w / "data" / "platform_1.csv").read_text(encoding="utf-8").splitlines())
            if normalise(r["resident_id"]) is not None]
    stranger = "11010119000101001" + resident_id_check_digit("11010119000101001")
    applicants = w / "applicants.csv"
    with applicants.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["app_id", "resident_id"])
        out.writerow(["app-1", rows[0]["resident_id"]])
        out.writerow(["app-2", rows[1]["resident_id"]])
        out.writerow(["app-3", "12345"])
        out.writerow(["app-4", stranger])
    return {"dir": w, "key": key, "card": card, "registry": registry, "applicants": applicants, "rows": rows}


def _request(world, name: str, tag: str) -> tuple[Path, Path]:
    w = world["dir"]
    out, state = w / f"{name}.{tag}.request.json", w / f"{name}.{tag}.state"
    run("pseudonym", "request", "--me", world["key"][name], "--applicants", world["applicants"],
        "--reference-column", "app_id", "--out", out, "--state", state)
    return out, state


def test_a_lender_finds_its_applicants_and_nobody_sees_an_id(world):
    w, key, card = world["dir"], world["key"], world["card"]
    request, state = _request(world, "bank_a", "one")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600
    text = request.read_text(encoding="utf-8")
    assert world["rows"][0]["resident_id"] not in text and "app-1" not in text  # (base64 has no "-")
    header = json.loads(run("inspect", request).stdout)["header"]
    assert header["count"] == 3 and header["lender"] == "bank_a"  # the malformed ID is left out
    response = w / "bank_a.one.response.json"
    run("pseudonym", "evaluate", "--me", key["platform_2"], "--secret", w / "platform_2.secret", "--request", request,
        "--cards", card["bank_a"], "--log", w / "platform_2.oprf.log", "--out", response)
    log = [json.loads(line) for line in (w / "platform_2.oprf.log").read_text().splitlines()]
    assert log[-1]["lender"] == "bank_a" and log[-1]["count"] == 3 and "resident_id" not in json.dumps(log[-1]).replace(
        '"identifier": "resident_id"', "")
    found = w / "bank_a.pseudonyms.csv"
    run("pseudonym", "finish", "--me", key["bank_a"], "--state", state, "--response", response,
        "--cards", card["platform_2"], "--out", found)
    pseudonyms = {r["reference"]: bytes.fromhex(r["pseudonym"]) for r in csv.DictReader(found.read_text().splitlines())}
    assert set(pseudonyms) == {"app-1", "app-2", "app-4"}
    with Registry(world["registry"]) as reg:
        hits = reg.find(list(pseudonyms.values()))
    assert pseudonyms["app-1"] in hits and pseudonyms["app-2"] in hits
    assert pseudonyms["app-4"] not in hits  # a valid ID no platform holds: not found


def test_the_evaluator_refuses_and_logs_nothing(world):
    w, key, card = world["dir"], world["key"], world["card"]
    log = w / "platform_1.oprf.log"
    request, _state = _request(world, "bank_b", "two")
    out = w / "refused.json"
    # a lender the platform did not register
    refused(run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret",
                "--request", request, "--cards", card["bank_a"], "--log", log, "--out", out, ok=False),
            out, "not among the given cards")
    assert not log.exists()
    # over the daily quota
    refused(run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret",
                "--request", request, "--cards", card["bank_b"], "--log", log, "--daily-quota", 2, "--out", out,
                ok=False), out, "daily quota")
    # answered once, then a replay
    run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret", "--request", request,
        "--cards", card["bank_b"], "--log", log, "--out", w / "first.json")
    before = log.read_bytes()
    refused(run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret",
                "--request", request, "--cards", card["bank_b"], "--log", log, "--out", out, ok=False),
            out, "replayed")
    assert log.read_bytes() == before
    # a response for another lender's request does not unblind
    other, other_state = _request(world, "bank_b", "three")
    refused(run("pseudonym", "finish", "--me", key["bank_b"], "--state", other_state, "--response", w / "first.json",
                "--cards", card["platform_1"], "--out", out, ok=False), out, "another request")
