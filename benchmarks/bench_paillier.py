"""Side-by-side: pprl's packed DJN Paillier vs phe+gmpy2, HEU (ZPaillier, OU) and pypaillier.

Job: encrypt the three score columns of N records (fixed-point ints, |v| ≤ 10^8),
decrypt aggregates of three columns, and the submission bytes per encrypted value.
Every measurement runs in a fresh child process: "one core" children are pinned
to one CPU (``sched_setaffinity``) with RAYON_NUM_THREADS=1 (pypaillier), and
pprl uses workers=1; "all cores" children see every CPU and pprl uses one
worker process per CPU. Rates are medians of ``--repeats`` runs; key generation
and one-time setup (our fixed-base table, HEU's own table) are excluded and
reported separately. Slow anchors are timed on a sample of records (the
"sample" column), which only changes the noise, not the rate.

    python benchmarks/bench_paillier.py                 # 2048 bits, N = 2000
    python benchmarks/bench_paillier.py --bits 3072
    python benchmarks/bench_paillier.py --decrypt-n 100000 --repeats 1   # 100k aggregates
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

COLUMNS = 3
BOUND = 10**8  # scores up to ±1,000,000.00 at 2 decimals
MAX_SUMMANDS = 1000
SUMMANDS = 3  # records per decrypted aggregate
_PREFIX = "@bench@ "  # marks the child's replies among whatever libraries print


def _data(records: int, seed: int = 7) -> Any:
    import numpy as np

    return np.random.default_rng(seed).integers(-BOUND, BOUND + 1, size=(records, COLUMNS), dtype=np.int64)


# --- children: one library, one core count ---------------------------------------------------
#
# A child sets up once (key, tables), then answers "enc" / "dec" with one timed run each,
# so the parent can interleave rounds across libraries: load from other processes on a
# shared machine then hits every library alike.


def _timed(count: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return count / (time.perf_counter() - t), out


class Ours:
    """pprl; with ``records`` = "max", as many records per ciphertext as ``pprl submit`` can pack.

    The several-records row uses the consortium's own packing (``score_packing``: 4 slots of 44 bits
    with a count slot), times the bureau's alignment and masking separately (work that moves from
    the platforms to the bureau), and decrypts aligned, masked aggregates (both CRT halves).
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        import numpy as np

        from pprl.crypto.paillier.djn import djn_params, get_table
        from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, encrypt_packed
        from pprl.crypto.paillier.vector import generate_keypair
        from pprl.protocol.submit import score_packing

        self.pub, self.priv = generate_keypair(cfg["bits"])
        columns = [f"c{j}" for j in range(COLUMNS)]
        if cfg.get("records") == "max":
            self.records = score_packing(columns, self.pub).max_records_per_ciphertext(self.pub)
            self.spec = score_packing(columns, self.pub, self.records)
        else:
            self.records = 1
            self.spec = PackingSpec.plan(BOUND, COLUMNS, MAX_SUMMANDS, key=self.pub, decimals=2)
        self.workers = 1 if cfg["cores"] == "one" else None
        self.n = cfg["n"]
        self.params = djn_params(self.pub, -(-self.n // self.records))
        t = time.perf_counter()
        get_table(self.params)
        self.setup = time.perf_counter() - t
        self.data = _data(self.n)
        self._enc, self._dec = encrypt_packed, decrypt_packed
        self.enc_out = encrypt_packed(self.pub, self.data[:50], self.spec, workers=1)
        rng = np.random.default_rng(1)
        self.groups = [rng.choice(self.n, SUMMANDS, replace=False).tolist() for _ in range(cfg["decrypt_n"])]
        self.agg = None
        self.bureau_records_s = 0.0

    def enc(self) -> float:
        rate, self.enc_out = _timed(self.n, lambda: self._enc(self.pub, self.data, self.spec, workers=self.workers))
        return rate

    def _aggregate(self) -> Any:
        from pprl.crypto.paillier.packing_records import blinding_vector, sum_records

        def bureau() -> Any:
            summed = sum_records(self.enc_out, self.groups, self.spec, workers=self.workers)
            if self.records == 1:
                return summed
            return summed + blinding_vector(self.pub, self.spec, len(summed), workers=self.workers)

        rate, agg = _timed(len(self.groups) * SUMMANDS, bureau)
        self.bureau_records_s = rate
        return agg

    def dec(self) -> float:
        import numpy as np

        if self.agg is None:
            self.agg = self._aggregate()
        counts = [SUMMANDS] * len(self.groups)
        rate, out = _timed(len(self.groups), lambda: self._dec(self.priv, self.agg, self.spec, counts, workers=self.workers))
        expect = np.array([self.data[g].sum(axis=0) for g in self.groups[:50]], dtype=object)
        if not (out[:50] == expect).all():
            raise RuntimeError("pprl packed sums are wrong")
        return rate * COLUMNS

    def summary(self) -> dict[str, Any]:
        per_ct = COLUMNS * self.records
        label = f"pprl DJN packed ({self.params.exponent_bits}-b exp, w={self.params.window})"
        if self.records > 1:
            label = f"pprl DJN, {self.records} records/ct (submit --records-per-ciphertext)"
        return {
            "label": label, "records_per_ct": self.records,
            "ct_per_record": 1 if self.records == 1 else f"1/{self.records}", "values_per_ct": per_ct,
            "bytes_per_value": self.pub.ciphertext_bytes * 4 / 3 / per_ct,
            "raw_bytes_per_value": self.pub.ciphertext_bytes / per_ct,
            "sample": self.n, "dec_sample": len(self.groups), "setup_s": self.setup,
            "bureau_records_s": self.bureau_records_s,
        }


def _phe_encrypt_chunk(args: tuple[Any, list[int]]) -> list[Any]:
    pub, values = args
    return [pub.encrypt(v) for v in values]


def _phe_decrypt_chunk(args: tuple[Any, list[Any]]) -> list[int]:
    priv, numbers = args
    return [priv.decrypt(x) for x in numbers]


def _pool_map(fn: Callable[[Any], list[Any]], key: Any, items: list[Any], cores: str) -> list[Any]:
    if cores == "one":
        return fn((key, items))
    from concurrent.futures import ProcessPoolExecutor

    workers = os.cpu_count() or 1
    size = -(-len(items) // (workers * 4))
    with ProcessPoolExecutor(workers) as pool:
        parts = pool.map(fn, [(key, items[i : i + size]) for i in range(0, len(items), size)])
        return [x for part in parts for x in part]


class Phe:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import phe

        self.pub, self.priv = phe.generate_paillier_keypair(n_length=cfg["bits"])
        self.cores, self.recs = cfg["cores"], min(cfg["n"], cfg["slow_sample"])
        self.dec_n = cfg["dec_sample"]
        self.values = [int(v) for v in _data(self.recs).ravel()]
        self.out = _phe_encrypt_chunk((self.pub, self.values))

    def enc(self) -> float:
        rate, self.out = _timed(self.recs, lambda: _pool_map(_phe_encrypt_chunk, self.pub, self.values, self.cores))
        return rate

    def dec(self) -> float:
        part = self.out[: self.dec_n]
        rate, back = _timed(len(part), lambda: _pool_map(_phe_decrypt_chunk, self.priv, part, self.cores))
        if back != self.values[: self.dec_n]:
            raise RuntimeError("phe round trip is wrong")
        return rate

    def summary(self) -> dict[str, Any]:
        sizes = [len(json.dumps({"v": str(x.ciphertext()), "e": x.exponent})) for x in self.out[:200]]
        return {
            "label": "phe + gmpy2 (r^n, 1 value/ct)", "ct_per_record": COLUMNS, "values_per_ct": 1,
            "bytes_per_value": statistics.mean(sizes), "sample": self.recs,
            "dec_sample": min(self.dec_n, len(self.out)), "setup_s": 0.0,
        }


class Heu:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import numpy as np
        from heu import numpy as hnp
        from heu import phe as hphe

        self.schema, self.batch = cfg["schema"], cfg["batch"]
        t = time.perf_counter()
        kit = hnp.setup(getattr(hphe.SchemaType, self.schema), cfg["bits"])
        self.setup = time.perf_counter() - t
        self.encryptor, self.decryptor = kit.encryptor(), kit.decryptor()
        self.recs, self.dec_n = min(cfg["n"], cfg["anchor_sample"]), cfg["dec_sample"]
        data = _data(self.recs)
        if self.batch:  # HEU packs two int64 per plaintext: (c1, c2) and (c3, 0)
            self.encoder = kit.batch_integer_encoder()
            self.values = np.concatenate([data, np.zeros((self.recs, 1), np.int64)], axis=1).reshape(-1, 2)
            self.cts, self.per_ct = 2, 2
        else:
            self.encoder = kit.integer_encoder()
            self.values = data.reshape(-1)
            self.cts, self.per_ct = COLUMNS, 1
        self.plain = kit.array(self.values, self.encoder)
        self.out = self.encryptor.encrypt(self.plain)  # warm-up

    def enc(self) -> float:
        rate, self.out = _timed(self.recs, lambda: self.encryptor.encrypt(self.plain))
        return rate

    def dec(self) -> float:
        import numpy as np

        rows = min(self.dec_n // self.per_ct, len(self.values))
        part = self.out[0:rows]
        rate, back = _timed(rows, lambda: self.decryptor.decrypt(part))
        if not np.array_equal(np.asarray(back.to_numpy(self.encoder), dtype=np.int64), self.values[:rows]):
            raise RuntimeError("HEU round trip is wrong")
        return rate * self.per_ct

    def summary(self) -> dict[str, Any]:
        enc = "BatchIntegerEncoder, 2" if self.batch else "IntegerEncoder, 1"
        return {
            "label": f"HEU {self.schema} ({enc} value/ct)", "ct_per_record": self.cts,
            "values_per_ct": self.per_ct,
            "bytes_per_value": len(self.out.serialize()) / (self.recs * COLUMNS),
            "sample": self.recs, "dec_sample": min(self.dec_n // self.per_ct, len(self.values)) * self.per_ct,
            "setup_s": self.setup,
        }


class PyPaillier:
    def __init__(self, cfg: dict[str, Any]) -> None:
        import paillier

        self.lib = paillier
        self.pub, self.sec = paillier.generate_keypair(cfg["bits"])
        self.recs, self.dec_n = min(cfg["n"], cfg["anchor_sample"]), cfg["dec_sample"]
        self.values = [int(v) for v in _data(self.recs).ravel()]
        self.out = [bytes(b) for b in paillier.encrypt_integers(self.pub, self.values[:10])]

    def enc(self) -> float:
        rate, out = _timed(self.recs, lambda: self.lib.encrypt_integers(self.pub, self.values))
        self.out = [bytes(b) for b in out]
        return rate

    def dec(self) -> float:
        part = self.out[: self.dec_n]
        rate, back = _timed(len(part), lambda: self.lib.decrypt_many(self.sec, part))
        if [int(x) for x in back] != self.values[: self.dec_n]:
            raise RuntimeError("pypaillier round trip is wrong")
        return rate

    def summary(self) -> dict[str, Any]:
        return {
            "label": f"pypaillier (DJN, {self.pub.exponent_bits}-b exp, 1 value/ct)", "ct_per_record": COLUMNS,
            "values_per_ct": 1, "bytes_per_value": statistics.mean(len(b) for b in self.out),
            "sample": self.recs, "dec_sample": min(self.dec_n, len(self.out)), "setup_s": 0.0,
        }


CHILDREN = {"ours": Ours, "phe": Phe, "heu": Heu, "pypaillier": PyPaillier}


class Child:
    """A child process running one library; ``skipped`` holds the reason if it failed."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        env = dict(os.environ)
        env.pop("YACL_NUM_THREADS", None)  # HEU's default pool is its fastest setting here
        if cfg["cores"] == "one":
            env["RAYON_NUM_THREADS"] = "1"
            env["OMP_NUM_THREADS"] = "1"
        else:
            env.pop("RAYON_NUM_THREADS", None)
        self.name, self.skipped, self.rates = cfg["name"], None, {"enc": [], "dec": []}
        self.info: dict[str, Any] = {}
        cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps(cfg)]
        # a pipe could fill up and stall the child; open as long as this object lives
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True
        )
        self._ask(None)

    def _ask(self, command: str | None) -> dict[str, Any] | None:
        if self.skipped:
            return None
        try:
            if command is not None:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            while line and not line.startswith(_PREFIX):  # libraries may log to stdout
                line = self.proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            self.proc.wait(timeout=60)
            self.stderr.seek(0)
            err = self.stderr.read().strip().splitlines()
            self.skipped = (err or ["child exited"])[-1][:160]
            return None
        reply = json.loads(line[len(_PREFIX) :])
        if "skipped" in reply:
            self.skipped = reply["skipped"]
            return None
        return reply

    def measure(self, what: str) -> None:
        reply = self._ask(what)
        if reply is not None:
            self.rates[what].append(reply["rate"])

    def finish(self) -> dict[str, Any]:
        reply = self._ask("summary")
        if reply is not None:
            self.info = reply
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        if self.skipped:
            return {"skipped": self.skipped, "label": self.name}
        return {
            **self.info,
            "enc_records_s": statistics.median(self.rates["enc"]),
            "dec_values_s": statistics.median(self.rates["dec"]),
        }


def _child_main(raw: str) -> None:
    cfg = json.loads(raw)
    if cfg["cores"] == "one" and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    def reply(obj: dict[str, Any]) -> None:
        sys.stdout.write(_PREFIX + json.dumps(obj) + "\n")
        sys.stdout.flush()

    def failed(exc: BaseException) -> dict[str, Any]:
        if isinstance(exc, ImportError):
            return {"skipped": f"not importable ({exc.name or exc})"}
        text = str(exc).splitlines()[0][:140] if str(exc) else ""
        return {"skipped": f"{type(exc).__name__}: {text}"}

    try:
        lib = CHILDREN[cfg["lib"]](cfg)
    except Exception as exc:  # an anchor failing must not take the benchmark down
        return reply(failed(exc))
    reply({"ready": True})
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "summary":
                reply(lib.summary())
                return
            reply({"rate": getattr(lib, command)()})
        except Exception as exc:
            return reply(failed(exc))


# --- the table -------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bits", type=int, default=2048, choices=[2048, 3072])
    ap.add_argument("--n", type=int, default=None, help="records to encrypt (and aggregates to decrypt)")
    ap.add_argument("--decrypt-n", type=int, default=None,
                    help="packed aggregates pprl decrypts (default --n); built from the --n encrypted records")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cores", choices=["one", "all", "both"], default="both")
    ap.add_argument("--_child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        return _child_main(args._child)
    n = args.n or (1000 if args.bits == 2048 else 400)
    big = args.bits > 2048
    base = {  # slow anchors are timed on samples: rates, not totals, are compared
        "bits": args.bits, "n": n, "decrypt_n": args.decrypt_n or n, "repeats": args.repeats,
        "slow_sample": 20 if big else 50, "anchor_sample": min(n, 150 if big else 400),
        "dec_sample": 90 if big else 240,
    }
    anchors = [
        ("phe", {}), ("heu", {"schema": "ZPaillier", "batch": False}),
        ("heu", {"schema": "ZPaillier", "batch": True}), ("heu", {"schema": "OU", "batch": False}),
        ("heu", {"schema": "OU", "batch": True}), ("pypaillier", {}),
    ]
    cores_list = ["one", "all"] if args.cores == "both" else [args.cores]
    print(f"pprl Paillier benchmark: {args.bits}-bit keys, N = {n} records x {COLUMNS} columns, "
          f"{os.cpu_count()} CPUs, medians of {args.repeats}\n")
    results: dict[tuple[str, str], dict[str, Any]] = {}
    t0 = time.perf_counter()
    for cores in cores_list:
        children = []
        for lib, extra in [("ours", {}), ("ours", {"records": "max"})] + anchors:
            key = "/".join([lib, *(str(v) for v in extra.values())])
            children.append((key, Child({**base, **extra, "lib": lib, "cores": cores, "name": key})))
        for _ in range(args.repeats):  # interleaved rounds
            for _, child in children:
                child.measure("enc")
                child.measure("dec")
        for key, child in children:
            results[(key, cores)] = child.finish()
        _print_block(cores, [results[(key, cores)] for key, _ in children])
    _print_targets(results)
    print(f"(total {time.perf_counter() - t0:.0f} s)")


def _print_block(cores: str, rows: list[dict[str, Any]]) -> None:
    print(f"== {cores} core{'s' if cores == 'all' else ''} ==")
    head = (f"{'implementation':48} {'enc rec/s':>10} {'ct/rec':>6} {'ours/x':>7} {'dec val/s':>10} "
            f"{'ours/x':>7} {'B/value':>8} {'x/ours':>7} {'enc n':>6} {'dec n':>6} {'setup s':>7}")
    print(head)
    print("-" * len(head))
    ours = rows[0]
    for r in rows:
        label = r["label"]
        if "skipped" in r:
            print(f"{label:48} skipped: {r['skipped']}")
            continue
        ok = "skipped" not in ours
        e = ours["enc_records_s"] / r["enc_records_s"] if ok else float("nan")
        d = ours["dec_values_s"] / r["dec_values_s"] if ok else float("nan")
        b = r["bytes_per_value"] / ours["bytes_per_value"] if ok else float("nan")
        print(f"{label[:48]:48} {_fmt(r['enc_records_s']):>10} {r['ct_per_record']!s:>6} {e:>6.2f}x "
              f"{_fmt(r['dec_values_s']):>10} {d:>6.2f}x {r['bytes_per_value']:>8.1f} {b:>6.2f}x "
              f"{r['sample']:>6} {r['dec_sample']:>6} {r['setup_s']:>7.2f}")
    if "skipped" not in ours:
        print(f"  pprl decrypts {ours['dec_sample']} packed aggregates ({SUMMANDS} records x {COLUMNS} columns "
              f"each): {ours['dec_values_s'] / COLUMNS:,.0f} aggregates/s. Bytes: pprl = base64 of "
              f"{ours['raw_bytes_per_value'] * COLUMNS:.0f}-byte ciphertexts in JSON "
              f"({ours['raw_bytes_per_value']:.1f} B/value as raw binary); phe = json.dumps of "
              '{"v": str(c), "e": exp}; HEU = serialize(); pypaillier = raw blob.')
    for r in rows:
        if r.get("records_per_ct", 1) > 1 and "skipped" not in r:
            print(f"  {r['records_per_ct']} records/ct: the bureau aligns and masks {_fmt(r['bureau_records_s'])} "
                  f"records/s (one-record sums: {_fmt(ours.get('bureau_records_s', 0))}/s), work the platforms "
                  "no longer do; its aggregates need both CRT halves to decrypt.")
    print()


def _print_targets(results: dict[tuple[str, str], dict[str, Any]]) -> None:
    print("== issue targets (one core, 2048/3072-bit, full-length DJN randomness) ==")

    def check(name: str, key: str, metric: str, need: float, inverse: bool = False, mine: str = "ours") -> None:
        ours = results.get((mine, "one"), {"skipped": "one-core run not requested"})
        anchor = results.get((key, "one"), {"skipped": "not run"})
        if "skipped" in ours or "skipped" in anchor:
            print(f"  {name}: not measured ({ours.get('skipped') or anchor.get('skipped')})")
            return
        ratio = anchor[metric] / ours[metric] if inverse else ours[metric] / anchor[metric]
        verdict = "MET" if ratio >= need else "NOT MET"
        print(f"  {name}: {ratio:.2f}x (target >= {need:g}x) {verdict}")

    check("encrypt records/s vs HEU ZPaillier, IntegerEncoder", "heu/ZPaillier/False", "enc_records_s", 3)
    check("encrypt records/s vs HEU ZPaillier, BatchIntegerEncoder", "heu/ZPaillier/True", "enc_records_s", 3)
    check("decrypt values/s vs phe per-value rate", "phe", "dec_values_s", 3)
    check("submission bytes/value, phe JSON / ours (1 record/ct)", "phe", "bytes_per_value", 20, inverse=True)
    check("submission bytes/value, phe JSON / ours (records/ct max)", "phe", "bytes_per_value", 20, inverse=True,
          mine="ours/max")
    check("  (records/ct max: encrypt records/s vs HEU ZPaillier)", "heu/ZPaillier/False", "enc_records_s", 3,
          mine="ours/max")
    check("  (records/ct max: decrypt values/s vs phe)", "phe", "dec_values_s", 3, mine="ours/max")


if __name__ == "__main__":
    main()
