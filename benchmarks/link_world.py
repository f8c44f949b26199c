"""Shared set-up for bench_link.py, bench_quality.py and bench_scale.py (not a benchmark itself).

Builds what the bureau receives, with pprl's own parties API as the platforms
would run it: identities, a linkage secret agreed among the platforms, and
one signed, linkage-only submission per platform (no Paillier: ``scores=()``),
plus each platform's token map.  Also loads anonlink (with the
``pkg_resources`` stand-in anonlink 0.15 needs) and converts CLKs to the
bitarrays anonlink and clkhash use.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from anchors import load_anonlink, to_bitarrays  # noqa: E402,F401  (re-exported)

from pprl.documents import Card
from pprl.protocol.files import combine_secrets, init_party, load_card, load_key, load_secret, share_secret, submit
from pprl.protocol.identity import PartyKey

__all__ = [
    "World",
    "build_world",
    "load_anonlink",
    "median_time",
    "peak_rss_gib",
    "to_bitarrays",
    "truth_of",
]


@dataclass(frozen=True)
class World:
    """The bureau's inputs, and what the platforms keep."""

    root: Path
    bureau: PartyKey
    cards: list[Card]
    submissions: list[Path]
    maps: list[Path]
    names: list[str]
    secret: bytes


def build_world(
    root: str | os.PathLike[str],
    frames: Mapping[str, pd.DataFrame],
    schema: str | os.PathLike[str],
    id_column: str,
) -> World:
    """Identities, a shared linkage secret and one linkage-only submission per platform in ``root``."""
    root = Path(root)
    names = list(frames)
    keys_dir = root / "keys"
    for name in names:
        init_party(name, "platform", keys_dir, force=True)
    init_party("bureau", "bureau", keys_dir, force=True)
    keys = {n: load_key(keys_dir / f"{n}.key") for n in [*names, "bureau"]}
    cards = {n: load_card(keys_dir / f"{n}.card.json") for n in keys}
    shares = [
        share_secret(keys[n], [cards[p] for p in names if p != n], root / n / f"{n}.share.json") for n in names
    ]
    for n in names:
        combine_secrets(keys[n], shares, root / n / f"{n}.secret")
    subs, maps = [], []
    for n in names:
        result = submit(keys[n], schema, root / n / f"{n}.secret", frames[n], id_column, root / n / f"{n}.sub.json")
        subs.append(result.path)
        maps.append(result.map_path)
    secret = load_secret(root / names[0] / f"{names[0]}.secret").secret
    return World(root, keys["bureau"], [cards[n] for n in names], subs, maps, names, secret)


def truth_of(population_truth: pd.DataFrame) -> dict[tuple[str, str], str]:
    """(platform, user_id) -> person from pprl.sim.synth's truth frame."""
    return {
        (p, u): person for p, u, person in population_truth[["platform", "user_id", "person"]].itertuples(index=False)
    }


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``repeats`` calls, all times, and the last result."""
    times = []
    result = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, result


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
