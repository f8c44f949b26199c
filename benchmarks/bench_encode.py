"""CLK encoding speed: pprl vs clkhash, one core (issue 14).

Two comparisons in one run, on `pprl synth` rows, pinned to one CPU, interleaved repeats (pprl
plain, clkhash, pprl normalising, pprl normalising on the Python path, ...), every per-value cache
cleared before each timed run (clkhash's lru_caches; pprl's encoders are per call and its
normaliser memos are cleared):

- pprl on its normalising schema examples/schema-cn.json against clkhash on the plain
  examples/schema-cn-clkhash.json (clkhash refuses the normalising one). Target: 3x. The
  normalisers' character tables (OpenCC, pypinyin) are loaded by an untimed first run, as a
  long-running platform process has them;
- pprl and clkhash on the same plain schema, whose CLKs must be identical (checked).

pprl computes value masks with its C extension (pprl.encoding._bloom, portable C: no
instruction-set variants); the "Python path" row is the same normalising run with
PPRL_NO_BLOOM=1, as where the extension is not built (its CLKs are checked to be the same).

    python benchmarks/bench_encode.py            # 10,000 rows, 5 repeats
    python benchmarks/bench_encode.py --n 20000 --repeats 7
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
    parser.add_argument("--repeats", type=int, default=5)
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

    from pprl.encoding.normalise import clear_caches

    ext_schema = load_schema(ROOT / "examples" / "schema-cn.json")

    def run_ours():  # pprl's caches live in per-call encoder objects: nothing to clear
        return pprl_encode.encode_records(rows, ours_schema, SECRET, workers=1)

    def run_normalising():
        clear_caches()  # the normalisers' per-value memos
        return pprl_encode.encode_records(frame, ext_schema, SECRET, workers=1)

    def run_python_path():
        os.environ["PPRL_NO_BLOOM"] = "1"
        try:
            return run_normalising()
        finally:
            del os.environ["PPRL_NO_BLOOM"]

    def run_theirs():
        _clear_clkhash_caches()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return clk.generate_clks(rows, theirs_schema, SECRET, max_workers=1)

    run_normalising()  # untimed: loads OpenCC and pypinyin and fills their character tables
    os.environ.pop("PPRL_NO_BLOOM", None)
    times: dict[str, list[float]] = {"pprl": [], "clkhash": [], "normalising": [], "python path": []}
    results = {}
    for _ in range(args.repeats):
        for label, fn in (("pprl", run_ours), ("clkhash", run_theirs), ("normalising", run_normalising),
                          ("python path", run_python_path)):
            gc.collect()
            start = time.process_time()
            results[label] = fn()
            times[label].append(time.process_time() - start)
    same = [bytes(r) for r in results["pprl"]] == [bf.tobytes() for bf in results["clkhash"]]
    same_paths = bool((results["normalising"] == results["python path"]).all())

    def rate(label: str) -> float:
        return args.n / statistics.median(times[label])

    def ratios(label: str) -> str:
        each = sorted(t_c / t_o for t_o, t_c in zip(times[label], times["clkhash"]))
        return f"per repeat {each[0]:.2f}-{each[-1]:.2f}x"

    ours_rate, theirs_rate, ext_rate = rate("pprl"), rate("clkhash"), rate("normalising")
    py_rate = rate("python path")
    print(f"CLK encoding, {args.n} rows, one core (CPU time, median of {args.repeats} interleaved repeats)")
    print(f"  pprl, normalising schema-cn.json      {ext_rate:10,.0f} records/s")
    print(f"  clkhash, plain schema-cn-clkhash.json {theirs_rate:10,.0f} records/s")
    print(f"  ratio    {ext_rate / theirs_rate:10.2f}x   ({ratios('normalising')})   (target 3x)")
    print(f"  pprl, normalising, Python path        {py_rate:10,.0f} records/s   (PPRL_NO_BLOOM=1)")
    print(f"  ratio    {py_rate / theirs_rate:10.2f}x   ({ratios('python path')})   "
          f"same CLKs as C: {'yes' if same_paths else 'NO'}")
    print(f"  pprl, plain schema-cn-clkhash.json    {ours_rate:10,.0f} records/s")
    print(f"  ratio    {ours_rate / theirs_rate:10.2f}x   ({ratios('pprl')})   identical CLKs: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
