"""The native fast paths on CPUs without AVX-512 (or without AVX), emulated with qemu-user (issue 14).

This machine and CI have AVX-512; many users' CPUs do not (Hygon, pre-Ice-Lake
Xeons, Zen 2/3). The ``PPRL_NO_*`` switches force the AVX2 and portable paths
here, but cannot show that a CPU *lacking* AVX-512 never executes an AVX-512
instruction (a target attribute leaking into a shared helper, a missing
``__builtin_cpu_supports`` check). ``qemu-x86_64 -cpu MODEL`` runs the venv's
Python on an emulated CPU whose CPUID reports only that model's features; its
TCG translator has no AVX-512 at all (and no AVX on the older models), so any
such instruction kills the process with SIGILL.

Under each model, ``tests/isa_probe.py`` reports the variant every dispatcher
chose (Dice kernel, Paillier Montgomery kernel, X25519 batch, Bloom masker),
runs small fixed workloads on it and on every other path that CPU offers, and
asks for each missing path at every layer (it must be refused with an
exception). The digests must equal those of the probe run natively with the
switches that force the same paths. numpy >= 2.4 needs x86-64-v2 (SSE4.2,
POPCNT), so the oldest full model is Nehalem; the extensions alone are also
run on baseline x86-64 (``qemu64``: no POPCNT, no SSE4), loaded without numpy.
On Hygon Dhyana the dispatchers must pick AVX2 as on Haswell: the C extensions read CPUID
themselves (``pprl/_cpu.h``), because GCC 12's ``__builtin_cpu_supports`` fills in features only
for GenuineIntel and AuthenticAMD and reported none there (every fast path was off on Hygon until
this test found it).

Skipped when ``qemu-x86_64`` is missing (Debian: ``apt-get install qemu-user``)
or the host is not x86-64; ``.ci/run`` installs it and sets
``PPRL_REQUIRE_QEMU=1``, which turns its absence into a failure.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pprl.crypto import hash_to_curve, montexp
from pprl.matching.dice import native

PROBE = Path(__file__).resolve().with_name("isa_probe.py")
# CPython under TCG is 20-50x slower; the probe takes 5-10 s there.
TIMEOUT = 300

@dataclass(frozen=True)
class Model:
    """An emulated CPU, what each dispatcher must choose on it, and the switches that force that here."""

    cpu: str
    dice: str
    paillier: str
    x25519: str
    force: dict[str, str] = field(hash=False)
    lacks: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.cpu


# Intel Haswell (AVX2, FMA, BMI2: as pre-Ice-Lake Xeons), AMD Zen 2 and Hygon Dhyana (Zen 1): AVX2,
# no AVX-512. Nehalem: x86-64-v2 (SSE4.2, POPCNT) without AVX, the oldest CPU numpy 2.4 runs on.
AVX2_ONLY = {"PPRL_NO_AVX512": "1", "PPRL_NO_IFMA": "1"}
NO_AVX = {"PPRL_NO_AVX512": "1", "PPRL_NO_AVX2": "1", "PPRL_NO_IFMA": "1"}
MODELS = [
    Model("Haswell-v4", "avx2", "avx2", "avx2", AVX2_ONLY, ("avx512", "ifma")),
    Model("EPYC-Rome-v2", "avx2", "avx2", "avx2", AVX2_ONLY, ("avx512", "ifma")),
    Model("Dhyana-v2", "avx2", "avx2", "avx2", AVX2_ONLY, ("avx512", "ifma")),
    Model("Nehalem-v1", "popcnt", "gmpy2", "libsodium", NO_AVX, ("avx512", "ifma", "avx2")),
]
# The extensions alone (no numpy) on baseline x86-64: no POPCNT, SSE4 or AVX.
BASELINE = "qemu64"


@functools.cache
def _qemu_version(binary: str) -> tuple[int, ...]:
    """(major, minor) of ``qemu-x86_64 --version`` ("qemu-x86_64 version 7.2.22 (Debian ...)"); (0,) if unreadable."""
    done = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=60)
    match = re.search(r"version (\d+)\.(\d+)", done.stdout)
    return (int(match[1]), int(match[2])) if match else (0,)


def _x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def _qemu_missing() -> str | None:
    """Why qemu-x86_64 cannot run the emulated CPUs here (None: it can)."""
    found = shutil.which("qemu-x86_64")
    if found is None:
        return "no qemu-x86_64 (Debian: apt-get install qemu-user; .ci/run installs it)"
    if _qemu_version(found) < (7, 2):
        return f"qemu-x86_64 {'.'.join(map(str, _qemu_version(found)))} emulates no AVX2 (7.2 is the first that does)"
    return None


def _qemu() -> None:
    """Skip when this host cannot emulate (a failure with PPRL_REQUIRE_QEMU=1 on x86-64) or has nothing to compare with."""
    if not _x86_64():
        pytest.skip(f"the emulated CPUs are x86-64 models and this host is {platform.machine()}")
    problem = _qemu_missing()
    if problem is not None:
        if os.environ.get("PPRL_REQUIRE_QEMU") == "1":
            pytest.fail(f"PPRL_REQUIRE_QEMU=1 but {problem}")
        pytest.skip(problem)
    if not (native.HAVE_DICE and hash_to_curve.HAVE_X25519 and montexp.HAVE_AVX2MONT):
        pytest.skip("the C extensions are not built (or this CPU lacks AVX2): nothing to compare with")


Key = tuple[str | None, tuple[str, ...], tuple[tuple[str, str], ...]]


def _run(key: Key) -> subprocess.CompletedProcess:
    """The probe with arguments, natively (cpu None) or under ``qemu-x86_64 -cpu cpu``; no PPRL_NO_* but ``force``."""
    cpu, args, force = key
    env = {k: v for k, v in os.environ.items() if not k.startswith("PPRL_NO_")}
    env.update(force)
    command = [sys.executable, str(PROBE), *args]
    if cpu is not None:
        command = [shutil.which("qemu-x86_64") or "qemu-x86_64", "-cpu", cpu, *command]
    # no core file when an emulated CPU traps (the canaries do, on purpose)
    command = ["sh", "-c", 'ulimit -c 0 && exec "$@"', "sh", *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=TIMEOUT, cwd=PROBE.parent)


# Runs are started ahead, as many at once as there are CPUs, and shared by the tests.
_RUNS: dict[Key, Future] = {}
_POOL: list[ThreadPoolExecutor] = []


def _start(key: Key) -> Future:
    if key not in _RUNS:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max_workers=os.cpu_count() or 1))
        _RUNS[key] = _POOL[0].submit(_run, key)
    return _RUNS[key]


def _keys(model: Model) -> list[Key]:
    return [(model.cpu, (), ()), (None, (), tuple(sorted(model.force.items())))]


@pytest.fixture(scope="module", autouse=True)
def _start_ahead(request):
    """Start every run the selected tests of this module need, emulated ones first (the slowest)."""
    if not _x86_64() or _qemu_missing() is not None:
        yield
        return
    keys: list[Key] = []
    for item in request.session.items:
        if item.module is not request.module:
            continue
        name = item.originalname
        model = item.callspec.params.get("model") if hasattr(item, "callspec") else None
        if isinstance(model, Model) and name != "test_the_emulated_cpu_traps_what_it_lacks":
            keys += _keys(model)
        if name == "test_results_equal_this_cpu_on_the_same_paths":
            keys.append((None, (), ()))
        if name == "test_the_extensions_alone_on_baseline_x86_64":
            keys += [(BASELINE, ("bare",), ()), (None, ("bare",), ())]
    for key in sorted(set(keys), key=lambda k: k[0] is None):
        _start(key)
    yield
    for pool in _POOL:
        pool.shutdown(wait=True)
    _POOL.clear()
    _RUNS.clear()


def _failure(cpu: str | None, done: subprocess.CompletedProcess) -> str:
    if done.returncode < 0 or done.returncode > 128:
        number = -done.returncode if done.returncode < 0 else done.returncode - 128
        how = f"killed by {signal.Signals(number).name}"
        if number == signal.SIGILL:
            how += " (an instruction this CPU lacks was executed: a dispatch bug)"
    else:
        how = f"exit status {done.returncode}"
    stderr = [line for line in done.stderr.splitlines() if "TCG doesn't support requested feature" not in line]
    return f"probe on {cpu or 'this CPU'}: {how}\n" + "\n".join(stderr[-30:])


def _sigill(done: subprocess.CompletedProcess) -> bool:
    return done.returncode in (-signal.SIGILL, 128 + signal.SIGILL)


def probe(cpu: str | None, *args: str, force: dict[str, str] | None = None) -> dict[str, Any]:
    """The probe's JSON report (one run per CPU, arguments and switches, shared by the tests)."""
    done = _start((cpu, args, tuple(sorted((force or {}).items())))).result()
    if done.returncode != 0:
        pytest.fail(_failure(cpu, done))
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return report


def emulated(model: Model) -> dict[str, Any]:
    return probe(model.cpu)


def forced_here(model: Model) -> dict[str, Any]:
    return probe(None, force=model.force)


@pytest.mark.parametrize("model", [MODELS[0], MODELS[-1]], ids=str)
def test_the_emulated_cpu_traps_what_it_lacks(model):
    """The premise: an instruction the model lacks is SIGILL under qemu (plain code runs: the probe).
    TCG has no AVX-512 whatever the model, so one AVX2 model and the one without AVX show it."""
    _qemu()
    trapped = _run((model.cpu, ("canary", "avx512"), ()))
    assert _sigill(trapped), _failure(model.cpu, trapped)
    avx2 = _run((model.cpu, ("canary", "avx2"), ()))
    if "avx2" in model.lacks:
        assert _sigill(avx2), _failure(model.cpu, avx2)
    else:
        assert avx2.returncode == 0 and avx2.stdout.strip() == "executed avx2", _failure(model.cpu, avx2)


def _expect_choices(report: dict[str, Any], model: Model) -> None:
    assert report["dice"]["chosen"] == {"128": model.dice, "260": model.dice}
    kernel = None if model.paillier == "gmpy2" else model.paillier
    assert report["paillier"]["chosen"] == dict.fromkeys(("n2", "p2", "q2"), kernel)
    assert report["psi"]["chosen"] == model.x25519 and report["psi"]["h2c"] is True
    assert report["clk"]["chosen"] == "c"  # portable C: no variants


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_the_switches_make_this_cpu_choose_as_the_model(model):
    """What the results are compared with: this CPU, with the model's switches, takes the model's paths."""
    _qemu()
    report = forced_here(model)
    assert report["switches"] == model.force
    _expect_choices(report, model)


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_dispatchers_pick_the_best_path_the_emulated_cpu_has(model):
    _qemu()
    report = emulated(model)
    assert report["switches"] == {}  # the automatic choice, nothing forced
    _expect_choices(report, model)
    assert report["dice"]["available"][-1] == model.dice
    assert report["paillier"]["have_avx2mont"] is ("avx2" not in model.lacks)


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_nothing_the_emulated_cpu_lacks_is_offered_or_run(model):
    """No dispatcher lists a path the CPU lacks; asked for explicitly (force_isa, an isa argument, a
    kernel name, the C entry point) each raises, and the probe surviving shows none of them ran."""
    _qemu()
    report = emulated(model)
    dice, paillier, psi = report["dice"], report["paillier"], report["psi"]
    assert "avx512" not in dice["available"] and "ifma" not in psi["available"]
    assert paillier["have_ifma"] is False
    for path in model.lacks:
        assert path not in dice["available"] and path not in psi["available"]
        assert path not in paillier["paths"] and path not in psi["paths"]
        assert not [p for p in dice["paths"] if p.split("+")[0] == path]  # "avx2+bitslice" runs on avx2
    refused = report["refused"]
    expected = {"dice.pairs:avx512", "dice.force_isa:avx512", "x25519:ifma", "hash_to_group_x25519:ifma",
                "MontgomeryTable.build:ifma", "ifma.build_table"}
    if "avx2" in model.lacks:
        expected |= {"dice.pairs:avx2", "dice.force_isa:avx2", "x25519:avx2", "hash_to_group_x25519:avx2",
                     "MontgomeryTable.build:avx2", "avx2.build_table"}
    assert expected <= set(refused)
    assert set(refused.values()) == {"refused"}


@pytest.mark.parametrize("model", MODELS, ids=str)
def test_results_equal_this_cpu_on_the_same_paths(model):
    """Every workload gives, emulated, the digests this CPU gives: on the path the model chose and
    on every other path it offers, each compared with the same path here (numpy, gmpy2,
    libsodium and the Python masker included), and with this CPU's automatic choice."""
    _qemu()
    there, here, unforced = emulated(model), forced_here(model), probe(None)
    for part in ("dice", "paillier", "psi", "clk"):
        assert there[part]["paths"], part
        for path, result in there[part]["paths"].items():
            assert result == here[part]["paths"][path], (part, path)
        assert set(there[part]["paths"].values()) == {there[part]["result"]}, part
        assert there[part]["result"] == here[part]["result"] == unforced[part]["result"], part


def test_the_extensions_alone_on_baseline_x86_64():
    """qemu64 (x86-64 v1: no POPCNT, SSE4 or AVX) runs the portable code of each extension,
    loaded from its file (numpy needs more), with the outputs of this CPU; every other variant is refused."""
    _qemu()
    there, here = probe(BASELINE, "bare"), probe(None, "bare")
    assert there["dice_isas"] == ["generic"]
    assert there["x25519_cpu_isa"] == "portable"
    assert there["ifma_available"] is False and there["avx2mont_available"] is False
    assert there["dice"] == {"generic": here["dice"]["generic"], **dict.fromkeys(("popcnt", "avx2", "avx512", "neon"),
                                                                                 "refused")}
    assert set(here["dice"].values()) - {"refused"} == {here["dice"]["generic"]}  # every variant here agrees
    assert there["x25519"] == {"portable": here["x25519"]["portable"], "avx2": "refused", "ifma": "refused"}
    assert set(here["x25519"].values()) == {here["x25519"]["portable"]}
    assert there["h2c"] == here["h2c"] and there["bloom"] == here["bloom"]
