"""Encoding large inputs over worker processes, and the progress bar both paths share.

Part of :mod:`pprl.encoding.clk`: above ``PARALLEL_THRESHOLD`` rows the
hashed columns are cut into chunks, each worker process builds its own
feature encoders once (:func:`pprl.encoding.masks.build_encoders`) and
returns each chunk's CLK bytes and counts; results are taken in order, so the
first bad row is the one reported.  Processes are forked where that is safe
(Linux, no other threads), so unguarded scripts and notebooks work.
"""

from __future__ import annotations

import math
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any

from tqdm import tqdm

from pprl.encoding.masks import (
    Counts,
    add_counts,
    build_encoders,
    encode_chunk,
    gc_paused,
)
from pprl.encoding.schema import Schema
from pprl.errors import PPRLError

__all__ = ["encode_parallel", "progress_bar"]


class _Bar(tqdm):
    """tqdm without its monitor thread: a live thread would make ``fork`` unsafe later."""

    monitor_interval = 0


def progress_bar(n: int, show: bool) -> Any:
    """A tqdm bar over ``n`` records on stderr, or a stand-in that shows nothing."""
    if not show:
        return nullcontext(SimpleNamespace(update=lambda _n: None))
    return _Bar(total=n, unit="rec", desc="encoding", file=sys.stderr)


# ------------------------------------------------------------- worker processes

_WORKER: dict[str, Any] = {}


def _init_worker(schema: Schema, keys: tuple[tuple[bytes, bytes], ...]) -> None:
    _WORKER["schema"] = schema
    _WORKER["encoders"] = build_encoders(schema, keys)


def _work(columns: list[list[str]], row_offset: int) -> tuple[bytes, Counts]:
    with gc_paused():
        return encode_chunk(columns, _WORKER["encoders"], _WORKER["schema"], row_offset)


def _mp_context() -> Any:
    """``fork`` where it is safe (Linux, no other threads): nothing is re-imported, so
    unguarded scripts and notebooks work. Otherwise forkserver/spawn, which need the
    caller's script to guard its entry point with ``if __name__ == "__main__"``."""
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if sys.platform.startswith("linux") and "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def encode_parallel(columns: list[list[str]], n: int, schema: Schema,
                    keys: tuple[tuple[bytes, bytes], ...], workers: int, out: bytearray,
                    progress: bool, counts: Counts) -> None:
    """CLKs of ``n`` rows into ``out`` on ``workers`` processes; each chunk's counts added to ``counts``."""
    width = (schema.l + 7) // 8
    size = min(10_000, max(500, math.ceil(n / (workers * 4))))
    starts = range(0, n, size)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(starts)), mp_context=_mp_context(),
                                 initializer=_init_worker, initargs=(schema, keys)) as pool:
            # With fork, all workers start at the first submit, before any bar exists.
            futures = [pool.submit(_work, [col[s:s + size] for col in columns], s) for s in starts]
            try:
                with progress_bar(n, progress) as bar:
                    for s, fut in zip(starts, futures):
                        blob, part = fut.result()  # in order: the first bad row is reported
                        out[s * width:s * width + len(blob)] = blob
                        add_counts(counts, part)
                        bar.update(len(blob) // width)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
    except BrokenProcessPool as e:
        raise PPRLError("encoding worker processes failed to start or died; if this runs from a "
                        "script, guard its entry point with `if __name__ == \"__main__\":`, "
                        "or encode with workers=1") from e
