"""`pprl link` end to end against anonlink's candidate generation + greedy solve.

What: two platforms of about 20,000 records each (pprl.sim.synth), submitted with
pprl's parties API as linkage-only submissions (not timed).  Then, in one run
and interleaved, time:

- ours: ``pprl.protocol.link.link`` -- the whole ``pprl link`` command minus
  interpreter start-up: read and verify both signed submissions, sample and
  fit the threshold (``auto``), plan blocking, compare, solve, sign and write
  the linkage;
- anchor: anonlink 0.15's ``find_candidate_pairs([a, b],
  dice_coefficient_accelerated, t)`` + ``greedy_solve`` in-process on the
  same CLKs (already decoded to bitarrays, not timed) at the same threshold
  (for ``auto``, the threshold ours chose).

Prints the medians, the ratio anchor / ours (target: at least 2x), and
whether both found the same entities.  One extra run of the real CLI in a
subprocess shows the start-up cost on top.

    python benchmarks/bench_link.py                  # about 20k x 20k, thresholds auto and 0.8
    python benchmarks/bench_link.py --people 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from link_world import build_world, load_anonlink, median_time, to_bitarrays

from pprl.protocol.files import link, load_linkage, load_submission
from pprl.sim.synth import generate_population

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
TARGET = 2.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=25_000, help="population size (25,000 gives ~20k records per platform)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)

    anonlink = load_anonlink()
    with tempfile.TemporaryDirectory(prefix="bench-link-") as tmp:
        root = args.workdir or Path(tmp)
        t0 = time.perf_counter()
        population = generate_population(args.people, 2, seed=args.seed)
        world = build_world(root, population.platforms, SCHEMA, "user_id")
        subs = [load_submission(p, world.cards) for p in world.submissions]
        bits = [to_bitarrays(s.clks) for s in subs]
        sizes = [len(s.tokens) for s in subs]
        print(f"bench_link: {sizes[0]:,} x {sizes[1]:,} records, schema-cn, 1024-bit CLKs "
              f"(set-up {time.perf_counter() - t0:.1f}s, not timed)")

        def anchor(t: float):
            cands = anonlink.candidate_generation.find_candidate_pairs(
                bits, anonlink.similarities.dice_coefficient_accelerated, t
            )
            return anonlink.solving.greedy_solve(cands)

        rows = []
        for threshold in ("auto", 0.8):
            out = root / f"linkage-{threshold}.json"
            ours_times, anchor_times = [], []
            result = groups = None
            for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
                def run(threshold=threshold, out=out):
                    return link(world.bureau, world.cards, world.submissions, threshold, out)

                t, _, result = median_time(run, 1)
                ours_times.append(t)
                t_used = result.threshold
                t, _, groups = median_time(lambda t_used=t_used: anchor(t_used), 1)
                anchor_times.append(t)
            ours, theirs = statistics.median(ours_times), statistics.median(anchor_times)
            anchor_entities = sum(1 for g in groups if len(g) >= 2)
            doc = load_linkage(out, [world.bureau.card])
            same = anchor_entities == result.entities and all(len(e.members) >= 2 for e in doc.payload.entities)
            rows.append((threshold, result, ours, theirs, same))
            print(f"  threshold {threshold!s:>4} (used {result.threshold:.4f}, blocking {result.blocking}): "
                  f"ours {ours:.3f}s  anonlink {theirs:.3f}s  ratio {theirs / ours:.2f}x  "
                  f"[{'met' if theirs / ours >= TARGET else 'NOT met'}: target >= {TARGET:.0f}x]  "
                  f"entities {result.entities:,} vs {anchor_entities:,} ({'same' if same else 'DIFFERENT'})")
            print(f"      ours  runs: {', '.join(f'{x:.3f}' for x in ours_times)}")
            print(f"      anchor runs: {', '.join(f'{x:.3f}' for x in anchor_times)}")

        # The real command once, interpreter start-up and imports included.
        cmd = [sys.executable, str(ROOT / "cli.py"), "link", "--me", str(root / "keys" / "bureau.key")]
        for name in world.names:
            cmd += ["--cards", str(root / "keys" / f"{name}.card.json")]
        for sub in world.submissions:
            cmd += ["--submissions", str(sub)]
        cmd += ["--out", str(root / "linkage-cli.json")]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        print(f"  `pprl link` as a subprocess (start-up and imports included), threshold auto: "
              f"{time.perf_counter() - t0:.3f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
