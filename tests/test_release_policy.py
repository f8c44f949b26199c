"""Release policy: clipping at submit, bureau noise under encryption, the authority's privacy budget.

One small synthetic world (three platforms, clipped submissions; two more
submissions without clip ranges) drives the CLI end to end; the samplers
are checked against theory with generous tolerances so nothing is flaky.
"""

from __future__ import annotations

import csv
import json
import statistics
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from cli_runner import cli_consortium, linked_members, run

from pprl.cli.platform import parse_clip
from pprl.crypto.noise import (
    KeyedStream,
    discrete_gaussian,
    discrete_laplace,
    discrete_laplace_variance,
    gaussian_sigma,
)
from pprl.errors import DataValidationError, PolicyError
from pprl.protocol.files import read_log

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2", "platform_3"]
CLIP = {"repay_score": (Decimal(600), Decimal(700)), "spend_score": (Decimal(0), Decimal(5000))}


def _refused(result, out: Path, *words: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not out.exists()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("policy")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=11)
    clip = [a for c, (lo, hi) in CLIP.items() for a in ("--clip", f"{c}={lo}:{hi}")]
    common = ["--schema", SCHEMA, "--paillier", w / "authority" / "paillier.pub.json", "--authority",
              card["authority"], "--id-column", "user_id", "--scores", "repay_score,spend_score"]
    for name in PLATFORMS:
        run("submit", "--me", key[name], "--secret", w / f"{name}.secret", "--data", w / "data" / f"{name}.csv",
            *common, *clip, "--out", w / f"{name}.sub.json")
    for name in PLATFORMS[:2]:  # the same data without clip ranges
        run("submit", "--me", key[name], "--secret", w / f"{name}.secret", "--data", w / "data" / f"{name}.csv",
            *common, "--out", w / f"{name}.raw.json")
    subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")]
    raw = [a for n in PLATFORMS[:2] for a in ("--submissions", w / f"{n}.raw.json")]
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    run("link", "--me", key["bureau"], *cards, *subs, "--threshold", 0.8, "--out", w / "linkage.json")
    run("link", "--me", key["bureau"], *cards, *raw, "--threshold", 0.8, "--out", w / "raw-linkage.json")
    return {"dir": w, "card": card, "key": key, "subs": subs, "raw": raw, "cards": cards}


def _aggregate(world, out: Path, *extra: object, ok: bool = True, linkage: str = "linkage.json", subs=None):
    w = world["dir"]
    return run("aggregate", "--me", world["key"]["bureau"], "--linkage", w / linkage, *(subs or world["subs"]),
               *world["cards"], "--min-contributors", 2, *extra, "--out", out, ok=ok)


def _decrypt(world, release: Path, out: Path, log: Path, *extra: object, ok: bool = True):
    w = world["dir"]
    evidence = ["--linkage", w / "linkage.json", *world["subs"], *world["cards"]]
    return run("decrypt", "--me", world["key"]["authority"], "--paillier-key", w / "authority" / "paillier.key",
               "--release", release, *evidence, "--cards", world["card"]["bureau"], "--audit-log", log, "--out", out,
               *extra, ok=ok)


def _truth(world) -> dict[str, dict[str, Decimal]]:
    """Per released entity: the sums of the *clipped* plaintext scores of its members."""
    members, scores = linked_members(world["dir"], PLATFORMS)
    out = {}
    for entity, group in members.items():
        if len(group) < 2:
            continue
        out[entity] = {
            c: sum(min(max(Decimal(scores[m][c]), lo), hi) for m in group) for c, (lo, hi) in CLIP.items()
        }
    return out


def _released(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def test_clipping_clips_and_is_declared(world, tmp_path):
    w = world["dir"]
    header = json.loads(run("inspect", w / "platform_1.sub.json").stdout)["header"]
    assert header["clip"] == {"repay_score": ["600.00", "700.00"], "spend_score": ["0.00", "5000.00"]}
    _aggregate(world, tmp_path / "release.json")
    _decrypt(world, tmp_path / "release.json", tmp_path / "agg.csv", tmp_path / "audit.log")
    truth = _truth(world)
    rows = _released(tmp_path / "agg.csv")
    assert rows and len(rows) == len(truth)
    for row in rows:
        for c in CLIP:
            assert Decimal(row[f"{c}_sum"]) == truth[row["entity_id"]][c]
    outside = 0
    for row in csv.DictReader((w / "data" / "platform_1.csv").read_text(encoding="utf-8").splitlines()):
        outside += any(not lo <= Decimal(row[c]) <= hi for c, (lo, hi) in CLIP.items())
    assert outside > 0  # the ranges really clip something
    release = json.loads(run("inspect", tmp_path / "release.json").stdout)["header"]
    assert release["noise"] is None and release["clip"] == header["clip"]
    entry = read_log(tmp_path / "audit.log")[-1]
    assert entry["noise"] is None
    assert entry["privacy_budget"]["repay_score"] == {"epsilon": 0.0, "delta": 0.0}


def test_laplace_noise_and_privacy_budget(world, tmp_path):
    release, log = tmp_path / "release.json", tmp_path / "audit.log"
    _aggregate(world, release, "--noise", "laplace", "--epsilon", 1.0)
    header = json.loads(run("inspect", release).stdout)["header"]
    noise = header["noise"]
    assert noise["mechanism"] == "laplace" and noise["epsilon"] == 1.0 and noise["delta"] == 0.0
    # hi - lo in fixed point: counts are exact, so a neighbour changes one value within its clip range
    assert noise["sensitivity_fixed"] == {"repay_score": 10000, "spend_score": 500000}
    assert noise["parameters"]["spend_score"]["scale"] == "500000"
    assert noise["clip"]["spend_score"] == ["0.00", "5000.00"]

    _decrypt(world, release, tmp_path / "a1.csv", log)
    truth = _truth(world)
    rows = _released(tmp_path / "a1.csv")
    assert len(rows) == len(truth) >= 10
    for c, scale_units in (("repay_score", 10000), ("spend_score", 500000)):
        errors = [(Decimal(r[f"{c}_sum"]) - truth[r["entity_id"]][c]) * 100 for r in rows]
        assert all(e == e.to_integral_value() for e in errors)  # integer fixed-point units
        mean_abs = statistics.fmean(abs(float(e)) for e in errors)
        # E|X| ~ scale for the discrete Laplace; a loose factor keeps this far from flaky.
        assert scale_units / 5 < mean_abs < scale_units * 5, (c, mean_abs)

    _decrypt(world, release, tmp_path / "a2.csv", log, "--max-epsilon", 2)
    entries = read_log(log)
    assert entries[0]["noise"]["epsilon"] == 1.0
    assert entries[0]["privacy_budget"]["spend_score"]["epsilon"] == pytest.approx(1.0)
    assert entries[1]["privacy_budget"]["spend_score"]["epsilon"] == pytest.approx(2.0)
    assert entries[1]["privacy_budget"]["repay_score"]["epsilon"] == pytest.approx(2.0)

    out = tmp_path / "a3.csv"
    _refused(_decrypt(world, release, out, log, "--max-epsilon", 2.5, ok=False), out, "max-epsilon", "3")
    assert len(read_log(log)) == 2
    run("audit", "verify", log, "--cards", world["card"]["authority"])


def test_gaussian_noise(world, tmp_path):
    release = tmp_path / "release.json"
    _aggregate(world, release, "--noise", "gaussian", "--epsilon", 0.5, "--delta", 1e-6)
    noise = json.loads(run("inspect", release).stdout)["header"]["noise"]
    assert noise["mechanism"] == "gaussian" and noise["delta"] == 1e-6 and noise["bound"].startswith("classic")
    assert int(noise["parameters"]["repay_score"]["sigma2"]) == gaussian_sigma(10000, 0.5, 1e-6)
    _decrypt(world, release, tmp_path / "agg.csv", tmp_path / "audit.log")
    entry = read_log(tmp_path / "audit.log")[-1]
    assert entry["privacy_budget"]["spend_score"] == {"epsilon": 0.5, "delta": 1e-6}
    sigma = noise["parameters"]["spend_score"]["sigma"]
    truth = _truth(world)
    errors = [abs(float(Decimal(r["spend_score_sum"]) - truth[r["entity_id"]]["spend_score"]) * 100)
              for r in _released(tmp_path / "agg.csv")]
    assert sigma / 5 < statistics.fmean(errors) < sigma * 5


def test_noise_refusals(world, tmp_path):
    out = tmp_path / "release.json"
    result = _aggregate(world, out, "--noise", "laplace", "--epsilon", 1, ok=False,
                        linkage="raw-linkage.json", subs=world["raw"])
    _refused(result, out, "clip range", "--clip")
    _refused(_aggregate(world, out, "--noise", "gaussian", "--epsilon", 2, "--delta", 1e-6, ok=False), out, "epsilon")
    _refused(_aggregate(world, out, "--noise", "gaussian", "--epsilon", 0.5, ok=False), out, "--delta")
    _refused(_aggregate(world, out, "--epsilon", 0.5, ok=False), out, "--noise")
    _refused(_aggregate(world, out, "--noise", "laplace", "--epsilon", 1e-9, ok=False), out, "packing bound")
    # A release without noise is refused under a budget cap.
    _aggregate(world, out)
    csv_out = tmp_path / "agg.csv"
    _refused(_decrypt(world, out, csv_out, tmp_path / "audit.log", "--max-epsilon", 1, ok=False), csv_out, "no noise")
    assert not (tmp_path / "audit.log").exists()


def test_parse_clip():
    assert parse_clip(["a=-1.5:2", "b=0:1e3"]) == {"a": (Decimal("-1.5"), Decimal(2)), "b": (Decimal(0), Decimal(1000))}
    for bad in (["a"], ["a=1"], ["=1:2"], ["a=x:2"], ["a=1:2", "a=0:1"]):
        with pytest.raises(DataValidationError):
            parse_clip(bad)


def test_discrete_laplace_variance_matches_theory():
    scale = 3
    xs = [discrete_laplace(scale) for _ in range(20000)]
    theory = discrete_laplace_variance(scale)
    assert abs(statistics.pvariance(xs) - theory) < 0.15 * theory
    assert abs(statistics.fmean(xs)) < 0.3
    assert discrete_laplace(0) == 0


def test_discrete_gaussian_variance_close_to_sigma2():
    xs = [discrete_gaussian(25) for _ in range(5000)]
    assert abs(statistics.pvariance(xs) - 25) < 0.2 * 25
    with pytest.raises(PolicyError):
        gaussian_sigma(100, 1.5, 1e-6)


def test_repeating_a_release_repeats_its_noise(world, tmp_path):
    """30 releases of one linkage must not average the noise away: the same linkage, the same noisy sums."""
    outs = []
    for i in range(3):
        release = tmp_path / f"r{i}.json"
        _aggregate(world, release, "--noise", "laplace", "--epsilon", 1.0)
        outs.append(tmp_path / f"r{i}.csv")
        _decrypt(world, release, outs[-1], tmp_path / "audit.log")
    assert outs[0].read_bytes() == outs[1].read_bytes() == outs[2].read_bytes()
    truth = _truth(world)
    rows = _released(outs[0])
    assert any(Decimal(r["repay_score_sum"]) != truth[r["entity_id"]]["repay_score"] for r in rows)  # noised
    entries = read_log(tmp_path / "audit.log")  # ... and each repeat is still charged
    assert [e["privacy_budget"]["repay_score"]["epsilon"] for e in entries] == pytest.approx([1.0, 2.0, 3.0])


def test_sensitivity_is_the_width_of_the_clip_range():
    from pprl.crypto.paillier.packing import PackingSpec
    from pprl.protocol.aggregate import AggregateOptions, noise_policy  # the one place sensitivity is computed

    spec = PackingSpec.plan(10**11, 1, 64, decimals=2, count_slot=True)
    policy = noise_policy(AggregateOptions(noise="laplace", epsilon=1.0), {"a": ["-1000.00", "1000.00"]}, ["a"],
                           [], spec)
    assert policy["sensitivity_fixed"] == {"a": 200000}  # [-1000, 1000] at 2 decimals: 2000.00, not 1000.00
    assert policy["parameters"]["a"]["scale"] == "200000"


def test_keyed_streams_repeat_for_a_key_and_label_only():
    key = bytes(range(32))

    def draws(k: bytes, label: bytes) -> list[int]:
        stream = KeyedStream(k, label)
        return [stream.randbelow(10**6) for _ in range(50)]

    assert draws(key, b"L|E1|c") == draws(key, b"L|E1|c")
    assert draws(key, b"L|E1|c") != draws(key, b"L|E2|c")
    assert draws(key, b"L|E1|c") != draws(bytes(32), b"L|E1|c")
    assert all(0 <= x < 10**6 for x in draws(key, b"range"))
    counts = [0] * 6
    stream = KeyedStream(key, b"uniform")
    for _ in range(6000):
        counts[stream.randbelow(6)] += 1
    assert all(850 < c < 1150 for c in counts)  # rejection sampling: no modulo bias
    assert discrete_laplace(Fraction(5), KeyedStream(key, b"x")) == discrete_laplace(Fraction(5), KeyedStream(key, b"x"))
    with pytest.raises(DataValidationError):
        KeyedStream(b"short", b"x")
