"""The one loading rule of the C extensions (pprl/_native.py): HAVE_<X>, PPRL_NO_<X> read at every call, stubs."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pprl import _native

ROOT = Path(__file__).resolve().parents[1]

# (extension, loader module, flag, per-call check, switches)
EXTENSIONS = [
    ("pprl.matching.dice._dice", "pprl.matching.dice.native", "HAVE_DICE", "dice_enabled",
     ("PPRL_NO_DICE", "PPRL_NO_NATIVE")),
    ("pprl.crypto._h2c", "pprl.crypto.hash_to_curve", "HAVE_H2C", "h2c_enabled", ("PPRL_NO_H2C",)),
    ("pprl.crypto._montexp", "pprl.crypto.montexp", "HAVE_IFMA", "ifma_enabled", ("PPRL_NO_IFMA",)),
    ("pprl.crypto._avx2exp", "pprl.crypto.montexp", "HAVE_AVX2MONT", "avx2_enabled",
     ("PPRL_NO_AVX2MONT", "PPRL_NO_AVX2")),
    ("pprl.encoding._bloom", "pprl.encoding.bloom", "HAVE_BLOOM", "bloom_enabled", ("PPRL_NO_BLOOM",)),
]
ALL_SWITCHES = sorted({s for *_, switches in EXTENSIONS for s in switches})


@pytest.fixture(autouse=True)
def _switches_off(monkeypatch):
    for switch in ALL_SWITCHES:
        monkeypatch.delenv(switch, raising=False)


@pytest.mark.parametrize(("value", "off"), [
    (None, False), ("", False), ("0", False), (" 0 ", False), ("  ", False),
    ("1", True), (" 1", True), ("yes", True), ("false", True),
])
def test_disabled_reads_the_environment_at_every_call(monkeypatch, value, off):
    assert not _native.disabled("PPRL_NO_TEST_SWITCH")
    if value is not None:
        monkeypatch.setenv("PPRL_NO_TEST_SWITCH", value)
    assert _native.disabled("PPRL_NO_TEST_SWITCH") is off
    assert _native.disabled("PPRL_NO_OTHER", "PPRL_NO_TEST_SWITCH") is off  # an alias counts the same
    monkeypatch.delenv("PPRL_NO_TEST_SWITCH", raising=False)
    assert not _native.disabled("PPRL_NO_TEST_SWITCH")


def test_load_returns_none_for_a_missing_extension():
    assert _native.load("pprl.crypto._no_such_extension") is None
    assert _native.load("pprl.errors") is importlib.import_module("pprl.errors")


@pytest.mark.parametrize(("ext", "loader", "flag", "check", "switches"), EXTENSIONS)
def test_every_loader_follows_the_rule(monkeypatch, ext, loader, flag, check, switches):
    module = importlib.import_module(loader)
    have = getattr(module, flag)
    assert isinstance(have, bool)
    assert getattr(module, check)() is have  # no switch set: on exactly when built and usable
    for switch in switches:
        monkeypatch.setenv(switch, "1")
        assert getattr(module, check)() is False
        assert getattr(module, flag) is have  # the flag says what is built, not what is switched on
        monkeypatch.setenv(switch, "0")
        assert getattr(module, check)() is have


@pytest.mark.parametrize(("ext", "loader", "flag", "check", "switches"), EXTENSIONS)
def test_switch_set_before_import(ext, loader, flag, check, switches):
    """Set before the interpreter starts, the switch turns the path off but the extension is still loaded."""
    code = f"import {loader} as m; print(m.{flag}, m.{check}())"
    env = {k: v for k, v in os.environ.items() if k not in ALL_SWITCHES}
    plain = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    for switch in switches:
        out = subprocess.run([sys.executable, "-c", code], env={**env, switch: "1"}, cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        assert out == [plain[0], "False"]
    assert plain[1] == plain[0]


@pytest.mark.parametrize("ext", [e[0] for e in EXTENSIONS])
def test_stub_types_every_function_the_extension_exports(ext):
    module = _native.load(ext)
    if module is None:
        pytest.skip(f"{ext} is not built")
    stub = Path(module.__file__).with_name(ext.rsplit(".", 1)[1] + ".pyi")
    assert stub.is_file(), f"{stub} is missing"
    tree = ast.parse(stub.read_text(encoding="utf-8"))
    typed = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    exported = {name for name in dir(module) if not name.startswith("_") and callable(getattr(module, name))}
    assert typed == exported
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            assert node.returns is not None and all(a.annotation is not None for a in node.args.posonlyargs)
