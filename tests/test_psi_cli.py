"""`pprl psi ...` end to end through the CLI, as the parties would run it, plus its refusals.

One module-scoped world: synthetic data for three platforms, identities, a
2048-bit authority key (`pprl paillier keygen` insists), a revealing session,
the whole ring, the release decrypted with the unchanged `pprl decrypt`.
"""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from cli_runner import run

from pprl.encoding.normalise.identifiers import normalise_resident_id

PLATFORMS = ["platform_1", "platform_2", "platform_3"]


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(Path(path).read_text(encoding="utf-8").splitlines()))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("psi-world")
    run("synth", "--people", 60, "--platforms", 3, "--out", w / "data", "--seed", 5, "--corruption", 0.3)
    for name in PLATFORMS:
        run("init", name, "--role", "platform", "--dir", w / "keys")
    run("init", "bureau", "--role", "bureau", "--dir", w / "keys")
    run("init", "authority", "--role", "authority", "--dir", w / "keys")
    card = {n: w / "keys" / f"{n}.card.json" for n in [*PLATFORMS, "bureau", "authority"]}
    key = {n: w / "keys" / f"{n}.key" for n in card}
    run("paillier", "keygen", "--me", key["authority"], "--bits", 2048, "--dir", w / "authority")
    run("psi", "init", "--me", key["bureau"], *[a for p in PLATFORMS for a in ("--cards", card[p])],
        "--identifier", "resident_id", "--reveal-intersection", "--out", w / "session.json")
    current = {}
    for name in PLATFORMS:
        run("psi", "blind", "--me", key[name], "--session", w / "session.json", "--bureau", card["bureau"],
            *[a for p in PLATFORMS if p != name for a in ("--peers", card[p])],
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--identifier", "resident_id",
            "--scores", "repay_score,spend_score", "--paillier", w / "authority" / "paillier.pub.json",
            "--authority", card["authority"], "--out", w / f"{name}.r0.json", "--state", w / f"{name}.state")
        current[name] = w / f"{name}.r0.json"
    route = _csv_text(run("psi", "route", "--session", w / "session.json", "--bureau", card["bureau"]).stdout)
    for row in route:
        out = w / f"{row['list_of']}.r{row['step']}.json"
        run("psi", "reblind", "--me", key[row["platform"]], "--state", w / f"{row['platform']}.state",
            "--input", current[row["list_of"]], "--out", out)
        current[row["list_of"]] = out
    run("psi", "aggregate", "--me", key["bureau"], "--session", w / "session.json",
        *[a for p in PLATFORMS for a in ("--inputs", current[p])], "--min-contributors", 2,
        "--out", w / "release.json")
    run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "release.json", "--session", w / "session.json",
        *[a for p in PLATFORMS for a in ("--rounds", current[p])],
        *[a for p in PLATFORMS for a in ("--cards", card[p])], "--cards", card["bureau"],
        "--audit-log", w / "audit.log", "--out", w / "aggregates.csv")
    return w, key, card, current, route


def _csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def test_help_has_examples():
    assert "Example" in run("psi", "--help").stdout
    for verb in ("init", "blind", "reblind", "route", "aggregate", "count", "reveal"):
        text = run("psi", verb, "--help").stdout
        assert "Example:" in text and f"pprl psi {verb}" in text, verb


def test_route_is_a_ring(world):
    _, _, _, _, route = world
    assert len(route) == 6
    seen = {(r["platform"], r["list_of"]) for r in route}
    assert seen == {(p, o) for p in PLATFORMS for o in PLATFORMS if p != o}


def test_release_decrypts_to_exact_plaintext_sums(world):
    w, key, _, _, _ = world
    # each platform maps the bureau's reveal back to its own users
    person = {}
    truth = {(r["platform"], r["user_id"]): r["person"] for r in _csv(w / "data" / "truth.csv")}
    rows_by_user = {}
    for name in PLATFORMS:
        for r in _csv(w / "data" / f"{name}.csv"):
            rows_by_user[(name, r["user_id"])] = r
        run("psi", "reveal", "--me", key[name], "--state", w / f"{name}.state",
            "--input", w / f"{name}.reveal.json", "--out", w / f"{name}.members.csv")
        for r in _csv(w / f"{name}.members.csv"):
            person.setdefault(r["entity_id"], []).append((name, r["user_id"]))
    aggregates = {r["entity_id"]: r for r in _csv(w / "aggregates.csv")}
    assert set(aggregates) == set(person)
    for entity, members in person.items():
        assert len({truth[m] for m in members}) == 1            # one real person per entity
        row = aggregates[entity]
        assert int(row["contributors"]) == len(members)
        for column in ("repay_score", "spend_score"):
            assert Decimal(row[f"{column}_sum"]) == sum(Decimal(rows_by_user[m][column]) for m in members)
    # and nobody is missing: every person with the same valid resident ID on 2+ platforms is there
    by_rid = {}
    for (name, _user), r in rows_by_user.items():
        rid = normalise_resident_id(r["resident_id"])
        if rid is not None:
            by_rid.setdefault(rid, set()).add(name)
    assert len(aggregates) == sum(1 for v in by_rid.values() if len(v) >= 2)
    audit = run("audit", "verify", w / "audit.log", "--cards", w / "keys" / "authority.card.json")
    assert audit.exit_code == 0


def test_count(world):
    w, key, _, current, _ = world
    out = run("psi", "count", "--me", key["bureau"], "--session", w / "session.json",
              *[a for p in PLATFORMS for a in ("--inputs", current[p])]).stdout
    counts = json.loads(out)
    assert counts["intersection"] == len(_csv(w / "aggregates.csv"))
    assert set(counts["records"]) == set(PLATFORMS)


def _refused(result, name: str):
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message and name in message, message
    return message


def test_tampered_round_refused(world):
    w, key, _, _, _ = world
    raw = bytearray((w / "platform_1.r0.json").read_bytes())
    raw[len(raw) // 2] ^= 0x02
    (w / "tampered.r0.json").write_bytes(bytes(raw))
    result = run("psi", "reblind", "--me", key["platform_2"], "--state", w / "platform_2.state",
                 "--input", w / "tampered.r0.json", "--out", w / "tampered.r1.json", ok=False)
    _refused(result, "tampered.r0.json")
    assert not (w / "tampered.r1.json").exists()


def test_wrong_hop_and_incomplete_lists_refused(world):
    w, key, _, _, _ = world
    result = run("psi", "reblind", "--me", key["platform_3"], "--state", w / "platform_3.state",
                 "--input", w / "platform_1.r0.json", "--out", w / "nope.json", ok=False)
    assert "next hop is 'platform_2'" in _refused(result, "platform_1.r0.json")
    result = run("psi", "aggregate", "--me", key["bureau"], "--session", w / "session.json",
                 *[a for p in PLATFORMS for a in ("--inputs", w / f"{p}.r0.json")], "--out", w / "nope.json",
                 ok=False)
    assert "still needs blinding" in _refused(result, "r0.json")
    assert not (w / "nope.json").exists()


def test_state_is_private_and_not_overwritten(world):
    w, key, card, _, _ = world
    assert (w / "platform_1.state").stat().st_mode & 0o777 == 0o600
    result = run("psi", "blind", "--me", key["platform_1"], "--session", w / "session.json",
                 "--bureau", card["bureau"], "--peers", card["platform_2"], "--peers", card["platform_3"],
                 "--data", w / "data" / "platform_1.csv", "--id-column", "user_id",
                 "--out", w / "again.json", "--state", w / "platform_1.state", ok=False)
    _refused(result, "platform_1.state")
    assert not (w / "again.json").exists()


def test_a_noised_intersection_sum_is_checked_and_repeats_its_noise(world, tmp_path):
    """PSI releases get the noise option: clip ranges declared when blinding, noise proved known by the
    bureau, the decryptor recomputing every sum through the join order; the same lists, the same noise."""
    w, key, card, _, _ = world
    run("psi", "init", "--me", key["bureau"], *[a for p in PLATFORMS for a in ("--cards", card[p])],
        "--identifier", "resident_id", "--out", tmp_path / "session.json")
    current = {}
    for name in PLATFORMS:
        run("psi", "blind", "--me", key[name], "--session", tmp_path / "session.json", "--bureau", card["bureau"],
            *[a for p in PLATFORMS if p != name for a in ("--peers", card[p])],
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--clip", "repay_score=0:1000", "--paillier", w / "authority" / "paillier.pub.json",
            "--authority", card["authority"], "--out", tmp_path / f"{name}.r0.json",
            "--state", tmp_path / f"{name}.state")
        current[name] = tmp_path / f"{name}.r0.json"
    route = _csv_text(run("psi", "route", "--session", tmp_path / "session.json", "--bureau", card["bureau"]).stdout)
    for row in route:
        out = tmp_path / f"{row['list_of']}.r{row['step']}.json"
        run("psi", "reblind", "--me", key[row["platform"]], "--state", tmp_path / f"{row['platform']}.state",
            "--input", current[row["list_of"]], "--out", out)
        current[row["list_of"]] = out
    inputs = [a for p in PLATFORMS for a in ("--inputs", current[p])]
    evidence = ["--session", tmp_path / "session.json", *[a for p in PLATFORMS for a in ("--rounds", current[p])],
                *[a for p in PLATFORMS for a in ("--cards", card[p])], "--cards", card["bureau"]]
    outs = []
    for label in ("exact", "noisy", "again"):
        noise = [] if label == "exact" else ["--noise", "laplace", "--epsilon", 1.0]
        run("psi", "aggregate", "--me", key["bureau"], "--session", tmp_path / "session.json", *inputs,
            *noise, "--out", tmp_path / f"{label}.json")
        run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
            "--release", tmp_path / f"{label}.json", *evidence, "--audit-log", tmp_path / "audit.log",
            "--out", tmp_path / f"{label}.csv")
        outs.append({r["entity_id"]: r for r in _csv(tmp_path / f"{label}.csv")})
    exact, noisy, again = outs
    assert exact and exact.keys() == noisy.keys()
    assert noisy == again  # the same lists draw the same noise
    assert any(noisy[e]["repay_score_sum"] != exact[e]["repay_score_sum"] for e in exact)  # noised
    header = json.loads(run("inspect", tmp_path / "noisy.json").stdout)["header"]
    assert header["noise"]["sensitivity_fixed"] == {"repay_score": 100000}  # (1000 - 0) at 2 decimals
    assert header["clip"] == {"repay_score": ["0.00", "1000.00"]}
    # a bureau that tampers with a noised sum, or points it at another person, is refused
    from pprl.documents import b64d, b64e, read_document, sign_document, write_document
    from pprl.protocol.files import load_key

    bureau = load_key(key["bureau"])
    doc = read_document(tmp_path / "noisy.json", "release")
    swapped = json.loads(json.dumps(doc))
    index, counts = swapped["payload"]["join_index"], swapped["payload"]["contributors"]
    i, j = next((i, j) for i in range(len(counts)) for j in range(i + 1, len(counts)) if counts[i] == counts[j])
    index[i], index[j] = index[j], index[i]  # two persons held by as many platforms: only the proof can tell
    write_document(tmp_path / "swapped.json", sign_document(swapped, bureau.identity, bureau.card))
    sums = bytearray(b64d(doc["payload"]["sums"]["packed"]))
    width = len(sums) // len(doc["payload"]["entity_ids"])
    sums[:width] = sums[width : 2 * width]
    doc["payload"]["sums"]["packed"] = b64e(bytes(sums))
    write_document(tmp_path / "tampered.json", sign_document(doc, bureau.identity, bureau.card))
    for name in ("swapped", "tampered"):
        result = run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
                     "--release", tmp_path / f"{name}.json", *evidence, "--audit-log", tmp_path / "audit.log",
                     "--out", tmp_path / f"{name}.csv", ok=False)
        assert result.exit_code == 1 and "does not verify" in result.stderr
        assert not (tmp_path / f"{name}.csv").exists()
