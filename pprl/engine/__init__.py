"""Where the heavy steps run: in this process (the default) or on a Dask cluster (:mod:`pprl.engine.dask_engine`).

An engine gives the same results as the in-process code it replaces; only
where the work runs changes. Protocol steps take an optional ``engine`` (an
object with the methods of :class:`Engine`); without one they run here.
``--engine dask`` (with ``--scheduler ADDRESS`` for a running cluster, or a
LocalCluster on this machine without one) is the command-line way in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np

    from pprl.crypto.paillier.packing import PackingSpec
    from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
    from pprl.crypto.psi import PSIKey
    from pprl.encoding.clk import EncodeResult
    from pprl.encoding.schema import Schema
    from pprl.engine.dask_engine import DaskEngine
    from pprl.matching.blocking import BlockingReport
    from pprl.matching.dice.similarity import Candidates

__all__ = ["ENGINES", "DaskEngine", "ElementJoin", "Engine"]

#: The engines the commands accept.
ENGINES = ("local", "dask")


@dataclass(frozen=True)
class ElementJoin:
    """The join of several lists of 32-byte elements (the PSI bureau's match), as in-process.

    Attributes:
        repeats: the positions of the lists that hold an element twice (the bureau refuses the first).
        groups: per element held by two or more lists, the positions of its holders in the lists
            concatenated, ascending; the groups ordered by element (bytewise).
        elements: those elements, in the same order.
    """

    repeats: tuple[int, ...]
    groups: list[list[int]]
    elements: list[bytes]


class Engine(Protocol):
    """What a protocol step asks of an engine (each result equal to the in-process function's)."""

    def lsh_candidates(self, datasets: Sequence[np.ndarray], threshold: float, *, seed: bytes, bands: int,
                       bits_per_band: int, estimated_pair_completeness: float | None = None,
                       pair_completeness_at_threshold: float | None = None) -> tuple[Candidates, BlockingReport]:
        """:func:`pprl.matching.blocking.lsh_candidates` with a given design."""
        ...

    def find_candidates(self, datasets: Sequence[np.ndarray], threshold: float) -> Candidates:
        """:func:`pprl.matching.dice.similarity.find_candidates` (every pair)."""
        ...

    def encode(self, frame: object, schema: Schema, secret: bytes, *, run: str | None = None) -> EncodeResult:
        """:func:`pprl.encoding.clk.encode_with_report` (the same CLKs and counts)."""
        ...

    def encrypt_packed(self, key: PaillierPublicKey, matrix: np.ndarray, spec: PackingSpec, *,
                       method: str | None = None) -> EncryptedVector:
        """:func:`pprl.crypto.paillier.packing.encrypt_packed` (the same packing, fresh randomness)."""
        ...

    def psi_blind(self, key: PSIKey, identifiers: Sequence[str | bytes], domain: bytes) -> bytes:
        """:func:`pprl.crypto.psi.blind` (the same elements)."""
        ...

    def psi_reblind(self, key: PSIKey, elements: bytes, *, what: str = "elements") -> bytes:
        """:func:`pprl.crypto.psi.reblind` (the same elements)."""
        ...

    def sum_records(self, enc: EncryptedVector, groups: Sequence[Sequence[int]],
                    spec: PackingSpec) -> EncryptedVector:
        """:func:`pprl.crypto.paillier.packing_records.sum_records`."""
        ...

    def psi_join(self, lists: Sequence[bytes]) -> ElementJoin:
        """The join of fully blinded PSI lists (:func:`pprl.protocol.psi.match_rounds`'s)."""
        ...


def __getattr__(name: str) -> object:
    """``DaskEngine`` on first use: importing :mod:`pprl.engine` loads neither numpy nor dask."""
    if name == "DaskEngine":
        from pprl.engine.dask_engine import DaskEngine

        return DaskEngine
    raise AttributeError(f"module 'pprl.engine' has no attribute {name!r}")
