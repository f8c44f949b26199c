"""pprl's heavy steps on a Dask cluster (dask.distributed): linkage candidates, and homomorphic sums per entity.

The client (this process) holds the encodings, as it does in-process; it
sends each dataset to every worker once (as transposed 64-bit lanes and
popcounts), then runs one task per piece of work:

- **LSH blocking**: a task per group of bands. It computes the group's band
  keys straight from the lanes, finds the pairs of records that share a key,
  and keeps those whose exact Dice reaches the threshold (only those come
  back). The client merges the groups' pairs, keeping a pair found in
  several groups once, and orders them as the in-process search does.
  With ``lsh_partition="bucket"`` no dataset is broadcast: routing tasks per
  block of rows send each row to the buckets of its band keys (a hash of band
  and key), and a task per group of bands and bucket compares only the rows
  it was sent.
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
- **PSI join** (``pprl psi count`` / ``aggregate``): a task per partition of
  the fully blinded elements by their first two bytes finds the elements
  shared by two or more lists (and whether a list repeats one); the client
  puts the partitions' groups one after the other, which is bytewise order,
  as in-process. The sums then run as for ``aggregate``.
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
from pprl.engine import ElementJoin
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

__all__ = ["DaskEngine", "BANDS_PER_TASK", "ELEMENTS_PER_TASK", "ENTITIES_PER_TASK", "KEY_BUCKETS",
           "RECORDS_PER_TASK", "ROUTE_ROWS", "ROWS_PER_TASK"]

log = logging.getLogger("pprl.engine")

#: Bands per LSH task: a task holds the keys of its bands for every record (4 bytes a band and record).
BANDS_PER_TASK = 4
#: Rows of the first dataset per task without blocking.
ROWS_PER_TASK = 20_000
#: Records per task of encoding or encryption.
RECORDS_PER_TASK = 20_000
#: Elements (of all lists together) per task of the PSI join: a task sorts its partition (40 bytes an element).
ELEMENTS_PER_TASK = 250_000
#: With ``lsh_partition="bucket"``: buckets of band keys per group of bands, and rows per routing task.
KEY_BUCKETS = 8
ROUTE_ROWS = 100_000
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
    elements_per_task: int = ELEMENTS_PER_TASK
    #: How the LSH search is split into tasks: ``"band"`` (a task per group of bands, every dataset's lanes sent
    #: to every worker) or ``"bucket"`` (a task per group of bands and bucket of band keys, sent only the records
    #: whose keys fall there: a worker holds a fraction of the data, at the price of more tasks and traffic).
    lsh_partition: str = "band"
    #: With ``lsh_partition="bucket"``: buckets per group of bands (hash of band and key).
    key_buckets: int = KEY_BUCKETS
    #: With ``lsh_partition="bucket"``: rows of a dataset per first-stage task (band keys and routing).
    route_rows: int = ROUTE_ROWS
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
        import dask

        # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which pins glibc's mmap threshold at
        # 128 KiB: every large numpy temporary is then mapped and page-faulted afresh, and the LSH tasks took
        # 1.7x the CPU time they take in a plain process (docs/scale.md). Our workers keep glibc's defaults.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
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
        if self.lsh_partition == "bucket":
            results = self._lsh_by_bucket(arrays, sizes, positions, float(threshold), window)
        elif self.lsh_partition == "band":
            with self._shared(arrays) as (lanes_t, counts):
                started = time.perf_counter()
                futures = [self.client.submit(_lsh_task, lanes_t, counts, sizes,
                                              positions[g:g + self.bands_per_task], float(threshold), window,
                                              pure=False)
                           for g in range(0, int(bands), self.bands_per_task)]
                results = self._gather(futures, "blocking", started)
        else:
            raise OptionError(f"{{lsh_partition}} must be 'band' or 'bucket', got {self.lsh_partition!r}",
                              "lsh_partition")
        found: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {
            p: [] for p in itertools.combinations(range(len(arrays)), 2)}
        comparisons = 0
        for part, compared in results:
            comparisons += compared
            for pair, triple in part.items():
                found[pair].append(triple)
        return merge_found(found, sizes), report(comparisons)

    def _lsh_by_bucket(self, arrays: list[np.ndarray], sizes: list[int], positions: np.ndarray, threshold: float,
                       window: Window) -> list[Any]:
        """LSH by band and bucket: a first stage of tasks per block of rows of a dataset computes the rows' band
        keys and routes each row (its lanes, once per bucket it falls in) to the buckets of ``hash(band, key)``;
        a task per group of bands and bucket then finds the colliding pairs among the rows it was sent and keeps
        those whose Dice reaches the threshold. No worker needs a whole dataset."""
        from operator import getitem

        groups = [positions[g:g + self.bands_per_task] for g in range(0, positions.shape[0], self.bands_per_task)]
        step, buckets = max(1, int(self.route_rows)), max(1, int(self.key_buckets))
        started = time.perf_counter()
        parts = []  # per dataset: its blocks of lanes, each on one worker
        for d in arrays:
            lanes = as_lanes(d)
            parts.append([self.client.scatter((np.ascontiguousarray(lanes[r0:r0 + step].T), r0), hash=False)
                          for r0 in range(0, max(1, d.shape[0]), step)])  # an empty dataset: one empty block
        futures: list[Any] = []
        # Groups routed but not yet compared: what bounds a worker's memory (each group's routed rows are about
        # 3.3x the lanes of every dataset over 8 buckets); enough of them to give every worker a bucket task.
        in_flight = max(2, -(-self.workers // buckets) + 1)
        for g, group in enumerate(groups):
            if g >= in_flight:  # wait for an earlier group's buckets (their candidates are small)
                self.client.gather(futures[(g - in_flight) * buckets:(g - in_flight + 1) * buckets])
            routed = [[self.client.submit(_route_task, part, group, g * self.bands_per_task, buckets, pure=False)
                       for part in blocks] for blocks in parts]
            for h in range(buckets):
                pieces = [[self.client.submit(getitem, r, h, pure=False) for r in rs] for rs in routed]
                futures.append(self.client.submit(_bucket_task, pieces, sizes, threshold, window, pure=False))
        try:
            results = self._gather(futures, "blocking by bucket", started)
        finally:
            self.client.cancel([p for blocks in parts for p in blocks])
        self.steps[-1]["routing_tasks"] = len(groups) * sum(len(blocks) for blocks in parts)
        return results

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
        cts = enc.ciphertexts  # only the ciphertexts a task needs are turned into bytes
        width = key.ciphertext_bytes
        started = time.perf_counter()
        futures: list[Any] = []
        blobs: list[Any] = []
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
            blob = b"".join(int(cts[c]).to_bytes(width, "big") for c in needed)
            blobs.append(self.client.scatter(blob, hash=False))  # data, not part of the task graph
            futures.append(self.client.submit(_sum_task, key.to_dict(), blobs[-1], local_groups, spec.to_dict(),
                                              pure=False))
        try:
            return EncryptedVector.from_bytes(key, b"".join(self._gather(futures, "summing", started)))
        finally:
            self.client.cancel(blobs)

    def psi_join(self, lists: Sequence[bytes]) -> ElementJoin:
        """The join of fully blinded PSI lists on the cluster, equal to the bureau's in-process match.

        The elements are uniformly random group elements, so their first two bytes partition them fairly: each
        list's elements go to the partition of their prefix (with their positions in the lists concatenated), a
        task per partition finds the elements its lists share and whether a list repeats one, and the client
        puts the partitions' groups one after the other (prefix ranges in ascending order: bytewise order).
        """
        arrays = [np.frombuffer(bytes(b), np.uint8).reshape(-1, ELEMENT_BYTES) for b in lists]
        total = sum(a.shape[0] for a in arrays)
        parts = max(1, min(1 << 16, -(-total // max(1, self.elements_per_task))))
        offset = 0
        pieces: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(parts)]
        for arr in arrays:
            prefix = (arr[:, 0].astype(np.int64) << 8) | arr[:, 1]
            part = (prefix * parts) >> 16
            order = np.argsort(part, kind="stable")
            bounds = np.searchsorted(part[order], np.arange(parts + 1))
            for p in range(parts):
                rows = order[bounds[p]:bounds[p + 1]]
                pieces[p].append((np.ascontiguousarray(arr[rows]), rows.astype(np.int64) + offset))
            offset += arr.shape[0]
        started = time.perf_counter()
        # data, not part of the task graph (no lists at all: nothing to scatter)
        shared = [self.client.scatter(piece, hash=False) if piece else [] for piece in pieces]
        futures = [self.client.submit(_join_task, piece, pure=False) for piece in shared]
        try:
            results = self._gather(futures, "joining", started)
        finally:
            self.client.cancel([f for piece in shared for f in piece])
        repeats = sorted({i for flags, _, _, _ in results for i, flag in enumerate(flags) if flag})
        if repeats:
            return ElementJoin(tuple(repeats), [], [])
        elements = np.concatenate([r[1] for r in results]) if results else np.zeros((0, ELEMENT_BYTES), np.uint8)
        sizes = np.concatenate([r[2] for r in results]) if results else np.zeros(0, np.int64)
        members = np.concatenate([r[3] for r in results]) if results else np.zeros(0, np.int64)
        flat = members.tolist()
        ends = np.cumsum(sizes).tolist()
        groups = [flat[s:e] for s, e in zip([0, *ends[:-1]], ends)]
        return ElementJoin((), groups, [bytes(e) for e in elements])

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
    keys = [_keys_of_rows(lt, positions, a) for lt, a in zip(lanes_t, active)]
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


def _keys_of_rows(lanes_t: np.ndarray, positions: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Band keys of the records ``rows`` (ascending): computed for every record and then selected (keys are 4
    bytes a band; gathering the rows' lanes first gives a strided copy that made the keys 2.6x slower)."""
    keys = band_keys_of_lanes(lanes_t, positions)
    return keys if rows.shape[0] == lanes_t.shape[1] else keys[:, rows]


def _bucket_of(keys: np.ndarray, first_band: int, buckets: int) -> np.ndarray:
    """The bucket of each band key (``keys``: bands x rows, the first band numbered ``first_band``): a
    multiplicative hash of (band, key), so a band's keys spread over every bucket."""
    band = np.arange(first_band, first_band + keys.shape[0], dtype=np.uint64)[:, None]
    mixed = (keys.astype(np.uint64) ^ (band << np.uint64(32))) * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(40)) % np.uint64(buckets)).astype(np.int64)


def _route_task(part: tuple[np.ndarray, int], positions: np.ndarray, first_band: int, buckets: int
                ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """One block of a dataset's rows, one group of bands: per bucket, the rows with a band key there (their row
    numbers in the dataset, their keys of the group with -1 for a key in another bucket, lanes, popcounts)."""
    lanes_t, r0 = part
    counts = popcount_rows(np.ascontiguousarray(lanes_t.T))
    active = np.flatnonzero(counts > 0)  # records with no bit set are never candidates
    keys = _keys_of_rows(lanes_t, positions, active)
    where = _bucket_of(keys, first_band, buckets)
    out = []
    for h in range(buckets):
        inside = where == h
        rows = np.flatnonzero(inside.any(axis=0))
        mine = np.where(inside[:, rows], keys[:, rows].astype(np.int64), -1)
        picked = active[rows]
        out.append((picked + r0, mine, np.ascontiguousarray(lanes_t[:, picked]), counts[picked]))
    return out


def _bucket_task(pieces: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]], sizes: list[int],
                 threshold: float, window: Window
                 ) -> tuple[dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """One group of bands and bucket: the pairs of the rows sent here that share a band key (of a band whose
    key lies in this bucket) and whose Dice reaches ``threshold``, in dataset row numbers; and the pairs
    compared."""
    rows, keys, lanes_t, counts = [], [], [], []
    for blocks in pieces:  # per dataset: its blocks' rows, in row order
        rows.append(np.concatenate([b[0] for b in blocks]))
        keys.append(np.concatenate([b[1] for b in blocks], axis=1))
        lanes_t.append(np.concatenate([b[2] for b in blocks], axis=1))
        counts.append(np.concatenate([b[3] for b in blocks]))
    local = [r.shape[0] for r in rows]
    pairs = list(itertools.combinations(range(len(sizes)), 2))
    collected: dict[tuple[int, int], list[np.ndarray]] = {p: [] for p in pairs}
    for k in range(keys[0].shape[0] if keys else 0):
        present = [np.flatnonzero(kd[k] >= 0) for kd in keys]
        band = [kd[k][p] for kd, p in zip(keys, present)]
        for pair, codes in band_collisions(band, present, local, pairs).items():
            collected[pair].append(codes)
    out, compared = {}, 0
    for pair, parts in collected.items():
        if not parts:
            continue
        codes = np.sort(np.concatenate(parts))
        codes = codes[np.r_[True, codes[1:] != codes[:-1]]]
        compared += int(codes.shape[0])
        i, j, sim = dice_of_codes(lanes_t, counts, local, pair, codes, threshold, window)
        out[pair] = (rows[pair[0]][i], rows[pair[1]][j], sim)
    return out, compared


def _join_task(piece: list[tuple[np.ndarray, np.ndarray]]
               ) -> tuple[list[bool], np.ndarray, np.ndarray, np.ndarray]:
    """One prefix partition of every list: per list whether it repeats an element, then the elements two or
    more lists share (ascending), how many hold each, and the holders' positions (ascending per element)."""
    repeats = []
    for elements, _ in piece:
        v = elements.view(f"V{ELEMENT_BYTES}").ravel()
        repeats.append(bool(v.shape[0] and np.unique(v).shape[0] != v.shape[0]))
    empty = np.zeros(0, np.int64)
    if any(repeats) or not sum(e.shape[0] for e, _ in piece):
        return repeats, np.zeros((0, ELEMENT_BYTES), np.uint8), empty, empty
    everything = np.concatenate([e for e, _ in piece]).view(f"V{ELEMENT_BYTES}").ravel()
    positions = np.concatenate([i for _, i in piece])
    uniq, inverse, counts = np.unique(everything, return_inverse=True, return_counts=True)
    shared = counts >= 2
    members = np.argsort(inverse, kind="stable")  # positions ascend within a list, and lists come in order
    keep = np.repeat(shared, counts)
    elements = np.ascontiguousarray(uniq[shared]).view(np.uint8).reshape(-1, ELEMENT_BYTES)
    return repeats, elements, counts[shared].astype(np.int64), positions[members[keep]]


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
