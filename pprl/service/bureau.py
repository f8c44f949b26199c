"""The bureau's service: submissions in, registry updates as background jobs, lender queries answered.

Routes (every request signed; see :mod:`pprl.service.app`):

- ``/v1/uploads`` ...: a platform uploads its signed submission in chunks; on
  ``complete`` the bureau checks it (signed by that very platform among its
  pinned cards, counts and encodings agree) and keeps it until an update.
- ``GET /v1/submissions``: the submissions received (the bureau itself).
- ``POST /v1/jobs`` ``{"kind": "registry-update", "submissions": [hash, ...]}``
  (the bureau itself; without ``submissions``, every one not yet applied):
  queues a registry update and answers 202 with the job. One job runs at a
  time, in a thread; the update and the job's "done" commit in one transaction,
  so a crash leaves neither (the job runs again at restart) or both.
- ``GET /v1/jobs/{id}``: a job's status and progress (the bureau, or the
  platform whose submission it applies).
- ``POST /v1/queries``: a lender's signed query (the document, or
  ``{"document": hash}`` of one uploaded in chunks); the answer document comes
  back, or a 403 naming why it was refused (the refusal is recorded).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from pprl.crypto.paillier import djn
from pprl.crypto.paillier.vector import PaillierPublicKey
from pprl.documents import Card, Query, Submission, load_bytes, parse_json
from pprl.errors import DocumentError, PPRLError
from pprl.protocol.identity import PartyKey
from pprl.protocol.link import LinkOptions, open_submission
from pprl.protocol.query import AnswerPolicy
from pprl.registry import Registry
from pprl.service.app import Call, Service, document_body, status_of
from pprl.service.auth import AuthError
from pprl.service.state import Job, ServiceState, Upload, assemble_upload, new_runner

__all__ = ["BureauService", "check_upload", "one_check_at_a_time"]

log = logging.getLogger("pprl.service.bureau")

#: A running job's runner renews its lease this often; another process takes the job over once the lease is this
#: old (or at once, when the runner was a process of the same host that no longer exists).
HEARTBEAT_SECONDS = 5.0
LEASE_SECONDS = 60.0


class BureauService(Service):
    """The bureau's service over the registry at ``registry`` (its state tables live there too)."""

    role = "bureau"
    uploads = {"submission": ("platform",), "query": ("lender",)}

    def __init__(self, me: PartyKey, registry: str, cards: Sequence[Card], policy: AnswerPolicy | None = None,
                 link_options: LinkOptions | None = None) -> None:
        if me.role != "bureau":
            raise PPRLError(f"only the bureau serves the registry; '{me.name}' is a {me.role}")
        self.registry = Registry(registry)
        super().__init__(me, cards, ServiceState(registry))
        self.platforms = [c for c in self.cards if c.role == "platform"]
        self.lenders = [c for c in self.cards if c.role == "lender"]
        self.policy = policy or AnswerPolicy()
        self.link_options = link_options or LinkOptions()
        self._progress: dict[str, dict[str, Any]] = {}
        self.runner = new_runner()
        self._checker: ProcessPoolExecutor | None = None
        self._warmed: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._runner: threading.Thread | None = None

    def routes(self) -> list:
        return [
            *super().routes(),
            self.route("/v1/submissions", self.list_submissions, methods=["GET"], roles=("bureau",)),
            self.route("/v1/jobs", self.start_job, methods=["POST"], roles=("bureau",)),
            self.route("/v1/jobs/{job}", self.job_status, methods=["GET"], roles=("bureau", "platform")),
            self.route("/v1/queries", self.answer, methods=["POST"], roles=("lender",)),
        ]

    # -- documents -----------------------------------------------------------------------------------

    def accept_upload(self, up: Upload, signer: Card, source: str) -> dict[str, Any]:
        if up.kind != "submission":
            return super().accept_upload(up, signer, source)
        # Checking a submission of 100,000 records takes seconds of pure Python (parse, signature, hash) and
        # holds hundreds of MB: in a child process that reads the upload's chunks itself, so this process never
        # holds the bytes and lender queries are not held up meanwhile.
        outcome = self._check(check_upload, self.state.side_url, up.id, signer.name, self.platforms, source)
        if outcome[0] == "ok":
            return dict(outcome[1])
        raise AuthError(int(outcome[1]), str(outcome[2]))

    def accept(self, kind: str, signer: Card, data: bytes, source: str) -> dict[str, Any]:
        if kind != "query":  # submissions are checked from their upload's chunks (accept_upload)
            raise DocumentError(f"{source}: a {kind} is not checked here")
        raw = parse_json(data, source, f"{source}: not a pprl document (not valid JSON)")
        doc_q = Query.from_dict(raw, source)
        if doc_q.header.lender != signer.name:
            raise AuthError(403, f"{source}: a query of '{doc_q.header.lender}' uploaded by '{signer.name}'")
        return {"document": doc_q.hash, "kind": kind, "lender": doc_q.header.lender, "count": doc_q.header.count}

    def _check(self, fn: Callable[..., tuple], *args: Any) -> tuple:
        if self._checker is None:
            self._checker = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                                initializer=_lower_priority)
        return self._checker.submit(fn, *args).result()

    def list_submissions(self, call: Call) -> tuple[int, Any]:
        return 200, {"submissions": self.state.documents("submission")}

    # -- registry updates ----------------------------------------------------------------------------

    def start_job(self, call: Call) -> tuple[int, Any]:
        spec = call.json()
        if not isinstance(spec, dict) or spec.get("kind") != "registry-update":
            raise DocumentError('a job is {"kind": "registry-update", "submissions": [hash, ...]} (the only kind)')
        wanted = spec.get("submissions")
        received = {d["document"]: d for d in self.state.documents("submission")}
        if wanted is None:
            wanted = [h for h, d in received.items() if d["job"] is None]
            if not wanted:
                raise DocumentError("no received submission waits for an update")
        if not isinstance(wanted, list) or not all(isinstance(h, str) for h in wanted) or not wanted:
            raise DocumentError("submissions must be a non-empty list of document hashes")
        for h in wanted:
            if h not in received:
                raise DocumentError(f"no received submission {h[:64]!r}")
            if received[h]["job"] is not None:
                raise AuthError(409, f"submission {h} was already applied or taken by job {received[h]['job']}")
        threshold = spec.get("threshold", "auto")
        if threshold != "auto" and (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
                                    or not 0 < threshold <= 1):
            raise DocumentError("threshold must be 'auto' or a Dice similarity in (0, 1]")
        platforms = sorted({received[h]["platform"] for h in wanted})
        job = self.state.create_job("registry-update", call.signer.name,
                                    {"submissions": wanted, "threshold": threshold, "platforms": platforms}, wanted)
        self._wake.set()
        return 202, self._job_view(job)

    def job_status(self, call: Call) -> tuple[int, Any]:
        job = self.state.job(call.params["job"])
        if call.signer.role == "platform" and call.signer.name not in job.params.get("platforms", []):
            raise AuthError(404, f"no job {job.id!r} of yours")
        return 200, self._job_view(job)

    def _job_view(self, job: Job) -> dict[str, Any]:
        view = job.to_dict()
        view["progress"] = self._progress.get(job.id) if job.status == "running" else None
        view["submissions"] = job.params.get("submissions")
        return view

    def _warm(self) -> None:
        """Hold the registry key's DJN table: each answer encrypts a few masks, and without the table every one
        is a full modular exponentiation (4.6 ms at 2048 bits, against 0.15 s once for the table)."""
        parameters = self.registry.stats().parameters or {}
        if parameters.get("paillier_key") is None:
            return
        key = PaillierPublicKey.from_dict(parameters["paillier_key"])
        params = djn.djn_params(key, djn.TABLE_THRESHOLD) if key.has_djn else None
        if params is not None and params.fingerprint not in self._warmed:
            djn.get_table(params)
            self._warmed.add(params.fingerprint)

    def startup(self) -> None:
        try:
            self._warm()
        except PPRLError as exc:  # answers still work, only slower
            log.warning("cannot prepare the registry key's DJN table: %s", exc)
        self._requeue()
        self._runner = threading.Thread(target=self._run_jobs, name="pprl-jobs", daemon=True)
        self._runner.start()
        threading.Thread(target=self._keep_alive, name="pprl-jobs-lease", daemon=True).start()

    def _requeue(self) -> None:
        again = self.state.requeue_stale(LEASE_SECONDS)
        if again:
            log.warning("jobs whose runner stopped run again: %s", ", ".join(again))
            self._wake.set()

    def _keep_alive(self) -> None:
        """Renew this process's job leases, and take over the jobs of runners that died."""
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.state.heartbeat(self.runner)
                self._requeue()
            except Exception:  # noqa: BLE001 - the database may be briefly busy; the lease is generous
                log.exception("cannot renew the job lease")

    def shutdown(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._runner is not None:
            self._runner.join(timeout=5)
        if self._checker is not None:
            self._checker.shutdown(cancel_futures=True)
        self.registry.close()
        self.state.close()

    def _run_jobs(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.state.claim_job(self.runner)
            except Exception:  # noqa: BLE001 - the database may be briefly unavailable
                log.exception("cannot read the job queue")
                job = None
            if job is None:
                self._wake.wait(timeout=1.0)
                self._wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        hashes: list[str] = job.params["submissions"]
        progress = self._progress[job.id] = {"done": 0, "total": len(hashes), "platform": None, "stage": None}

        def step(i: int, n: int, platform: str) -> None:
            progress.update(done=i, total=n, platform=platform)

        def stage(what: str) -> None:
            progress["stage"] = what

        def also(conn: Any, reports: list) -> None:
            result = [{"platform": r.platform, "submission": r.submission, "records": r.records, "new": r.new,
                       "updated": r.updated, "removed": r.removed, "unchanged": r.unchanged,
                       "threshold": r.threshold, "threshold_method": r.threshold_method} for r in reports]
            ServiceState.finish_job_in(conn, job, self.runner, {"updates": result})

        try:
            docs = [load_bytes(body, Submission, f"submission {h}")
                    for h, body in zip(hashes, self.state.document_bodies(hashes))]
            threshold = job.params.get("threshold", "auto")
            options = LinkOptions(threshold=None if threshold == "auto" else float(threshold),
                                  blocking=self.link_options.blocking, workers=self.link_options.workers)
            self.registry.update(docs, options, self.platforms, me=self.me, step=step, also=also, stage=stage)
            log.info("job %s: registry updated from %d submissions", job.id, len(hashes))
            self._warm()
        except PPRLError as exc:
            log.warning("job %s refused: %s", job.id, exc)
            self.state.fail_job(job, self.runner, str(exc))
        except Exception as exc:  # noqa: BLE001 - recorded, the runner carries on
            log.exception("job %s failed", job.id)
            self.state.fail_job(job, self.runner, f"internal error ({type(exc).__name__}); the service logged it")
        finally:
            self._progress.pop(job.id, None)

    # -- lender queries --------------------------------------------------------------------------------

    def answer(self, call: Call) -> tuple[int, Any]:
        raw = call.json()
        if isinstance(raw, dict) and set(raw) == {"document"}:
            (body,) = self.state.document_bodies([str(raw["document"])])
            raw = parse_json(body, "the uploaded query")
        query = Query.from_dict(raw, "the query")
        if query.header.lender != call.signer.name:
            raise AuthError(403, f"the query is '{query.header.lender}''s, but '{call.signer.name}' sent it")
        answer = self.registry.answer(self.me, query, self.lenders, self.policy)
        return 200, document_body(answer)


def _lower_priority() -> None:
    """The submission checker yields the CPU to the service's answers (a query waits for no upload), and ends
    when the service's process is gone (killed with SIGKILL, it cannot stop its children)."""
    with contextlib.suppress(OSError, AttributeError):
        os.nice(10)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="pprl-parent-watch", daemon=True).start()


def check_upload(side_url: str, upload: str, owner: str, platforms: list[Card], source: str) -> tuple:
    """An uploaded submission checked (in a child process) straight from its chunks in the database at
    ``side_url``: the SHA-256 the upload declared, then the signature against the pinned platform cards, the
    signer, counts and encodings. ``("ok", summary)``, or ``("refused", status, message)`` with the HTTP status a
    refusal gets (its message names no record value)."""
    try:
        with one_check_at_a_time(side_url):
            _up, data = assemble_upload(side_url, upload, owner)
            return _check_document(data, platforms, owner, source)
    except PPRLError as exc:
        return "refused", status_of(exc), str(exc)


@contextlib.contextmanager
def one_check_at_a_time(key: str) -> Iterator[None]:
    """One submission check at a time on this host for one registry: each check holds about five times the
    submission's size, and the service's worker processes (``--workers``) each have a checker of their own."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one check per worker process
        yield
        return
    name = f"pprl-check-{hashlib.sha256(key.encode()).hexdigest()[:16]}.lock"
    try:
        lock = open(Path(tempfile.gettempdir()) / name, "a+b")  # noqa: SIM115 - held across the yield
    except OSError as exc:  # e.g. a lock file of another user: check without it rather than refuse
        log.warning("cannot open the submission checks' lock file (%s); checking without it", exc.strerror)
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_document(data: bytes, platforms: list[Card], signer: str, source: str) -> tuple:
    doc = load_bytes(data, Submission, source)  # either form: JSON or chunked
    verified = open_submission(doc, platforms)
    if verified.platform != signer:
        return "refused", 403, f"{source}: a submission of '{verified.platform}' uploaded by '{signer}'"
    header = doc.header
    return "ok", {"document": doc.hash, "kind": "submission", "platform": header.platform,
                  "records": header.records, "created": header.created, "run": header.run}
