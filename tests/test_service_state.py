"""The service's own tables: job leases (one runner per job, even with two processes on one database), documents
taken by one job at a time, uploaded documents kept once in their chunks and checked from there."""

from __future__ import annotations

import hashlib
import socket
import threading
import time

import pytest

from pprl.errors import PPRLError
from pprl.service.bureau import check_upload, one_check_at_a_time
from pprl.service.state import ServiceState, assemble_upload, new_runner, runner_alive


@pytest.fixture
def state(tmp_path):
    s = ServiceState(tmp_path / "state.db")
    yield s
    s.close()


def _document(state: ServiceState, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    state.store_document(None, "platform_1", "submission", digest, body, {"platform": "platform_1"})
    return digest


def test_a_job_runs_in_one_process_and_is_taken_over_only_when_its_runner_died(state):
    me, other = new_runner(), new_runner()
    job = state.create_job("registry-update", "bureau", {"submissions": []})
    assert state.claim_job(me).id == job.id and state.claim_job(other) is None
    assert state.requeue_stale(lease=60) == []  # a live runner of this host with a fresh lease keeps it
    with pytest.raises(PPRLError, match="no longer this process's"):
        state.run_in_transaction(lambda conn: ServiceState.finish_job_in(conn, job, other, {}))
    dead = f"{socket.gethostname()[:120]}:999999999:0000"
    assert runner_alive(me) and not runner_alive(dead) and runner_alive("elsewhere:1:x")
    state.run_in_transaction(lambda conn: conn.exec_driver_sql(
        f"UPDATE pprl_svc_jobs SET runner = '{dead}' WHERE id = '{job.id}'"))
    assert state.requeue_stale(lease=60) == [job.id]  # its process is gone: at once
    assert state.claim_job(other).id == job.id
    state.heartbeat(other)
    state.run_in_transaction(lambda conn: ServiceState.finish_job_in(conn, job, other, {"ok": 1}))
    assert state.job(job.id).status == "done" and state.job(job.id).result == {"ok": 1}


def test_a_runner_elsewhere_loses_its_job_only_when_its_lease_runs_out(state):
    job = state.create_job("registry-update", "bureau", {})
    state.claim_job("elsewhere:1:x")
    assert state.requeue_stale(lease=60) == []
    assert state.requeue_stale(lease=-1) == [job.id]


def test_a_document_belongs_to_one_job_at_a_time_and_is_given_back_when_it_fails(state):
    a, b = _document(state, b"first"), _document(state, b"second")
    first = state.create_job("registry-update", "bureau", {}, [a])
    with pytest.raises(PPRLError, match="already taken by another job"):
        state.create_job("registry-update", "bureau", {}, [a, b])
    assert [d["job"] for d in state.documents("submission")] == [first.id, None]  # b was not taken either
    runner = new_runner()
    state.claim_job(runner)
    state.fail_job(first, runner, "refused")
    assert state.job(first.id).status == "failed"
    assert [d["job"] for d in state.documents("submission", unused=True)] == [None, None]


def _upload(state: ServiceState, owner: str, data: bytes, chunk: int = 1024) -> str:
    up = state.open_upload(owner, "submission", len(data), hashlib.sha256(data).hexdigest(), chunk)
    for i in range(up.chunks):
        state.put_chunk(up.id, owner, i, data[i * chunk:(i + 1) * chunk])
    return up.id


def test_an_uploaded_document_keeps_its_bytes_in_its_chunks_once(state):
    data = bytes(range(256)) * 20  # 5,120 bytes: five chunks of 1,024
    digest = hashlib.sha256(data).hexdigest()
    first = _upload(state, "platform_1", data)
    up, assembled = state.assemble(first, "platform_1")
    assert assembled == data and state.ready(first, "platform_1").chunks == 5
    state.store_document(first, "platform_1", "submission", digest, None, {"platform": "platform_1"})
    assert state.document_bodies([digest]) == [data] and state.upload(first, "platform_1").status == "complete"
    with pytest.raises(PPRLError, match="already complete"):
        state.ready(first, "platform_1")
    again = _upload(state, "platform_1", data)  # the same bytes uploaded again: kept once, the new chunks go
    state.store_document(again, "platform_1", "submission", digest, None, {"platform": "platform_1"})
    assert state.upload(again, "platform_1").received == () and state.document_bodies([digest]) == [data]
    assert state.upload(first, "platform_1").received == (0, 1, 2, 3, 4)
    assert [d["document"] for d in state.documents("submission")] == [digest]


def test_an_upload_is_checked_from_its_chunks_in_a_process_of_its_own(state):
    data = b'{"not": "a submission"}' * 100
    good = _upload(state, "platform_1", data)
    _up, assembled = assemble_upload(state.side_url, good, "platform_1")
    assert assembled == data
    with pytest.raises(PPRLError, match="no upload"):
        assemble_upload(state.side_url, good, "platform_2")  # another owner's upload is not found
    missing = state.open_upload("platform_1", "submission", 4096, "0" * 64, 1024).id
    state.put_chunk(missing, "platform_1", 0, b"x" * 1024)
    with pytest.raises(PPRLError, match="missing chunks 1, 2, 3"):
        assemble_upload(state.side_url, missing, "platform_1")
    tampered = state.open_upload("platform_1", "submission", 2048, "0" * 64, 1024).id
    for i in range(2):
        state.put_chunk(tampered, "platform_1", i, b"y" * 1024)
    assert check_upload(state.side_url, tampered, "platform_1", [], "upload t") == (
        "refused", 400, f"upload {tampered}: the chunks do not add up to the declared SHA-256")
    outcome = check_upload(state.side_url, good, "platform_1", [], f"upload {good}")
    assert outcome[:2] == ("refused", 400) and f"upload {good}" in outcome[2]  # bytes fine, not a submission


def test_one_submission_check_at_a_time_per_registry_on_a_host(tmp_path):
    order: list[str] = []
    inside, release = threading.Event(), threading.Event()

    def first() -> None:
        with one_check_at_a_time(str(tmp_path / "a")):
            inside.set()
            release.wait(10)
            order.append("first done")

    def second() -> None:
        with one_check_at_a_time(str(tmp_path / "a")):
            order.append("second")

    threads = [threading.Thread(target=first)]
    threads[0].start()
    assert inside.wait(10)
    with one_check_at_a_time(str(tmp_path / "other")):  # another registry does not wait
        order.append("other")
    threads.append(threading.Thread(target=second))
    threads[1].start()
    time.sleep(0.2)  # room for the second check to get in, which it must not while the first runs
    assert order == ["other"]
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["other", "first done", "second"]


def test_the_registry_syncs_every_commit_and_the_side_file_only_stored_documents(state):
    import sqlalchemy as sa

    with state.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 2  # FULL: answers and updates
    with state.side.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL: nonces and chunks
    seen = []
    sa.event.listen(state.side, "commit", lambda conn: seen.append(
        conn.connection.driver_connection.execute("PRAGMA synchronous").fetchone()[0]))
    _document(state, b"kept")
    assert seen[0] == 2  # the document's bytes (and every chunk before them) are synced
    with state.side.connect() as conn:
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # and the connection goes back
