"""A 200,000 x 200,000 record `pprl link` with LSH blocking: wall time and peak memory.

What: two platforms of ``--n`` records each (pprl.sim.synth, default corruption),
submitted with pprl's parties API as linkage-only submissions; generating,
encoding and submitting are not counted.  Then each linkage runs in a fresh
child process, so its peak resident memory (``ru_maxrss``) is the link's
alone and not the data generation's:

- ours: ``link(..., threshold="auto", blocking="lsh")`` -- read and verify
  the submissions, sample and fit the threshold, design and run the keyed
  LSH, solve, sign and write the linkage;
- anchor: the same without blocking (``blocking="none"``: every pair through
  pprl's native Dice kernel), the reference for speed and for what blocking
  loses;
- optionally (``--anonlink``, slow: every pair in one thread)
  anonlink 0.15's candidate generation + greedy solve on the same CLKs at the
  threshold ours chose, in a child process too.

Prints wall time and peak memory for each (targets for ours: under 10
minutes, under 8 GiB), the ratio anchor / ours, the blocking figures, and
precision / recall / F1 and pair completeness of both linkages against the
synthetic truth (``pprl.sim.evaluation``, not timed).

    python benchmarks/bench_scale.py                    # 200k x 200k
    python benchmarks/bench_scale.py --n 20000          # a quick run
    python benchmarks/bench_scale.py --workdir /tmp/scale --keep   # reuse the submissions next time
    python benchmarks/bench_scale.py --dask 1,2         # also on a Dask LocalCluster of 1, then 2 workers
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from link_world import build_world, load_anonlink, peak_rss_gib, to_bitarrays

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
TIME_TARGET = 600.0
MEMORY_TARGET_GIB = 8.0


def _child(spec: dict) -> dict:
    """Runs in a fresh process: one linkage, timed, with its peak memory."""
    import pickle

    if spec["tool"] == "anonlink":
        from pprl.protocol.files import load_submission

        anonlink = load_anonlink()
        world = pickle.loads(Path(spec["world"]).read_bytes())
        subs = [load_submission(p, world.cards) for p in world.submissions]
        bits = [to_bitarrays(s.clks) for s in subs]
        t0 = time.perf_counter()
        cands = anonlink.candidate_generation.find_candidate_pairs(
            bits, anonlink.similarities.dice_coefficient_accelerated, spec["threshold"]
        )
        groups = anonlink.solving.greedy_solve(cands)
        return {"seconds": time.perf_counter() - t0, "peak_gib": peak_rss_gib(),
                "entities": sum(1 for g in groups if len(g) >= 2)}
    import contextlib

    from pprl.protocol.files import link

    world = pickle.loads(Path(spec["world"]).read_bytes())
    started = 0.0
    with contextlib.ExitStack() as stack:
        engine = None
        if spec.get("workers"):
            from pprl.engine import DaskEngine

            t = time.perf_counter()
            engine = stack.enter_context(DaskEngine.start(workers=spec["workers"]))
            started = time.perf_counter() - t
        t0 = time.perf_counter()
        result = link(world.bureau, world.cards, world.submissions, spec["threshold"], spec["out"],
                      blocking=spec["blocking"], engine=engine)
        seconds = time.perf_counter() - t0
        steps = list(engine.steps) if engine is not None else []
    return {
        "seconds": seconds,
        "cluster_start": started,
        "steps": steps,
        "peak_gib": peak_rss_gib(),
        "entities": result.entities,
        "threshold": result.threshold,
        "blocking": result.blocking,
        "bands": result.bands,
        "bits_per_band": result.bits_per_band,
        "comparisons": result.comparisons,
        "pairs_total": result.pairs_total,
        "reduction_ratio": result.reduction_ratio,
        "estimated_pair_completeness": result.estimated_pair_completeness,
        "sample_pair_completeness": result.sample_pair_completeness,
        "candidate_pairs": result.candidate_pairs,
    }


def _entities(path: Path) -> list[list[tuple[str, str]]]:
    doc = json.loads(path.read_text())
    return sorted(sorted((m[0], m[1]) for m in e["members"]) for e in doc["payload"]["entities"])


def run_child(spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="records per platform (about)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the world here (reused when present)")
    parser.add_argument("--keep", action="store_true", help="do not delete --workdir afterwards")
    parser.add_argument("--anonlink", action="store_true", help="also time anonlink (slow: single-threaded, every pair)")
    parser.add_argument("--no-anchor", action="store_true",
                        help="skip the no-blocking link (every pair: at 1M x 1M, 10^12 comparisons)")
    parser.add_argument("--dask", default="", metavar="N,N,...",
                        help="also link with --engine dask on a LocalCluster of each of these worker counts "
                             "(e.g. 1,2: the speed-up from one worker to two; same entities checked)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_child(json.loads(args._child))))
        return 0

    import pickle
    import shutil

    from pprl.sim.evaluation import evaluate_linkage
    from pprl.sim.synth import generate_population, write_population

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-scale-")
        root = Path(tmp.name)
    else:
        root = args.workdir
    try:
        world_file = root / "world.pkl"
        if not world_file.exists():
            t0 = time.perf_counter()
            people = round(args.n / 0.8)  # overlap 0.6 over 2 platforms puts ~80% of people on each
            population = generate_population(people, 2, seed=args.seed)
            write_population(population, root / "data")
            world = build_world(root, population.platforms, SCHEMA, "user_id")
            world_file.write_bytes(pickle.dumps(world))
            print(f"bench_scale: generated and submitted in {time.perf_counter() - t0:.0f}s (not counted)")
        world = pickle.loads(world_file.read_bytes())
        from pprl.protocol.files import load_submission

        sizes = [load_submission(p, world.cards).doc.header.records for p in world.submissions]
        print(f"bench_scale: {sizes[0]:,} x {sizes[1]:,} records ({sizes[0] * sizes[1]:,} pairs), schema-cn, 1024-bit CLKs")
        results = {}
        runs = [("ours (lsh)", "lsh")] + ([] if args.no_anchor else [("anchor (no blocking)", "none")])
        for name, blocking in runs:
            spec = {"tool": "pprl", "world": str(world_file), "threshold": "auto", "blocking": blocking,
                    "out": str(root / f"linkage-{blocking}.json")}
            results[name] = r = run_child(spec)
            ev = evaluate_linkage(spec["out"], world.maps, root / "data" / "truth.csv", cards=[world.bureau.card])
            r["quality"] = ev.quality
            r["pair_completeness"] = ev.completeness.value
            q = ev.quality
            line = (f"  {name:22s} {r['seconds']:7.1f}s  peak {r['peak_gib']:5.2f} GiB  threshold {r['threshold']:.4f}  "
                    f"entities {r['entities']:,}  precision {q.precision:.4f} recall {q.recall:.4f} F1 {q.f1:.4f}  "
                    f"pair completeness {r['pair_completeness']:.4f}")
            print(line, flush=True)
            if blocking == "lsh":
                print(f"  {'':22s} lsh {r['bands']} bands x {r['bits_per_band']} bits: {r['comparisons']:,} of "
                      f"{r['pairs_total']:,} pairs compared (reduction ratio {r['reduction_ratio']:.6f}); "
                      f"estimated pair completeness {r['estimated_pair_completeness']:.4f}, "
                      f"on sampled best matches {r['sample_pair_completeness']:.4f}", flush=True)
        for workers in [int(x) for x in args.dask.split(",") if x.strip()]:
            out = root / f"linkage-dask{workers}.json"
            spec = {"tool": "pprl", "world": str(world_file), "threshold": "auto", "blocking": "lsh",
                    "out": str(out), "workers": workers}
            r = run_child(spec)
            same = _entities(out) == _entities(root / "linkage-lsh.json")
            base = results["ours (lsh)"]["seconds"]
            results[f"dask {workers}"] = r
            print(f"  {'dask, ' + str(workers) + ' worker(s)':22s} {r['seconds']:7.1f}s (+{r['cluster_start']:.1f}s "
                  f"to start the LocalCluster)  peak (client) {r['peak_gib']:5.2f} GiB  entities {r['entities']:,}  "
                  f"same entities as in-process: {'yes' if same else 'NO'}  in-process/dask {base / r['seconds']:.2f}x",
                  flush=True)
            for step in r["steps"]:  # the cost model's figures: a task's time is about seconds x workers / tasks
                per_task = step["seconds"] * step["workers"] / max(step["tasks"], 1)
                print(f"  {'':22s} {step['step']}: {step['tasks']} tasks on {step['workers']} worker(s) in "
                      f"{step['seconds']:.1f}s, about {per_task:.2f}s of worker time a task; the rest of the link "
                      f"(verify, sample, merge, solve, sign, write) {r['seconds'] - step['seconds']:.1f}s in the client",
                      flush=True)
        if "dask 1" in results and "dask 2" in results:
            print(f"  dask speed-up from 1 to 2 workers: {results['dask 1']['seconds'] / results['dask 2']['seconds']:.2f}x")
        ours = results["ours (lsh)"]
        if "anchor (no blocking)" in results:
            anchor = results["anchor (no blocking)"]
            print(f"  ours {ours['seconds']:.1f}s, anchor {anchor['seconds']:.1f}s, ratio anchor/ours "
                  f"{anchor['seconds'] / ours['seconds']:.2f}x")
        print(f"  targets: time {ours['seconds']:.1f}s < {TIME_TARGET:.0f}s "
              f"[{'met' if ours['seconds'] < TIME_TARGET else 'NOT met'}], "
              f"peak memory {ours['peak_gib']:.2f} GiB < {MEMORY_TARGET_GIB:.0f} GiB "
              f"[{'met' if ours['peak_gib'] < MEMORY_TARGET_GIB else 'NOT met'}]")
        if args.anonlink:
            r = run_child({"tool": "anonlink", "world": str(world_file), "threshold": ours["threshold"]})
            print(
                f"  anonlink (1 thread)    {r['seconds']:7.1f}s  peak {r['peak_gib']:5.2f} GiB  entities {r['entities']:,}  "
                f"ratio anonlink/ours {r['seconds'] / ours['seconds']:.2f}x"
            )
    finally:
        if tmp is not None:
            tmp.cleanup()
        elif not args.keep and args.workdir is not None and (root / "world.pkl").exists():
            shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
