"""Keyed blocking for large linkages: Hamming LSH (bit sampling) on the CLKs.

Block keys are bits of the CLKs at positions drawn from a public per-run seed,
so no plaintext block key exists. The design (:func:`plan_blocking`,
:func:`design_lsh`) is in :mod:`pprl.matching.blocking.design`, candidate
generation (:func:`lsh_candidates`) in :mod:`pprl.matching.blocking.candidates`;
this module re-exports their public names.

Design: docs/design.md#lsh-blocking
"""

from __future__ import annotations

from pprl.matching.blocking.candidates import (
    BlockingReport,
    Window,
    band_collisions,
    band_keys_of_lanes,
    dice_of_codes,
    lsh_candidates,
    lsh_estimates,
    merge_found,
)
from pprl.matching.blocking.design import (
    BITS_RANGE,
    DEFAULT_TARGET,
    MAX_BANDS,
    MIN_PAIRS_FOR_LSH,
    BlockingPlan,
    LSHDesign,
    as_lanes,
    band_positions,
    collision_probability,
    derive_seed,
    design_lsh,
    plan_blocking,
    popcount_rows,
)

__all__ = [
    "BlockingPlan",
    "BlockingReport",
    "LSHDesign",
    "BITS_RANGE",
    "DEFAULT_TARGET",
    "MAX_BANDS",
    "MIN_PAIRS_FOR_LSH",
    "Window",
    "as_lanes",
    "band_collisions",
    "band_keys_of_lanes",
    "band_positions",
    "collision_probability",
    "derive_seed",
    "design_lsh",
    "dice_of_codes",
    "lsh_candidates",
    "lsh_estimates",
    "merge_found",
    "plan_blocking",
    "popcount_rows",
]
