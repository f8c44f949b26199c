"""How pprl loads its optional C extensions: one rule for all of them.

Each extension (``pprl.matching.dice._dice``, ``pprl.crypto._h2c``,
``pprl.crypto._montexp``, ``pprl.crypto._avx2exp``, ``pprl.encoding._bloom``) has one
loader module (:mod:`pprl.matching.dice.native`, :mod:`pprl.crypto.hash_to_curve`,
:mod:`pprl.crypto.montexp` for both Montgomery kernels, :mod:`pprl.encoding.bloom`) that

- imports it once with :func:`load` (None when it was not built) and exposes
  ``HAVE_<X>``: built and usable on this CPU, fixed at import;
- honours one environment switch ``PPRL_NO_<X>`` through :func:`disabled`,
  read at every call, so tests and benchmarks can flip it in-process. Set to
  anything but ``""`` or ``"0"`` it sends the work to the pure-Python / numpy /
  gmpy2 path, which gives identical results.

- ``_dice``: ``HAVE_DICE``, switch ``PPRL_NO_DICE`` (alias ``PPRL_NO_NATIVE``), ``dice_enabled()``;
- ``_h2c``: ``HAVE_H2C``, ``PPRL_NO_H2C``, ``h2c_enabled()``; its batched X25519 ladders ``HAVE_X25519``,
  ``PPRL_NO_X25519`` (libsodium instead), the AVX2 and IFMA ladders off with ``PPRL_NO_AVX2`` / ``PPRL_NO_IFMA``;
- ``_montexp``: ``HAVE_IFMA``, ``PPRL_NO_IFMA``, ``ifma_enabled()``;
- ``_avx2exp``: ``HAVE_AVX2MONT``, ``PPRL_NO_AVX2MONT`` (alias ``PPRL_NO_AVX2``), ``avx2_enabled()``;
- ``_bloom``: ``HAVE_BLOOM``, ``PPRL_NO_BLOOM``, ``bloom_enabled()``.

Within ``_dice``, ``PPRL_NO_POPCNT``, ``PPRL_NO_AVX2``, ``PPRL_NO_AVX512`` and ``PPRL_NO_NEON`` keep the
automatic choice off one variant, and ``PPRL_NO_BITSLICE`` turns off the bit-sliced filter (the row-by-row
kernel for every job) (:mod:`pprl.matching.dice.native`).

CPU features are read from CPUID by the extensions themselves (``pprl/_cpu.h``), not with
``__builtin_cpu_supports``, which reports nothing on Hygon and Zhaoxin CPUs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

__all__ = ["disabled", "load"]


def disabled(switch: str, *aliases: str) -> bool:
    """True when the environment variable ``switch`` (or one of ``aliases``) is set and not ``""``/``"0"``.

    Read from ``os.environ`` at every call; surrounding whitespace is ignored.
    """
    return any(os.environ.get(name, "").strip() not in ("", "0") for name in (switch, *aliases))


def load(module_name: str) -> ModuleType | None:
    """Import the C extension ``module_name``; None when it is not built (or cannot be imported here).

    The switch is not consulted: an extension is imported whenever it exists, so
    ``HAVE_<X>`` says what the build provides and :func:`disabled` decides per call.
    """
    try:
        return importlib.import_module(module_name)
    except ImportError:
        return None
