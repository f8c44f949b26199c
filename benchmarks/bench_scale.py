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
    python benchmarks/bench_scale.py --no-anchor --dask 1,2 --lsh-partition band,bucket --repeat 2
                                                        # both LSH partitionings, interleaved with in-process
    python benchmarks/bench_scale.py --psi 200000 --repeat 3 --skip-link
                                                        # PSI intersection-sum, 3 x 200k: in-process vs Dask
"""

from __future__ import annotations

import argparse
import json
import statistics
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
            engine = stack.enter_context(DaskEngine.start(workers=spec["workers"],
                                                          lsh_partition=spec.get("lsh_partition", "band")))
            started = time.perf_counter() - t
        t0 = time.perf_counter()
        result = link(world.bureau, world.cards, world.submissions, spec["threshold"], spec["out"],
                      blocking=spec["blocking"], engine=engine)
        seconds = time.perf_counter() - t0
        steps = list(engine.steps) if engine is not None else []
        worker_peaks = sorted(engine.client.run(peak_rss_gib).values()) if engine is not None else []
    return {
        "seconds": seconds,
        "worker_peak_gib": worker_peaks,
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


def _link_line(results: dict, name: str, blocking: str, world_file: Path, world, root: Path, *,
               verbose: bool = True) -> dict:
    """One in-process link in a child process, evaluated against the synthetic truth; its line printed."""
    from pprl.sim.evaluation import evaluate_linkage

    spec = {"tool": "pprl", "world": str(world_file), "threshold": "auto", "blocking": blocking,
            "out": str(root / f"linkage-{blocking}.json")}
    results[name] = r = run_child(spec)
    ev = evaluate_linkage(spec["out"], world.maps, root / "data" / "truth.csv", cards=[world.bureau.card])
    r["quality"] = ev.quality
    r["pair_completeness"] = ev.completeness.value
    q = ev.quality
    print(f"  {name:22s} {r['seconds']:7.1f}s  peak {r['peak_gib']:5.2f} GiB  threshold {r['threshold']:.4f}  "
          f"entities {r['entities']:,}  precision {q.precision:.4f} recall {q.recall:.4f} F1 {q.f1:.4f}  "
          f"pair completeness {r['pair_completeness']:.4f}", flush=True)
    if blocking == "lsh" and verbose:
        print(f"  {'':22s} lsh {r['bands']} bands x {r['bits_per_band']} bits: {r['comparisons']:,} of "
              f"{r['pairs_total']:,} pairs compared (reduction ratio {r['reduction_ratio']:.6f}); "
              f"estimated pair completeness {r['estimated_pair_completeness']:.4f}, "
              f"on sampled best matches {r['sample_pair_completeness']:.4f}", flush=True)
    return r


def psi_sum(n: int, repeat: int) -> None:
    """3 platforms x ``n`` records (neighbours share half their people), one score column at 2048 bits, through the
    real party steps; then the bureau's aggregate (join + homomorphic sums + signing) in this process and on a
    LocalCluster of 2 workers, interleaved. Setup (blinding, encryption, re-blinding) is not counted."""
    import pandas as pd

    from pprl.crypto.paillier.vector import generate_keypair
    from pprl.documents import PsiRound, load
    from pprl.engine import DaskEngine
    from pprl.protocol.files import (
        blind_identifiers,
        init_party,
        init_session,
        load_card,
        load_key,
        load_session,
        reblind_round,
    )
    from pprl.protocol.psi import reblind_schedule, sum_rounds

    names = ["platform_1", "platform_2", "platform_3"]
    with tempfile.TemporaryDirectory(prefix="bench-scale-psi-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        keys, cards = {}, {}
        for name, role in [*[(x, "platform") for x in names], ("bureau", "bureau")]:
            kp, cp = init_party(name, role, root / "keys")
            keys[name], cards[name] = load_key(kp), load_card(cp)
        pub, _priv = generate_keypair(2048)
        session = init_session(keys["bureau"], [cards[x] for x in names], root / "session.json").path
        sess = load_session(session, cards["bureau"], [cards[x] for x in names])
        current = {}
        for i, name in enumerate(names):
            people = range(i * (n // 2), i * (n // 2) + n)
            frame = pd.DataFrame({"user_id": [f"{name}-{j}" for j in people],
                                  "resident_id": [_resident_id(j) for j in people],
                                  "score": [str(j % 997) for j in people]})
            current[name] = blind_identifiers(keys[name], sess, frame, "user_id", root / f"{name}.r0.json",
                                              root / f"{name}.state", paillier=pub, scores=["score"]).path
        for step, pairs in enumerate(reblind_schedule(sess), start=1):
            for platform, origin in pairs:  # no re-randomising: the setup is not what is measured
                current[origin] = reblind_round(keys[platform], root / f"{platform}.state", current[origin],
                                                root / f"{origin}.r{step}.json", rerandomize=False).path
        rounds = [load(current[x], PsiRound) for x in names]
        print(f"bench_scale psi: 3 platforms x {n:,} records set up in {time.perf_counter() - t0:.0f}s (not counted)")
        times: dict[str, list[float]] = {"in-process": [], "dask 2": []}
        with DaskEngine.start(workers=2) as engine:
            for _ in range(max(1, repeat)):
                t = time.perf_counter()
                here = sum_rounds(keys["bureau"], sess, rounds, 2)
                times["in-process"].append(time.perf_counter() - t)
                t = time.perf_counter()
                there = sum_rounds(keys["bureau"], sess, rounds, 2, engine=engine)
                times["dask 2"].append(time.perf_counter() - t)
                same = (there.release.payload == here.release.payload)
                steps = ", ".join(f"{step['step']} {step['seconds']:.1f}s" for step in engine.steps[-2:])
                print(f"  aggregate in-process {times['in-process'][-1]:.1f}s, dask 2 workers "
                      f"{times['dask 2'][-1]:.1f}s ({steps}); intersection {here.intersection:,}, "
                      f"same release: {'yes' if same else 'NO'}", flush=True)
        for label, ts in times.items():
            ts = sorted(ts)
            print(f"  psi aggregate {label:10s} median {statistics.median(ts):.1f}s, range {ts[0]:.1f}-{ts[-1]:.1f}s")


def _resident_id(i: int) -> str:
    """Distinct valid 18-character resident IDs: 1000 sequence numbers per birth date from 1950."""
    import datetime

    from pprl.encoding.normalise.identifiers import resident_id_check_char

    body = f"110105{datetime.date(1950, 1, 1) + datetime.timedelta(days=i // 1000):%Y%m%d}{i % 1000:03d}"
    return body + resident_id_check_char(body)


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
    parser.add_argument("--lsh-partition", default="band", metavar="P,P",
                        help="with --dask: the engine's LSH partitionings to run, band and/or bucket (default band)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the in-process LSH link and the Dask links this many times, interleaved")
    parser.add_argument("--psi", type=int, default=0, metavar="N",
                        help="also a 3-platform x N PSI intersection-sum: the bureau's aggregate in this process and "
                             "on a LocalCluster of 2 workers, interleaved --repeat times (setup not counted)")
    parser.add_argument("--skip-link", action="store_true", help="only the --psi part")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_child(json.loads(args._child))))
        return 0

    if args.psi:
        psi_sum(args.psi, args.repeat)
    if args.skip_link:
        return 0
    import pickle
    import shutil

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
        results: dict[str, dict] = {}
        series: dict[str, list[dict]] = {}
        if not args.no_anchor:
            _link_line(results, "anchor (no blocking)", "none", world_file, world, root)
        partitions = [p.strip() for p in args.lsh_partition.split(",") if p.strip()]
        configs = [(w, p) for w in [int(x) for x in args.dask.split(",") if x.strip()] for p in partitions]
        for rep in range(max(1, args.repeat)):  # interleaved: in-process, then each cluster, then again
            print(f"  -- run {rep + 1} of {max(1, args.repeat)}", flush=True)
            series.setdefault("ours (lsh)", []).append(_link_line(results, "ours (lsh)", "lsh", world_file, world,
                                                                  root, verbose=rep == 0))
            for workers, partition in configs:
                label = f"dask {workers}" + ("" if partition == "band" else f" {partition}")
                out = root / f"linkage-dask{workers}-{partition}.json"
                spec = {"tool": "pprl", "world": str(world_file), "threshold": "auto", "blocking": "lsh",
                        "out": str(out), "workers": workers, "lsh_partition": partition}
                r = run_child(spec)
                same = _entities(out) == _entities(root / "linkage-lsh.json")
                base = results["ours (lsh)"]["seconds"]
                results[label] = r
                series.setdefault(label, []).append(r)
                peaks = ", ".join(f"{g:.2f}" for g in r["worker_peak_gib"])
                print(f"  {label:22s} {r['seconds']:7.1f}s (+{r['cluster_start']:.1f}s "
                      f"to start the LocalCluster)  peak (client) {r['peak_gib']:5.2f} GiB, workers {peaks} GiB  "
                      f"entities {r['entities']:,}  same entities as in-process: {'yes' if same else 'NO'}  "
                      f"in-process/dask {base / r['seconds']:.2f}x", flush=True)
                for step in r["steps"]:  # the cost model's figures: a task's time is about seconds x workers / tasks
                    per_task = step["seconds"] * step["workers"] / max(step["tasks"], 1)
                    routing = f" (+{step['routing_tasks']} routing tasks)" if "routing_tasks" in step else ""
                    print(f"  {'':22s} {step['step']}: {step['tasks']} tasks{routing} on {step['workers']} worker(s) in "
                          f"{step['seconds']:.1f}s, about {per_task:.2f}s of worker time a task; the rest of the "
                          f"link (verify, sample, merge, solve, sign, write) {r['seconds'] - step['seconds']:.1f}s "
                          "in the client", flush=True)
        if max(1, args.repeat) > 1:
            for label, rs in series.items():
                times = sorted(r["seconds"] for r in rs)
                print(f"  {label:22s} median {statistics.median(times):.1f}s, range {times[0]:.1f}-{times[-1]:.1f}s "
                      f"({len(times)} runs)")
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
