"""`pprl link` with an automatic threshold and blocking, then `pprl evaluate` against the truth.

The world (identities, secret, linkage-only submissions: no Paillier) is
built once per module through the CLI, as tests/test_cli_end_to_end.py does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run

from pprl.documents import read_document
from pprl.errors import DataValidationError
from pprl.protocol.files import load_card
from pprl.sim.evaluation import evaluate_linkage

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2", "platform_3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("evalworld")
    run("synth", "--people", 300, "--platforms", 3, "--out", w / "data", "--seed", 11, "--corruption", 0.3)
    for name in PLATFORMS:
        run("init", name, "--role", "platform", "--dir", w / "keys")
    run("init", "bureau", "--role", "bureau", "--dir", w / "keys")
    card = {n: w / "keys" / f"{n}.card.json" for n in [*PLATFORMS, "bureau"]}
    key = {n: w / "keys" / f"{n}.key" for n in card}
    for name in PLATFORMS:
        peers = [a for p in PLATFORMS if p != name for a in ("--peers", card[p])]
        run("secret", "share", "--me", key[name], *peers, "--out", w / f"{name}.share.json")
    shares = [a for p in PLATFORMS for a in ("--shares", w / f"{p}.share.json")]
    for name in PLATFORMS:
        run("secret", "combine", "--me", key[name], *shares, "--out", w / f"{name}.secret")
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--out", w / f"{name}.sub.json")
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")]
    linked = run("link", "--me", key["bureau"], *cards, *subs, "--out", w / "linkage.json")
    return {"dir": w, "key": key, "card": card, "cards": cards, "subs": subs, "link_stderr": linked.stderr}


def _pin(world):
    return ["--cards", world["card"]["bureau"]]


def maps(world):
    return [a for n in PLATFORMS for a in ("--maps", world["dir"] / f"{n}.sub.json.map.csv")]


def test_auto_threshold_is_recorded_in_the_header(world):
    doc = read_document(world["dir"] / "linkage.json", "linkage")
    header = doc["header"]
    assert header["threshold_method"] == "auto"
    assert 0.5 <= header["threshold"] <= 0.95
    assert header["threshold_choice"]["threshold"] == header["threshold"]
    assert header["threshold_choice"]["fit"]["converged"]
    assert header["blocking"]["method"] == "none"
    assert header["blocking"]["pairs_total"] == header["blocking"]["comparisons"] > 0
    assert header["candidate_pairs"] == doc["payload"]["candidates"]["csv"].count("\n")
    assert doc["payload"]["candidates"]["columns"][0] == "platform_a"
    entities = doc["payload"]["entities"]
    assert entities and all(0.0 <= e["match_probability"] <= 1.0 for e in entities)
    assert all(len(m) == 3 for e in entities for m in e["members"])  # [platform, token, similarity] unchanged
    assert min(m[2] for e in entities for m in e["members"]) >= header["threshold"]
    stderr = world["link_stderr"]
    assert f"threshold  {header['threshold']:.4f} (auto" in stderr
    assert "blocking   none" in stderr and f"{len(entities):,} entities" in stderr


def test_fixed_threshold_and_forced_lsh(world, tmp_path):
    out = tmp_path / "fixed.json"
    result = run("link", "--me", world["key"]["bureau"], *world["cards"], *world["subs"],
                 "--threshold", "0.8", "--blocking", "lsh", "--out", out)
    header = read_document(out, "linkage")["header"]
    assert header["threshold"] == 0.8 and header["threshold_method"] == "fixed"
    assert header["threshold_choice"]["used"] is False
    blocking = header["blocking"]
    assert blocking["method"] == "lsh" and blocking["bands"] >= 1 and 8 <= blocking["bits_per_band"] <= 64
    assert 0.0 < blocking["reduction_ratio"] < 1.0
    assert blocking["comparisons"] < blocking["pairs_total"]
    assert "blocking   lsh" in result.stderr and "reduction ratio" in result.stderr


def test_bad_threshold_is_a_usage_error(world, tmp_path):
    result = run("link", "--me", world["key"]["bureau"], *world["cards"], *world["subs"],
                 "--threshold", "high", "--out", tmp_path / "x.json", ok=False)
    assert result.exit_code == 2 and "auto" in result.stderr


def test_evaluate_gives_plausible_figures_and_a_png(world, tmp_path):
    w = world["dir"]
    png = tmp_path / "eval.png"
    result = run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *maps(world), "--truth", w / "data" / "truth.csv",
                 "--plot", png)
    figures = {line.split()[0]: line.split()[1] for line in result.stdout.splitlines() if line.split()}
    assert float(figures["precision"]) >= 0.95
    assert float(figures["recall"]) >= 0.9
    assert float(figures["F1"]) >= 0.93
    assert "pair completeness" in result.stdout and "reduction ratio" in result.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_evaluate_json_and_named_maps(world):
    w = world["dir"]
    named = [a for n in PLATFORMS for a in ("--maps", f"{n}={w / f'{n}.sub.json.map.csv'}")]
    result = run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *named, "--truth", w / "data" / "truth.csv", "--json")
    data = json.loads(result.stdout)
    assert data["pair_completeness"] >= data["recall"] - 1e-9  # the solver cannot find what was never a candidate
    assert data["reduction_ratio"] == 0.0
    assert data["exact_curve"][0]["threshold"] == pytest.approx(data["threshold"])
    assert data["exact_curve"][0]["f1"] == pytest.approx(data["f1"])
    assert 0.0 <= data["sample_curve"][0]["precision"] <= 1.0


def test_evaluate_after_lsh_reports_blocking_completeness(world, tmp_path):
    out = tmp_path / "lsh.json"
    run("link", "--me", world["key"]["bureau"], *world["cards"], *world["subs"], "--blocking", "lsh", "--out", out)
    result = evaluate_linkage(out, [world["dir"] / f"{n}.sub.json.map.csv" for n in PLATFORMS],
                              world["dir"] / "data" / "truth.csv", cards=[load_card(world["card"]["bureau"])])
    assert result.blocking == "lsh"
    assert result.blocking_pair_completeness is not None and result.blocking_pair_completeness >= 0.9
    assert 0.0 < result.reduction_ratio < 1.0
    assert "blocking completeness" in result.render()


def _refused(result, *names):
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for n in names:
        assert str(n) in lines[0], (n, lines[0])


def test_map_of_no_linked_platform_is_refused(world, tmp_path):
    w = world["dir"]
    stranger = tmp_path / "stranger.map.csv"
    stranger.write_text("token,user_id\n" + "".join(f"{i:024x},u{i}\n" for i in range(5)), encoding="utf-8")
    result = run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *maps(world), "--maps", stranger,
                 "--truth", w / "data" / "truth.csv", ok=False)
    _refused(result, "stranger.map.csv")


def test_missing_map_and_duplicate_map_are_refused(world):
    w = world["dir"]
    two = [a for n in PLATFORMS[:2] for a in ("--maps", w / f"{n}.sub.json.map.csv")]
    _refused(run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *two, "--truth", w / "data" / "truth.csv", ok=False),
             "platform_3")
    again = [*maps(world), "--maps", w / "platform_1.sub.json.map.csv"]
    _refused(run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *again, "--truth", w / "data" / "truth.csv", ok=False),
             "platform_1.sub.json.map.csv", "second map")


def test_truth_without_person_column_is_refused(world, tmp_path):
    w = world["dir"]
    bad = tmp_path / "truth-bad.csv"
    bad.write_text("platform,user_id,who\nplatform_1,u1,p1\n", encoding="utf-8")
    _refused(run("evaluate", *_pin(world), "--linkage", w / "linkage.json", *maps(world), "--truth", bad, ok=False),
             "truth-bad.csv", "person")


def test_map_without_token_column_is_refused(world):
    w = world["dir"]
    with pytest.raises(DataValidationError, match="platform_1.csv"):
        evaluate_linkage(w / "linkage.json", [w / "data" / "platform_1.csv"], w / "data" / "truth.csv",
                         cards=[load_card(world["card"]["bureau"])])


def test_two_platform_curve_equals_re_solving(world, tmp_path):
    """With two platforms the curve comes from the entities alone; it must equal re-solving the candidates."""
    from pprl.sim import evaluation

    out = tmp_path / "two.json"
    two = [a for n in PLATFORMS[:2] for a in ("--submissions", world["dir"] / f"{n}.sub.json")]
    run("link", "--me", world["key"]["bureau"], *world["cards"], *two, "--out", out)
    maps2 = [world["dir"] / f"{n}.sub.json.map.csv" for n in PLATFORMS[:2]]
    result = evaluate_linkage(out, maps2, world["dir"] / "data" / "truth.csv", cards=[load_card(world["card"]["bureau"])])
    assert result.exact_curve[0].f1 == pytest.approx(result.quality.f1)
    doc = read_document(out, "linkage")
    maps = evaluation.read_maps(maps2, doc)
    truth = {k: v for k, v in evaluation.read_truth(world["dir"] / "data" / "truth.csv").items()
             if k[1] in set(maps.get(k[0], {}).values())}
    candidates = [[pa, ta, pb, tb, float(s)] for pa, ta, pb, tb, s in
                  evaluation._table(doc, "candidates", evaluation.CANDIDATE_COLUMNS, "x")]
    to_key = {(p, t): (p, maps[p][t]) for p, t in evaluation._candidate_tokens(candidates)}
    resolved = evaluation._exact_curve(candidates, to_key, truth, result.threshold, PLATFORMS[:2])
    by_threshold = {round(p.threshold, 9): p for p in result.exact_curve}
    for point in resolved:
        fast = by_threshold[round(point.threshold, 9)]
        assert (fast.predicted, fast.correct) == (point.predicted, point.correct)
