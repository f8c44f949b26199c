"""The package's layering, read from the source: data flows cli -> (service ->) protocol -> (documents, crypto, encoding,
matching).

These are the house rules of docs/development.md, checked on every module's
imports (parsed, not executed): lower layers never import upper ones or each
other, no module imports another module's private names, every public name
of the documents has one import path, and no module is a pure re-export.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "pprl"
#: What each part of the package may import from pprl (besides itself, pprl.errors and pprl._native).
ALLOWED = {
    "crypto": set(),
    "encoding": set(),
    "matching": set(),
    "documents": {"crypto"},
    "protocol": {"documents", "crypto", "encoding", "matching"},
    "registry": {"protocol", "documents", "crypto", "encoding", "matching"},
    "service": {"protocol", "registry", "documents", "crypto", "encoding", "matching"},
    "sim": {"protocol", "registry", "service", "documents", "crypto", "encoding", "matching"},
    "cli": {"protocol", "registry", "service", "documents", "crypto", "encoding", "matching", "sim"},
}
EXTENSIONS = {"_dice", "_h2c", "_montexp", "_avx2exp", "_bloom"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out.append((name, path))
    return out


def _imports(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """(imported module, names) for every import in a file, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[: len(module.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join([*package, base] if base else package)
            found.append((base, [alias.name for alias in node.names]))
    return found


MODULES = _modules()


def _part(name: str) -> str | None:
    bits = name.split(".")
    return bits[1] if len(bits) > 1 and bits[1] in ALLOWED else None


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_layers_import_only_downwards(module, path):
    part = _part(module)
    if part is None:
        return
    for target, _names in _imports(path, module):
        other = _part(target) if target.startswith("pprl.") else None
        if other is not None and other != part:
            assert other in ALLOWED[part], f"{module} imports {target}: {part} may not import {other}"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_imports_another_modules_private_names(module, path):
    for target, names in _imports(path, module):
        if not target.startswith("pprl"):
            continue
        private = [n for n in names if n.startswith("_") and n not in EXTENSIONS and not n.startswith("__")]
        assert not private, f"{module} imports private {private} from {target}"


def _facades() -> list[str]:
    """Packages whose __init__ is their public interface (it declares __all__ and imports from its modules)."""
    out = []
    for name, path in MODULES:
        if path.name == "__init__.py" and name != "pprl" and "__all__" in path.read_text(encoding="utf-8"):
            out.append(name)
    return out


FACADES = _facades()


def test_the_facades_are_the_ones_we_mean():
    assert {"pprl.documents", "pprl.protocol.psi"} <= set(FACADES)


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_a_facade_is_the_one_import_path_of_its_names(module, path):
    """Outside a package with a public __init__, its names come from the package, never its modules."""
    for target, _names in _imports(path, module):
        for facade in FACADES:
            if target.startswith(facade + ".") and not module.startswith(facade):
                pytest.fail(f"{module} imports {target}; import from {facade}")


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_pure_reexport_modules(module, path):
    if path.name == "__init__.py":
        return  # a package's __init__ is its one public interface
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defines = [
        node for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        or (isinstance(node, (ast.Assign, ast.AnnAssign)) and "__all__" not in ast.unparse(node))
    ]
    assert defines, f"{module} only re-exports names; import them from where they are defined"


HEAVY = ("numpy", "pandas", "Crypto", "jsonschema", "gmpy2", "nacl", "opencc", "pypinyin", "tqdm", "matplotlib")


@pytest.mark.parametrize("statement", ["import pprl", "import pprl.cli", "import pprl.errors"])
def test_start_up_loads_no_heavy_dependency(statement):
    """`pprl --help` and `import pprl` load only what they need; each command loads its own on use."""
    import subprocess
    import sys

    code = f"{statement}; import sys; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert loaded == [], f"{statement} loads {loaded}"


def test_help_runs_without_loading_the_steps():
    from click.testing import CliRunner

    from pprl.cli import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0 and "pprl demo" in result.output
