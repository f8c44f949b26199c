"""Submissions as one JSON document or in the chunked form: size, time and peak memory of whole steps.

What (issue 15, "streaming, bounded memory"): two platforms of ``--n`` records each (pprl.sim.synth,
default corruption) submit **with scores** (two columns, real Paillier encryption under a 2048-bit key,
``--records-per-ciphertext``), once as JSON and once chunked (``pprl submit --format chunked``). Each
step runs in a fresh child process, so its peak resident memory (``ru_maxrss``) is its own:

- submit: read the CSV, encode, encrypt, sign, write (the same work in both forms but the writing);
- read: read and verify one submission (``load_submission``: what link, aggregate and registry update
  do first), on the JSON submission and on the same records written in the chunked form by their
  platform (a fresh submission would shuffle and tokenise anew);
- link: ``pprl link``'s work on those two submissions, threshold auto, LSH blocking (read, verify,
  link, sign, write the linkage).

Prints per step and form the wall time, the peak memory and the file size, the ratio json / chunked,
and the F1 of both linkages against the synthetic truth.

    python benchmarks/bench_chunked.py                 # 200k records per platform
    python benchmarks/bench_chunked.py --n 1000000 --forms chunked   # the issue's 1M per platform
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from link_world import peak_rss_gib

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
SCORES = ("repay_score", "spend_score")
FORMS = ("json", "chunked")


def _child(spec: dict) -> dict:
    """Runs in a fresh process: one step, timed, with its peak memory."""
    from pprl.protocol.files import link, load_card, load_key, load_submission, submit

    root = Path(spec["root"])
    names = spec["names"]
    cards = [load_card(root / "keys" / f"{n}.card.json") for n in names]
    t0 = time.perf_counter()
    out: dict = {}
    if spec["step"] == "submit":
        name = spec["name"]
        submit(load_key(root / "keys" / f"{name}.key"), SCHEMA, root / name / f"{name}.secret",
               root / "data" / f"{name}.csv", "user_id", spec["out"], paillier=root / "paillier.pub.json",
               scores=SCORES, authority=[load_card(root / "keys" / "authority.card.json")],
               records_per_ciphertext=spec["rpc"], format=spec["form"])
    elif spec["step"] == "convert":  # the same records in the chunked form, signed again by their platform
        from pprl.documents import Submission, load, write_chunked

        key = load_key(root / "keys" / f"{spec['name']}.key")
        write_chunked(spec["out"], load(spec["sub"], Submission), key.identity, key.card)
    elif spec["step"] == "read":
        out["records"] = load_submission(spec["sub"], cards).doc.header.records
    else:
        result = link(load_key(root / "keys" / "bureau.key"), cards, spec["subs"], "auto", spec["out"], blocking="lsh")
        out["entities"] = result.entities
    out.update(seconds=time.perf_counter() - t0, peak_gib=peak_rss_gib())
    return out


def run_child(spec: dict) -> dict:
    done = subprocess.run([sys.executable, __file__, "--_child", json.dumps(spec)], check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _setup(root: Path, people: int, seed: int) -> list[str]:
    """Population, identities, the linkage secret and the Paillier key (not timed)."""
    from pprl.protocol.files import combine_secrets, init_party, load_card, load_key, paillier_keygen, share_secret
    from pprl.sim.synth import generate_population, write_population

    population = generate_population(people, 2, seed=seed)
    write_population(population, root / "data")
    names = list(population.platforms)
    for n in names:
        init_party(n, "platform", root / "keys", force=True)
    for n, role in (("bureau", "bureau"), ("authority", "authority")):
        init_party(n, role, root / "keys", force=True)
    keys = {n: load_key(root / "keys" / f"{n}.key") for n in [*names, "authority"]}
    cards = {n: load_card(root / "keys" / f"{n}.card.json") for n in keys}
    shares = [share_secret(keys[n], [cards[p] for p in names if p != n], root / n / f"{n}.share.json") for n in names]
    for n in names:
        combine_secrets(keys[n], shares, root / n / f"{n}.secret")
    made = paillier_keygen(keys["authority"], 2048, root / "authority")
    (root / "paillier.pub.json").write_bytes(made.public_path.read_bytes())
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="records per platform (about)")
    parser.add_argument("--rpc", type=int, default=1, help="records per ciphertext")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--forms", default="json,chunked",
                        help="which forms to run (chunked alone: the 1M run without the JSON copies)")
    parser.add_argument("--workdir", type=Path, default=None, help="work here (kept) instead of a temporary folder")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        print(json.dumps(_child(json.loads(args._child))))
        return 0
    forms = [f for f in args.forms.split(",") if f]
    if not forms or not set(forms) <= set(FORMS):
        parser.error(f"--forms: one or both of {', '.join(FORMS)}")
    tmp = tempfile.TemporaryDirectory(prefix="bench-chunked-") if args.workdir is None else None
    root = Path(tmp.name) if tmp is not None else args.workdir
    try:
        t0 = time.perf_counter()
        names = _setup(root, round(args.n / 0.8), args.seed)
        print(f"bench_chunked: set-up {time.perf_counter() - t0:.0f}s (not counted); scores {', '.join(SCORES)}, "
              f"{args.rpc} record(s) per ciphertext, 2048-bit Paillier key", flush=True)
        base = {"root": str(root), "names": names}
        rows: dict[tuple[str, str], dict] = {}
        subs: dict[str, list[str]] = {form: [] for form in forms}
        for name in names:  # the forms interleaved: a shared machine's load falls on both alike
            for form in forms:
                out = root / name / f"{name}.sub.{form}"
                r = run_child({**base, "step": "submit", "name": name, "form": form, "rpc": args.rpc, "out": str(out)})
                r["bytes"] = out.stat().st_size
                rows[(f"submit {name}", form)] = r
                subs[form].append(str(out))
                print(f"  submit {name} {form}: {r['seconds']:.1f}s, peak {r['peak_gib']:.2f} GiB", flush=True)
        if "json" in forms and "chunked" in forms:
            # read and link the same records in both forms (fresh submissions would shuffle and tokenise anew)
            for i, name in enumerate(names):
                out = root / name / f"{name}.sub.converted"
                run_child({**base, "step": "convert", "name": name, "sub": subs["json"][i], "out": str(out)})
                subs["chunked"][i] = str(out)
        for step in ("read", "link"):
            for form in forms:
                spec = ({**base, "step": "read", "sub": subs[form][0]} if step == "read" else
                        {**base, "step": "link", "subs": subs[form], "out": str(root / f"linkage.{form}.json")})
                rows[(step, form)] = r = run_child(spec)
                print(f"  {step} {form}: {r['seconds']:.1f}s, peak {r['peak_gib']:.2f} GiB", flush=True)
        records = rows[("read", forms[0])]["records"]
        print(f"bench_chunked: {records:,} records in {Path(subs[forms[0]][0]).name}")
        print(f"  {'step':22s} {'form':8s} {'seconds':>8s} {'peak GiB':>9s} {'file MB':>8s}")
        for (step, form), r in rows.items():
            size = f"{r['bytes'] / 1e6:8.1f}" if "bytes" in r else f"{'':8s}"
            print(f"  {step:22s} {form:8s} {r['seconds']:8.1f} {r['peak_gib']:9.2f} {size}")
        if len(forms) < 2:
            return 0
        for step in dict.fromkeys(s for s, _ in rows):
            j, c = rows[(step, "json")], rows[(step, "chunked")]
            print(f"  {step:22s} json / chunked: time {j['seconds'] / c['seconds']:.2f}x, "
                  f"peak memory {j['peak_gib'] / c['peak_gib']:.2f}x"
                  + (f", size {j['bytes'] / c['bytes']:.2f}x" if "bytes" in j else ""))
        from pprl.protocol.files import load_card
        from pprl.sim.evaluation import evaluate_linkage

        maps = [Path(f"{s}.map.csv") for s in subs["json"]]
        bureau = load_card(root / "keys" / "bureau.card.json")
        f1 = {form: evaluate_linkage(root / f"linkage.{form}.json", maps, root / "data" / "truth.csv",
                                     cards=[bureau]).quality.f1 for form in FORMS}
        same = abs(f1["json"] - f1["chunked"]) <= 0.002
        print(f"  read and link ran on the JSON submissions and on the same records converted to the chunked form "
              f"(the threshold sample and LSH keys derive from the submissions' hashes, which differ by form): "
              f"F1 json {f1['json']:.4f}, chunked {f1['chunked']:.4f}")
        return 0 if same else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
