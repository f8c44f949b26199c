"""CLK encoding speed: pprl vs clkhash on the same schema, secret and rows, one core.

Issue target: at least 3x clkhash's records per second on one core. Runs both
in one process on `pprl synth` rows with examples/schema-cn-clkhash.json (plain
clkhash v3, which both read), pinned to one CPU, interleaved repeats with every
cache cleared before each timed run (clkhash's lru_caches and pprl's per-run
caches are per call), and checks that the CLKs are identical. Prints ours, clkhash's, and
the ratio; also pprl on its own normalising schema-cn.json for reference.

    python benchmarks/bench_encode.py            # 10,000 rows, 3 repeats
    python benchmarks/bench_encode.py --n 20000 --repeats 5
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"bench-encode secret"


def _clear_clkhash_caches() -> None:
    from clkhash import bloomfilter

    for name in dir(bloomfilter):
        fn = getattr(bloomfilter, name)
        if hasattr(fn, "cache_clear"):
            fn.cache_clear()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from pprl.encoding import clk as pprl_encode
    from pprl.encoding.schema import load_schema
    from pprl.sim.synth import generate_population

    frame = generate_population(args.n, 1, seed=1, corruption=0.2).platforms["platform_1"]
    schema_path = ROOT / "examples" / "schema-cn-clkhash.json"
    ours_schema = load_schema(schema_path)
    rows = frame[ours_schema.identifiers].astype(str).values.tolist()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from clkhash import clk
        from clkhash import schema as clkhash_schema

        theirs_schema = clkhash_schema.from_json_dict(json.loads(schema_path.read_text(encoding="utf-8")))

    def run_ours():  # pprl's caches live in per-call encoder objects: nothing to clear
        return pprl_encode.encode_records(rows, ours_schema, SECRET, workers=1)

    def run_theirs():
        _clear_clkhash_caches()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return clk.generate_clks(rows, theirs_schema, SECRET, max_workers=1)

    ours_t, theirs_t = [], []
    ours = theirs = None
    for _ in range(args.repeats):
        for label, fn, sink in (("pprl", run_ours, ours_t), ("clkhash", run_theirs, theirs_t)):
            gc.collect()
            start = time.process_time()
            result = fn()
            sink.append(time.process_time() - start)
            if label == "pprl":
                ours = result
            else:
                theirs = result
    same = [bytes(r) for r in ours] == [bf.tobytes() for bf in theirs]

    ext_schema = load_schema(ROOT / "examples" / "schema-cn.json")
    start = time.process_time()
    pprl_encode.encode_records(frame, ext_schema, SECRET, workers=1)
    ext_t = time.process_time() - start

    ours_rate = args.n / statistics.median(ours_t)
    theirs_rate = args.n / statistics.median(theirs_t)
    print(f"CLK encoding, {args.n} rows, schema-cn-clkhash.json, one core (CPU time, median of {args.repeats})")
    print(f"  pprl     {ours_rate:10,.0f} records/s")
    print(f"  clkhash  {theirs_rate:10,.0f} records/s")
    print(f"  ratio    {ours_rate / theirs_rate:10.2f}x   (target 3x)   identical CLKs: {'yes' if same else 'NO'}")
    print(f"  pprl on the normalising schema-cn.json: {args.n / ext_t:,.0f} records/s (pprl-only schema)")


if __name__ == "__main__":
    main()
