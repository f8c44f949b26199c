"""The commands on a Dask cluster (`--engine dask`, a LocalCluster of two workers): the same results as here."""

from __future__ import annotations

import json
import sqlite3

import pytest
from cli_runner import cli_consortium, refused, run

from pprl.documents import Submission, load
from pprl.protocol.files import map_path_for

pytest.importorskip("distributed")

ENGINE = ("--engine", "dask", "--dask-workers", 2)


def _clk_by_user(path) -> dict[str, bytes]:
    """Each user's CLK in a submission (records leave shuffled; the private map names their users)."""
    import csv

    doc = load(path, Submission)
    width = doc.header.clk_bytes
    token_row = {t: i for i, t in enumerate(doc.payload.tokens)}
    with open(map_path_for(path), encoding="utf-8") as f:
        users = {row["token"]: row["user_id"] for row in csv.DictReader(f)}
    return {users[t]: doc.payload.clks[i * width:(i + 1) * width] for t, i in token_row.items()}


def _entities(path) -> list[list[tuple[str, str]]]:
    doc = json.loads(path.read_text())
    return sorted(sorted((m[0], m[1]) for m in e["members"]) for e in doc["payload"]["entities"])


def test_submit_link_aggregate_and_registry_update_on_the_cluster_give_what_they_give_here(tmp_path):
    w = tmp_path
    platforms = ["platform_1", "platform_2", "platform_3"]
    key, card, _ = cli_consortium(w, platforms, seed=4)
    cards = [a for p in platforms for a in ("--cards", card[p])]
    for name in platforms:
        common = ["submit", "--me", key[name], "--schema", "examples/schema-cn.json", "--secret", w / f"{name}.secret",
                  "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
                  "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--scores", "repay_score"]
        run(*common, "--out", w / f"{name}.sub.json")
        result = run(*common, "--out", w / f"{name}.dask.sub.json", *ENGINE)
        assert "dask: 2 workers on a cluster on this machine" in result.stderr
        assert _clk_by_user(w / f"{name}.dask.sub.json") == _clk_by_user(w / f"{name}.sub.json")
    subs = [a for p in platforms for a in ("--submissions", w / f"{p}.sub.json")]
    for blocking in ("lsh", "none"):
        run("link", "--me", key["bureau"], *cards, *subs, "--blocking", blocking, "--out", w / f"here-{blocking}.json")
        run("link", "--me", key["bureau"], *cards, *subs, "--blocking", blocking, "--out", w / f"there-{blocking}.json",
            *ENGINE)
        assert _entities(w / f"there-{blocking}.json") == _entities(w / f"here-{blocking}.json")
        if blocking == "lsh":  # the tasks routed by bucket of band keys too: the same candidates
            run("link", "--me", key["bureau"], *cards, *subs, "--blocking", blocking, "--out", w / "bucket.json",
                *ENGINE, "--lsh-partition", "bucket")
            bucket, here = (json.loads((w / f"{s}.json").read_text()) for s in ("bucket", "here-lsh"))
            assert bucket["payload"]["candidates"] == here["payload"]["candidates"]
        here, there = (json.loads((w / f"{s}-{blocking}.json").read_text()) for s in ("here", "there"))
        assert there["payload"]["candidates"] == here["payload"]["candidates"]
        assert there["header"]["threshold"] == here["header"]["threshold"]
    linkage = w / "here-none.json"
    run("aggregate", "--me", key["bureau"], "--linkage", linkage, *subs, *cards, "--out", w / "here.release.json")
    run("aggregate", "--me", key["bureau"], "--linkage", linkage, *subs, *cards, "--out", w / "there.release.json",
        *ENGINE)
    here, there = (json.loads((w / f"{s}.release.json").read_text())["payload"] for s in ("here", "there"))
    assert there["entity_ids"] == here["entity_ids"] and there["sums"] == here["sums"] and here["entity_ids"]
    for where, extra in (("here", ()), ("there", ENGINE)):
        run("registry", "update", "--me", key["bureau"], "--registry", w / f"{where}.db", *cards, *subs, *extra)
    rows = []
    for where in ("here", "there"):
        with sqlite3.connect(w / f"{where}.db") as db:
            rows.append(db.execute("SELECT platform, token, entity FROM pprl_records ORDER BY platform, token")
                        .fetchall())
    assert rows[0] == rows[1] and rows[0]


def test_a_scheduler_needs_the_dask_engine(tmp_path):
    out = tmp_path / "linkage.json"
    result = run("link", "--me", tmp_path / "none.key", "--cards", tmp_path / "c.json", "--submissions",
                 tmp_path / "s.json", "--out", out, "--scheduler", "tcp://127.0.0.1:9", ok=False)
    refused(result, out, "--scheduler", "--engine dask")
    result = run("link", "--me", tmp_path / "none.key", "--cards", tmp_path / "c.json", "--submissions",
                 tmp_path / "s.json", "--out", out, "--lsh-partition", "bucket", ok=False)
    refused(result, out, "--lsh-partition", "--engine dask")


def test_psi_blind_and_reblind_on_the_cluster_count_what_they_count_here(tmp_path):
    w = tmp_path
    platforms = ["platform_1", "platform_2"]
    run("synth", "--people", 60, "--platforms", 2, "--out", w / "data", "--seed", 5)
    for name in [*platforms, "bureau"]:
        run("init", name, "--role", "bureau" if name == "bureau" else "platform", "--dir", w / "keys")
    card = {n: w / "keys" / f"{n}.card.json" for n in [*platforms, "bureau"]}
    key = {n: w / "keys" / f"{n}.key" for n in card}
    run("psi", "init", "--me", key["bureau"], *[a for p in platforms for a in ("--cards", card[p])],
        "--identifier", "resident_id", "--out", w / "session.json")
    counts = []
    for where, extra in (("here", ()), ("there", ENGINE)):
        current = {}
        for name in platforms:
            peer = next(p for p in platforms if p != name)
            result = run("psi", "blind", "--me", key[name], "--session", w / "session.json", "--bureau",
                         card["bureau"], "--peers", card[peer], "--data", w / "data" / f"{name}.csv", "--id-column",
                         "user_id", "--identifier", "resident_id", "--out", w / f"{where}-{name}.r0.json",
                         "--state", w / f"{where}-{name}.state", *extra)
            assert ("dask: 2 workers" in result.stderr) == bool(extra)
            current[name] = w / f"{where}-{name}.r0.json"
        for name in platforms:
            peer = next(p for p in platforms if p != name)
            out = w / f"{where}-{name}.r1.json"
            run("psi", "reblind", "--me", key[peer], "--state", w / f"{where}-{peer}.state", "--input", current[name],
                "--out", out, *extra)
            current[name] = out
        counts.append(json.loads(run("psi", "count", "--me", key["bureau"], "--session", w / "session.json",
                                     *[a for p in platforms for a in ("--inputs", current[p])]).stdout))
    assert counts[0] == counts[1] and counts[0]["intersection"] > 0


def test_psi_aggregate_and_count_on_the_cluster_give_what_they_give_here(tmp_path):
    w = tmp_path
    platforms = ["platform_1", "platform_2", "platform_3"]
    key, card, _ = cli_consortium(w, platforms, seed=6)
    run("psi", "init", "--me", key["bureau"], *[a for p in platforms for a in ("--cards", card[p])],
        "--identifier", "resident_id", "--reveal-intersection", "--out", w / "session.json")
    current = {}
    for name in platforms:
        peers = [a for p in platforms if p != name for a in ("--peers", card[p])]
        run("psi", "blind", "--me", key[name], "--session", w / "session.json", "--bureau", card["bureau"], *peers,
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--identifier", "resident_id",
            "--scores", "repay_score,spend_score", "--paillier", w / "authority" / "paillier.pub.json",
            "--authority", card["authority"], "--out", w / f"{name}.r0.json", "--state", w / f"{name}.state")
        current[name] = w / f"{name}.r0.json"
    route = run("psi", "route", "--session", w / "session.json", "--bureau", card["bureau"]).stdout.splitlines()[1:]
    for line in route:
        step, platform, origin = line.split(",")
        out = w / f"{origin}.r{step}.json"
        run("psi", "reblind", "--me", key[platform], "--state", w / f"{platform}.state", "--input", current[origin],
            "--out", out)
        current[origin] = out
    inputs = [a for p in platforms for a in ("--inputs", current[p])]
    common = ("--me", key["bureau"], "--session", w / "session.json", *inputs)
    counts = [json.loads(run("psi", "count", *common, *extra).stdout) for extra in ((), ENGINE)]
    assert counts[0] == counts[1] and counts[0]["by_contributors"].get("3")
    documents = []
    for where, extra in (("here", ()), ("there", ENGINE)):
        result = run("psi", "aggregate", *common, "--min-contributors", 2, "--out", w / where / "release.json", *extra)
        assert ("dask: 2 workers" in result.stderr) == bool(extra)
        release = json.loads((w / where / "release.json").read_text())
        reveals = {p: json.loads((w / where / f"{p}.reveal.json").read_text()) for p in platforms}
        for doc in (release, *reveals.values()):  # signed at different times: all else is the same
            doc.pop("signature")
            doc["header"].pop("created")
            doc["header"].pop("release_hash", None)
        documents.append((release, reveals))
    assert documents[0] == documents[1] and documents[0][0]["payload"]["entity_ids"]
    # a refusal reads the same: the same list twice
    twice = [a for p in (platforms[0], platforms[0], platforms[1]) for a in ("--inputs", current[p])]
    lines = []
    for extra in ((), ENGINE):
        result = run("psi", "aggregate", "--me", key["bureau"], "--session", w / "session.json", *twice,
                     "--out", w / "refused.json", *extra, ok=False)
        assert result.exit_code == 1 and not (w / "refused.json").exists()
        lines.append(result.stderr.strip().splitlines()[-1])  # after the engine's own "dask: ..." line
    assert lines[0] == lines[1] and "a second list" in lines[0]
