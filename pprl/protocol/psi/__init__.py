"""The exact-identifier path: ECDH private set intersection-sum across K platforms, one step per party.

Roles are pprl's usual ones. The bureau opens a session and relays files;
each platform blinds its own normalised identifiers under a fresh session key
and re-blinds every other platform's list once; the bureau matches the fully
blinded lists and sums Paillier ciphertexts per matched person; the authority
decrypts the release with the unchanged ``pprl decrypt``.

Steps and documents (all signed)
    1. ``open_session`` (bureau) -> ``psi-session``: random session id, the
       platforms in ring order (their public cards), identifier kind,
       whether platforms get their own intersection members back.
    2. ``blind`` (each platform) -> ``psi-round`` with hops
       [me]: its identifiers normalised, hashed to the group and raised to
       its key k_p, shuffled, each with its Paillier-encrypted scores
       (2-decimal fixed point, every column packed into one ciphertext per
       record with a count slot, exactly as ``submit`` packs them); plus a 0600 ``psi-state``
       holding k_p that never leaves the platform.
    3. ``reblind`` (each platform, K-1 times): the bureau hands
       platform j the list of origin j-s at step s = 1..K-1 (a ring:
       origin i visits i+1, i+2, ... in session order). Platform j checks it
       is the next hop, applies k_j to every element, reshuffles elements
       with their ciphertexts (and tokens) attached, signs.
    4. ``sum_rounds`` (bureau): takes the K complete lists
       (every element is now H(x)^(k_1···k_K)), groups equal elements, keeps
       persons on >= ``min_contributors`` platforms, sums their packed
       ciphertexts, and writes a ``release`` in exactly the format
       the CLK path's aggregate step writes, so ``pprl decrypt``
       decrypts and audit-logs it unchanged. ``linkage_hash`` there is the
       hash of this PSI transcript (session hash + the K final lists' hashes).
       Entity ids are opaque: an HMAC of the fully blinded element under a
       key only the bureau can derive (so no platform can compute them).

Who learns what (honest-but-curious, non-colluding parties)
    - A platform learns the other platforms' list sizes, nothing else: every
      list it sees is blinded under at least one key it does not hold, and
      the ring order means no two lists it handles ever share the same set of
      keys, so it cannot compare them; its own list never comes back to it.
    - The bureau learns list sizes and, after the last hop, which platforms
      hold each matched person (counts per overlap pattern); never an
      identifier (it holds no key) nor a plaintext score (no Paillier key).
    - The authority learns the released per-person sums, as in the CLK path.
    - With ``reveal_intersection`` in the session (visible to every platform
      before it blinds), each platform also learns which of its own users
      were released, with their entity ids and how many platforms hold
      them, through a bureau-signed ``psi-reveal`` only it can map back
      (random tokens; map in its state). Not which other platforms: entity
      ids are keyed by the bureau, so the fully blinded lists a platform
      finalised itself cannot be matched against them.
    Ciphertexts ride unchanged with their element unless a hop passes
    ``rerandomize`` (one fixed-base Paillier exponentiation per element): the
    bureau could otherwise follow an element through the ring, which tells it
    nothing alone but would tell a bureau colluding with the origin platform
    which of that platform's users matched.

No raw identifier appears in any document that leaves a platform, nor in any
error message: rows are named by number, never by value.

Code: sessions in :mod:`pprl.protocol.psi.session`, the platforms' steps in
:mod:`pprl.protocol.psi.platform`, the bureau's in :mod:`pprl.protocol.psi.bureau`;
the same steps over files in :mod:`pprl.protocol.files`. Design: docs/psi.md.
"""

from __future__ import annotations

from pprl.protocol.psi.bureau import (
    IntersectionCounts,
    IntersectionRelease,
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
