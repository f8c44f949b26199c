"""A service's own state, in its database: nonces seen, uploads in progress, documents received, jobs.

The bureau keeps these tables next to its registry (same database: SQLite by
default, PostgreSQL by URL), so a registry update and the job that ran it
commit in one transaction. Platforms and key holders keep them in a small
SQLite file of their own (``--state``). Every change is one transaction: a
service killed at any point restarts with each upload, document and job as it
was before or after a change, never between.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from pprl.documents import now
from pprl.errors import PPRLError
from pprl.registry import registry_url, sqlite_pragmas
from pprl.service.auth import WINDOW_SECONDS, AuthError

__all__ = ["MAX_BODY", "Job", "ServiceState", "Upload", "assemble_upload", "jobs_table", "new_runner",
           "runner_alive"]

#: The largest request body a service reads (bank proxies often stop at 2 MB): larger documents are uploaded
#: in chunks of at most this size.
MAX_BODY = 2 * 1024 * 1024
#: The largest document an upload may assemble.
MAX_UPLOAD = 8 * 1024 ** 3

_md = sa.MetaData()
#: Nonces, uploads and their chunks: written by every request and every chunk. With SQLite they live in a file
#: of their own next to the database (``<file>.uploads.db``), so a 2 MB chunk or a nonce never waits for the
#: registry's write lock (a registry update, a stored submission) and the registry's writers never wait for them.
_side_md = sa.MetaData()
_nonces = sa.Table(
    "pprl_svc_nonces", _side_md,
    sa.Column("signer", sa.String(64), primary_key=True),
    sa.Column("nonce", sa.String(32), primary_key=True),
    sa.Column("expires", sa.Float, nullable=False, index=True),
)
_uploads = sa.Table(
    "pprl_svc_uploads", _side_md,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("chunk_size", sa.Integer, nullable=False),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("document", sa.String(64), nullable=True),
)
_chunks = sa.Table(
    "pprl_svc_chunks", _side_md,
    sa.Column("upload", sa.String(32), primary_key=True),
    sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
#: The bytes of each received document, beside the registry like the chunks: an 88 MB submission never holds the
#: registry's write lock (which every lender answer takes to record itself). A document that came in an upload
#: keeps its bytes in that upload's chunks (``upload`` names it, ``body`` is empty): completing an upload writes
#: no second copy.
_bodies = sa.Table(
    "pprl_svc_bodies", _side_md,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("upload", sa.String(32), nullable=True),
)
_documents = sa.Table(
    "pprl_svc_documents", _md,
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("received", sa.String(40), nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("job", sa.String(32), nullable=True),
)
jobs_table = sa.Table(
    "pprl_svc_jobs", _md,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("created", sa.String(40), nullable=False),
    sa.Column("started", sa.String(40), nullable=True),
    sa.Column("finished", sa.String(40), nullable=True),
    sa.Column("params", sa.Text, nullable=False),
    sa.Column("result", sa.Text, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    # which service process runs it, and when that process last said it is alive (a lease): another process
    # on the same database requeues a running job only once its lease has run out
    sa.Column("runner", sa.String(200), nullable=True),
    sa.Column("heartbeat", sa.Float, nullable=True),
)


@dataclass(frozen=True)
class Upload:
    """An upload: ``chunks`` pieces of ``chunk_size`` bytes (the last shorter), ``received`` of them so far."""

    id: str
    owner: str
    kind: str
    size: int
    sha256: str
    chunk_size: int
    status: str
    document: str | None
    received: tuple[int, ...]

    @property
    def chunks(self) -> int:
        return max(1, -(-self.size // self.chunk_size))

    def to_dict(self) -> dict[str, Any]:
        return {"upload": self.id, "kind": self.kind, "size": self.size, "sha256": self.sha256,
                "chunk_size": self.chunk_size, "chunks": self.chunks, "status": self.status,
                "received": list(self.received), "document": self.document}


@dataclass(frozen=True)
class Job:
    """A background job's stored state (a running job's progress lives in the service's memory)."""

    id: str
    kind: str
    owner: str
    status: str  # queued, running, done, failed
    created: str
    started: str | None
    finished: str | None
    params: dict[str, Any]
    result: Any
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.id, "kind": self.kind, "owner": self.owner, "status": self.status,
                "created": self.created, "started": self.started, "finished": self.finished,
                "result": self.result, "error": self.error}


def _job(row: Any) -> Job:
    return Job(row.id, row.kind, row.owner, row.status, row.created, row.started, row.finished,
               json.loads(row.params), json.loads(row.result) if row.result else None, row.error)


class ServiceState:
    """The state tables at ``location`` (a SQLite file or a database URL), created on first use."""

    def __init__(self, location: str | Path) -> None:
        url = registry_url(location)
        side_url = url
        if url.startswith("sqlite:///"):
            Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            side_url = f"{url}.uploads.db"
        #: The database of nonces, uploads and document bytes (the registry's own with PostgreSQL): a child
        #: process that checks an upload reads its chunks from here itself (:func:`assemble_upload`).
        self.side_url = side_url
        self.engine: Engine = sa.create_engine(url, future=True)
        self.side: Engine = self.engine if side_url == url else sa.create_engine(side_url, future=True)
        for engine in {self.engine, self.side}:
            if engine.dialect.name == "sqlite":
                sa.event.listen(engine, "connect", sqlite_pragmas)
        if self.side is not self.engine:
            sa.event.listen(self.side, "connect", _side_pragmas)
        with self.side.begin() as conn:
            _side_md.create_all(conn)
            if "upload" not in {c["name"] for c in sa.inspect(conn).get_columns("pprl_svc_bodies")}:
                conn.execute(sa.text("ALTER TABLE pprl_svc_bodies ADD COLUMN upload VARCHAR(32)"))  # older files
        with self.engine.begin() as conn:
            _md.create_all(conn)
            have = {c["name"] for c in sa.inspect(conn).get_columns("pprl_svc_jobs")}
            for column, kind in (("runner", "VARCHAR(200)"), ("heartbeat", "FLOAT")):
                if column not in have:  # tables made before jobs had leases
                    conn.execute(sa.text(f"ALTER TABLE pprl_svc_jobs ADD COLUMN {column} {kind}"))

    def close(self) -> None:
        self.engine.dispose()
        self.side.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _side_tx(self, *, durable: bool = False) -> Iterator[Connection]:
        """A transaction on the side database. Its SQLite file commits without waiting for the disk (a process
        killed at any point loses nothing; a power cut may lose the last nonces and chunks, which the clients
        send again); a ``durable`` transaction waits until it and everything before it are on disk."""
        with self.side.connect() as conn:
            raw = conn.connection.driver_connection if self.side is not self.engine else None
            if raw is not None and durable:
                raw.execute("PRAGMA synchronous=FULL")
            try:
                with conn.begin():
                    yield conn
            finally:
                if raw is not None and durable:
                    raw.execute("PRAGMA synchronous=NORMAL")

    # -- replay protection -------------------------------------------------------------------------

    def remember_nonce(self, signer: str, nonce: str, at: float | None = None) -> None:
        """Record a request's nonce; AuthError 409 if this signer used it before (a replay)."""
        clock = time.time() if at is None else at
        try:
            with self._side_tx() as conn:
                if secrets.randbelow(64) == 0:  # now and then, forget nonces older than the window
                    conn.execute(sa.delete(_nonces).where(_nonces.c.expires < clock))
                conn.execute(sa.insert(_nonces).values(signer=signer, nonce=nonce,
                                                       expires=clock + 2 * WINDOW_SECONDS))
        except sa.exc.IntegrityError:
            raise AuthError(409, "replayed request: this nonce was used before; sign every request afresh") from None

    # -- uploads -----------------------------------------------------------------------------------

    def open_upload(self, owner: str, kind: str, size: int, sha256: str, chunk_size: int) -> Upload:
        """A new upload, or the same owner's open upload of the same bytes (so a client can resume)."""
        with self._side_tx() as conn:
            row = conn.execute(sa.select(_uploads).where(
                (_uploads.c.owner == owner) & (_uploads.c.sha256 == sha256) & (_uploads.c.size == size)
                & (_uploads.c.kind == kind) & (_uploads.c.status == "open"))).first()
            if row is None:
                upload_id = secrets.token_hex(16)
                conn.execute(sa.insert(_uploads).values(id=upload_id, owner=owner, kind=kind, size=size,
                                                        sha256=sha256, chunk_size=chunk_size, created=now(),
                                                        status="open", document=None))
            else:
                upload_id = row.id
            return self._upload(conn, upload_id, owner)

    def upload(self, upload_id: str, owner: str) -> Upload:
        with self.side.connect() as conn:
            return self._upload(conn, upload_id, owner)

    def _upload(self, conn: Connection, upload_id: str, owner: str) -> Upload:
        return _read_upload(conn, upload_id, owner)

    def put_chunk(self, upload_id: str, owner: str, index: int, data: bytes) -> Upload:
        """Store one chunk; sending the same chunk again is harmless, a different one is refused (409)."""
        with self._side_tx() as conn:
            up = self._upload(conn, upload_id, owner)
            if up.status != "open":
                raise _Conflict(f"upload {upload_id} is already complete")
            if not 0 <= index < up.chunks:
                raise _BadRequest(f"chunk {index} is out of range: the upload has chunks 0 to {up.chunks - 1}")
            want = up.chunk_size if index < up.chunks - 1 else up.size - up.chunk_size * (up.chunks - 1)
            if len(data) != want:
                raise _BadRequest(f"chunk {index} has {len(data)} bytes; it must have {want}")
            old = conn.execute(sa.select(_chunks.c.data).where((_chunks.c.upload == upload_id)
                                                               & (_chunks.c.idx == index))).scalar()
            if old is None:
                conn.execute(sa.insert(_chunks).values(upload=upload_id, idx=index, data=data))
            elif bytes(old) != data:
                raise _Conflict(f"chunk {index} was already received with other bytes")
            return self._upload(conn, upload_id, owner)

    def assemble(self, upload_id: str, owner: str) -> tuple[Upload, bytes]:
        """The upload's whole bytes, checked against its SHA-256; 409 naming the chunks still missing."""
        with self.side.connect() as conn:
            return _assemble(conn, upload_id, owner)

    def ready(self, upload_id: str, owner: str) -> Upload:
        """The upload, if every chunk is in and it is still open (409 naming what is missing otherwise)."""
        with self.side.connect() as conn:
            return _complete_upload(conn, upload_id, owner)

    def store_document(self, upload_id: str | None, owner: str, kind: str, doc_hash: str, body: bytes | None,
                       summary: dict[str, Any]) -> None:
        """Keep a received document, then close its upload. With ``upload_id`` and no ``body`` the document's
        bytes are that upload's chunks, kept as they are (no second copy is written)."""
        if body is None and upload_id is None:
            raise ValueError("a document needs its bytes or the upload that holds them")
        # the bytes first, on disk (with every chunk before them): a document row always has its bytes
        with self._side_tx(durable=True) as conn:
            if conn.execute(sa.select(_bodies.c.hash).where(_bodies.c.hash == doc_hash)).first() is None:
                if body is None:
                    conn.execute(sa.insert(_bodies).values(hash=doc_hash, body=b"", upload=upload_id))
                else:
                    conn.execute(sa.insert(_bodies).values(hash=doc_hash, body=body, upload=None))
        with self._tx() as conn:
            exists = conn.execute(sa.select(_documents.c.hash).where(_documents.c.hash == doc_hash)).first()
            if exists is None:
                received = datetime.now(timezone.utc).isoformat(timespec="microseconds")  # orders arrivals
                conn.execute(sa.insert(_documents).values(hash=doc_hash, kind=kind, owner=owner, received=received,
                                                          summary=json.dumps(summary), body=b"", job=None))
        # Then the upload is closed (in the side database with SQLite: a second transaction). A stop in
        # between leaves the upload open with the document kept: completing it again finds the document and
        # closes it, so nothing is lost or stored twice. Its chunks go unless they are the document's bytes
        # (the same document uploaded again is kept once).
        if upload_id is not None:
            with self._side_tx() as conn:
                conn.execute(sa.update(_uploads).where(_uploads.c.id == upload_id)
                             .values(status="complete", document=doc_hash))
                holder = conn.execute(sa.select(_bodies.c.upload).where(_bodies.c.hash == doc_hash)).scalar()
                if holder != upload_id:
                    conn.execute(sa.delete(_chunks).where(_chunks.c.upload == upload_id))

    def documents(self, kind: str, *, unused: bool = False) -> list[dict[str, Any]]:
        """Summaries of the received documents of ``kind`` (oldest first); ``unused``: not yet in a job."""
        query = sa.select(_documents.c.hash, _documents.c.owner, _documents.c.received, _documents.c.summary,
                          _documents.c.job).where(_documents.c.kind == kind)
        if unused:
            query = query.where(_documents.c.job.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(_documents.c.received, _documents.c.hash)).all()
        return [{"document": r.hash, "owner": r.owner, "received": r.received, "job": r.job,
                 **json.loads(r.summary)} for r in rows]

    def document_bodies(self, hashes: Sequence[str]) -> list[bytes]:
        with self.engine.connect() as conn:
            known = {r.hash for r in conn.execute(
                sa.select(_documents.c.hash).where(_documents.c.hash.in_(list(hashes))))}
        with self.side.connect() as conn:
            rows = {r.hash: _chunks_of(conn, r.upload) if r.upload else bytes(r.body) for r in conn.execute(
                sa.select(_bodies.c.hash, _bodies.c.body, _bodies.c.upload).where(_bodies.c.hash.in_(list(known))))}
        missing = [h for h in hashes if h not in rows]
        if missing:
            raise _NotFound(f"no received document {missing[0]}")
        return [rows[h] for h in hashes]

    # -- jobs ----------------------------------------------------------------------------------------

    def create_job(self, kind: str, owner: str, params: dict[str, Any], documents: Sequence[str] = ()) -> Job:
        """Queue a job; ``documents`` are taken for it in the same transaction (409 if another job has one)."""
        job_id = secrets.token_hex(8)
        with self._tx() as conn:
            conn.execute(sa.insert(jobs_table).values(id=job_id, kind=kind, owner=owner, status="queued",
                                                      created=now(), params=json.dumps(params)))
            if documents:
                taken = conn.execute(sa.update(_documents).where(
                    _documents.c.hash.in_(list(documents)) & _documents.c.job.is_(None)).values(job=job_id))
                if taken.rowcount != len(set(documents)):
                    raise _Conflict("a submission of this job is already taken by another job; ask again "
                                    "without it")  # the transaction rolls back: no job, nothing taken
            return _job(conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).one())

    def job(self, job_id: str) -> Job:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.id == job_id)).first()
        if row is None:
            raise _NotFound(f"no job {job_id[:40]!r}")
        return _job(row)

    def requeue_stale(self, lease: float) -> list[str]:
        """Running jobs whose runner died (nothing of theirs committed), queued again: a runner that has not said
        it is alive for ``lease`` seconds, or a process of this host that no longer exists. A job another live
        process runs keeps running there."""
        with self._tx() as conn:
            running = conn.execute(sa.select(jobs_table.c.id, jobs_table.c.runner, jobs_table.c.heartbeat)
                                   .where(jobs_table.c.status == "running")).all()
            ids = [r.id for r in running
                   if r.heartbeat is None or r.heartbeat < time.time() - lease or not runner_alive(r.runner)]
            if ids:
                conn.execute(sa.update(jobs_table).where(jobs_table.c.id.in_(ids) & (jobs_table.c.status == "running"))
                             .values(status="queued", started=None, runner=None, heartbeat=None))
        return ids

    def claim_job(self, runner: str) -> Job | None:
        """The oldest queued job, marked running by ``runner``; None when there is none."""
        with self._tx() as conn:
            row = conn.execute(sa.select(jobs_table).where(jobs_table.c.status == "queued")
                               .order_by(jobs_table.c.created, jobs_table.c.id).limit(1)).first()
            if row is None:
                return None
            done = conn.execute(sa.update(jobs_table).where((jobs_table.c.id == row.id)
                                                            & (jobs_table.c.status == "queued"))
                                .values(status="running", started=now(), runner=runner, heartbeat=time.time()))
            if done.rowcount != 1:
                return None
            return _job(conn.execute(sa.select(jobs_table).where(jobs_table.c.id == row.id)).one())

    def heartbeat(self, runner: str) -> None:
        """``runner`` is alive: renew the lease of the jobs it runs."""
        with self._tx() as conn:
            conn.execute(sa.update(jobs_table).where((jobs_table.c.runner == runner)
                                                     & (jobs_table.c.status == "running"))
                         .values(heartbeat=time.time()))

    @staticmethod
    def finish_job_in(conn: Connection, job: Job, runner: str, result: Any) -> None:
        """Mark ``job`` done inside the caller's transaction; PPRLError (so the caller's transaction rolls back)
        if ``runner`` no longer holds it."""
        done = conn.execute(sa.update(jobs_table).where((jobs_table.c.id == job.id) & (jobs_table.c.runner == runner)
                                                        & (jobs_table.c.status == "running"))
                            .values(status="done", finished=now(), result=json.dumps(result)))
        if done.rowcount != 1:
            raise _Conflict(f"job {job.id} is no longer this process's to finish; nothing of this run is kept")

    def fail_job(self, job: Job, runner: str, error: str) -> None:
        """Mark ``job`` failed and give its documents back (a new job may take them)."""
        with self._tx() as conn:
            failed = conn.execute(sa.update(jobs_table).where((jobs_table.c.id == job.id)
                                                              & (jobs_table.c.runner == runner))
                                  .values(status="failed", finished=now(), error=error[:500]))
            if failed.rowcount:
                conn.execute(sa.update(_documents).where(_documents.c.job == job.id).values(job=None))

    def run_in_transaction(self, fn: Callable[[Connection], Any]) -> Any:
        with self._tx() as conn:
            return fn(conn)


def _side_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """The side file's commits (a nonce per request, a chunk per upload request) do not wait for the disk: in
    write-ahead-log mode they are safe against a crash of the process, and a lender's query does not wait behind
    the sync of other parties' 2 MB chunks. Storing a document is a durable transaction (:meth:`ServiceState.
    store_document`), which syncs everything written before it."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _read_upload(conn: Connection, upload_id: str, owner: str) -> Upload:
    row = conn.execute(sa.select(_uploads).where(_uploads.c.id == upload_id)).first()
    if row is None or row.owner != owner:
        raise _NotFound(f"no upload {upload_id[:40]!r} of yours")
    received = tuple(conn.execute(sa.select(_chunks.c.idx).where(_chunks.c.upload == upload_id)
                                  .order_by(_chunks.c.idx)).scalars())
    return Upload(row.id, row.owner, row.kind, row.size, row.sha256, row.chunk_size, row.status, row.document,
                  received)


def _complete_upload(conn: Connection, upload_id: str, owner: str) -> Upload:
    up = _read_upload(conn, upload_id, owner)
    if up.status != "open":
        raise _Conflict(f"upload {upload_id} is already complete (document {up.document})")
    missing = sorted(set(range(up.chunks)) - set(up.received))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        raise _Conflict(f"upload {upload_id} is missing chunks {shown}; send them, then complete")
    return up


def _chunks_of(conn: Connection, upload_id: str) -> bytes:
    return b"".join(bytes(r.data) for r in conn.execute(
        sa.select(_chunks.c.data).where(_chunks.c.upload == upload_id).order_by(_chunks.c.idx)))


def _assemble(conn: Connection, upload_id: str, owner: str) -> tuple[Upload, bytes]:
    up = _complete_upload(conn, upload_id, owner)
    data = _chunks_of(conn, upload_id)
    if len(data) != up.size or hashlib.sha256(data).hexdigest() != up.sha256:
        raise _BadRequest(f"upload {upload_id}: the chunks do not add up to the declared SHA-256")
    return up, data


def assemble_upload(side_url: str, upload_id: str, owner: str) -> tuple[Upload, bytes]:
    """An upload's whole bytes read from the database at ``side_url`` (:attr:`ServiceState.side_url`) on a
    connection of its own, checked like :meth:`ServiceState.assemble`: for a process that checks uploads apart
    from the service's (the service then never holds the bytes)."""
    engine = sa.create_engine(side_url, future=True, poolclass=sa.pool.NullPool)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    try:
        with engine.connect() as conn:
            return _assemble(conn, upload_id, owner)
    finally:
        engine.dispose()


def new_runner() -> str:
    """A job runner's name: this host, this process, and a random tag (a pid may be reused)."""
    return f"{socket.gethostname()[:120]}:{os.getpid()}:{secrets.token_hex(4)}"


def runner_alive(runner: str | None) -> bool:
    """False when ``runner`` is a process of this host that no longer exists; True otherwise (for another
    host, only its lease can tell)."""
    host, _, rest = (runner or "").partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:120] or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _NotFound(PPRLError):
    status = 404


class _Conflict(PPRLError):
    status = 409


class _BadRequest(PPRLError):
    status = 400
