"""Threshold decryption through the CLI: 2-of-3 holders decrypt a real release exactly."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

from cli_runner import linked_members, run

SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2"]
HOLDERS = ["holder_a", "holder_b", "holder_c"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def test_two_of_three_holders_decrypt_exact_sums(tmp_path):
    w = tmp_path
    run("synth", "--people", 40, "--platforms", 2, "--out", w / "data", "--seed", 5, "--corruption", 0.05)
    for name in PLATFORMS:
        run("init", name, "--role", "platform", "--dir", w / "keys")
    for name in ["bureau", "authority", *HOLDERS]:
        run("init", name, "--role", "bureau" if name == "bureau" else "authority", "--dir", w / "keys")
    key = lambda n: w / "keys" / f"{n}.key"  # noqa: E731
    card = lambda n: w / "keys" / f"{n}.card.json"  # noqa: E731

    holders = [a for h in HOLDERS for a in ("--holders", card(h))]
    out = run("paillier", "keygen", "--me", key("authority"), "--dir", w / "auth", "--threshold", 2, *holders).stdout
    assert "2-of-3" in out
    assert not (w / "auth" / "paillier.key").exists()

    for name, peer in zip(PLATFORMS, reversed(PLATFORMS)):
        run("secret", "share", "--me", key(name), "--peers", card(peer), "--out", w / f"{name}.share.json")
    for name in PLATFORMS:
        run("secret", "combine", "--me", key(name), "--shares", w / "platform_1.share.json",
            "--shares", w / "platform_2.share.json", "--out", w / f"{name}.secret")
        run("submit", "--me", key(name), "--schema", SCHEMA, "--secret", w / f"{name}.secret",
            "--paillier", w / "auth" / "paillier.pub.json", "--authority", card("authority"), "--data", w / "data" / f"{name}.csv",
            "--id-column", "user_id", "--scores", "repay_score,spend_score", "--out", w / f"{name}.sub.json")
    subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")]
    cards = [a for n in PLATFORMS for a in ("--cards", card(n))]
    run("link", "--me", key("bureau"), *cards, *subs, "--out", w / "linkage.json")
    run("aggregate", "--me", key("bureau"), "--linkage", w / "linkage.json", *subs, *cards, "--out", w / "release.json")

    for holder in HOLDERS[:2]:
        run("decrypt", "--partial", "--me", key(holder), "--share", w / "auth" / f"{holder}.share.json",
            "--release", w / "release.json", "--cards", card("bureau"), "--cards", card("authority"),
            "--linkage", w / "linkage.json", *subs, *cards, "--public-part", "--out", w / f"{holder}.part.json")
    pins = ["--cards", card("bureau"), "--cards", card("authority"), "--linkage", w / "linkage.json", *subs, *cards]
    combine = ["decrypt", "--combine", "--me", key("authority"), "--paillier", w / "auth" / "paillier.pub.json",
               "--release", w / "release.json", "--audit-log", w / "audit.log", *pins]
    short = run(*combine, "--parts", w / "holder_a.part.json", "--out", w / "short.csv", ok=False)
    assert short.exit_code != 0 and "need 2" in short.stderr and not (w / "short.csv").exists()

    run(*combine, "--parts", w / "holder_a.part.json", "--parts", w / "holder_b.part.json", "--out", w / "agg.csv")
    run("audit", "verify", w / "audit.log", "--cards", card("authority"))

    members, scores = linked_members(w, PLATFORMS)
    released = _rows(w / "agg.csv")
    assert released
    for row in released:
        for column in ("repay_score", "spend_score"):
            want = sum(Decimal(scores[m][column]) for m in members[row["entity_id"]])
            assert Decimal(row[f"{column}_sum"]) == want

    # The exact contract: no --me, no --paillier; parts carry the signed key and approvals.
    run("decrypt", "--combine", "--parts", w / "holder_a.part.json", "--parts", w / "holder_b.part.json", *pins,
        "--release", w / "release.json", "--audit-log", w / "attested.log", "--out", w / "agg2.csv")
    assert (w / "agg2.csv").read_bytes() == (w / "agg.csv").read_bytes()
    run("audit", "verify", w / "attested.log", "--cards", card("holder_a"), "--cards", card("holder_b"))
    bad = run("audit", "verify", w / "attested.log", "--cards", card("authority"), ok=False)
    assert bad.exit_code != 0 and "holder_a" in bad.stderr
    # an attested entry cannot be edited to claim another release, nor stripped of an approval
    entry = json.loads((w / "attested.log").read_text(encoding="utf-8"))
    for label, edit in [("release", {"release_hash": "0" * 64}), ("approval", {"approvals": entry["approvals"][:1]})]:
        (w / f"edited-{label}.log").write_text(json.dumps({**entry, **edit}) + "\n", encoding="utf-8")
        edited = run("audit", "verify", w / f"edited-{label}.log", "--cards", card("holder_a"), "--cards",
                     card("holder_b"), ok=False)
        assert edited.exit_code != 0 and "entry 1" in edited.stderr
    # pinning the dealer and the bureau through --cards works too; a wrong dealer pin is refused
    run("decrypt", "--combine", *pins, "--parts", w / "holder_a.part.json", "--parts", w / "holder_b.part.json",
        "--release", w / "release.json", "--audit-log", w / "pinned.log", "--out", w / "agg3.csv")
    wrong = run("decrypt", "--combine", "--cards", card("bureau"), "--cards", card("holder_c"),
                "--linkage", w / "linkage.json", *subs, *cards,
                "--parts", w / "holder_a.part.json", "--parts", w / "holder_b.part.json",
                "--release", w / "release.json", "--audit-log", w / "wrong.log", "--out", w / "agg4.csv", ok=False)
    assert wrong.exit_code != 0 and not (w / "agg4.csv").exists() and not (w / "wrong.log").exists()

    # A part made --for the authority needs the authority's key to combine.
    run("decrypt", "--partial", "--me", key("holder_c"), "--share", w / "auth" / "holder_c.share.json",
        "--release", w / "release.json", "--for", card("authority"), *pins, "--out", w / "holder_c.part.json")
    both = ["--parts", w / "holder_a.part.json", "--parts", w / "holder_c.part.json", "--release", w / "release.json",
            *pins]
    sealed = run("decrypt", "--combine", *both, "--audit-log", w / "s.log", "--out", w / "s.csv", ok=False)
    assert sealed.exit_code != 0 and "encrypted for 'authority'" in sealed.stderr and not (w / "s.csv").exists()
    run("decrypt", "--combine", "--me", key("authority"), *both, "--audit-log", w / "s.log", "--out", w / "s.csv")
    assert (w / "s.csv").read_bytes() == (w / "agg.csv").read_bytes()
    run("audit", "verify", w / "s.log", "--cards", card("authority"))
