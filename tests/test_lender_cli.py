"""The lender product through the CLI: pseudonyms, a consented query, an answer only the lender reads."""

from __future__ import annotations

import csv
import hashlib
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from cli_runner import cli_consortium, refused, run

from pprl.documents import Answer, Receipt, load
from pprl.encoding.normalise import normaliser_for
from pprl.protocol.files import load_card, load_key
from pprl.protocol.query import open_receipt
from pprl.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["platform_1", "platform_2"]
SCORES = ["repay_score", "spend_score"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def _stamp(delta_days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=delta_days)).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("lender")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=21)
    for name in ("bank_a", "bank_b"):
        run("init", name, "--role", "lender", "--dir", w / "keys")
        key[name], card[name] = w / "keys" / f"{name}.key", w / "keys" / f"{name}.card.json"
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", ",".join(SCORES),
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--pseudonym-column", "resident_id", "--out", w / f"{n}.sub.json")
    registry = w / "registry.db"
    run("registry", "update", "--me", key["bureau"], "--registry", registry,
        *[a for n in PLATFORMS for a in ("--cards", card[n])],
        *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")])
    return {"dir": w, "key": key, "card": card, "registry": registry}


def _applicants(world, rows: list[dict[str, str]], name: str) -> Path:
    path = world["dir"] / f"{name}.applicants.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["app_id", "resident_id"])
        for i, row in enumerate(rows):
            out.writerow([f"{name}-{i}", row["resident_id"]])
    return path


def _pseudonyms(world, lender: str, applicants: Path, tag: str) -> Path:
    w, key, card = world["dir"], world["key"], world["card"]
    run("pseudonym", "request", "--me", key[lender], "--applicants", applicants, "--reference-column", "app_id",
        "--out", w / f"{tag}.request.json", "--state", w / f"{tag}.state")
    run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret",
        "--request", w / f"{tag}.request.json", "--cards", card["bank_a"], "--cards", card["bank_b"],
        "--log", w / "platform_1.oprf.log", "--out", w / f"{tag}.response.json")
    run("pseudonym", "finish", "--me", key[lender], "--state", w / f"{tag}.state", "--response",
        w / f"{tag}.response.json", "--cards", card["platform_1"], "--out", w / f"{tag}.pseudonyms.csv")
    return w / f"{tag}.pseudonyms.csv"


def _consents(world, pseudonyms: Path, tag: str, *, expires: float = 30, purpose: str = "loan-application") -> Path:
    path = world["dir"] / f"{tag}.consents.csv"
    with path.open("w", encoding="utf-8", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["reference", "consent", "purpose", "issued", "expires"])
        for row in _rows(pseudonyms):
            authorisation = f"{tag} {row['reference']} signed authorisation".encode()
            out.writerow([row["reference"], hashlib.sha256(authorisation).hexdigest(), purpose, _stamp(-1),
                          _stamp(expires)])
    return path


def _expected(world) -> dict[str, tuple[int, dict[str, Decimal]]]:
    """resident ID -> (records, plaintext sums) over the registry entity that holds it."""
    w = world["dir"]
    user = {}
    for n in PLATFORMS:
        tokens = {r["token"]: r["user_id"] for r in _rows(w / f"{n}.sub.json.map.csv")}
        data = {r["user_id"]: r for r in _rows(w / "data" / f"{n}.csv")}
        user[n] = {t: data[u] for t, u in tokens.items()}
    normalise = normaliser_for("resident_id")
    out = {}
    with Registry(world["registry"]) as reg:
        for members in reg.members().values():
            rows = [user[p][t] for p, t in members]
            sums = {c: sum((Decimal(r[c]) for r in rows), Decimal(0)) for c in SCORES}
            for r in rows:
                rid = normalise(r["resident_id"])
                if rid is not None:
                    out[rid] = (len(rows), sums)
    return out


def test_the_lender_reads_its_applicants_scores_and_only_it(world):
    w, key, card = world["dir"], world["key"], world["card"]
    normalise = normaliser_for("resident_id")
    valid = [r for r in _rows(w / "data" / "platform_2.csv") if normalise(r["resident_id"]) is not None][:6]
    applicants = _applicants(world, valid, "bank_a")
    pseudonyms = _pseudonyms(world, "bank_a", applicants, "a1")
    consents = _consents(world, pseudonyms, "a1")
    run("query", "--me", key["bank_a"], "--pseudonyms", pseudonyms, "--consents", consents,
        "--purpose", "loan-application", "--out", w / "a1.query.json")
    run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "a1.query.json",
        "--cards", card["bank_a"], "--receipts", w / "receipts", "--out", w / "a1.answer.json")
    run("decrypt-answer", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--answer", w / "a1.answer.json", "--cards", card["bureau"], "--cards", card["bank_a"],
        "--audit-log", w / "audit.log", "--out", w / "a1.decryption.json")
    run("open-answer", "--me", key["bank_a"], "--answer", w / "a1.answer.json", "--decryption",
        w / "a1.decryption.json", "--pseudonyms", pseudonyms, "--cards", card["bureau"], "--cards",
        card["authority"], "--out", w / "a1.scores.csv")
    got = {r["app_id"]: r for r in _rows(w / "a1.scores.csv")}
    expected = _expected(world)
    for i, row in enumerate(valid):
        records, sums = expected[normalise(row["resident_id"])]
        line = got[f"bank_a-{i}"]
        assert line["found"] == "yes" and int(line["contributors"]) == records
        for c in SCORES:
            assert Decimal(line[f"{c}_sum"]) == sums[c]
    # nobody else reads it: another lender cannot open the masks; the authority saw only masked values
    refused(run("open-answer", "--me", key["bank_b"], "--answer", w / "a1.answer.json", "--decryption",
                w / "a1.decryption.json", "--pseudonyms", pseudonyms, "--cards", card["bureau"], "--cards",
                card["authority"], "--out", w / "stolen.csv", ok=False), w / "stolen.csv")
    entry = json.loads((w / "audit.log").read_text().splitlines()[-1])
    assert entry["event"] == "answer" and entry["lender"] == "bank_a" and entry["entities"] == len(valid)
    run("audit", "verify", w / "audit.log", "--cards", card["authority"])
    # each contributing platform gets a signed receipt: who asked, why, how many of its records
    answer = load(w / "a1.answer.json", Answer)
    # the masked values are wrapped for the lender: the bureau, which holds the masks, cannot read them in transit
    from pprl.crypto.paillier.vector import PaillierPublicKey
    from pprl.documents import AnswerDecryption

    decryption = load(w / "a1.decryption.json", AnswerDecryption)
    width = (PaillierPublicKey.from_dict(answer.header.paillier_key).n.bit_length() + 7) // 8
    assert len(decryption.payload.values) == answer.header.found * width + 12 + 16  # nonce + AES-GCM tag
    total = 0
    receipts = sorted((w / "receipts").glob("*.receipt.json"))
    assert {p.name.split(".")[0] for p in receipts} == set(answer.header.contributions)
    for path in receipts:
        n = path.name.split(".")[0]
        receipt = open_receipt(load_key(key[n]), load(path, Receipt), [load_card(card["bureau"])])
        assert receipt.header.lender == "bank_a" and receipt.header.answer_hash == answer.hash
        assert "score" not in json.dumps(receipt.wire["header"])
        total += receipt.header.records
    assert total == sum(answer.header.contributions.values()) >= len(valid)
    # every use is on the record: the entity's access history names the lender and purpose
    with Registry(world["registry"]) as reg:
        found = reg.find([bytes.fromhex(r["pseudonym"]) for r in _rows(pseudonyms)])
        history = reg.access(next(iter(found.values())))
    assert history and history[-1]["lender"] == "bank_a" and history[-1]["purpose"] == "loan-application"


def test_queries_are_refused_and_nothing_answered(world):
    w, key, card = world["dir"], world["key"], world["card"]
    normalise = normaliser_for("resident_id")
    valid = [r for r in _rows(w / "data" / "platform_1.csv") if normalise(r["resident_id"]) is not None][:3]
    pseudonyms = _pseudonyms(world, "bank_b", _applicants(world, valid, "bank_b"), "b1")
    out = w / "refused.answer.json"

    def answer(query: Path, *cards: Path, **extra: object) -> object:
        options = [a for k, v in extra.items() for a in (f"--{k.replace('_', '-')}", v)]
        return run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", query,
                   *[a for c in cards for a in ("--cards", c)], *options, "--out", out, ok=False)

    expired = _consents(world, pseudonyms, "b-expired", expires=-0.5)
    run("query", "--me", key["bank_b"], "--pseudonyms", pseudonyms, "--consents", expired, "--purpose",
        "loan-application", "--out", w / "b-expired.query.json")
    refused(answer(w / "b-expired.query.json", card["bank_b"]), out, "expired")

    consents = _consents(world, pseudonyms, "b1")
    run("query", "--me", key["bank_b"], "--pseudonyms", pseudonyms, "--consents", consents, "--purpose",
        "loan-application", "--out", w / "b1.query.json")
    refused(answer(w / "b1.query.json", card["bank_a"]), out, "not among the given cards")  # unknown lender
    refused(answer(w / "b1.query.json", card["bank_b"], daily_quota=2), out, "daily quota")
    run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "b1.query.json",
        "--cards", card["bank_b"], "--out", w / "b1.answer.json")
    refused(answer(w / "b1.query.json", card["bank_b"]), out, "replayed")  # the same query again
    run("query", "--me", key["bank_b"], "--pseudonyms", pseudonyms, "--consents", consents, "--purpose",
        "loan-application", "--out", w / "b2.query.json")
    refused(answer(w / "b2.query.json", card["bank_b"]), out, "consent was already used")
    wrong = _consents(world, pseudonyms, "b3", purpose="credit-limit-review")
    run("query", "--me", key["bank_b"], "--pseudonyms", pseudonyms, "--consents", wrong, "--purpose",
        "loan-application", "--out", w / "b3.query.json")
    refused(answer(w / "b3.query.json", card["bank_b"]), out, "consent is for credit-limit-review")
    with Registry(world["registry"]) as reg:
        reasons = [r["reason"] for r in reg.refusals() if r["lender"] == "bank_b"]
    assert len(reasons) == 6 and any("daily quota" in r for r in reasons)


def _per_platform(world) -> dict[str, dict[str, dict[str, Decimal]]]:
    """resident ID -> platform -> plaintext sums of that platform's records in the entity that holds it."""
    w = world["dir"]
    user = {}
    for n in PLATFORMS:
        tokens = {r["token"]: r["user_id"] for r in _rows(w / f"{n}.sub.json.map.csv")}
        data = {r["user_id"]: r for r in _rows(w / "data" / f"{n}.csv")}
        user[n] = {t: data[u] for t, u in tokens.items()}
    normalise = normaliser_for("resident_id")
    out: dict[str, dict[str, dict[str, Decimal]]] = {}
    with Registry(world["registry"]) as reg:
        for members in reg.members().values():
            per: dict[str, dict[str, Decimal]] = {}
            for p, t in members:
                sums = per.setdefault(p, {c: Decimal(0) for c in SCORES})
                for c in SCORES:
                    sums[c] += Decimal(user[p][t][c])
            for p, t in members:
                rid = normalise(user[p][t]["resident_id"])
                if rid is not None:
                    out[rid] = per
    return out


def test_a_purposes_release_policy_decides_columns_and_per_platform_sums(world):
    w, key, card = world["dir"], world["key"], world["card"]
    policy = w / "policy.json"
    policy.write_text(json.dumps({"daily_quota": 500, "purposes": {
        "post-loan-monitoring": {"columns": ["repay_score"], "per_platform": True},
        "loan-application": {}}}), encoding="utf-8")
    strict = w / "authority-policy.json"
    strict.write_text(json.dumps({"purposes": {"post-loan-monitoring": {"columns": ["repay_score"]}}}),
                      encoding="utf-8")
    normalise = normaliser_for("resident_id")
    valid = [r for r in _rows(w / "data" / "platform_1.csv") if normalise(r["resident_id"]) is not None][6:10]
    pseudonyms = _pseudonyms(world, "bank_a", _applicants(world, valid, "bank_a-pol"), "pol")
    run("query", "--me", key["bank_a"], "--pseudonyms", pseudonyms, "--consents",
        _consents(world, pseudonyms, "pol", purpose="post-loan-monitoring"), "--purpose", "post-loan-monitoring",
        "--out", w / "pol.query.json")
    answer = ["answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "pol.query.json",
              "--cards", card["bank_a"], "--out", w / "pol.answer.json"]
    mixed = run(*answer, "--policy", policy, "--min-platforms", 2, ok=False)
    assert mixed.exit_code == 2 and "--min-platforms goes in the --policy file" in mixed.stderr
    run(*answer, "--policy", policy)
    decrypt = ["decrypt-answer", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
               "--answer", w / "pol.answer.json", "--cards", card["bureau"], "--cards", card["bank_a"],
               "--audit-log", w / "pol.audit.log", "--out", w / "pol.decryption.json"]
    refused(run(*decrypt, "--policy", strict, ok=False), w / "pol.decryption.json",
            "pol.answer.json", "per-platform sums are not released for post-loan-monitoring")
    assert not (w / "pol.audit.log").exists()  # nothing decrypted, nothing logged
    run(*decrypt, "--policy", policy)
    run("open-answer", "--me", key["bank_a"], "--answer", w / "pol.answer.json", "--decryption",
        w / "pol.decryption.json", "--pseudonyms", pseudonyms, "--cards", card["bureau"], "--cards",
        card["authority"], "--out", w / "pol.scores.csv")
    lines = (w / "pol.scores.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "app_id,found,contributors,repay_score_sum,platform_1:repay_score,platform_2:repay_score"
    truth = _per_platform(world)
    for i, row in enumerate(valid):
        line = {r["app_id"]: r for r in _rows(w / "pol.scores.csv")}[f"bank_a-pol-{i}"]
        per = truth[normalise(row["resident_id"])]
        assert line["found"] == "yes"
        assert Decimal(line["repay_score_sum"]) == sum(v["repay_score"] for v in per.values())
        for p in PLATFORMS:
            got = line[f"{p}:repay_score"]
            assert (Decimal(got) == per[p]["repay_score"]) if p in per else got == ""
    # a purpose the policy leaves out is refused, and the refusal recorded
    run("query", "--me", key["bank_a"], "--pseudonyms", pseudonyms, "--consents",
        _consents(world, pseudonyms, "pol-clr", purpose="credit-limit-review"), "--purpose", "credit-limit-review",
        "--out", w / "pol-clr.query.json")
    refused(run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "pol-clr.query.json",
                "--cards", card["bank_a"], "--policy", policy, "--out", w / "pol-clr.answer.json", ok=False),
            w / "pol-clr.answer.json", "answers no queries for purpose credit-limit-review")
    bad = w / "bad-policy.json"
    bad.write_text(json.dumps({"purposes": {"loan-application": {"colums": ["repay_score"]}}}), encoding="utf-8")
    refused(run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "pol-clr.query.json",
                "--cards", card["bank_a"], "--policy", bad, "--out", w / "pol-clr.answer.json", ok=False),
            w / "pol-clr.answer.json", "bad-policy.json", "columns, per_platform, min_platforms")


def test_under_a_threshold_key_the_holders_parts_open_for_the_lender_alone(tmp_path):
    w = tmp_path
    key, card, _ = cli_consortium(w, PLATFORMS, seed=23)
    holders = ["holder_a", "holder_b", "holder_c"]
    for name in (*holders, "bank_a", "bank_b"):
        run("init", name, "--role", "lender" if name.startswith("bank") else "authority", "--dir", w / "keys")
        key[name], card[name] = w / "keys" / f"{name}.key", w / "keys" / f"{name}.card.json"
    run("paillier", "keygen", "--me", key["authority"], "--dir", w / "dealt", "--threshold", 2,
        *[a for h in holders for a in ("--holders", card[h])])
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", ",".join(SCORES),
            "--paillier", w / "dealt" / "paillier.pub.json", "--authority", card["authority"],
            "--pseudonym-column", "resident_id", "--out", w / f"{n}.sub.json")
    world = {"dir": w, "key": key, "card": card, "registry": w / "registry.db"}
    run("registry", "update", "--me", key["bureau"], "--registry", world["registry"],
        *[a for n in PLATFORMS for a in ("--cards", card[n])],
        *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")])
    normalise = normaliser_for("resident_id")
    valid = [r for r in _rows(w / "data" / "platform_2.csv") if normalise(r["resident_id"]) is not None][:4]
    pseudonyms = _pseudonyms(world, "bank_a", _applicants(world, valid, "bank_a"), "t1")
    run("query", "--me", key["bank_a"], "--pseudonyms", pseudonyms, "--consents", _consents(world, pseudonyms, "t1"),
        "--purpose", "loan-application", "--out", w / "t1.query.json")
    run("answer", "--me", key["bureau"], "--registry", world["registry"], "--query", w / "t1.query.json",
        "--cards", card["bank_a"], "--out", w / "t1.answer.json")
    both = run("decrypt-answer", "--me", key["holder_a"], "--share", w / "dealt" / "holder_a.share.json",
               "--paillier-key", w / "dealt" / "holder_a.share.json", "--answer", w / "t1.answer.json",
               "--cards", card["bureau"], "--audit-log", w / "x.log", "--out", w / "x.json", ok=False)
    assert both.exit_code == 2 and "one of them" in both.stderr
    for h in holders[:2]:
        run("decrypt-answer", "--me", key[h], "--share", w / "dealt" / f"{h}.share.json", "--answer",
            w / "t1.answer.json", "--cards", card["bureau"], "--cards", card["bank_a"], "--cards", card["authority"],
            "--audit-log", w / f"{h}.audit.log", "--out", w / f"{h}.answer-part.json")
        run("audit", "verify", w / f"{h}.audit.log", "--cards", card[h])
    parts = [a for h in holders[:2] for a in ("--parts", w / f"{h}.answer-part.json")]
    opened = ["open-answer", "--answer", w / "t1.answer.json", "--pseudonyms", pseudonyms, "--cards", card["bureau"],
              "--cards", card["authority"]]
    run(*opened, "--me", key["bank_a"], *parts, "--out", w / "t1.scores.csv")
    expected = _expected(world)
    got = {r["app_id"]: r for r in _rows(w / "t1.scores.csv")}
    for i, row in enumerate(valid):
        records, sums = expected[normalise(row["resident_id"])]
        line = got[f"bank_a-{i}"]
        assert line["found"] == "yes" and int(line["contributors"]) == records
        assert all(Decimal(line[f"{c}_sum"]) == sums[c] for c in SCORES)
    refused(run(*opened, "--me", key["bank_a"], parts[0], parts[1], "--out", w / "short.csv", ok=False),
            w / "short.csv", "need 2 parts")
    refused(run(*opened, "--me", key["bank_b"], *parts, "--out", w / "stolen.csv", ok=False), w / "stolen.csv")
    # a holder without the dealer's card to pin the key is refused
    refused(run("decrypt-answer", "--me", key["holder_c"], "--share", w / "dealt" / "holder_c.share.json",
                "--answer", w / "t1.answer.json", "--cards", card["bureau"], "--cards", card["bank_a"],
                "--audit-log", w / "holder_c.audit.log", "--out", w / "holder_c.answer-part.json", ok=False),
            w / "holder_c.answer-part.json", "--cards", "dealer")


def test_the_bureau_log_records_every_update_and_query(world):
    """Registry updates and queries, answered or refused, in the bureau's signed, chained log."""
    from pprl.documents.validation import validate_document

    w, card = world["dir"], world["card"]
    run("registry", "log", "--registry", world["registry"], "--out", w / "bureau.log")
    run("audit", "verify", w / "bureau.log", "--cards", card["bureau"])
    entries = [json.loads(line) for line in (w / "bureau.log").read_text().splitlines()]
    for i, entry in enumerate(entries, start=1):
        validate_document(entry, "audit-entry", f"bureau.log:{i}", full=True)
    events = [e["event"] for e in entries]
    assert events[:2] == ["registry-update", "registry-update"]
    outcomes = [e["outcome"] for e in entries if e["event"] == "query"]
    assert "answered" in outcomes and outcomes.count("refused") >= 5
    assert all(e["answer_hash"] is None for e in entries if e.get("outcome") == "refused")


def _chromium() -> str:
    import os
    import shutil

    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("PPRL_REQUIRE_CHROMIUM") == "1":
            pytest.fail("PPRL_REQUIRE_CHROMIUM=1 but no chromium on PATH")
        pytest.skip("no headless chromium (.ci/run installs Debian's)")
    return found


def _rendered(page: Path, tmp: Path) -> str:
    """The page's DOM after a real browser loaded it (headless chromium, no network)."""
    import subprocess

    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp / 'chromium-profile'}", "--dump-dom", page.resolve().as_uri()]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_regulators_report_renders_in_a_browser_with_the_logs_numbers(world, tmp_path):
    import re
    from collections import Counter

    w, card = world["dir"], world["card"]
    run("registry", "log", "--registry", world["registry"], "--out", w / "bureau.log")
    page = w / "report.html"
    run("audit", "report", w / "audit.log", w / "bureau.log", "--cards", card["authority"], "--cards", card["bureau"],
        "--out", page)
    dom = _rendered(page, tmp_path)
    assert 'data-status="ok"' in dom and "FAILED" not in dom
    charts = set(re.findall(r'data-chart="([a-z-]+)"', dom))
    assert {"queries-per-lender", "purposes", "refusals", "consent-expiries", "contributions",
            "registry-updates"} <= charts

    def bars(chart: str) -> dict[str, int]:
        svg = re.search(rf'<svg[^>]*data-chart="{chart}".*?</svg>', dom, re.S)
        assert svg is not None, chart
        return {html_unescape(k): int(v) for k, v in re.findall(r'data-label="([^"]*)" data-value="([0-9]+)"', svg.group(0))}

    entries = [json.loads(line) for path in (w / "audit.log", w / "bureau.log") for line in path.read_text().splitlines()]
    queries = [e for e in entries if e["event"] == "query"]
    assert bars("queries-per-lender") == dict(Counter(e["lender"] for e in queries))
    assert bars("refusals") == dict(Counter(e["reason"] for e in queries if e["outcome"] == "refused"))
    answered = Counter()
    for e in queries:
        if e["outcome"] == "answered":
            answered.update(e["contributions"])
    assert bars("contributions") == dict(answered)
    for resident in (r["resident_id"] for r in _rows(w / "data" / "platform_1.csv")):
        assert resident not in dom  # the regulator sees no identifier
    # a log tampered with: the page says so and the command fails
    lines = (w / "bureau.log").read_text().splitlines()
    lines[0] = lines[0].replace('"new": ', '"new": 1')
    (w / "tampered.log").write_text("\n".join(lines) + "\n")
    failed = run("audit", "report", w / "tampered.log", "--cards", card["bureau"], "--out", w / "bad.html", ok=False)
    assert failed.exit_code == 1 and 'data-status="failed"' in (w / "bad.html").read_text()


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)
