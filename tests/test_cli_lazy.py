"""`pprl link` starts with what it needs: each command's module is imported when the command runs, and the link
path reads and checks documents without pycryptodome, jsonschema or pandas (figures: docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cli_runner import cli_consortium, run

from pprl.cli import COMMAND_MODULES, cli, load_commands
from pprl.protocol.files import load_card, load_linkage

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"


def test_the_table_names_the_module_of_every_command():
    load_commands()
    assert set(COMMAND_MODULES) == set(cli.commands)
    for name, command in cli.commands.items():
        assert command.callback.__module__ == f"pprl.cli.{COMMAND_MODULES[name]}", name


def test_help_still_lists_every_command():
    out = run("--help").output
    for name in COMMAND_MODULES:
        assert f"  {name} " in out, name


def _modules_after(args: list[str]) -> set[str]:
    """The modules a fresh interpreter has loaded after ``pprl ARGS``."""
    code = ("import sys; from pprl.cli import cli\n"
            "try:\n    cli.main(sys.argv[1:], prog_name='pprl')\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(' '.join(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(done.stdout.split())


def test_link_loads_only_its_own_command_module_and_no_unneeded_dependency(tmp_path):
    key, card, _ = cli_consortium(tmp_path, ["platform_1", "platform_2"], seed=5)
    subs = []
    for name in ("platform_1", "platform_2"):
        out = tmp_path / f"{name}.sub.json"
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", tmp_path / f"{name}.secret",
            "--data", tmp_path / "data" / f"{name}.csv", "--id-column", "user_id", "--out", out)
        subs += ["--submissions", str(out)]
    linkage = tmp_path / "linkage.json"
    loaded = _modules_after(["link", "--me", str(key["bureau"]), "--cards", str(card["platform_1"]),
                             "--cards", str(card["platform_2"]), *subs, "--out", str(linkage)])
    assert json.loads(linkage.read_text())["kind"] == "linkage"
    commands = {m for m in loaded if m.startswith("pprl.cli.")}
    assert commands == {"pprl.cli.bureau"}, commands
    heavy = {m.split(".")[0] for m in loaded} & {"Crypto", "jsonschema", "referencing", "pandas", "gmpy2"}
    assert not heavy, heavy

    # the console entry point ends `pprl link` without the interpreter's teardown: the report is whole and the
    # linkage written; a refusal still exits 1 with its one line
    again = tmp_path / "again.json"
    done = subprocess.run([sys.executable, "-m", "pprl", "link", "--me", str(key["bureau"]), "--cards",
                           str(card["platform_1"]), "--cards", str(card["platform_2"]), *subs, "--out", str(again)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"wrote {again}") and done.stderr.rstrip().splitlines()[-1].startswith("  candidates")

    first, second = (load_linkage(p, [load_card(card["bureau"])]) for p in (linkage, again))
    assert first.payload == second.payload
    refused = subprocess.run([sys.executable, "-m", "pprl", "link", "--me", str(key["bureau"]), "--cards",
                              str(card["platform_1"]), "--submissions", subs[1], "--out", str(tmp_path / "no.json")],
                             capture_output=True, text=True, cwd=ROOT)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
