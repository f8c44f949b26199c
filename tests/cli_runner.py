"""Running pprl commands in-process for the CLI tests, and the set-up several of them share."""

from __future__ import annotations

import csv
from pathlib import Path

from click.testing import CliRunner, Result

from pprl.cli import cli


def run(*args: object, ok: bool = True) -> Result:
    """Invoke ``pprl ARGS...``; with ``ok``, fail the test (showing the output) unless it exits 0."""
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def cli_consortium(
    w: Path, platforms: list[str], seed: int
) -> tuple[dict[str, Path], dict[str, Path], list[str]]:
    """Synth data for ``platforms`` (80 people), every party's keys, the linkage secret, a Paillier key.

    Returns (key paths, card paths, what each platform's ``secret combine``
    printed), all through the CLI as the README shows it.
    """
    run("synth", "--people", 80, "--platforms", len(platforms), "--out", w / "data", "--seed", seed)
    for name in platforms:
        run("init", name, "--role", "platform", "--dir", w / "keys")
    run("init", "bureau", "--role", "bureau", "--dir", w / "keys")
    run("init", "authority", "--role", "authority", "--dir", w / "keys")
    card = {n: w / "keys" / f"{n}.card.json" for n in [*platforms, "bureau", "authority"]}
    key = {n: w / "keys" / f"{n}.key" for n in card}
    for name in platforms:
        peers = [a for p in platforms if p != name for a in ("--peers", card[p])]
        run("secret", "share", "--me", key[name], *peers, "--out", w / f"{name}.share.json")
    shares = [a for p in platforms for a in ("--shares", w / f"{p}.share.json")]
    combined = [
        run("secret", "combine", "--me", key[name], *shares, "--out", w / f"{name}.secret").stdout
        for name in platforms
    ]
    run("paillier", "keygen", "--me", key["authority"], "--bits", 2048, "--dir", w / "authority")
    return key, card, combined


def refused(result: Result, out: Path, *names: str) -> str:
    """Assert a one-line refusal that exits non-zero, mentions every one of ``names`` and leaves ``out`` unwritten."""
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for n in names:
        assert n in lines[0], (n, lines[0])
    assert not out.exists()
    return lines[0]


def linked_members(
    w: Path, platforms: list[str], linkage: Path | None = None
) -> tuple[dict[str, list[tuple[str, str]]], dict[tuple[str, str], dict[str, str]]]:
    """The plaintext truth of a CLI run in ``w``: entity id -> [(platform, user id)], and each user's CSV row.

    Reads the bureau's entity table (``pprl inspect LINKAGE --entities``), every
    platform's ``<name>.sub.json.map.csv`` and ``data/<name>.csv``.
    """
    def rows(text: str) -> list[dict[str, str]]:
        return list(csv.DictReader(text.splitlines()))

    to_user, scores = {}, {}
    for name in platforms:
        for row in rows((w / f"{name}.sub.json.map.csv").read_text(encoding="utf-8")):
            to_user[row["token"]] = (name, row["user_id"])
        for row in rows((w / "data" / f"{name}.csv").read_text(encoding="utf-8")):
            scores[(name, row["user_id"])] = row
    members: dict[str, list[tuple[str, str]]] = {}
    for row in rows(run("inspect", linkage or w / "linkage.json", "--entities").stdout):
        members.setdefault(row["entity_id"], []).append(to_user[row["token"]])
    return members, scores
