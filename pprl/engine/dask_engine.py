"""pprl's heavy steps on a Dask cluster (dask.distributed): linkage candidates, and homomorphic sums per entity.

The client (this process) holds the encodings, as it does in-process; it
sends each dataset to every worker once (as transposed 64-bit lanes and
popcounts), then runs one task per piece of work:

- **LSH blocking**: a task per group of bands. It computes the group's band
  keys straight from the lanes, finds the pairs of records that share a key,
  and keeps those whose exact Dice reaches the threshold (only those come
  back). The client merges the groups' pairs, keeping a pair found in
  several groups once, and orders them as the in-process search does.
- **No blocking**: a task per block of rows of a dataset against each later
  dataset, through the native Dice kernel (one thread a task); the client
  shifts the block's row numbers and orders the merged pairs.

- **Encoding and encryption** (``submit``): a task per partition of rows
  encodes it (CLKs, missing/invalid counts) or encrypts its packed scores;
  the CLKs equal the in-process ones, the ciphertexts decrypt to the same
  values (encryption is randomised). The workers are sent the linkage
  secret: run them in the platform's own network, and configure Dask's TLS
  (``distributed.security.Security``) beyond one machine.
- **PSI blinding** (``pprl psi blind`` / ``reblind``): a task per partition of identifiers (hashed to the
  group and raised to the platform's key) or of a peer's elements (raised to it); the elements equal the
  in-process ones byte for byte. The workers are sent the platform's PSI key (and, for ``blind``, the
  identifiers): the same precautions as for ``submit``.
- **Sums per entity** (``aggregate``): a task per partition of entities,
  sent only the ciphertexts its entities' records are in; it sums them as
  :func:`~pprl.crypto.paillier.packing_records.sum_records` does, and the
  client puts the partitions' sums back in entity order.

The candidates (pairs, similarities, order) are exactly those of the
in-process :func:`~pprl.matching.blocking.candidates.lsh_candidates` and
:func:`~pprl.matching.dice.similarity.find_candidates`. One figure differs:
the blocking report's ``comparisons`` counts each colliding pair once per
task here and once per batch in-process (a lower bound on the reduction
ratio either way).

Start one with :meth:`DaskEngine.start` (a running scheduler's address, or a
LocalCluster of this machine), use it as a context manager, and pass it to
:func:`pprl.protocol.link.search_candidates` (``engine=``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pprl.crypto.paillier.packing import PackingSpec, encrypt_packed
from pprl.crypto.paillier.packing_records import sum_records
from pprl.crypto.paillier.vector import EncryptedVector, PaillierPublicKey
from pprl.crypto.psi import ELEMENT_BYTES, PSIKey, check_elements
from pprl.crypto.psi import blind as psi_blind
from pprl.crypto.psi import reblind as psi_reblind
from pprl.encoding.clk import EncodeReport, EncodeResult, FeatureReport, encode_with_report
from pprl.encoding.schema import Schema
from pprl.errors import DataValidationError, OptionError
from pprl.matching.blocking import (
    BlockingReport,
    Window,
    as_lanes,
    band_collisions,
    band_keys_of_lanes,
    band_positions,
    dice_of_codes,
    merge_found,
    popcount_rows,
)
from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.thresholds import check_datasets

__all__ = ["DaskEngine", "BANDS_PER_TASK", "ENTITIES_PER_TASK", "RECORDS_PER_TASK", "ROWS_PER_TASK"]

log = logging.getLogger("pprl.engine")

#: Bands per LSH task: a task holds the keys of its bands for every record (4 bytes a band and record).
BANDS_PER_TASK = 4
#: Rows of the first dataset per task without blocking.
ROWS_PER_TASK = 20_000
#: Records per task of encoding or encryption.
RECORDS_PER_TASK = 20_000
#: Entities per task of homomorphic sums (each entity's records: a few ciphertexts of 512 bytes at 2048 bits).
ENTITIES_PER_TASK = 20_000


@dataclass
class DaskEngine:
    """A connection to a Dask cluster that runs pprl's comparison tasks."""

    client: Any
    cluster: Any = None
    bands_per_task: int = BANDS_PER_TASK
    rows_per_task: int = ROWS_PER_TASK
    entities_per_task: int = ENTITIES_PER_TASK
    records_per_task: int = RECORDS_PER_TASK
    progress: bool = False
    #: Per step run (``"blocking"``, ``"summing"``, ...): its task count, the workers and its wall time from the
    #: first task submitted to the last result (the figures of a cost model: seconds x workers / tasks per task).
    steps: list[dict[str, Any]] = field(default_factory=list)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def start(cls, scheduler: str | None = None, *, workers: int = 2, threads_per_worker: int = 1,
              memory_limit: str | None = None, progress: bool = False, timeout: float = 20.0,
              **kwargs: Any) -> DaskEngine:
        """Connect to the scheduler at ``scheduler`` (``tcp://host:8786``), or start a LocalCluster of
        ``workers`` processes on this machine (its dashboard on a free local port). ``timeout``: seconds to keep
        trying to reach the scheduler."""
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise OptionError("--engine dask needs dask.distributed: pip install 'pprl[dask]'", "engine") from None
        if scheduler:
            try:
                client = Client(scheduler, timeout=f"{timeout}s", set_as_default=False)
            except OSError as exc:
                raise OptionError(f"cannot reach the Dask scheduler at {scheduler}: {exc} (start one with "
                                  "`dask scheduler`, or leave --scheduler out for a cluster on this machine)",
                                  "scheduler") from None
            return cls(client, None, progress=progress, **kwargs)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise OptionError(f"{{workers}} must be a positive number of worker processes, got {workers!r}", "workers")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker, processes=True,
                               dashboard_address="127.0.0.1:0", host="127.0.0.1",
                               memory_limit=memory_limit or "auto", silence_logs=logging.WARNING)
        return cls(Client(cluster, set_as_default=False), cluster, progress=progress, **kwargs)

    @property
    def dashboard(self) -> str:
        """The cluster's dashboard address (watch the tasks there)."""
        return str(self.client.dashboard_link or "")

    @property
    def workers(self) -> int:
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- tasks ---------------------------------------------------------------------------------------

    def _gather(self, futures: list[Any], what: str, started: float) -> list[Any]:
        """The tasks' results, in order; the step's task count and wall time go to :attr:`steps`."""
        if self.progress and futures:
            from distributed import progress

            print(f"{what}: {len(futures)} tasks on {self.workers} workers (dashboard {self.dashboard})",
                  file=sys.stderr)
            progress(futures, notebook=False)
            print(file=sys.stderr)
        results = list(self.client.gather(futures))
        self.steps.append({"step": what, "tasks": len(futures), "workers": self.workers,
                           "seconds": time.perf_counter() - started})
        return results

    def lsh_candidates(self, datasets: Sequence[np.ndarray], threshold: float, *, seed: bytes, bands: int,
                       bits_per_band: int, estimated_pair_completeness: float | None = None,
                       pair_completeness_at_threshold: float | None = None,
                       window: Window = "anonlink") -> tuple[Candidates, BlockingReport]:
        """:func:`~pprl.matching.blocking.candidates.lsh_candidates` with a given design, on the cluster."""
        arrays = check_datasets(datasets)
        sizes = [int(d.shape[0]) for d in arrays]
        pairs_total = sum(a * b for a, b in itertools.combinations(sizes, 2))
        length = arrays[0].shape[1] * 8 if arrays else 0

        def report(comparisons: int) -> BlockingReport:
            ratio = 1.0 - comparisons / pairs_total if pairs_total else 1.0
            return BlockingReport("lsh", int(bands), int(bits_per_band), comparisons, int(pairs_total), ratio,
                                  bytes(seed).hex(), estimated_pair_completeness, pair_completeness_at_threshold)

        if pairs_total == 0 or length == 0:
            return Candidates.empty(), report(0)
        positions = band_positions(bytes(seed), length, int(bands), int(bits_per_band))
        with self._shared(arrays) as (lanes_t, counts):
            started = time.perf_counter()
            futures = [self.client.submit(_lsh_task, lanes_t, counts, sizes, positions[g:g + self.bands_per_task],
                                          float(threshold), window, pure=False)
                       for g in range(0, int(bands), self.bands_per_task)]
            results = self._gather(futures, "blocking", started)
        found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            p: [] for p in itertools.combinations(range(len(arrays)), 2)}
        comparisons = 0
        for part, compared in results:
            comparisons += compared
            for pair, triple in part.items():
                found[pair].append(triple)
        return merge_found(found, sizes), report(comparisons)

    def find_candidates(self, datasets: Sequence[np.ndarray], threshold: float, *,
                        window: Window = "anonlink") -> Candidates:
        """:func:`~pprl.matching.dice.similarity.find_candidates` (every pair, no blocking), on the cluster."""
        arrays = check_datasets(datasets)
        sizes = [int(d.shape[0]) for d in arrays]
        with contextlib.ExitStack() as stack:
            shared = [self.client.scatter(d, broadcast=True, hash=False) for d in arrays]
            stack.callback(lambda: self.client.cancel(shared))
            started = time.perf_counter()
            futures = []
            for d, e in itertools.combinations(range(len(arrays)), 2):
                if not sizes[d] or not sizes[e]:
                    continue
                for r0 in range(0, sizes[d], self.rows_per_task):
                    futures.append(self.client.submit(_block_task, shared[d], shared[e], d, e, r0,
                                                      r0 + self.rows_per_task, float(threshold), window, pure=False))
            parts = self._gather(futures, "comparing", started)
        parts = [p for p in parts if p[0].shape[0]]
        if not parts:
            return Candidates.empty()
        sim = np.concatenate([p[0] for p in parts])
        dset = np.concatenate([p[1] for p in parts])
        rec = np.concatenate([p[2] for p in parts])
        order = np.lexsort((rec[:, 1], rec[:, 0], dset[:, 1], dset[:, 0], -sim))
        return Candidates(sim[order], dset[order], rec[order])

    def encode(self, frame: Any, schema: Schema, secret: bytes, *, run: str | None = None) -> EncodeResult:
        """:func:`~pprl.encoding.clk.encode_with_report` on the cluster: the same CLKs, the counts added up."""
        n = len(frame)
        started = time.perf_counter()
        futures = [self.client.submit(_encode_task, frame.iloc[r0:r0 + self.records_per_task], schema, secret, run,
                                      pure=False)
                   for r0 in range(0, n, self.records_per_task)]
        parts = self._gather(futures, "encoding", started)
        if not parts:
            return encode_with_report(frame, schema, secret, run=run, workers=1)
        clks = np.concatenate([part.clks for part in parts])
        features = []
        for i, first in enumerate(parts[0].report.features):
            features.append(FeatureReport(first.identifier, first.column, first.normaliser,
                                          sum(part.report.features[i].missing for part in parts),
                                          sum(part.report.features[i].invalid for part in parts)))
        return EncodeResult(clks, EncodeReport(n, tuple(features)))

    def encrypt_packed(self, key: PaillierPublicKey, matrix: np.ndarray, spec: PackingSpec, *,
                       method: str | None = None) -> EncryptedVector:
        """:func:`~pprl.crypto.paillier.packing.encrypt_packed` on the cluster (partitions of whole ciphertexts:
        the same packing; fresh randomness, so other ciphertexts of the same values)."""
        r = spec.records_per_ciphertext
        step = max(r, self.records_per_task - self.records_per_task % r)
        started = time.perf_counter()
        futures = [self.client.submit(_encrypt_task, key.to_dict(), matrix[r0:r0 + step], spec.to_dict(), method,
                                      pure=False)
                   for r0 in range(0, len(matrix), step)]
        parts = self._gather(futures, "encrypting", started)
        return EncryptedVector.from_bytes(key, b"".join(parts))

    def psi_blind(self, key: PSIKey, identifiers: Sequence[str | bytes], domain: bytes) -> bytes:
        """:func:`pprl.crypto.psi.blind` on the cluster: the same elements, in input order."""
        started = time.perf_counter()
        futures = [self.client.submit(_blind_task, key.secret, list(identifiers[r0:r0 + self.records_per_task]),
                                      domain, pure=False)
                   for r0 in range(0, len(identifiers), self.records_per_task)]
        try:
            return b"".join(self._gather(futures, "blinding", started))
        except DataValidationError:  # a refused identifier: refused here, with its position in the whole list
            return psi_blind(key, identifiers, domain, workers=1)

    def psi_reblind(self, key: PSIKey, elements: bytes, *, what: str = "elements") -> bytes:
        """:func:`pprl.crypto.psi.reblind` on the cluster: the same elements, in order."""
        check_elements(elements, what)
        step = self.records_per_task * ELEMENT_BYTES
        started = time.perf_counter()
        futures = [self.client.submit(_reblind_task, key.secret, bytes(elements[o:o + step]), pure=False)
                   for o in range(0, len(elements), step)]
        try:
            return b"".join(self._gather(futures, "re-blinding", started))
        except DataValidationError:  # an element of small order: refused here, with its position in the whole list
            return psi_reblind(key, elements, workers=1, what=what)

    def sum_records(self, enc: EncryptedVector, groups: Sequence[Sequence[int]], spec: PackingSpec) -> EncryptedVector:
        """:func:`~pprl.crypto.paillier.packing_records.sum_records` on the cluster: one ciphertext per group of
        record addresses, equal to the in-process sums."""
        r = spec.records_per_ciphertext
        limit = len(enc) * r
        key = enc.public_key
        cts = enc.to_bytes()
        width = key.ciphertext_bytes
        started = time.perf_counter()
        futures = []
        for g0 in range(0, len(groups), self.entities_per_task):
            part = groups[g0:g0 + self.entities_per_task]
            needed: dict[int, int] = {}
            local_groups: list[list[int]] = []
            for group in part:
                row = []
                for a in group:
                    a = int(a)
                    if not 0 <= a < limit:
                        raise DataValidationError(f"group {g0 + len(local_groups) + 1} has a record address "
                                                  f"outside 0..{limit - 1}")
                    slot = needed.setdefault(a // r, len(needed))
                    row.append(slot * r + a % r)
                local_groups.append(row)
            blob = b"".join(cts[c * width:(c + 1) * width] for c in needed)
            futures.append(self.client.submit(_sum_task, key.to_dict(), blob, local_groups, spec.to_dict(),
                                              pure=False))
        return EncryptedVector.from_bytes(key, b"".join(self._gather(futures, "summing", started)))

    @contextlib.contextmanager
    def _shared(self, arrays: list[np.ndarray]) -> Iterator[tuple[list[Any], list[Any]]]:
        """Each dataset's transposed lanes and popcounts on every worker, for the tasks of one search."""
        lanes = [as_lanes(d) for d in arrays]
        lanes_t = [self.client.scatter(np.ascontiguousarray(x.T), broadcast=True, hash=False) for x in lanes]
        counts = [self.client.scatter(popcount_rows(x), broadcast=True, hash=False) for x in lanes]
        try:
            yield lanes_t, counts
        finally:
            self.client.cancel(lanes_t + counts)


def _lsh_task(lanes_t: list[np.ndarray], counts: list[np.ndarray], sizes: list[int], positions: np.ndarray,
              threshold: float, window: Window
              ) -> tuple[dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """One group of bands: the pairs sharing a band key whose Dice reaches ``threshold``, and how many pairs
    were compared."""
    active = [np.flatnonzero(c > 0) for c in counts]  # records with no bit set are never candidates
    keys = [band_keys_of_lanes(lt, positions, rows=a) for lt, a in zip(lanes_t, active)]
    pairs = list(itertools.combinations(range(len(sizes)), 2))
    collected: dict[tuple[int, int], list[np.ndarray]] = {p: [] for p in pairs}
    for k in range(positions.shape[0]):
        for pair, codes in band_collisions([kd[k] for kd in keys], active, sizes, pairs).items():
            collected[pair].append(codes)
    out, compared = {}, 0
    for pair, parts in collected.items():
        if not parts:
            continue
        codes = np.sort(np.concatenate(parts))  # unique by sorting (numpy's hash-based unique is far slower)
        codes = codes[np.r_[True, codes[1:] != codes[:-1]]] if codes.shape[0] else codes
        compared += int(codes.shape[0])
        out[pair] = dice_of_codes(lanes_t, counts, sizes, pair, codes, threshold, window)
    return out, compared


def _encode_task(frame: Any, schema: Schema, secret: bytes, run: str | None) -> EncodeResult:
    return encode_with_report(frame, schema, secret, run=run, workers=1)


def _encrypt_task(key: dict[str, Any], matrix: np.ndarray, spec: dict[str, Any], method: str | None) -> bytes:
    public = PaillierPublicKey.from_dict(key, allow_small=True)  # the client's own key object, checked there
    return encrypt_packed(public, matrix, PackingSpec.from_dict(spec), workers=1, method=method).to_bytes()


def _blind_task(secret: bytes, identifiers: list[str | bytes], domain: bytes) -> bytes:
    return psi_blind(PSIKey(secret), identifiers, domain, workers=1)


def _reblind_task(secret: bytes, elements: bytes) -> bytes:
    return psi_reblind(PSIKey(secret), elements, workers=1)


def _sum_task(key: dict[str, Any], blob: bytes, groups: list[list[int]], spec: dict[str, Any]) -> bytes:
    """One partition of entities: their sums, as bytes (the ciphertexts it was sent, renumbered from 0)."""
    public = PaillierPublicKey.from_dict(key, allow_small=True)  # the client's own key object, checked there
    return sum_records(EncryptedVector.from_bytes(public, blob), groups, PackingSpec.from_dict(spec),
                       workers=1).to_bytes()


def _block_task(a: np.ndarray, b: np.ndarray, d: int, e: int, r0: int, r1: int, threshold: float,
                window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``r0:r1`` of dataset ``d`` against dataset ``e``: (similarity, datasets, records) in whole-dataset
    numbering."""
    found = find_candidates([a[r0:r1], b], threshold, window=window, workers=1)
    n = found.similarity.shape[0]
    rec = found.record.astype(np.int64, copy=True)
    rec[:, 0] += r0
    dset = np.broadcast_to(np.array([d, e], np.int64), (n, 2)).copy()
    return found.similarity, dset, rec
