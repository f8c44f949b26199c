"""Services under load: platforms upload 100k-record submissions at once while lenders query at 50/s (issue 13).

The issue's load target: 10 platforms uploading 100k-record submissions at
once while lenders send 50 queries/s for 60 s: no request lost or failed, p99
query latency < 1 s, memory bounded. This script sets that up and measures it
against a real ``python -m pprl serve`` bureau (SQLite registry) on 127.0.0.1:

Set-up (not counted in the load figures; cached in ``--workdir`` so re-runs
skip it): identities for ``--platforms`` platforms, the bureau, the authority
(Paillier 2048-bit) and ``--lenders`` lenders; a linkage secret shared by the
platforms; a base registry of ``--base-people`` persons over two platforms
(submissions with scores and pseudonyms, applied in-process as
``bench_query.py`` does); pseudonyms for ``--applicants`` applicants of that
registry (through the real OPRF steps: request, platform evaluation, finish);
and each platform's signed ``--records``-record submission (CLKs, three packed
score columns, pseudonyms), made with ``pprl.protocol.files.submit``.

Load: the bureau starts as a child process; its RSS (``/proc/PID/status``
VmRSS, and the kernel's high-water mark VmHWM) and CPU time are sampled every
second. Then, at one instant t0, every platform starts uploading its
submission (one thread each, ``pprl.service.client.Client.upload``: signed
2 MB chunks, then complete) and ``--query-procs`` processes of
``--query-threads`` threads send lender queries on an open-loop schedule:
query i is due at t0 + i / ``--qps`` for ``--seconds``, each a freshly signed
query for one applicant with a fresh consent (POST /v1/queries), its latency
measured from the time it was due (so a slow server or a saturated client
cannot hide queueing). The bureau runs with a release policy whose daily
quota is far above the load. After the load window (and once the uploads are
in), a queries-only tail (``--tail-seconds``) checks that memory does not grow
with the number of queries.

Printed: each upload's throughput and completion (the document hash the
bureau answered, and lists under /v1/submissions, must be the file's); the
queries sent, answered and failed (by HTTP status, or lost: no answer within
``--timeout``), latency p50/p95/p99/max over the window, for the queries due
while uploads ran and after, and for the tail; a timeline per
``--timeline-step`` seconds (latency, the bureau's CPU in cores, RSS, SQLite
WAL size, MiB uploaded); the bureau's RSS at start, peak, after the load and
at the end; and the CPU time of the bureau and of the load generators, which
share the machine's CPUs with it.

Criteria printed as PASS/FAIL: every query answered (0 lost, 0 failed, each
finding its applicant); every upload accepted with the document hash of its
file; p99 query latency < 1 s; memory bounded: the bureau's peak RSS (VmHWM)
below ``--rss-bound-gib`` (2 GiB) and its RSS at the end of the tail no more
than ``--growth-bound-mib`` (32 MiB) above its start.

``--no-uploads`` measures the query path alone; ``--serve-script`` runs the
bureau from another entry point (``python SCRIPT serve ...``), to measure a
changed service against the same load.

Run: python benchmarks/bench_service.py --workdir /tmp/bench-service          # 10 x 100k, 50 q/s for 60 s
     python benchmarks/bench_service.py --quick                               # 3 x 5k, 20 q/s for 10 s
     python benchmarks/bench_service.py --workdir /tmp/bench-service --no-uploads --qps 30
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import os
import queue
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from anchors import cpu_name, utc_stamp

ROOT = Path(__file__).resolve().parents[1]
SCORES = ("repay_score", "spend_score", "travel_score")
SCHEMA = ROOT / "examples" / "schema-cn.json"
PURPOSE = "loan-application"
MIB = 1024 * 1024


_stamp = utc_stamp
_cpu = cpu_name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in [0, 1]) of ``values``; nan when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1))]


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:,.0f} ms"


# -- set-up (cached in the work directory) ---------------------------------------------------------


@dataclass
class Setup:
    """What the load needs, all on disk under ``root``."""

    root: Path
    platforms: list[str]
    lenders: list[str]
    submissions: list[dict[str, Any]]  # per platform: path, bytes, sha256, document, records
    base_registry: Path
    pool: list[str]  # applicants' pseudonyms (hex), each held by the base registry
    policy: Path
    timings: dict[str, float] = field(default_factory=dict)

    def key(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.key"

    def card(self, name: str) -> Path:
        return self.root / "keys" / f"{name}.card.json"


def _identities(root: Path, platforms: list[str], lenders: list[str]) -> None:
    from pprl.protocol.files import combine_secrets, init_party, load_card, load_key, paillier_keygen, share_secret

    keys = root / "keys"
    roles = {**{p: "platform" for p in platforms}, "bureau": "bureau", "authority": "authority",
             **{n: "lender" for n in lenders}}
    for name, role in roles.items():
        if not (keys / f"{name}.key").exists():
            init_party(name, role, keys)
    secrets_dir = root / "secrets"
    if not all((secrets_dir / f"{p}.secret").exists() for p in platforms):
        me = {p: load_key(keys / f"{p}.key") for p in platforms}
        cards = {p: load_card(keys / f"{p}.card.json") for p in platforms}
        shares = [share_secret(me[p], [cards[q] for q in platforms if q != p], secrets_dir / f"{p}.share.json")
                  for p in platforms]
        for p in platforms:
            combine_secrets(me[p], shares, secrets_dir / f"{p}.secret")
    if not (root / "authority" / "paillier.key").exists():
        paillier_keygen(load_key(keys / "authority.key"), 2048, root / "authority")


def _submit(root: Path, name: str, frame: Any, out: Path) -> Any:
    from pprl.protocol.files import load_card, load_key, submit

    return submit(load_key(root / "keys" / f"{name}.key"), SCHEMA, root / "secrets" / f"{name}.secret", frame,
                  "user_id", out, paillier=root / "authority" / "paillier.pub.json", scores=SCORES,
                  authority=load_card(root / "keys" / "authority.card.json"), pseudonym_column="resident_id")


def _base_registry(root: Path, platforms: list[str], people: int) -> tuple[Path, float]:
    """A registry of ``people`` persons over platform_1 and platform_2 (applied in-process), cached."""
    from pprl.documents import Submission, load
    from pprl.protocol.files import load_card, load_key
    from pprl.protocol.link import LinkOptions
    from pprl.registry import Registry
    from pprl.sim.synth import generate_population

    path = root / f"registry-base-{people}.db"
    if path.exists():
        return path, 0.0
    t = time.perf_counter()
    population = generate_population(people, 2, seed=7)
    docs = []
    for i, name in enumerate(platforms[:2]):
        out = root / "base" / f"{name}.base-{people}.sub.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        _submit(root, name, population.platforms[f"platform_{i + 1}"], out)
        docs.append(load(out, Submission))
    building = path.with_suffix(".building")
    for leftover in root.glob(f"{building.name}*"):
        leftover.unlink()
    with Registry(building) as registry:
        registry.update(docs, LinkOptions(), [load_card(root / "keys" / f"{p}.card.json") for p in platforms],
                        me=load_key(root / "keys" / "bureau.key"))
    building.rename(path)
    return path, time.perf_counter() - t


def _pool(root: Path, platforms: list[str], lender: str, people: int, applicants: int, registry: Path) -> list[str]:
    """Pseudonyms of ``applicants`` persons held by the base registry, through the real OPRF steps (cached)."""
    from pprl.encoding.normalise import normaliser_for
    from pprl.protocol.files import load_card, load_key, load_secret
    from pprl.protocol.pseudonym import EvaluatorOptions, evaluate_request, finish_pseudonyms, request_pseudonyms
    from pprl.registry import Registry
    from pprl.sim.synth import generate_population

    path = root / f"pool-{people}-{applicants}.json"
    if path.exists():
        return list(json.loads(path.read_text()))
    frame = generate_population(people, 2, seed=7).platforms["platform_1"]
    normalise = normaliser_for("resident_id")
    ids = [x for x in (normalise(v) for v in frame["resident_id"]) if x is not None][:applicants]
    bank = load_key(root / "keys" / f"{lender}.key")
    evaluator = load_key(root / "keys" / f"{platforms[0]}.key")
    made = request_pseudonyms(bank, [(f"app-{i}", str(x)) for i, x in enumerate(ids)])
    response, _entry = evaluate_request(evaluator, load_secret(root / "secrets" / f"{platforms[0]}.secret"),
                                        made.request, [bank.card], [], EvaluatorOptions(daily_quota=None))
    found = finish_pseudonyms(bank, made.state, response, [load_card(root / "keys" / f"{platforms[0]}.card.json")])
    with Registry(registry) as reg:
        held = reg.find([p for _ref, p in found])
    pool = [p.hex() for _ref, p in found if p in held]
    path.write_text(json.dumps(pool))
    return pool


def _load_submissions(root: Path, platforms: list[str], records: int) -> tuple[list[dict[str, Any]], float]:
    """Each platform's ``records``-record submission (made once, then read from the cache) and its hashes."""
    from pprl.documents import Submission, load
    from pprl.sim.synth import generate_population

    out, spent = [], 0.0
    for k, name in enumerate(platforms, start=1):
        path = root / "subs" / f"{name}.r{records}.sub.json"
        meta_path = path.with_name(path.name + ".meta.json")
        if not (path.exists() and meta_path.exists()):
            path.parent.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            frame = generate_population(records, 1, seed=1000 + k).platforms["platform_1"]
            _submit(root, name, frame, path)
            took = time.perf_counter() - t
            spent += took
            data = path.read_bytes()
            meta = {"platform": name, "records": records, "bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(), "document": load(path, Submission).hash,
                    "prepared_seconds": round(took, 1)}
            meta_path.write_text(json.dumps(meta, indent=1))
            print(f"  {name}: {records:,} records, {len(data) / MIB:,.1f} MiB, made in {took:.1f} s", flush=True)
        meta = json.loads(meta_path.read_text())
        if meta["bytes"] != path.stat().st_size:
            raise SystemExit(f"{path}: its cached hashes do not match the file; delete {meta_path}")
        out.append({**meta, "path": str(path)})
    return out, spent


def prepare(root: Path, args: argparse.Namespace) -> Setup:
    platforms = [f"platform_{k}" for k in range(1, args.platforms + 1)]
    lenders = [f"bank_{k}" for k in range(1, args.lenders + 1)]
    root.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t = time.perf_counter()
    _identities(root, platforms, lenders)
    timings["identities"] = time.perf_counter() - t
    registry, timings["base_registry"] = _base_registry(root, platforms, args.base_people)
    t = time.perf_counter()
    pool = _pool(root, platforms, lenders[0], args.base_people, args.applicants, registry)
    timings["pseudonym_pool"] = time.perf_counter() - t
    if not pool:
        raise SystemExit("no applicant of the pool is held by the base registry")
    subs, timings["submissions"] = _load_submissions(root, platforms, args.records)
    policy = root / "policy.json"
    policy.write_text(json.dumps({"daily_quota": 10**9, "min_platforms": 1}))
    return Setup(root, platforms, lenders, subs, registry, pool, policy, timings)


# -- the bureau process --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One reading of the bureau process: when (monotonic), VmRSS and VmHWM (MiB), CPU time (s), WAL size (MiB)."""

    at: float
    rss: float
    hwm: float
    cpu: float
    wal: float


def _process_tree(root: int) -> list[int]:
    """``root`` and every process under it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


class Bureau:
    """``python -m pprl serve`` as the bureau, with its RSS and CPU time sampled every ``interval`` s."""

    def __init__(self, setup: Setup, registry: Path, log: Path, interval: float = 1.0,
                 script: Path | None = None, workers: int = 1) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cards = [a for n in [*setup.platforms, *setup.lenders] for a in ("--cards", str(setup.card(n)))]
        command = [str(script)] if script else ["-m", "pprl"]
        self.args = [sys.executable, *command, "serve", "--me", str(setup.key("bureau")), "--registry",
                     str(registry), *cards, "--policy", str(setup.policy), "--host", "127.0.0.1",
                     "--port", str(self.port), *(["--workers", str(workers)] if workers > 1 else [])]
        self.log = log
        self.wal = Path(f"{registry}-wal")
        self.interval = interval
        self.proc: subprocess.Popen | None = None
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self, timeout: float = 120) -> None:
        import httpx

        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=out, env=env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"pprl serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("pprl serve did not come up")
            time.sleep(0.1)
        self._sampler = threading.Thread(target=self._sample, name="rss", daemon=True)
        self._sampler.start()

    def read(self) -> Sample:
        """RSS, VmHWM and CPU time of the bureau and every process under it (`--workers` processes, the
        submission checker), summed; CPU includes children already reaped."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"the bureau exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
        rss = hwm = cpu = 0.0
        for pid in _process_tree(self.proc.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # it ended meanwhile
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            ticks = stat[stat.rindex(")") + 2:].split()
            rss += int(fields["VmRSS"].split()[0]) / 1024
            hwm += int(fields["VmHWM"].split()[0]) / 1024
            cpu += sum(int(t) for t in ticks[11:15]) / os.sysconf("SC_CLK_TCK")
        try:
            wal = self.wal.stat().st_size / MIB
        except OSError:
            wal = 0.0
        return Sample(time.monotonic(), rss, hwm, cpu, wal)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.read())
            except (OSError, KeyError, ValueError, SystemExit):
                return
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=5)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class Bureaus:
    """``count`` bureau processes on the one registry database (each on its own port), read as one: RSS, VmHWM
    and CPU time summed (the sum of the peaks bounds the peak of the sum)."""

    def __init__(self, setup: Setup, registry: Path, run_dir: Path, count: int, script: Path | None,
                 workers: int = 1) -> None:
        self.members = [Bureau(setup, registry, run_dir / f"bureau-{j + 1}.log", script=script, workers=workers)
                        for j in range(count)]
        self.urls = [b.url for b in self.members]

    def start(self) -> None:
        for b in self.members:
            b.start()

    def read(self) -> Sample:
        parts = [b.read() for b in self.members]
        return Sample(max(x.at for x in parts), sum(x.rss for x in parts), sum(x.hwm for x in parts),
                      sum(x.cpu for x in parts), parts[0].wal)

    def samples(self) -> list[Sample]:
        out = []
        for x in self.members[0].samples:
            parts = [x] + [_at(b.samples, x.at) for b in self.members[1:]]
            out.append(Sample(x.at, sum(y.rss for y in parts), sum(y.hwm for y in parts), sum(y.cpu for y in parts),
                              x.wal))
        return out

    def log_lines(self) -> list[str]:
        return [line for b in self.members for line in b.log.read_text(errors="replace").splitlines()]

    def stop(self) -> None:
        for b in self.members:
            b.stop()


# -- lenders (worker processes) ----------------------------------------------------------------------


def query_worker(spec: dict[str, Any], ready: Any, go: Any, results: Any) -> None:
    """One load-generating process: its share of the schedule (query i for i % procs == index)."""
    try:
        bodies, clients, threads = _worker_setup(spec)
    except Exception as exc:  # noqa: BLE001 - told to the parent, which stops the run
        ready.put(f"lender process {spec['index']}: {type(exc).__name__}: {exc}")
        return
    _worker_run(spec, bodies, clients, threads, ready, go, results)


def _worker_setup(spec: dict[str, Any]) -> tuple[dict[int, tuple[str, bytes]], dict[tuple[int, str], list[Any]], int]:
    """The process's queries, signed before the load starts (one takes well under a millisecond), and one
    client per thread and lender (each opens its own connection and checks the bureau's card once)."""
    from pprl.protocol.files import load_card, load_key
    from pprl.protocol.query import Consent, make_query
    from pprl.service.app import document_body
    from pprl.service.client import Client

    lenders = [load_key(p) for p in spec["lenders"]]
    bureau = load_card(spec["bureau_card"])
    pool = [bytes.fromhex(p) for p in spec["pool"]]
    issued, expires = _stamp(-1), _stamp(30)
    bodies = {}
    for i in range(spec["index"], spec["total"], spec["procs"]):
        consent = Consent(hashlib.sha256(f"{spec['tag']} consent {i}".encode()).hexdigest(), PURPOSE, issued, expires)
        lender = lenders[i % len(lenders)]
        bodies[i] = (lender.name, document_body(make_query(lender, [(pool[i % len(pool)], consent)], PURPOSE)))
    threads = max(1, min(spec["threads"], len(bodies)))
    clients: dict[tuple[int, str], list[Any]] = {(u, k.name): [] for u in range(len(spec["urls"])) for k in lenders}
    try:
        for (u, name), cs in clients.items():
            key = next(k for k in lenders if k.name == name)
            for _ in range(threads):
                cs.append(Client(spec["urls"][u], key, [bureau], "bureau", timeout=spec["timeout"]))
    except BaseException:
        for cs in clients.values():
            for c in cs:
                c.close()
        raise
    return bodies, clients, threads


def _worker_run(spec: dict[str, Any], bodies: dict[int, tuple[str, bytes]], clients: dict[tuple[int, str], list[Any]],
                threads: int, ready: Any, go: Any, results: Any) -> None:
    from pprl.errors import PPRLError
    from pprl.service.client import ServiceError

    work: queue.Queue[tuple[int, float] | None] = queue.Queue()
    out: list[dict[str, Any]] = []
    lock = threading.Lock()

    def run(slot: int) -> None:
        while True:
            item = work.get()
            if item is None:
                return
            i, due = item
            name, body = bodies[i]
            sent = time.monotonic()
            row: dict[str, Any] = {"i": i, "lender": name, "due": due, "sent": sent}
            try:
                target = (i // spec["procs"]) % len(spec["urls"])  # bureau processes take turns
                answer = clients[(target, name)][slot].call("POST", "/v1/queries", body=body, idempotent=False)
                row.update(outcome="answered", status=200,
                           found=int(answer["header"]["found"]) if isinstance(answer, dict) else -1)
            except ServiceError as exc:
                row.update(outcome=f"HTTP {exc.status}", status=exc.status, error=str(exc)[-300:])
            except PPRLError as exc:
                row.update(outcome=f"lost ({type(exc).__name__})", status=None, error=str(exc)[-300:])
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the load
                row.update(outcome=f"lost ({type(exc).__name__})", status=None, error=str(exc)[-300:])
            row["done"] = time.monotonic()
            with lock:
                out.append(row)

    pool_threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in range(threads)]
    for th in pool_threads:
        th.start()
    ready.put(None)
    t0 = go.get()
    cpu0 = time.process_time()
    for i in sorted(bodies):  # open loop: each query is handed out when due, whether or not earlier ones came back
        due = t0 + i / spec["qps"]
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        work.put((i, due))
    for _ in pool_threads:
        work.put(None)
    for th in pool_threads:
        th.join()
    cpu = time.process_time() - cpu0
    for cs in clients.values():
        for c in cs:
            c.close()
    results.put((out, cpu))


class Lenders:
    """``procs`` processes sending ``qps`` queries per second for ``seconds``, started together at t0."""

    def __init__(self, setup: Setup, urls: list[str], args: argparse.Namespace, seconds: float, tag: str) -> None:
        ctx = mp.get_context("spawn")
        self.total = int(round(args.qps * seconds))
        procs = max(1, min(args.query_procs, self.total))
        self.ready, self.results = ctx.Queue(), ctx.Queue()
        self.go = [ctx.Queue() for _ in range(procs)]
        self.procs = []
        for w in range(procs):
            spec = {"index": w, "procs": procs, "total": self.total, "qps": args.qps, "threads": args.query_threads,
                    "urls": urls, "timeout": args.timeout, "tag": tag, "pool": setup.pool,
                    "lenders": [str(setup.key(n)) for n in setup.lenders],
                    "bureau_card": str(setup.card("bureau"))}
            self.procs.append(ctx.Process(target=query_worker, args=(spec, self.ready, self.go[w], self.results),
                                          daemon=True))
        for p in self.procs:
            p.start()

    def wait_ready(self, timeout: float = 300) -> None:
        for _ in self.procs:
            failed = self._get(self.ready, timeout)
            if failed is not None:
                self.stop()
                raise SystemExit(failed)

    def _get(self, source: Any, timeout: float) -> Any:
        """The next message of ``source``; SystemExit if it does not come or a process died without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return source.get(timeout=2)
            except queue.Empty:
                dead = [p for p in self.procs if p.exitcode not in (None, 0)]
                if dead or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit("a lender process " + (f"exited with {dead[0].exitcode}" if dead else
                                                            "did not answer in time")) from None

    def stop(self) -> None:
        for p in self.procs:
            if p.is_alive():
                p.terminate()
            p.join(timeout=10)

    def start(self, t0: float) -> None:
        for q in self.go:
            q.put(t0)

    def collect(self, timeout: float) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        self.cpu = 0.0
        for _ in self.procs:
            got, cpu = self._get(self.results, timeout)
            rows += got
            self.cpu += cpu
        for p in self.procs:
            p.join(timeout=30)
        return sorted(rows, key=lambda r: r["i"])


# -- platforms (threads) ---------------------------------------------------------------------------


def upload_one(sub: dict[str, Any], setup: Setup, url: str, t0: float, row: dict[str, Any]) -> None:
    from pprl.protocol.files import load_card, load_key
    from pprl.service.client import Client

    data = Path(sub["path"]).read_bytes()
    me = load_key(setup.key(sub["platform"]))
    chunks: list[float] = []
    try:
        with Client(url, me, [load_card(setup.card("bureau"))], "bureau", timeout=1800) as client:
            delay = t0 - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            row["start"] = time.monotonic()
            summary = client.upload("submission", data, progress=lambda i, n: chunks.append(time.monotonic()))
            row["end"] = time.monotonic()
            row["summary"] = summary
    except Exception as exc:  # noqa: BLE001 - reported as a failed upload
        row["end"] = time.monotonic()
        row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    row["chunks"] = chunks
    row["chunks_done"] = chunks[-1] if chunks else None


# -- the run -----------------------------------------------------------------------------------------


def _phase_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    answered = [r for r in rows if r["outcome"] == "answered"]
    latencies = [r["done"] - r["due"] for r in rows if r.get("status") is not None]
    lag = [r["sent"] - r["due"] for r in rows]
    outcomes: dict[str, int] = {}
    for r in rows:
        outcomes[r["outcome"]] = outcomes.get(r["outcome"], 0) + 1
    return {
        "scheduled": len(rows), "answered": len(answered), "found": sum(1 for r in answered if r.get("found") == 1),
        "outcomes": outcomes,
        "failed": sum(1 for r in rows if r["outcome"] != "answered"),
        "p50": _pct(latencies, 0.50), "p95": _pct(latencies, 0.95), "p99": _pct(latencies, 0.99),
        "max": max(latencies) if latencies else math.nan, "mean": statistics.fmean(latencies) if latencies else math.nan,
        "send_lag_p99": _pct(lag, 0.99), "send_lag_max": max(lag) if lag else math.nan,
        "errors": sorted({r["error"] for r in rows if r.get("error")})[:5],
    }


def _at(samples: list[Sample], when: float) -> Sample:
    """The last sample taken at or before ``when`` (the first one if none was)."""
    best = samples[0]
    for x in samples:
        if x.at <= when:
            best = x
    return best


def run(setup: Setup, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    from pprl.protocol.files import load_card, load_key
    from pprl.service.client import Client

    run_dir.mkdir(parents=True, exist_ok=True)
    registry = run_dir / "registry.db"
    shutil.copyfile(setup.base_registry, registry)
    bureau = Bureaus(setup, registry, run_dir, args.bureau_procs, args.serve_script, args.workers)
    bureau.start()
    res: dict[str, Any] = {}
    subs = [] if args.no_uploads else setup.submissions
    try:
        tag = secrets.token_hex(8)
        # warm-up: one second of queries (imports, connection pools, page cache), not counted
        warm = Lenders(setup, bureau.urls, argparse.Namespace(**{**vars(args), "query_procs": 1}), 1.0, tag + "w")
        warm.wait_ready()
        warm.start(time.monotonic() + 0.2)
        res["warmup"] = _phase_stats(warm.collect(timeout=300))

        lenders = Lenders(setup, bureau.urls, args, args.seconds, tag)
        lenders.wait_ready()
        before = bureau.read()
        mine0 = time.process_time()
        t0 = time.monotonic() + 1.0
        uploads = [{"platform": x["platform"], "bytes": x["bytes"]} for x in subs]
        threads = [threading.Thread(target=upload_one, args=(x, setup, bureau.urls[k % len(bureau.urls)], t0, row),
                                    daemon=True) for k, (x, row) in enumerate(zip(subs, uploads))]
        for th in threads:
            th.start()
        lenders.start(t0)
        print(f"load: {len(threads)} uploads and {lenders.total:,} queries ({args.qps:g}/s for {args.seconds:g} s) "
              "started", flush=True)
        rows = lenders.collect(timeout=args.seconds + args.timeout + 900)
        after_queries = bureau.read()
        for th in threads:
            th.join(timeout=args.upload_timeout)
        after_uploads = bureau.read()
        res["upload_timeout"] = any(th.is_alive() for th in threads)
        res["client_cpu"] = {"lenders_s": lenders.cpu, "platforms_s": time.process_time() - mine0}

        # what the bureau holds now: every document under its owner, with the hash of the file that was sent
        with Client(bureau.urls[0], load_key(setup.key("bureau")), [load_card(setup.card("bureau"))], "bureau",
                    timeout=600) as admin:
            held = {(d["owner"], d["document"]) for d in admin.call("GET", "/v1/submissions")["submissions"]}

        tail_rows: list[dict[str, Any]] = []
        if args.tail_seconds > 0:
            tail = Lenders(setup, bureau.urls, args, args.tail_seconds, tag + "t")
            tail.wait_ready()
            tail_before = bureau.read()
            tail.start(time.monotonic() + 1.0)
            tail_rows = tail.collect(timeout=args.tail_seconds + args.timeout + 900)
            tail_after = bureau.read()
            res["tail_server"] = {"rss_start": tail_before.rss, "rss_end": tail_after.rss,
                                  "cpu_s": tail_after.cpu - tail_before.cpu, "wall_s": tail_after.at - tail_before.at,
                                  "client_cpu_s": tail.cpu}
        final = bureau.read()
    finally:
        bureau.stop()

    samples = bureau.samples()
    for r, x in zip(uploads, subs):
        summary = r.get("summary") or {}
        r["accepted"] = summary.get("document") == x["document"] and (r["platform"], x["document"]) in held
        r["seconds"] = r["end"] - r["start"] if "start" in r else math.nan
    last_upload = max((r["end"] for r in uploads if "end" in r), default=t0)
    res.update({
        "t0": t0, "uploads": uploads, "uploads_end": last_upload,
        "load": _phase_stats(rows),
        "during_uploads": _phase_stats([r for r in rows if uploads and r["due"] < last_upload]),
        "after_uploads": _phase_stats([r for r in rows if uploads and r["due"] >= last_upload]),
        "tail": _phase_stats(tail_rows) if tail_rows else None,
        "rss": {"server_start": samples[0].rss, "before_load": before.rss, "after_queries": after_queries.rss,
                "after_uploads": after_uploads.rss, "end": final.rss, "peak_sampled": max(x.rss for x in samples),
                "peak_hwm": final.hwm},
        "wal_peak_mib": max(x.wal for x in samples),
        "server_cpu": {"load_s": after_queries.cpu - before.cpu, "load_wall_s": after_queries.at - t0},
        "samples": [(x.at - t0, x.rss, x.cpu, x.wal) for x in samples],
        "rows": [(r["due"] - t0, r["done"] - r["due"], r["outcome"]) for r in rows],
        "log_errors": [line for line in bureau.log_lines() if " ERROR " in line or "Traceback" in line][:10],
    })
    return res


def _timeline(res: dict[str, Any], step: float) -> list[str]:
    """Per ``step`` seconds of the load window (by due time): queries, latency, bureau CPU / RSS / WAL, uploads."""
    t0, samples = res["t0"], [Sample(t, rss, 0.0, cpu, wal) for t, rss, cpu, wal in res["samples"]]
    rows, uploads = res["rows"], res["uploads"]
    end = max([r[0] + r[1] for r in rows] + [r["end"] - t0 for r in uploads if "end" in r] + [0.0])
    lines = []
    start = 0.0
    while start < end:
        stop = start + step
        due = [r for r in rows if start <= r[0] < stop]
        lat = [r[1] for r in due]
        a, b = _at(samples, start), _at(samples, stop)
        cores = (b.cpu - a.cpu) / (b.at - a.at) if b.at > a.at else math.nan
        chunks = sum(min(len([c for c in r["chunks"] if c - t0 < stop]) * 2 * MIB, r["bytes"]) for r in uploads)
        done = sum(1 for r in uploads if "end" in r and r["end"] - t0 < stop)
        rss = max([x.rss for x in samples if start <= x.at < stop] or [b.rss])
        lines.append(f"  {start:5.0f}-{stop:<4.0f} {len(due):6,} {_ms(_pct(lat, 0.5)):>10} {_ms(_pct(lat, 0.99)):>10} "
                     f"{cores:6.2f} {rss:7.0f} {b.wal:7.0f} {chunks / MIB:8.0f} {done:5}")
        start = stop
    return lines


def report(setup: Setup, args: argparse.Namespace, res: dict[str, Any]) -> bool:
    ok = True

    def verdict(good: bool) -> str:
        nonlocal ok
        ok = ok and good
        return "PASS" if good else "FAIL"

    print(f"\ncpu: {_cpu()}, {os.cpu_count()} logical CPUs; load average before the load: {res['loadavg']}")
    print(f"config: {args.platforms} platforms x {args.records:,} records{' (uploads off)' if args.no_uploads else ''}, "
          f"{args.qps:g} queries/s for {args.seconds:g} s ({res['load']['scheduled']:,} queries, {args.lenders} "
          f"lenders, {args.query_procs} client processes x {args.query_threads} threads), registry of "
          f"{args.base_people:,} persons over 2 platforms, {len(setup.pool):,} applicants; "
          f"{args.bureau_procs} bureau process{'es' if args.bureau_procs > 1 else ''}"
          f"{f' ({args.serve_script})' if args.serve_script else ''}")
    t0 = res["t0"]
    ups = res["uploads"]
    if ups:
        total = sum(r["bytes"] for r in ups)
        print("\nuploads (all started at t0):")
        for r in ups:
            rate = r["bytes"] / MIB / r["seconds"] if r["seconds"] > 0 else math.nan
            state = "accepted, hash = file's" if r["accepted"] else f"NOT ACCEPTED {r.get('error', '')}"
            chunks = f"chunks in at t0+{r['chunks_done'] - t0:.1f} s, " if r.get("chunks_done") else ""
            print(f"  {r['platform']:>12}: {r['bytes'] / MIB:6.1f} MiB in {r['seconds']:6.1f} s = {rate:5.2f} MiB/s "
                  f"({chunks}complete at t0+{r['end'] - t0:.1f} s); {state}")
        span = res["uploads_end"] - t0
        accepted = sum(1 for r in ups if r["accepted"])
        print(f"  total: {total / MIB:,.1f} MiB in {span:.1f} s = {total / MIB / span:.2f} MiB/s; {accepted}/{len(ups)} "
              f"accepted with the files' hashes   [{verdict(accepted == len(ups) and not res['upload_timeout'])}]")

    def show(name: str, st: dict[str, Any] | None) -> None:
        if not st or not st["scheduled"]:
            print(f"  {name}: no queries")
            return
        outcomes = ", ".join(f"{k} {v:,}" for k, v in sorted(st["outcomes"].items()))
        print(f"  {name}: {st['scheduled']:,} sent, {st['answered']:,} answered ({st['found']:,} found the applicant); "
              f"{outcomes}")
        print(f"    latency from the scheduled time: p50 {_ms(st['p50'])}, p95 {_ms(st['p95'])}, p99 {_ms(st['p99'])}, "
              f"max {_ms(st['max'])}; client send lag p99 {_ms(st['send_lag_p99'])}")
        for e in st["errors"]:
            print(f"    error: {e}")

    print("\nqueries:")
    load = res["load"]
    show("load window", load)
    if ups:
        show("  due while uploads ran", res["during_uploads"])
        show("  due after the last upload", res["after_uploads"])
    show("tail (queries only)", res["tail"])
    lost = load["failed"] + (res["tail"]["failed"] if res["tail"] else 0)
    missing = load["answered"] - load["found"]
    print(f"  lost or failed: {lost} (load and tail); answered without finding the applicant: {missing}   "
          f"[{verdict(lost == 0 and missing == 0)}]")
    print(f"  p99 latency under load {_ms(load['p99'])} < 1 s   [{verdict(load['p99'] < 1.0)}]")

    print("\ntimeline (by the queries' due time; bureau CPU in cores, RSS max and WAL at the end in MiB, upload MiB in "
          "and uploads complete by then):")
    print("  seconds    due        p50        p99  cores     RSS     WAL  uploaded  done")
    for line in _timeline(res, args.timeline_step):
        print(line)

    rss = res["rss"]
    summed = f", summed over {args.bureau_procs} processes" if args.bureau_procs > 1 else ""
    print(f"\nbureau memory (RSS, MiB{summed}): started {rss['server_start']:.0f}, before the load {rss['before_load']:.0f}, "
          f"peak sampled {rss['peak_sampled']:.0f}, peak VmHWM {rss['peak_hwm']:.0f}, after the queries "
          f"{rss['after_queries']:.0f}, after the uploads {rss['after_uploads']:.0f}, end {rss['end']:.0f}; "
          f"WAL file peak {res['wal_peak_mib']:,.0f} MiB")
    bound = args.rss_bound_gib * 1024
    print(f"  peak {rss['peak_hwm']:.0f} MiB < {bound:.0f} MiB   [{verdict(rss['peak_hwm'] < bound)}]")
    if res["tail"]:
        tail = res["tail_server"]
        growth = tail["rss_end"] - tail["rss_start"]
        n = res["tail"]["answered"]
        print(f"  queries-only tail: {tail['rss_start']:.0f} -> {tail['rss_end']:.0f} MiB over {n:,} queries "
              f"({growth * 1024 / max(n, 1):+.2f} KiB/query); growth <= {args.growth_bound_mib:g} MiB   "
              f"[{verdict(growth <= args.growth_bound_mib)}]")
    cpu, client = res["server_cpu"], res["client_cpu"]
    print(f"\nCPU during the load window ({cpu['load_wall_s']:.1f} s wall, {os.cpu_count()} CPUs): bureau "
          f"{cpu['load_s']:.1f} s ({cpu['load_s'] / cpu['load_wall_s']:.2f} cores); on the same CPUs, the lenders' "
          f"processes {client['lenders_s']:.1f} s, the platforms' upload threads {client['platforms_s']:.1f} s")
    if res["tail"]:
        tail = res["tail_server"]
        n = max(res["tail"]["answered"], 1)
        print(f"  queries-only tail: bureau {tail['cpu_s']:.1f} s over {tail['wall_s']:.1f} s "
              f"({tail['cpu_s'] / tail['wall_s']:.2f} cores; {tail['cpu_s'] / n * 1000:.1f} ms CPU per query), "
              f"lenders' processes {tail['client_cpu_s'] / n * 1000:.1f} ms CPU per query")
    for line in res["log_errors"]:
        print(f"  bureau log: {line[:200]}")
    print(f"\noverall: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="keep identities, submissions and the base registry here "
                        "(re-runs reuse them); default: a temporary directory, removed at the end")
    parser.add_argument("--keep", action="store_true", help="keep the run's registry and bureau log")
    parser.add_argument("--quick", action="store_true", help="3 platforms x 5k records, 20 q/s for 10 s")
    parser.add_argument("--platforms", type=int, default=10)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--qps", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--tail-seconds", type=float, default=20.0, help="queries-only phase after the load")
    parser.add_argument("--lenders", type=int, default=2)
    parser.add_argument("--base-people", type=int, default=20_000, help="persons in the registry before the load")
    parser.add_argument("--applicants", type=int, default=1_000, help="applicants the queries cycle through")
    parser.add_argument("--query-procs", type=int, default=2, help="load-generating processes")
    parser.add_argument("--query-threads", type=int, default=32, help="threads (connections) per process")
    parser.add_argument("--timeout", type=float, default=60.0, help="a query not answered by then is lost")
    parser.add_argument("--upload-timeout", type=float, default=3600.0)
    parser.add_argument("--rss-bound-gib", type=float, default=2.0)
    parser.add_argument("--growth-bound-mib", type=float, default=32.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-uploads", action="store_true", help="queries only (the service's query capacity)")
    parser.add_argument("--timeline-step", type=float, default=10.0, help="seconds per line of the timeline")
    parser.add_argument("--bureau-procs", type=int, default=1, help="bureau processes on the one registry, each "
                        "on its own port; queries and uploads take turns between them")
    parser.add_argument("--workers", type=int, default=1, help="`pprl serve --workers N`: one bureau on one port "
                        "served from N processes (its RSS and CPU summed over them)")
    parser.add_argument("--serve-script", type=Path, help="run the bureau as `python SCRIPT serve ...` instead of "
                        "`python -m pprl serve ...` (to measure a changed service)")
    parser.add_argument("--prepare-only", action="store_true", help="make (and cache) the set-up, then stop")
    args = parser.parse_args()
    if args.quick:
        args.platforms, args.records, args.qps, args.seconds = 3, 5_000, 20.0, 10.0
        args.tail_seconds, args.base_people, args.applicants, args.timeline_step = 5.0, 5_000, 200, 2.0
    if args.platforms < 2:
        parser.error("--platforms must be at least 2 (the base registry holds two)")

    temporary = args.workdir is None
    work = Path(tempfile.mkdtemp(prefix="bench-service-")) if temporary else args.workdir
    print(f"bench_service: work directory {work}; cpu {_cpu()}", flush=True)
    try:
        t = time.perf_counter()
        setup = prepare(work / f"setup-p{args.platforms}-l{args.lenders}", args)
        tm = setup.timings
        print(f"set-up {time.perf_counter() - t:.1f} s (not counted): identities {tm['identities']:.1f} s, base "
              f"registry {tm['base_registry']:.1f} s, pseudonym pool {tm['pseudonym_pool']:.1f} s, "
              f"submissions {tm['submissions']:.1f} s (0 = cached); {len(setup.pool):,} applicants held", flush=True)
        if args.prepare_only:
            return
        run_dir = work / f"run-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
        loadavg = os.getloadavg()
        res = run(setup, args, run_dir)
        res["loadavg"] = " ".join(f"{x:.2f}" for x in loadavg)
        ok = report(setup, args, res)
        if args.json:
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "cpu": _cpu(),
                                             "result": res, "pass": ok}, default=str))
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            print(f"kept: {run_dir}")
    finally:
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
