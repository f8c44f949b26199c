"""The service's own tables: job leases (one runner per job, even with two processes on one database), documents
taken by one job at a time."""

from __future__ import annotations

import hashlib
import socket

import pytest

from pprl.errors import PPRLError
from pprl.service.state import ServiceState, new_runner, runner_alive


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
