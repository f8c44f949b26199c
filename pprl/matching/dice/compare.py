"""Run one Dice comparison: blocks of left rows on a thread pool, with the kernel in use.

Part of the Dice candidate generation described in
:mod:`pprl.matching.dice.similarity`.  The left rows (in popcount order) are cut
into blocks of at most ``chunk_rows`` rows; each block is one unit of work
for a thread and runs on the native kernel (:mod:`pprl.matching.dice.native`)
when it is loaded, else on the numpy one (:mod:`pprl.matching.dice.fallback`).
Memory stays bounded either way: a block's scratch space (with ``k``, four
heaps of ``k`` pairs) is freed when the block is done; only the pairs found
are kept.  Results are merged in ``(i, j)`` order, so they do not depend on
the number of threads.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from functools import partial

import numpy as np

from pprl.matching.dice import native as dice_native
from pprl.matching.dice.fallback import numpy_block
from pprl.matching.dice.rows import Job, Prepared, Triples, Window, empty_triples

__all__ = ["compare", "row_blocks"]

# Blocks of left rows: enough per worker that threads finish together (blocks
# differ in work because their popcount windows differ), but not so small
# that per-call overhead shows.
_BLOCKS_PER_WORKER = 8
_MIN_BLOCK_ROWS = 64


def row_blocks(n: int, chunk_rows: int, workers: int) -> list[tuple[int, int]]:
    """Split ``n`` sorted left rows into blocks of at most ``chunk_rows``."""
    size = min(chunk_rows, max(_MIN_BLOCK_ROWS, -(-n // (workers * _BLOCKS_PER_WORKER))))
    if size < chunk_rows and size % 4:
        size = min(chunk_rows, size + 4 - size % 4)  # whole groups of four
    return [(r0, min(n, r0 + size)) for r0 in range(0, n, size)]


def compare(
    pa: Prepared,
    pb: Prepared,
    t: float,
    *,
    chunk_rows: int,
    window: Window,
    k: int | None = None,
    workers: int = 1,
    on_rows: Callable[[int], None] | None = None,
    ordered: bool = True,
) -> Triples:
    """All pairs with similarity >= t (at most k per left row), sorted by (i, j) (unless not ``ordered``:
    then in no promised order, for a caller that sorts them itself)."""
    n, m = pa.counts.shape[0], pb.counts.shape[0]
    if n == 0 or m == 0 or k == 0:
        if on_rows is not None and n:
            on_rows(n)
        return empty_triples()
    job = Job.create(pa, pb, t, window, k, chunk_rows)
    run: Callable[[int, int], Triples]
    if dice_native.dice_enabled():
        run = dice_native.NativeRun(job).block
    else:
        run = partial(numpy_block, job)
    blocks = row_blocks(n, chunk_rows, workers)
    parts: list[Triples | None] = [None] * len(blocks)
    if workers == 1 or len(blocks) == 1:
        for b, (r0, r1) in enumerate(blocks):
            parts[b] = run(r0, r1)
            if on_rows is not None:
                on_rows(r1 - r0)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(blocks))) as pool:
            futures = {pool.submit(run, r0, r1): b for b, (r0, r1) in enumerate(blocks)}
            try:
                for future in as_completed(futures):
                    b = futures[future]
                    parts[b] = future.result()
                    if on_rows is not None:
                        on_rows(blocks[b][1] - blocks[b][0])
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    done = [p for p in parts if p is not None and p[0].shape[0]]
    if not done:
        return empty_triples()
    i = np.concatenate([p[0] for p in done])
    j = np.concatenate([p[1] for p in done])
    s = np.concatenate([p[2] for p in done])
    if not ordered:
        return i, j, s
    order = np.lexsort((j, i))
    return i[order], j[order], s[order]
