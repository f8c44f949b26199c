"""Loading the anchor libraries the benchmarks compare against (not a benchmark itself).

anonlink 0.15 does ``import pkg_resources`` only for its own version number;
recent setuptools no longer ships that module, so a stand-in is put in place
for the import and removed afterwards.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
import warnings
from typing import Any

import numpy as np

__all__ = ["load_anonlink", "optional_anonlink", "to_bitarrays"]


def optional_anonlink() -> Any | None:
    """anonlink with its candidate-generation, similarity and solving modules, or None if absent."""
    if importlib.util.find_spec("anonlink") is None:
        return None
    added = False
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.get_distribution = lambda name: types.SimpleNamespace(  # type: ignore[attr-defined]
            version=importlib.metadata.version(name)
        )
        sys.modules["pkg_resources"] = shim
        added = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module("anonlink")
            for name in ("candidate_generation", "similarities", "solving"):
                importlib.import_module(f"anonlink.{name}")
    finally:
        if added:
            del sys.modules["pkg_resources"]
    return module


def load_anonlink() -> Any:
    """anonlink, or exit with the install hint."""
    module = optional_anonlink()
    if module is None:
        raise SystemExit("anonlink is not installed: pip install 'pprl[bench]'")
    return module


def to_bitarrays(x: np.ndarray) -> list:
    """Rows as big-endian bitarrays (clkhash's layout), for anonlink."""
    from bitarray import bitarray

    out = []
    for row in x:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        out.append(ba)
    return out


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo), for the figures' headers."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def utc_stamp(days: float) -> str:
    """An ISO 8601 UTC time ``days`` from now, to the second (consent windows)."""
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat(timespec="seconds")

