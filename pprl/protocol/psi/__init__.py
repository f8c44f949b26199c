"""The exact-identifier path: ECDH private set intersection-sum across K platforms, one step per party.

The bureau opens a session (:func:`open_session`); each platform blinds its
own normalised identifiers under a fresh key (:func:`blind`) and re-blinds
every other platform's list once round a ring (:func:`reblind`); the bureau
matches the fully blinded lists and sums the Paillier ciphertexts per person
(:func:`sum_rounds`) into a release the authority decrypts like the CLK
path's; in a revealing session each platform maps the bureau's reveal back to
its own users (:func:`reveal_table`). Sessions in
:mod:`pprl.protocol.psi.session`, the platforms' steps in
:mod:`pprl.protocol.psi.platform`, the bureau's in
:mod:`pprl.protocol.psi.bureau`; the same steps over files in
:mod:`pprl.protocol.files`. Who learns what and the documents: docs/psi.md.
"""

from __future__ import annotations

from pprl.protocol.psi.bureau import (
    IntersectionCounts,
    IntersectionRelease,
    check_psi_release,
    count_rounds,
    entity_id,
    entity_key,
    sum_rounds,
)
from pprl.protocol.psi.platform import (
    Blinded,
    BlindOptions,
    ReblindOptions,
    State,
    VerifiedRound,
    blind,
    check_round,
    open_state,
    reblind,
    reveal_table,
)
from pprl.protocol.psi.session import PROTOCOL, Session, check_session, open_session, reblind_schedule, ring_order

__all__ = [
    "PROTOCOL",
    "BlindOptions",
    "Blinded",
    "IntersectionCounts",
    "IntersectionRelease",
    "ReblindOptions",
    "Session",
    "State",
    "VerifiedRound",
    "blind",
    "check_psi_release",
    "check_round",
    "check_session",
    "count_rounds",
    "entity_id",
    "entity_key",
    "open_session",
    "open_state",
    "reblind",
    "reblind_schedule",
    "reveal_table",
    "ring_order",
    "sum_rounds",
]
