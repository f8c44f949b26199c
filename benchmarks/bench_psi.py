"""ECDH PSI: pprl against OpenMined's PSI (two parties), and pprl's K-platform intersection-sum.

Two-party cardinality PSI: a client set and a server set of ``--n`` identifiers each, half of them shared.
Both run the same DH-PSI flow (client request, server setup + response, client count), in one process, no
network. Throughput counts both sides' elements: ``2n / seconds``, by wall clock and by CPU time (the fairer
figure on a shared machine; with two cores only wall clock says what the second core bought). OpenMined's
runs on P-256 with try-and-increment hashing in C++ (``DataStructure.RAW``, i.e. exact); pprl's on
Curve25519/X25519 with RFC 9380 hash_to_curve (curve25519_XMD:SHA-512_ELL2_RO_) and its own batched
X25519 ladder, both in C (``pprl/crypto/_h2c.c``; see ``pprl/crypto/psi.py``).

Configurations (``--configs``, default ``1:auto,1:avx2,2:auto,2:avx2``): ``CORES:PATH``. One core pins the
process to one CPU, for both libraries. Two cores give pprl two threads and openmined-psi the same two
CPUs, which it does not use (its calls are single-threaded: the script prints its CPU/wall ratio). PATH
is the X25519 path: ``auto`` (the best this CPU runs), ``portable``, ``avx2`` (the path of AVX2-only
CPUs, forced), ``ifma`` or ``libsodium`` (``crypto_scalarmult``, as before pprl had its own ladder).
Each configuration runs both libraries interleaved, ``--repeat`` times; medians and the range of the
per-run ratios are printed.

Intersection-sum: ``--sum-platforms`` platforms of ``--sum-n`` records each
(neighbouring platforms share half their people) through the real party
steps (``pprl.protocol.psi``): blind, Paillier-encrypt ``--sum-scores``
columns at ``--sum-bits``, K-1 ring hops, aggregate (match + homomorphic
sums); ``--decrypt`` adds the authority's step. Uses every CPU
(``--sum-workers``). Timings per step; the intersection size is checked.

Examples:
  python benchmarks/bench_psi.py                       # 100k x 100k, then 3 x 100k intersection-sum
  python benchmarks/bench_psi.py --n 1000000 --skip-sum
  python benchmarks/bench_psi.py --skip-sum --repeat 5 --configs 1:avx2,2:avx2,1:libsodium
  python benchmarks/bench_psi.py --skip-two-party --sum-n 10000 --sum-scores 2 --decrypt
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from pprl.crypto import psi as ours

__all__ = ["main"]


def _ids(start: int, count: int) -> list[str]:
    """Distinct valid 18-character resident IDs: 1000 sequence numbers per birth date from 1950."""
    import datetime

    from pprl.encoding.normalise.identifiers import resident_id_check_char

    base = datetime.date(1950, 1, 1)
    out = []
    for i in range(start, start + count):
        body = f"110105{base + datetime.timedelta(days=i // 1000):%Y%m%d}{i % 1000:03d}"
        out.append(body + resident_id_check_char(body))
    return out


def _plain_ids(start: int, count: int) -> list[str]:
    return [f"{i:018d}" for i in range(start, start + count)]


def run_ours(client_items: list[str], server_items: list[str], workers: int) -> tuple[float, int, dict[str, float]]:
    domain = ours.make_domain("bench", "two-party")
    t0 = time.perf_counter()
    client, server = ours.PsiClient(domain), ours.PsiServer(domain)
    request = client.create_request(client_items, workers=workers)
    t1 = time.perf_counter()
    setup = server.setup(server_items, workers=workers)
    response = server.process_request(request, workers=workers)
    t2 = time.perf_counter()
    size = client.intersection_size(setup, response, workers=workers)
    t3 = time.perf_counter()
    return t3 - t0, size, {"client request": t1 - t0, "server": t2 - t1, "client count": t3 - t2}


def run_theirs(client_items: list[str], server_items: list[str]) -> tuple[float, int, dict[str, float]]:
    import private_set_intersection.python as psi

    t0 = time.perf_counter()
    client = psi.client.CreateWithNewKey(False)
    server = psi.server.CreateWithNewKey(False)
    request = client.CreateRequest(client_items)
    t1 = time.perf_counter()
    setup = server.CreateSetupMessage(0.0, len(client_items), server_items, psi.DataStructure.RAW)
    response = server.ProcessRequest(request)
    t2 = time.perf_counter()
    size = client.GetIntersectionSize(setup, response)
    t3 = time.perf_counter()
    return t3 - t0, size, {"client request": t1 - t0, "server": t2 - t1, "client count": t3 - t2}


def _theirs_available() -> str | None:
    try:
        import private_set_intersection.python as psi  # noqa: F401
    except (ImportError, OSError, TypeError, AttributeError) as exc:  # not installed or broken: skip, say why
        return f"{type(exc).__name__}: {exc}"
    return None


def _pin_to_one_cpu() -> set[int] | None:
    """Pin this process to one CPU (so "one core" holds for both libraries); return the old set."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    return before


def _set_path(path: str) -> str:
    """Select pprl's X25519 path; returns what will run."""
    from pprl.crypto import hash_to_curve as h2c

    if path == "libsodium":
        os.environ["PPRL_NO_X25519"] = "1"
        h2c.force_x25519_isa(None)
        return "libsodium crypto_scalarmult"
    h2c.force_x25519_isa(None if path == "auto" else path)  # ValueError when this CPU lacks it
    runs = ", ".join(h2c.x25519_isas()) or "none"
    if h2c.x25519_isa() is None:
        return f"libsodium crypto_scalarmult (no vector path here; pprl's paths: {runs})"
    return f"pprl ladder, {h2c.x25519_isa()} path (this CPU runs: {runs})"


def two_party(n: int, workers: int, repeat: int, skip_theirs: bool, path: str = "auto") -> None:
    from pprl.crypto import hash_to_curve as h2c

    before = _pin_to_one_cpu() if workers == 1 else None
    switch = os.environ.get("PPRL_NO_X25519")  # the caller's setting, restored afterwards
    try:
        described = _set_path(path)
        _two_party(n, workers, repeat, skip_theirs, described)
    finally:
        h2c.force_x25519_isa(None)
        if switch is None:
            os.environ.pop("PPRL_NO_X25519", None)
        else:
            os.environ["PPRL_NO_X25519"] = switch
        if before is not None:
            os.sched_setaffinity(0, before)


def _two_party(n: int, workers: int, repeat: int, skip_theirs: bool, described: str) -> None:
    client_items = _plain_ids(0, n)
    server_items = _plain_ids(n // 2, n)
    expected = n - n // 2
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"two-party PSI cardinality, {n:,} x {n:,} (shared {expected:,}), pprl on {workers} thread(s), "
          f"{cpus} CPU(s) allowed, median of {repeat}; X25519: {described}")
    runs = [("pprl (X25519, RFC 9380 h2c in C)", lambda: run_ours(client_items, server_items, workers))]
    reason = "--skip-theirs" if skip_theirs else _theirs_available()
    if reason is None:
        runs.append(("openmined-psi (P-256, C++)", lambda: run_theirs(client_items, server_items)))
    times: dict[str, list[float]] = {label: [] for label, _ in runs}
    cpu: dict[str, list[float]] = {label: [] for label, _ in runs}
    phases: dict[str, dict[str, float]] = {}
    for _ in range(repeat):  # interleaved, so a busy machine slows both alike
        for label, fn in runs:
            c0 = time.process_time()
            seconds, size, phases[label] = fn()
            cpu[label].append(time.process_time() - c0)
            if size != expected:
                raise SystemExit(f"{label}: intersection size {size}, expected {expected}")
            times[label].append(seconds)
    print(f"  {'':38s} {'wall':>8s}    {'elements/s':>10s}   {'cpu':>8s}    {'elements/s':>10s}")
    for label, _ in runs:
        t, c = statistics.median(times[label]), statistics.median(cpu[label])
        detail = ", ".join(f"{k} {v:.1f}s" for k, v in phases[label].items())
        print(f"  {label:38s} {t:8.1f} s  {2 * n / t:10,.0f}   {c:8.1f} s  {2 * n / c:10,.0f}   (last run: {detail})")
    if reason is not None:
        print(f"  openmined-psi: skipped: {reason}")
    elif len(runs) == 2:
        (a, _), (b, _) = runs
        walls = [y / x for x, y in zip(times[a], times[b])]
        cpus_r = [y / x for x, y in zip(cpu[a], cpu[b])]
        print(f"  ratio pprl/openmined throughput: {statistics.median(walls):.2f}x wall clock "
              f"({min(walls):.2f}-{max(walls):.2f}), {statistics.median(cpus_r):.2f}x CPU time "
              f"({min(cpus_r):.2f}-{max(cpus_r):.2f}) (median and range of per-run ratios; "
              f"load average {os.getloadavg()[0]:.1f})")
        theirs_par = statistics.median([c / t for c, t in zip(cpu[b], times[b])])
        ours_par = statistics.median([c / t for c, t in zip(cpu[a], times[a])])
        print(f"  CPU time / wall time: pprl {ours_par:.2f}, openmined-psi {theirs_par:.2f}"
              + (" (openmined-psi is single-threaded)" if cpus and cpus > 1 else ""))


def intersection_sum(k: int, n: int, bits: int, scores: int, workers: int | None, decrypt: bool) -> None:
    from pprl.crypto.paillier.vector import generate_keypair
    from pprl.protocol.files import (
        aggregate_intersection,
        blind_identifiers,
        count_intersection,
        decrypt_release,
        init_party,
        init_session,
        load_card,
        load_key,
        load_session,
        psi_evidence,
        reblind_round,
    )
    from pprl.protocol.psi import reblind_schedule

    columns = [f"score_{j}" for j in range(scores)]
    print(f"intersection-sum, {k} platforms x {n:,} records, {scores} score column(s) at {bits} bits, "
          f"workers {workers or 'all CPUs'}")
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-psi-") as tmp:
        root = Path(tmp)
        names = [f"platform_{i}" for i in range(1, k + 1)]
        keys, cards = {}, {}
        for name, role in [*[(x, "platform") for x in names], ("bureau", "bureau"), ("authority", "authority")]:
            kp, cp = init_party(name, role, root / "keys")
            keys[name], cards[name] = load_key(kp), load_card(cp)
        t = time.perf_counter()
        pub, priv = generate_keypair(bits) if scores else (None, None)
        timings["paillier keygen"] = time.perf_counter() - t
        frames = {}
        for i, name in enumerate(names):
            start = i * (n // 2)
            ids = _ids(start, n)
            frames[name] = pd.DataFrame({
                "user_id": [f"{name}-{j}" for j in range(n)],
                "resident_id": ids,
                **{c: [str((start + j) % 997 + i) for j in range(n)] for c in columns},
            })
        people_sets = [set(range(i * (n // 2), i * (n // 2) + n)) for i in range(k)]
        everyone: dict[int, int] = {}
        for s in people_sets:
            for x in s:
                everyone[x] = everyone.get(x, 0) + 1
        expected = sum(1 for v in everyone.values() if v >= 2)
        session = init_session(keys["bureau"], [cards[x] for x in names], root / "session.json").path
        sess = load_session(session, cards["bureau"], [cards[x] for x in names])
        current = {}
        for name in names:
            res = blind_identifiers(keys[name], sess, frames[name], "user_id", root / f"{name}.r0.json",
                                    root / f"{name}.state", paillier=pub, scores=columns, workers=workers)
            current[name] = res.path
            for label, v in res.timings.items():
                timings[label] = timings.get(label, 0.0) + v
        t = time.perf_counter()
        for step, pairs in enumerate(reblind_schedule(sess), start=1):
            for platform, origin in pairs:
                current[origin] = reblind_round(keys[platform], root / f"{platform}.state", current[origin],
                                                root / f"{origin}.r{step}.json", workers=workers).path
        timings["reblind"] = time.perf_counter() - t
        t = time.perf_counter()
        if scores:
            rel = aggregate_intersection(keys["bureau"], sess, [current[x] for x in names], 2, root / "release.json")
            found = rel.intersection
        else:
            found = count_intersection(keys["bureau"], sess, [current[x] for x in names]).intersection
        timings["aggregate" if scores else "count"] = time.perf_counter() - t
        if found != expected:
            raise SystemExit(f"intersection {found}, expected {expected}")
        if decrypt and scores:
            t = time.perf_counter()
            decrypt_release(keys["authority"], priv, rel.path, root / "audit.log", root / "aggregates.csv",
                            cards=[cards["bureau"]],
                            evidence=psi_evidence(session, [current[x] for x in names], [cards[x] for x in names]))
            timings["decrypt"] = time.perf_counter() - t
    psi_part = sum(v for key, v in timings.items() if key in ("blind", "reblind", "aggregate", "count"))
    total = sum(v for key, v in timings.items() if key != "paillier keygen")
    print(f"  intersection {found:,} persons on 2+ platforms (expected {expected:,})")
    print("  " + ", ".join(f"{key} {v:.1f}s" for key, v in timings.items()))
    print(f"  total {total:.1f}s (PSI and matching {psi_part:.1f}s, Paillier {total - psi_part:.1f}s)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="set size per party, two-party comparison")
    ap.add_argument("--configs", default="1:auto,1:avx2,2:auto,2:avx2",
                    help="CORES:PATH,... for the two-party comparison (PATH: auto, portable, avx2, ifma, libsodium)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per library; the median is reported")
    ap.add_argument("--skip-theirs", action="store_true", help="do not run openmined-psi")
    ap.add_argument("--skip-two-party", action="store_true")
    ap.add_argument("--skip-sum", action="store_true")
    ap.add_argument("--sum-platforms", type=int, default=3)
    ap.add_argument("--sum-n", type=int, default=100_000)
    ap.add_argument("--sum-bits", type=int, default=2048, help="Paillier modulus bits for the intersection-sum")
    ap.add_argument("--sum-scores", type=int, default=1, help="score columns (0: cardinality only)")
    ap.add_argument("--sum-workers", type=int, default=None, help="default: every CPU")
    ap.add_argument("--decrypt", action="store_true", help="also time the authority's decryption")
    args = ap.parse_args(argv)
    if not args.skip_two_party:
        from pprl.crypto import hash_to_curve as h2c

        seen: set[tuple[str, str]] = set()
        for config in args.configs.split(","):
            cores, _, path = config.strip().partition(":")
            path = path or "auto"
            resolved = (h2c.x25519_isa() or "libsodium") if path == "auto" else path
            if (cores, resolved) in seen:  # e.g. 1:auto and 1:avx2 on an AVX2-only CPU: run it once
                print(f"two-party PSI, {cores} core(s), X25519 path {path}: the same as above ({resolved})")
                continue
            seen.add((cores, resolved))
            if path not in ("auto", "libsodium") and path not in h2c.x25519_isas():
                print(f"two-party PSI, {cores} core(s), X25519 path {path}: skipped, this CPU or build lacks it "
                      f"(it runs: {', '.join(h2c.x25519_isas()) or 'libsodium only'})")
                continue
            two_party(args.n, int(cores), args.repeat, args.skip_theirs, path)
    if not args.skip_sum:
        intersection_sum(args.sum_platforms, args.sum_n, args.sum_bits, args.sum_scores, args.sum_workers,
                         args.decrypt)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
