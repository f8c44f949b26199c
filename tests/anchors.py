"""Importing the anchor libraries the tests compare against.

anonlink 0.15 does ``import pkg_resources`` only for its own version number;
recent setuptools no longer ships that module, so a stand-in is put in place
for the import and removed afterwards. Tests skip when an anchor is absent.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
import warnings

import pytest

__all__ = ["load_anonlink", "to_bitarrays"]


def load_anonlink(*submodules: str):
    """Import anonlink and the given submodules (e.g. "solving"); skip the test if absent."""
    if importlib.util.find_spec("anonlink") is None:
        pytest.skip("anonlink is not installed")
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
            for name in submodules:
                importlib.import_module(f"anonlink.{name}")
    finally:
        if added:
            del sys.modules["pkg_resources"]
    return module


def to_bitarrays(x) -> list:
    """Rows of a uint8 CLK array as big-endian bitarrays (clkhash's layout), for anonlink."""
    from bitarray import bitarray

    out = []
    for row in x:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        out.append(ba)
    return out
