"""Keyed blocking for large linkages: Hamming LSH (bit sampling) on the CLKs.

Why: comparing every record with every record costs ``n_a * n_b`` Dice
computations.  Blocking compares only the pairs that agree on all the
sampled bits of at least one *band*; a band is ``bits_per_band`` positions of
the CLK, and there are ``bands`` of them.  A pair whose encodings differ in
``h`` of their ``l`` bits agrees on a band of ``b`` distinct random positions
with probability ``q = C(l - h, b) / C(l, b)`` (about ``(1 - h/l) ** b``), and
is found with probability ``1 - (1 - q) ** L``.  For a Dice similarity ``s``
between encodings with popcounts ``|A|``, ``|B|``, ``h = (|A| + |B|)(1 - s)``,
so similar pairs are found with high probability and dissimilar ones rarely.

Why this is keyed and not plaintext blocking: block keys are bits *of the
CLKs*, never values of a field (a surname, a birth year), so no plaintext
block key exists anywhere.  The bit positions are drawn from a public
per-run seed (:func:`derive_seed`, by default the hash of the submissions
being linked) because the bureau must be able to draw them and it does not
hold the linkage secret.  That is sound: a band key is a function of one CLK
that the bureau already holds in full, so blocking tells the bureau nothing
it could not compute itself; the CLKs remain the only thing that leaks, and
their protection is the linkage secret, as before.  (Platforms could instead
submit a keyed blocking signature of their own; not needed for that reason.)

The design -- bands, bits per band, their positions from a public seed,
and whether blocking pays at all (:func:`plan_blocking`) -- is in
:mod:`pprl.matching.blocking.design`; candidate generation over the blocks
(:func:`lsh_candidates`: exact Dice of the pairs that share a band, ordered
like :func:`~pprl.matching.dice.similarity.find_candidates`, so LSH output is
always a subset of brute force) is in :mod:`pprl.matching.blocking.candidates`.
This module re-exports their public names.
"""

from __future__ import annotations

from pprl.matching.blocking.candidates import BlockingReport, lsh_candidates
from pprl.matching.blocking.design import (
    BITS_RANGE,
    DEFAULT_TARGET,
    MAX_BANDS,
    MIN_PAIRS_FOR_LSH,
    BlockingPlan,
    LSHDesign,
    band_positions,
    collision_probability,
    derive_seed,
    design_lsh,
    plan_blocking,
)

__all__ = [
    "BlockingPlan",
    "BlockingReport",
    "LSHDesign",
    "BITS_RANGE",
    "DEFAULT_TARGET",
    "MAX_BANDS",
    "MIN_PAIRS_FOR_LSH",
    "band_positions",
    "collision_probability",
    "derive_seed",
    "design_lsh",
    "lsh_candidates",
    "plan_blocking",
]
