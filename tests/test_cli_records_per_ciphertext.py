"""``pprl submit --records-per-ciphertext``: five records per ciphertext through link, aggregate, decrypt."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from cli_runner import cli_consortium, linked_members, run

from pprl.documents import b64d, b64e, read_document, sign_document, write_document
from pprl.protocol.files import load_key

SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2", "platform_3"]
COLUMNS = ("repay_score", "spend_score", "travel_score")


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


def _submit(w: Path, key, card, name: str, out: Path, *extra: object, ok: bool = True):
    return run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
               "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
               "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", *extra, "--out", out, ok=ok)


@pytest.fixture(scope="module")
def compact(tmp_path_factory):
    w = tmp_path_factory.mktemp("compact")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=11)
    for name in PLATFORMS:
        _submit(w, key, card, name, w / f"{name}.sub.json", "--scores", ",".join(COLUMNS),
                "--clip", "repay_score=0:1000", "--clip", "spend_score=0:100000", "--clip", "travel_score=0:100000",
                "--records-per-ciphertext", 5)
    subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")]
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    run("link", "--me", key["bureau"], *cards, *subs, "--out", w / "linkage.json")
    run("aggregate", "--me", key["bureau"], "--linkage", w / "linkage.json", *subs, *cards, "--out", w / "release.json")
    run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "release.json", "--linkage", w / "linkage.json", *subs, *cards, "--cards", card["bureau"],
        "--audit-log", w / "audit.log", "--out", w / "aggregates.csv")
    return {"dir": w, "key": key, "card": card, "subs": subs, "cards": cards}


def test_five_records_per_ciphertext_decrypt_to_exact_sums(compact):
    w, card = compact["dir"], compact["card"]
    sub = json.loads((w / "platform_1.sub.json").read_text(encoding="utf-8"))
    records = sub["header"]["records"]
    assert sub["header"]["packing"]["records_per_ciphertext"] == 5
    assert len(b64d(sub["payload"]["scores_packed"], "scores")) == -(-records // 5) * 512
    run("audit", "verify", w / "audit.log", "--cards", card["authority"])

    members, scores = linked_members(w, PLATFORMS)
    released = _rows((w / "aggregates.csv").read_text(encoding="utf-8"))
    assert len(released) == sum(1 for m in members.values() if len(m) >= 2) > 10
    for row in released:
        group = members[row["entity_id"]]
        assert int(row["contributors"]) == len(group)
        for column in COLUMNS:
            assert Decimal(row[f"{column}_sum"]) == sum(Decimal(scores[m][column]) for m in group)


def test_noise_works_with_several_records_per_ciphertext(compact):
    w, key, card = compact["dir"], compact["key"], compact["card"]
    run("aggregate", "--me", key["bureau"], "--linkage", w / "linkage.json", *compact["subs"], *compact["cards"],
        "--noise", "laplace", "--epsilon", 1000, "--out", w / "noisy.json")
    run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "noisy.json", "--linkage", w / "linkage.json", *compact["subs"], *compact["cards"],
        "--cards", card["bureau"], "--audit-log", w / "noisy.log", "--out", w / "noisy.csv")
    exact = {r["entity_id"]: r for r in _rows((w / "aggregates.csv").read_text(encoding="utf-8"))}
    noisy = _rows((w / "noisy.csv").read_text(encoding="utf-8"))
    assert [r["entity_id"] for r in noisy] == list(exact)
    # repay_score: sensitivity 1000, epsilon 1000 -> Laplace scale 1.00; |noise| > 45 has probability < 2^-64.
    diffs = [Decimal(r["repay_score_sum"]) - Decimal(exact[r["entity_id"]]["repay_score_sum"]) for r in noisy]
    assert all(abs(d) <= 45 for d in diffs) and any(d != 0 for d in diffs)
    assert all(r["contributors"] == exact[r["entity_id"]]["contributors"] for r in noisy)


def test_mixed_records_per_ciphertext_are_refused(compact, tmp_path):
    w, key, card = compact["dir"], compact["key"], compact["card"]
    _submit(w, key, card, "platform_3", tmp_path / "one.sub.json", "--scores", ",".join(COLUMNS))
    subs = ["--submissions", w / "platform_1.sub.json", "--submissions", tmp_path / "one.sub.json"]
    cards = ["--cards", card["platform_1"], "--cards", card["platform_3"]]
    result = run("link", "--me", key["bureau"], *cards, *subs, "--out", tmp_path / "linkage.json", ok=False)
    assert result.exit_code != 0 and "pack their scores differently" in result.stderr
    assert "one.sub.json" in result.stderr and not (tmp_path / "linkage.json").exists()


def test_too_many_records_for_the_key_or_no_scores_is_refused(compact, tmp_path):
    w, key, card = compact["dir"], compact["key"], compact["card"]
    six = _submit(w, key, card, "platform_1", tmp_path / "six.json", "--scores", "repay_score,spend_score,travel_score",
                  "--records-per-ciphertext", 6, ok=False)
    assert six.exit_code != 0 and "holds at most 5" in six.stderr
    bare = _submit(w, key, card, "platform_1", tmp_path / "bare.json", "--records-per-ciphertext", 2, ok=False)
    assert bare.exit_code != 0 and "--scores" in bare.stderr
    assert not list(tmp_path.iterdir())
    assert len(six.stderr.strip().splitlines()) == 1


def _resigned(compact, tmp_path, edit) -> list:
    """Every platform's submission with ``edit(name, doc)`` applied and signed again by that platform."""
    w, key = compact["dir"], compact["key"]
    subs = []
    for name in PLATFORMS:
        doc = read_document(w / f"{name}.sub.json", "submission")
        edit(name, doc)
        me = load_key(key[name])
        subs += ["--submissions", write_document(tmp_path / f"{name}.json", sign_document(doc, me.identity, me.card))]
    return subs


def _aggregate_refused(compact, tmp_path, subs) -> str:
    key, card = compact["key"], compact["card"]
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    run("link", "--me", key["bureau"], *cards, *subs, "--out", tmp_path / "linkage.json")
    result = run("aggregate", "--me", key["bureau"], "--linkage", tmp_path / "linkage.json", *subs, *cards,
                 "--out", tmp_path / "release.json", ok=False)
    assert result.exit_code != 0 and not (tmp_path / "release.json").exists()
    return result.stderr


def test_bureau_refuses_a_packing_too_big_for_the_key(compact, tmp_path):
    """Signed by the platforms, but 7 records per ciphertext cannot fit a 2048-bit key: refused before summing."""
    def seven(name, doc):
        doc["header"]["packing"]["records_per_ciphertext"] = 7

    assert "holds at most 5" in _aggregate_refused(compact, tmp_path, _resigned(compact, tmp_path, seven))


def test_bureau_refuses_a_missing_ciphertext(compact, tmp_path):
    def drop_last(name, doc):
        if name == "platform_2":
            raw = b64d(doc["payload"]["scores_packed"], "scores")
            doc["payload"]["scores_packed"] = b64e(raw[:-512])

    stderr = _aggregate_refused(compact, tmp_path, _resigned(compact, tmp_path, drop_last))
    assert "platform_2.json" in stderr and "are not" in stderr and len(stderr.strip().splitlines()) == 1
