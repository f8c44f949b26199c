"""Linkage quality on heavily corrupted Chinese data (``pprl synth --profile cn-heavy``), issue 14.

In one run, per seed, size and platform count:

- ours: pprl with the normalising schema (``examples/schema-cn.json`` unless ``--schema``): CLKs
  from ``pprl.encoding.encode_records``, then the bureau's own steps in memory
  (``pprl.protocol.link.search_candidates`` with the automatic threshold, no labels, then
  ``greedy_solve``: what ``pprl link --threshold auto`` runs), and the best fixed threshold of the
  sweep 0.40, 0.41, ..., 0.95 (chosen *with* the truth, for reference);
- the anchor: clkhash 0.18 on the plain schema ``examples/schema-cn-clkhash.json`` (it refuses the
  normalising one), anonlink 0.15 candidates and greedy solve at every sweep threshold, best F1;
- F1 of each, and the ratio ours (auto) / anchor (best).

Candidates for a sweep are generated once at the lowest threshold whose candidate count stays
under ``--cap`` pairs per record, and filtered for the higher thresholds (lower ones are skipped).

    python benchmarks/bench_quality_cn.py                                  # 10,000 people, seeds 1 2 3, 2 and 3 platforms
    python benchmarks/bench_quality_cn.py --people 4000 --seeds 7 --platforms 2
    python benchmarks/bench_quality_cn.py --no-anchor --schema my-schema.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
import warnings
from array import array
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_CN = ROOT / "examples" / "schema-cn.json"
SCHEMA_PLAIN = ROOT / "examples" / "schema-cn-clkhash.json"
SECRET = b"bench-quality-cn secret"
SWEEP = np.round(np.arange(0.40, 0.951, 0.01), 2)
TARGET = 0.95


def _truth(population, names: list[str]) -> tuple[dict, list[list]]:
    truth = {(p, u): person for p, u, person in population.truth.itertuples(index=False)}
    keys = [[(n, u) for u in population.platforms[n]["user_id"]] for n in names]
    return truth, keys


def _sweep(datasets: list[np.ndarray], keys: list[list], truth: dict, cap: float, solve) -> dict:
    """Best F1 over the sweep; ``solve(threshold_low)`` -> callable(threshold) -> groups."""
    from pprl.matching.dice.similarity import find_candidates
    from pprl.matching.quality import evaluate_groups

    records = sum(d.shape[0] for d in datasets)
    low = next(float(t) for t in SWEEP if len(find_candidates(datasets, float(t))) <= cap * records)
    at = solve(low)
    results = {}
    for t in SWEEP:
        if t < low:
            continue
        groups = at(float(t))
        results[float(t)] = evaluate_groups([[keys[d][r] for d, r in g] for g in groups], truth)
    best_t = max(results, key=lambda t: results[t].f1)
    return {"low": low, "best_t": best_t, "best": results[best_t], "results": results}


def run_ours(frames: dict, names: list[str], schema_path: Path, truth: dict, keys: list[list], cap: float) -> dict:
    from pprl.encoding.clk import encode_records
    from pprl.encoding.schema import load_schema
    from pprl.matching.dice.similarity import Candidates, find_candidates
    from pprl.matching.quality import evaluate_groups
    from pprl.matching.solve import greedy_solve
    from pprl.protocol.link import LinkOptions, search_candidates

    schema = load_schema(schema_path)
    t0 = time.perf_counter()
    clks = [encode_records(frames[n], schema, SECRET, workers=1) for n in names]
    encode_s = time.perf_counter() - t0
    search = search_candidates(clks, LinkOptions(threshold=None), b"bench-quality-cn")
    groups = greedy_solve(search.candidates)
    auto = evaluate_groups([[keys[d][r] for d, r in g] for g in groups], truth)

    def solve(low: float):
        cands = find_candidates(clks, low)

        def at(t: float):
            keep = cands.similarity >= t
            return greedy_solve(Candidates(cands.similarity[keep], cands.dataset[keep], cands.record[keep]))
        return at

    sweep = _sweep(clks, keys, truth, cap, solve)
    return {"auto_t": search.threshold, "auto_method": search.method, "auto": auto, "sweep": sweep,
            "encode_s": encode_s, "clks": clks}


def run_anchor(frames: dict, names: list[str], truth: dict, keys: list[list], cap: float, anonlink) -> dict:
    from anchors import to_bitarrays
    from clkhash import clk
    from clkhash import schema as clkhash_schema

    spec = json.loads(SCHEMA_PLAIN.read_text(encoding="utf-8"))
    columns = [f["identifier"] for f in spec["features"]]
    clks = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in names:
            rows = frames[n].reindex(columns=columns).fillna("").astype(str).values.tolist()
            out = clk.generate_clks(rows, clkhash_schema.from_json_dict(copy.deepcopy(spec)), SECRET)
            clks.append(np.array([list(c.tobytes()) for c in out], dtype=np.uint8))
    bits = [to_bitarrays(c) for c in clks]

    def solve(low: float):
        sims, (d0, d1), (r0, r1) = anonlink.candidate_generation.find_candidate_pairs(
            bits, anonlink.similarities.dice_coefficient_accelerated, low)
        sims, d0, d1, r0, r1 = (np.asarray(x) for x in (sims, d0, d1, r0, r1))

        def at(t: float):
            keep = sims >= t
            return anonlink.solving.greedy_solve(
                (array("d", sims[keep]), (array("I", d0[keep]), array("I", d1[keep])),
                 (array("I", r0[keep]), array("I", r1[keep]))))
        return at

    return {"sweep": _sweep(clks, keys, truth, cap, solve)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, nargs="+", default=[10_000])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--platforms", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--corruption", type=float, default=None, help="default: the profile's (1.0)")
    parser.add_argument("--schema", type=Path, default=SCHEMA_CN, help="ours: the normalising schema")
    parser.add_argument("--cap", type=float, default=20.0, help="most candidate pairs per record in a sweep")
    parser.add_argument("--no-anchor", action="store_true", help="skip clkhash + anonlink")
    args = parser.parse_args(argv)

    from pprl.sim.synth import generate_population

    anonlink = None
    if not args.no_anchor:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from anchors import load_anonlink

        anonlink = load_anonlink()
    print(f"Linkage quality on cn-heavy synthetic data; ours: {args.schema.name} (auto threshold, no labels; "
          f"best fixed threshold chosen with the truth); anchor: clkhash + anonlink on {SCHEMA_PLAIN.name} "
          "(best fixed threshold chosen with the truth). Target: ours (auto) F1 >= 0.95.")
    rows = []
    for people in args.people:
        for k in args.platforms:
            for seed in args.seeds:
                pop = generate_population(people, k, seed=seed, corruption=args.corruption, profile="cn-heavy")
                names = list(pop.platforms)
                frames = dict(pop.platforms)
                truth, keys = _truth(pop, names)
                ours = run_ours(frames, names, args.schema, truth, keys, args.cap)
                a, b = ours["auto"], ours["sweep"]["best"]
                line = (f"people {people:>6,}  platforms {k}  seed {seed:>3}  records {len(truth):>6,}  |  ours auto "
                        f"t={ours['auto_t']:.3f} ({ours['auto_method']}) P {a.precision:.4f} R {a.recall:.4f} "
                        f"F1 {a.f1:.4f}  best fixed t={ours['sweep']['best_t']:.2f} F1 {b.f1:.4f}")
                row = {"auto": a.f1, "best": b.f1}
                if anonlink is not None:
                    theirs = run_anchor(frames, names, truth, keys, args.cap, anonlink)["sweep"]
                    c = theirs["best"]
                    line += (f"  |  clkhash+anonlink best t={theirs['best_t']:.2f} P {c.precision:.4f} "
                             f"R {c.recall:.4f} F1 {c.f1:.4f}  ratio (auto/anchor) {a.f1 / c.f1:.3f}")
                    row["anchor"] = c.f1
                print(line, flush=True)
                rows.append(row)
    autos = [r["auto"] for r in rows]
    print(f"\nours auto F1: median {statistics.median(autos):.4f}, range {min(autos):.4f}-{max(autos):.4f} "
          f"[target F1 >= {TARGET}: {'met' if min(autos) >= TARGET else 'NOT met'} in {sum(x >= TARGET for x in autos)}"
          f"/{len(autos)} runs]")
    bests = [r["best"] for r in rows]
    print(f"ours best fixed F1: median {statistics.median(bests):.4f}, range {min(bests):.4f}-{max(bests):.4f}")
    if anonlink is not None:
        anchors_ = [r["anchor"] for r in rows]
        ratios = [r["auto"] / r["anchor"] for r in rows]
        print(f"clkhash+anonlink best F1: median {statistics.median(anchors_):.4f}, range "
              f"{min(anchors_):.4f}-{max(anchors_):.4f}; ratio ours auto / anchor best: median "
              f"{statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
