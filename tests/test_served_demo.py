"""`pprl demo --served`: the lender story through every party's `pprl serve` process, each stopped at the end."""

from __future__ import annotations

import os
import re
import socket

from cli_runner import run

SERVICES = ["bureau", "platform_1", "authority", "bureau (daily quota 1)"]


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_served_demo_runs_the_story_through_the_services_and_stops_them(tmp_path):
    w = tmp_path / "served"
    out = run("demo", "--served", "--people", 300, "--bits", 2048, "--workdir", w).stdout
    assert out.startswith("pprl demo --served: 300 people over 3 platforms")
    assert "month 2" in out and "MISMATCH" not in out
    assert re.search(r"check     [1-9]\d* answers vs plaintext sums over the linked records: all equal", out)
    found = re.search(r"(\d+) found \(expected (\d+):", out)
    assert found and found.group(1) == found.group(2) != "0"
    for case in ("expired consent", "over quota", "unregistered lender"):
        assert re.search(rf"refused   {case}: .+ \(HTTP 403\)", out)
    assert "not among this service's pinned cards (HTTP 403)" in out  # bank_b never got past the signature check
    assert "chains and signatures OK" in out

    services = re.findall(r"service   (.+?)\s+http://127\.0\.0\.1:(\d+)\s+\(pid (\d+),", out)
    assert [name for name, _port, _pid in services] == SERVICES
    assert "4 services: all stopped" in out
    for _name, port, pid in services:  # nothing left running, nothing left listening
        assert not _alive(int(pid))
        assert not _listening(int(port))

    # every step really went over HTTP: each service's log shows its requests
    logs = {name: (w / path).read_text(encoding="utf-8") for name, path in [
        ("bureau", "bureau/service.log"), ("quota", "bureau/service-quota.log"),
        ("platform", "platform_1/service.log"), ("authority", "authority/service.log")]}
    assert logs["bureau"].count('"POST /v1/uploads HTTP/1.1" 201') == 6  # 3 platforms, 2 months
    assert logs["bureau"].count('"POST /v1/jobs HTTP/1.1" 202') == 2
    assert logs["bureau"].count('"POST /v1/queries HTTP/1.1" 200') == 1
    assert logs["bureau"].count('"POST /v1/queries HTTP/1.1" 403') == 2  # expired consent, unregistered lender
    assert logs["quota"].count('"POST /v1/queries HTTP/1.1" 403') == 1
    assert '"POST /v1/pseudonyms HTTP/1.1" 200' in logs["platform"]
    assert '"POST /v1/answer-decryptions HTTP/1.1" 200' in logs["authority"]
    for text in logs.values():
        assert "Application shutdown complete" in text  # stopped by SIGTERM, shut down cleanly
    assert (w / "platform_1" / "oprf.log").read_text().count("\n") == 1
    assert (w / "authority" / "audit.log").read_text().count("\n") == 1

    # the lender's results, and no applicant ID anywhere on the bureau's side
    scores = (w / "lender_scores.csv").read_text(encoding="utf-8").splitlines()
    assert scores[0].startswith("app_id,found,contributors,repay_score_sum") and len(scores) == 31
    bureau_files = b"".join(p.read_bytes() for p in (w / "bureau").rglob("*") if p.is_file())
    for line in (w / "bank_a" / "applicants.csv").read_text(encoding="utf-8").splitlines()[1:]:
        assert line.split(",")[1].encode() not in bureau_files


def test_served_demo_refuses_the_exact_path(tmp_path):
    result = run("demo", "--served", "--exact", "--workdir", tmp_path / "x", ok=False)
    assert result.exit_code == 2 and "--served runs the lender story" in result.stderr
    assert not (tmp_path / "x").exists()
