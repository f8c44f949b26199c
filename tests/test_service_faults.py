"""kill -9 a service in the middle of its work, start it again: nothing lost, nothing doubled, work resumes.

Each service runs as a real `pprl serve` process (tests/service_harness.py), killed with SIGKILL: no
shutdown hook runs, so only what was committed survives.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cli_runner import cli_consortium, run
from service_harness import Process, children, gone

from pprl.documents import Answer, Submission, load
from pprl.encoding.normalise import normaliser_for
from pprl.protocol.audit import check_chain
from pprl.protocol.files import load_card, load_key, read_log_lines
from pprl.protocol.link import LinkOptions
from pprl.protocol.pseudonym import finish_pseudonyms, request_pseudonyms
from pprl.protocol.query import AnswerPolicy, Consent, make_query
from pprl.registry import Registry
from pprl.service.client import Client, ServiceError
from pprl.service.state import ServiceState

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["platform_1", "platform_2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("faults")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=41)
    run("synth", "--people", 3000, "--platforms", 2, "--out", w / "big", "--seed", 41)
    run("init", "bank_a", "--role", "lender", "--dir", w / "keys")
    key["bank_a"], card["bank_a"] = w / "keys" / "bank_a.key", w / "keys" / "bank_a.card.json"
    subs = {}
    for n in PLATFORMS:
        subs[n] = w / f"{n}.sub.json"
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "big" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--pseudonym-column", "resident_id", "--out", subs[n])
    k = {n: load_key(p) for n, p in key.items()}
    c = {n: load_card(p) for n, p in card.items()}
    return {"dir": w, "key": key, "card": card, "k": k, "c": c, "subs": subs}


def _bureau(world, tmp_path: Path) -> Process:
    cards = [a for n in [*PLATFORMS, "bank_a"] for a in ("--cards", world["card"][n])]
    return Process(["serve", "--me", world["key"]["bureau"], "--registry", tmp_path / "registry.db", *cards],
                   tmp_path / "bureau.out")


def _restart_later(proc: Process, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), proc.start()))
    thread.start()
    return thread


def test_an_upload_survives_the_bureau_being_killed_and_resumes(world, tmp_path):
    bureau = _bureau(world, tmp_path).start()
    try:
        data = world["subs"]["platform_1"].read_bytes()
        restarted: list[threading.Thread] = []

        def kill_midway(done: int, total: int) -> None:
            if done == total // 3 and not restarted:
                bureau.kill()  # mid-upload: the next chunk finds no one there
                restarted.append(_restart_later(bureau, 1.0))

        with Client(bureau.url, world["k"]["platform_1"], [world["c"]["bureau"]], "bureau",
                    retry_seconds=60) as client:
            summary = client.upload("submission", data, chunk_size=64 * 1024, progress=kill_midway)
            restarted[0].join()
            assert summary["document"] == load(world["subs"]["platform_1"], Submission).hash
            received = client.call("GET", "/v1/uploads/" + client.call(
                "POST", "/v1/uploads", {"kind": "submission", "size": len(data),
                                        "sha256": hashlib.sha256(data).hexdigest(), "chunk_size": 64 * 1024},
                idempotent=True)["upload"])
        assert received["status"] == "open" and received["received"] == []  # a new upload: the old one completed
    finally:
        bureau.stop()
    with sqlite3.connect(tmp_path / "registry.db") as db:
        documents = db.execute("SELECT hash FROM pprl_svc_documents").fetchall()
    with sqlite3.connect(tmp_path / "registry.db.uploads.db") as side:  # uploads and bytes live beside the registry
        # the document's bytes are its upload's chunks, kept once: no second copy, no chunks of another upload
        stored = side.execute("SELECT hash, length(body), upload FROM pprl_svc_bodies").fetchall()
        chunks = side.execute("SELECT upload, sum(length(data)) FROM pprl_svc_chunks WHERE upload IN "
                              "(SELECT id FROM pprl_svc_uploads WHERE status = 'complete') GROUP BY upload").fetchall()
    assert documents == [(summary["document"],)]
    assert len(stored) == 1 and stored[0][:2] == (summary["document"], 0) and chunks == [(stored[0][2], len(data))]
    state = ServiceState(tmp_path / "registry.db")
    try:
        assert state.document_bodies([summary["document"]]) == [data]
    finally:
        state.close()


def _updates(registry: Path) -> int:
    with sqlite3.connect(registry) as db:
        return int(db.execute("SELECT count(*) FROM pprl_updates").fetchone()[0])


def test_a_registry_update_killed_midway_runs_again_once(world, tmp_path):
    bureau = _bureau(world, tmp_path).start()
    try:
        for n in PLATFORMS:
            with Client(bureau.url, world["k"][n], [world["c"]["bureau"]], "bureau") as client:
                client.upload("submission", world["subs"][n].read_bytes())
        with Client(bureau.url, world["k"]["bureau"], [world["c"]["bureau"]], "bureau") as client:
            job = client.call("POST", "/v1/jobs", {"kind": "registry-update"})
            deadline = time.monotonic() + 60
            while client.job(job["job"])["status"] == "queued" and time.monotonic() < deadline:
                time.sleep(0.02)
        bureau.kill()  # while the job runs (or, on a fast machine, just after it committed)
        killed_after = _updates(tmp_path / "registry.db")
        assert killed_after in (0, 2)  # the two updates commit together or not at all
        bureau.start()
        with Client(bureau.url, world["k"]["bureau"], [world["c"]["bureau"]], "bureau") as client:
            state = client.wait(job["job"], poll=0.2, timeout=120)
            assert state["status"] == "done", state
            with pytest.raises(ServiceError, match="409 .*already applied"):
                client.call("POST", "/v1/jobs", {"kind": "registry-update", "submissions": state["submissions"]})
    finally:
        bureau.stop()
    assert _updates(tmp_path / "registry.db") == 2  # each submission applied exactly once
    # the same entities as an update run straight from the files
    reference = tmp_path / "reference.db"
    run("registry", "update", "--me", world["key"]["bureau"], "--registry", reference,
        *[a for n in PLATFORMS for a in ("--cards", world["card"][n])],
        *[a for n in PLATFORMS for a in ("--submissions", world["subs"][n])])
    with Registry(tmp_path / "registry.db") as served, Registry(reference) as direct:
        assert sorted(map(sorted, served.members().values())) == sorted(map(sorted, direct.members().values()))


def _query(world, pseudonyms: list[bytes], tag: str):
    now = datetime.now(timezone.utc)
    items = [(p, Consent(hashlib.sha256(f"{tag}-{i}".encode()).hexdigest(), "loan-application",
                         (now - timedelta(days=1)).isoformat(timespec="seconds"),
                         (now + timedelta(days=30)).isoformat(timespec="seconds")))
             for i, p in enumerate(pseudonyms)]
    return make_query(world["k"]["bank_a"], items, "loan-application")


def _pseudonyms(world, n: int) -> list[bytes]:
    """Pseudonyms of ``n`` people of platform_1, through the real OPRF (evaluated in-process here)."""
    from pprl.protocol.files import load_secret
    from pprl.protocol.pseudonym import EvaluatorOptions, evaluate_request
    from pprl.protocol.tables import read_table

    frame = read_table(world["dir"] / "big" / "platform_1.csv")
    normalise = normaliser_for("resident_id")
    ids = [(f"a{i}", v) for i, v in enumerate(frame["resident_id"]) if normalise(v) is not None][:n]
    made = request_pseudonyms(world["k"]["bank_a"], ids, "resident_id")
    response, _ = evaluate_request(world["k"]["platform_1"], load_secret(world["dir"] / "platform_1.secret"),
                                   made.request, [world["c"]["bank_a"]], [], EvaluatorOptions())
    return [p for _ref, p in finish_pseudonyms(world["k"]["bank_a"], made.state, response, [world["c"]["platform_1"]])]


def _answered(answer: Answer) -> tuple:
    return tuple(answer.payload.status), answer.header.found, tuple(sorted(answer.header.contributions.items()))


def test_answers_after_a_kill_equal_those_before(world, tmp_path):
    bureau = _bureau(world, tmp_path).start()
    pseudonyms = _pseudonyms(world, 8)
    try:
        for n in PLATFORMS:
            with Client(bureau.url, world["k"][n], [world["c"]["bureau"]], "bureau") as client:
                client.upload("submission", world["subs"][n].read_bytes())
        with Client(bureau.url, world["k"]["bureau"], [world["c"]["bureau"]], "bureau") as client:
            assert client.wait(client.call("POST", "/v1/jobs", {"kind": "registry-update"})["job"],
                               poll=0.2)["status"] == "done"
        with Client(bureau.url, world["k"]["bank_a"], [world["c"]["bureau"]], "bureau") as client:
            before = _answered(Answer.from_dict(client.call("POST", "/v1/queries", _query(world, pseudonyms, "b").wire)))
            got: list[str] = []
            stop = threading.Event()

            def keep_asking() -> None:
                for i in range(200):
                    if stop.is_set():
                        return
                    query = _query(world, pseudonyms[:1], f"flood-{i}")
                    try:
                        client.call("POST", "/v1/queries", query.wire)
                        got.append(query.hash)
                    except Exception:  # noqa: BLE001 - the service is being killed
                        return

            flood = threading.Thread(target=keep_asking)
            flood.start()
            time.sleep(0.5)
            checker = children(bureau.proc.pid)  # the process that checked the uploaded submissions
            assert checker
            bureau.kill()  # with queries in flight
            stop.set()
            flood.join()
            assert gone(checker)  # the checker does not outlive a killed service
        bureau.start()
        with Client(bureau.url, world["k"]["bank_a"], [world["c"]["bureau"]], "bureau") as client:
            after = _answered(Answer.from_dict(client.call("POST", "/v1/queries", _query(world, pseudonyms, "a").wire)))
    finally:
        bureau.stop()
    assert after == before and before[1] > 0
    with sqlite3.connect(tmp_path / "registry.db") as db:
        recorded = {r[0] for r in db.execute("SELECT hash FROM pprl_queries")}
    assert set(got) <= recorded  # every answer the lender received is on the registry's record
    with Registry(tmp_path / "registry.db") as reg:
        entries = reg.log()
    check_chain(entries, source="the registry log")  # and its log is whole


def test_a_key_holder_killed_mid_request_keeps_a_whole_log(world, tmp_path):
    w = world["dir"]
    holder = Process(["serve", "--me", world["key"]["authority"], "--paillier-key", w / "authority" / "paillier.key",
                      "--audit-log", tmp_path / "audit.log", "--cards", world["card"]["bureau"],
                      "--cards", world["card"]["bank_a"]], tmp_path / "holder.out")
    registry = tmp_path / "registry.db"
    with Registry(registry) as reg:
        reg.update([load(world["subs"][n], Submission) for n in PLATFORMS], LinkOptions(),
                   [world["c"][n] for n in PLATFORMS], me=world["k"]["bureau"])
    pseudonyms = _pseudonyms(world, 3)
    answers = []
    with Registry(registry) as reg:
        for i in range(40):
            answers.append(reg.answer(world["k"]["bureau"], _query(world, pseudonyms, f"h{i}"), [world["c"]["bank_a"]],
                                      AnswerPolicy(daily_quota=10_000)))
    holder.start()
    got: list[str] = []
    try:
        with Client(holder.url, world["k"]["bank_a"], [world["c"]["authority"]], "authority") as client:
            def keep_asking() -> None:
                for answer in answers:
                    try:
                        client.call("POST", "/v1/answer-decryptions", answer.wire)
                        got.append(answer.hash)
                    except Exception:  # noqa: BLE001 - the holder is being killed
                        return

            flood = threading.Thread(target=keep_asking)
            flood.start()
            time.sleep(0.5)
            holder.kill()
            flood.join()
        entries = read_log_lines(tmp_path / "audit.log")
        check_chain(entries, source="audit.log")  # never half-written
        logged = {e.get("release_hash") for e in entries}
        assert set(got) <= logged  # every decryption handed out was logged first
        holder.start()
        with Client(holder.url, world["k"]["bank_a"], [world["c"]["authority"]], "authority") as client:
            client.call("POST", "/v1/answer-decryptions", answers[-1].wire)
        check_chain(read_log_lines(tmp_path / "audit.log"), source="audit.log")
    finally:
        holder.stop()
    assert json.loads((tmp_path / "audit.log").read_text().splitlines()[-1])["release_hash"] == answers[-1].hash


def test_a_bureau_served_from_two_processes_shares_its_uploads_and_jobs(world, tmp_path):
    bureau = _bureau(world, tmp_path)
    bureau.args.extend(["--workers", "2"])
    bureau.start()
    try:
        for n in PLATFORMS:  # each chunk may land on either process
            with Client(bureau.url, world["k"][n], [world["c"]["bureau"]], "bureau") as client:
                client.upload("submission", world["subs"][n].read_bytes(), chunk_size=256 * 1024)
        with Client(bureau.url, world["k"]["bureau"], [world["c"]["bureau"]], "bureau") as client:
            job = client.call("POST", "/v1/jobs", {"kind": "registry-update"})
            assert client.wait(job["job"], poll=0.2, timeout=120)["status"] == "done"
    finally:
        bureau.stop()
    assert bureau.proc is not None and bureau.proc.returncode == 0
    assert _updates(tmp_path / "registry.db") == 2
