"""`pprl encode` writes clkhash's format, and with --clkhash-secret the very same CLKs."""

from __future__ import annotations

import base64
import io
import json
import warnings
from pathlib import Path

from click.testing import CliRunner

from pprl.cli import cli
from pprl.sim.synth import generate_population

SCHEMA = Path(__file__).resolve().parents[1] / "examples" / "schema-cn-clkhash.json"


def test_clkhash_secret_gives_clkhash_output(tmp_path):
    frame = generate_population(40, 1, seed=3).platforms["platform_1"]
    data = tmp_path / "people.csv"
    frame.to_csv(data, index=False)
    (tmp_path / "secret.txt").write_bytes(b"correct horse battery staple\n")
    out = tmp_path / "clks.json"
    result = CliRunner().invoke(cli, ["encode", "--schema", str(SCHEMA), "--clkhash-secret",
                                      str(tmp_path / "secret.txt"), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    ours = json.loads(out.read_text())["clks"]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clkhash import clk
        from clkhash import schema as clkhash_schema

        theirs = clk.generate_clk_from_csv(
            io.StringIO(data.read_text(encoding="utf-8")),
            "correct horse battery staple",
            clkhash_schema.from_json_dict(json.loads(SCHEMA.read_text(encoding="utf-8"))),
            progress_bar=False,
        )
    assert ours == [base64.b64encode(bf.tobytes()).decode() for bf in theirs]
    assert len(ours) == len(frame)


def test_encode_needs_exactly_one_secret(tmp_path):
    result = CliRunner().invoke(cli, ["encode", "--schema", str(SCHEMA), "--data", "x.csv", "--out", "o.json"])
    assert result.exit_code == 2 and "exactly one" in result.output
