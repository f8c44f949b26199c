"""The lender story through every party's service: what ``pprl demo --served`` runs.

The same story as :mod:`pprl.sim.lender_demo` (two months of submissions into
a registry, a lender's pseudonyms, query and decryption, three refusals, the
regulator's report, every answer checked against the plaintext), but each
party that serves does so as a real ``pprl serve`` child process on a free
port of 127.0.0.1: the bureau (the registry), the first platform (pseudonyms)
and the authority (the whole Paillier key). Everything else goes over signed
HTTP, as the CLI's ``--to`` / ``--service`` / ``--platform`` / ``--bureau`` /
``--authority`` options do it: submissions are uploaded in chunks, registry
updates run as the bureau's jobs, the refusals come back as 403s. The over-quota
case asks a second bureau service over the same registry, started with a
release policy of one applicant a day. Every service is stopped at the end,
on an error too (SIGTERM, then SIGKILL after a timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pprl.documents import Answer, Card, save, verify, write_atomic
from pprl.errors import PPRLError
from pprl.protocol.files import finish_pseudonyms_file, open_answer_file, query_file, request_pseudonyms_file
from pprl.protocol.identity import PartyKey
from pprl.registry import Registry, UpdateReport
from pprl.service.client import Client, ServiceError
from pprl.sim.consortium import StepTimer, prepare_workdir
from pprl.sim.lender_demo import (
    MONTHS,
    LenderDemoSummary,
    check_answers,
    choose_applicants,
    make_parties,
    platform_names,
    refusal_queries,
    regulator_report,
    submit_month,
    synth_months,
    write_consents,
)

__all__ = ["ServedDemoSummary", "ServiceProcess", "free_port", "run_served_demo", "stop_services"]

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    """A port of ``host`` nothing listens on right now (the OS picks it)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """``pprl serve ARGS`` as a child process on a free port of 127.0.0.1, its output in ``log``.

    :meth:`spawn` starts it, :meth:`wait_ready` waits until ``/v1/health``
    answers (starting it again on another port if the first was taken in the
    meantime), :meth:`stop` ends it: SIGTERM (the service finishes the
    requests in flight and shuts down), then SIGKILL after a timeout.
    """

    def __init__(self, name: str, args: Sequence[object], log: Path, *, host: str = HOST) -> None:
        self.name = name
        self.args = [str(a) for a in args]
        self.log = Path(log)
        self.host = host
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_seconds: float | None = None
        self._spawned = 0.0
        self._log_from = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> subprocess.Popen[bytes]:
        """Start the process (it is not answering yet: see :meth:`wait_ready`)."""
        if self.running:
            raise PPRLError(f"the {self.name} service is already running")
        self.port = free_port(self.host)
        command = [sys.executable, "-m", "pprl", "serve", *self.args, "--host", self.host, "--port", str(self.port)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # the child imports this very pprl, even when it is run from a source tree that is not installed
        source = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH", "")) if p)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self._log_from = out.tell()
            self.proc = proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                                stderr=subprocess.STDOUT, env=env)
        self._spawned = time.monotonic()
        return proc

    def wait_ready(self, timeout: float = 60.0, *, attempts: int = 3) -> ServiceProcess:
        """Wait until the service answers ``/v1/health``; PPRLError (with the end of its log) if it does not."""
        proc = self.spawn() if self.proc is None else self.proc
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, trust_env=False) as http:
            while True:
                if proc.poll() is not None:
                    said = self._said()
                    if "address already in use" in said.lower() and attempts > 1:
                        attempts -= 1  # another program took the port between our look and the bind
                        proc = self.spawn()
                        continue
                    raise PPRLError(f"the {self.name} service exited with status {proc.returncode} "
                                    f"before answering (see {self.log}): {said[-300:].strip()}")
                try:
                    if http.get(f"{self.url}/v1/health").status_code == 200:
                        self.ready_seconds = time.monotonic() - self._spawned
                        return self
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise PPRLError(f"the {self.name} service did not answer on {self.url} within "
                                    f"{timeout:.0f} s (see {self.log})")
                time.sleep(0.05)

    def start(self, timeout: float = 60.0) -> ServiceProcess:
        self.spawn()
        return self.wait_ready(timeout)

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM), without waiting."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL; the process is reaped either way."""
        if self.proc is None:
            return
        self.terminate()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def _said(self) -> str:
        try:
            with self.log.open("rb") as fh:
                fh.seek(self._log_from)
                return fh.read().decode("utf-8", "replace")
        except OSError:
            return ""


def stop_services(services: Sequence[ServiceProcess], timeout: float = 10.0) -> bool:
    """Stop them all: SIGTERM to each at once, then wait (SIGKILL for any still running after ``timeout``).

    Returns whether every one that was started has exited.
    """
    for s in services:
        s.terminate()
    deadline = time.monotonic() + timeout
    for s in services:
        s.stop(max(0.1, deadline - time.monotonic()))
    return not any(s.running for s in services)


@dataclass
class ServedDemoSummary(LenderDemoSummary):
    """The lender story's summary, with the services it ran through: (name, URL, pid, seconds to start)."""

    services: list[tuple[str, str, int, float]] = field(default_factory=list)
    all_stopped: bool = False

    @property
    def ok(self) -> bool:
        return super().ok and self.all_stopped

    def heading(self) -> str:
        return (f"pprl demo --served: {self.people} people over {self.platforms} platforms in {self.workdir}, "
                "every step through the parties' services")

    def extra_lines(self) -> list[str]:
        width = max((len(name) for name, *_ in self.services), default=0)
        lines = [f"  service   {name:<{width}}  {url}  (pid {pid}, answering after {ready:.1f}s)"
                 for name, url, pid, ready in self.services]
        stopped = "all stopped" if self.all_stopped else "NOT ALL STOPPED"
        lines.append(f"  stopped   {len(self.services)} services: {stopped}")
        return lines


def connect(url: str, me: PartyKey, pinned: Sequence[Card], role: str) -> Client:
    """A signed client for a service of this demo (on 127.0.0.1: no proxy from the environment)."""
    return Client(url, me, pinned, role, http=httpx.Client(base_url=url, timeout=120.0, trust_env=False))


def run_served_demo(
    workdir: str | os.PathLike[str],
    *,
    people: int = 2000,
    platforms: int = 3,
    bits: int = 2048,
    seed: int = 0,
    applicants: int = 30,
    echo: Callable[[str], None] = lambda message: None,
    progress: bool = False,
) -> ServedDemoSummary:
    """Run the lender story in ``workdir`` through every party's service and check every answer."""
    root = Path(workdir)
    prepare_workdir(root)
    timings: dict[str, float] = {}
    step = StepTimer(timings, echo)
    names = platform_names(platforms)

    with step("synth"):
        population, month2 = synth_months(root, names, people, platforms, seed, progress)
    with step("identities"):
        keys, cards, keygen = make_parties(root, names, bits)

    registry = root / "bureau" / "registry.db"

    def card(name: str) -> Path:
        return root / "keys" / f"{name}.card.json"

    bureau_args: list[object] = ["--me", root / "keys" / "bureau.key", "--registry", registry,
                                 *[a for n in [*names, "bank_a"] for a in ("--cards", card(n))]]
    quota_policy = write_atomic(root / "bureau" / "quota-policy.json", json.dumps({"daily_quota": 1}).encode())
    bureau = ServiceProcess("bureau", bureau_args, root / "bureau" / "service.log")
    platform = ServiceProcess(names[0], [
        "--me", root / "keys" / f"{names[0]}.key", "--secret", root / names[0] / "linkage.secret",
        "--log", root / names[0] / "oprf.log", "--cards", card("bank_a")], root / names[0] / "service.log")
    authority = ServiceProcess("authority", [
        "--me", root / "keys" / "authority.key", "--paillier-key", keygen.private_path,
        "--audit-log", root / "authority" / "audit.log", "--cards", card("bureau"), "--cards", card("bank_a")],
        root / "authority" / "service.log")
    # the over-quota case: the same bureau over the same registry, with a stricter release policy (started once
    # the registry updates are in, so it never runs one of the first bureau's jobs)
    strict = ServiceProcess("bureau (daily quota 1)", [*bureau_args, "--policy", quota_policy],
                            root / "bureau" / "service-quota.log")
    everyone = [bureau, platform, authority, strict]

    months: list[list[UpdateReport]] = []
    maps: dict[str, dict[str, str]] = {}
    try:
        with step("services start"):
            for s in (bureau, platform, authority):
                s.spawn()
            for s in (bureau, platform, authority):
                s.wait_ready()
                echo(f"  {s.name}: {s.url} (pid {s.pid})")
        for month in MONTHS:
            with step(f"{month} submit"):
                hashes = []
                for n in names:
                    path = submit_month(root, month, n, keys, cards, keygen, maps, progress)
                    with connect(bureau.url, keys[n], [cards["bureau"]], "bureau") as client:
                        hashes.append(client.upload("submission", path.read_bytes())["document"])
            with step(f"{month} registry"):
                months.append(_update(bureau.url, keys["bureau"], cards["bureau"], hashes, echo))
        strict.spawn()  # it starts while the lender works
        with step("applicants"):
            data, applicants_path, people_rows = choose_applicants(root, names, population, month2, applicants)
        with step("pseudonyms"):
            lender = root / "bank_a"
            request = request_pseudonyms_file(keys["bank_a"], applicants_path, "app_id", "resident_id",
                                              lender / "pseudonym-request.json", lender / "pseudonym.state")
            with connect(platform.url, keys["bank_a"], [cards[names[0]]], "platform") as client:
                response = client.send_document("/v1/pseudonyms", "pseudonym-request",
                                                 Path(request.path).read_bytes())
            response_path = write_atomic(lender / "pseudonym-response.json",
                                         json.dumps(response, ensure_ascii=False).encode("utf-8"))
            pseudonyms, _count = finish_pseudonyms_file(keys["bank_a"], request.state_path, response_path,
                                                        [cards[names[0]]], lender / "pseudonyms.csv")
        with step("query and answer"):
            query = query_file(keys["bank_a"], pseudonyms, write_consents(root, pseudonyms), "loan-application",
                               lender / "query.json")
            with connect(bureau.url, keys["bank_a"], [cards["bureau"]], "bureau") as client:
                raw = client.send_document("/v1/queries", "query", Path(query).read_bytes())
            answer = Answer.from_dict(raw, f"{bureau.url} answer")
            verify(answer, [cards["bureau"]], source=answer.source, role="bureau")
            answer_path = save(lender / "answer.json", answer)
            with connect(authority.url, keys["bank_a"], [cards["authority"]], "authority") as client:
                decrypted = client.send_document("/v1/answer-decryptions", "answer", answer_path.read_bytes())
            decryption = write_atomic(lender / "answer-decryption.json",
                                      json.dumps(decrypted, ensure_ascii=False).encode("utf-8"))
            scores_path, asked, found = open_answer_file(
                keys["bank_a"], answer_path, decryption, pseudonyms, [cards["bureau"], cards["authority"]],
                root / "lender_scores.csv",
            )
        with step("refusals"):
            strict.wait_ready()
            echo(f"  {strict.name}: {strict.url} (pid {strict.pid})")
            urls = {"over quota": strict.url}
            refused: dict[str, str] = {}
            for case, (who, path) in refusal_queries(root, keys, pseudonyms).items():
                with connect(urls.get(case, bureau.url), keys[who], [cards["bureau"]], "bureau") as client:
                    try:
                        client.send_document("/v1/queries", "query", path.read_bytes())
                    except ServiceError as exc:
                        if exc.status != 403:
                            raise
                        refused[case] = _reason(exc)
    finally:
        with step("services stop"):
            all_stopped = stop_services(everyone)
    with step("regulator"):
        log_entries, report, chains_ok = regulator_report(root, registry, cards)
    with step("check"):
        sums_checked, sums_match = check_answers(registry, maps, data, pseudonyms, scores_path)
        expected_found = sum(1 for _ref, person in people_rows if person)
    with Registry(registry) as reg:
        entities = reg.stats().entities
    return ServedDemoSummary(
        people=people, platforms=platforms, months=months, entities=entities, applicants=asked, found=found,
        expected_found=expected_found, refused=refused, sums_checked=sums_checked, sums_match=sums_match,
        timings=timings, workdir=root, report=report, log_entries=log_entries, chains_ok=chains_ok,
        services=[(s.name, s.url, s.pid or 0, s.ready_seconds or 0.0) for s in everyone],
        all_stopped=all_stopped,
    )


def _update(url: str, me: PartyKey, bureau: Card, hashes: list[str], echo: Callable[[str], None]) -> list[UpdateReport]:
    """A registry update of ``hashes`` as a job of the bureau's service (`pprl registry update --service`)."""
    spec = {"kind": "registry-update", "threshold": "auto", "submissions": hashes}
    with connect(url, me, [bureau], "bureau") as client:
        job = client.call("POST", "/v1/jobs", spec, idempotent=False)
        echo(f"  job {job['job']}: {job['status']}")
        state = client.wait(job["job"], poll=0.2)
    echo(f"  job {state['job']}: {state['status']}")
    if state["status"] != "done":
        raise PPRLError(f"registry update job {state['job']} failed: {state.get('error')}")
    return [UpdateReport(**r) for r in state["result"]["updates"]]


def _reason(exc: ServiceError) -> str:
    """The service's one line, without the URL: '<reason> (HTTP 403)'."""
    text = str(exc).split(": ", 1)[-1]
    status, _, line = text.partition(" ")
    if status == str(exc.status):
        text = line
    return f"{text.split(': ', 1)[-1] if text.startswith('the query: ') else text} (HTTP {exc.status})"
