"""The parties' services over real HTTP on 127.0.0.1: the lender story through them, and bad requests refused."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from cli_runner import cli_consortium, run
from service_harness import served

from pprl.documents import Submission, load
from pprl.errors import PPRLError, SignatureError
from pprl.protocol.files import load_card, load_key, load_paillier_private, load_secret
from pprl.registry import Registry
from pprl.service.auth import TIME, sign_request
from pprl.service.bureau import BureauService
from pprl.service.client import Client, ServiceError
from pprl.service.parties import HolderService, PlatformService
from pprl.service.state import MAX_BODY

ROOT = Path(__file__).resolve().parents[1]
PLATFORMS = ["platform_1", "platform_2"]
SCORES = ["repay_score", "spend_score"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))


def _stamp(days: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=days)).isoformat(timespec="seconds")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("service")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=31)
    for name in ("bank_a", "outsider"):
        run("init", name, "--role", "lender", "--dir", w / "keys")
        key[name], card[name] = w / "keys" / f"{name}.key", w / "keys" / f"{name}.card.json"
    k = {n: load_key(p) for n, p in key.items()}
    c = {n: load_card(p) for n, p in card.items()}
    bureau = BureauService(k["bureau"], str(w / "bureau" / "registry.db"),
                           [c["platform_1"], c["platform_2"], c["bank_a"]])
    platform = PlatformService(k["platform_1"], load_secret(w / "platform_1.secret"), [c["bank_a"]],
                               w / "platform_1" / "oprf.log", w / "platform_1" / "state.db")
    authority = HolderService(k["authority"], [c["bureau"], c["bank_a"]], w / "authority" / "audit.log",
                              w / "authority" / "state.db",
                              private=load_paillier_private(w / "authority" / "paillier.key"))
    with served(bureau) as b, served(platform) as p, served(authority) as a:
        yield {"dir": w, "key": key, "card": card, "k": k, "c": c, "bureau": b, "platform": p, "authority": a,
               "bureau_service": bureau}


def test_the_lender_story_through_the_services(world, tmp_path):
    w, key, card = world["dir"], world["key"], world["card"]
    for n in PLATFORMS:
        out = run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret",
                  w / f"{n}.secret", "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores",
                  ",".join(SCORES), "--paillier", w / "authority" / "paillier.pub.json", "--authority",
                  card["authority"], "--pseudonym-column", "resident_id", "--out", tmp_path / f"{n}.sub.json",
                  "--to", world["bureau"], "--service-card", card["bureau"])
        assert f"sent to {world['bureau']}: submission" in out.stderr
    done = run("registry", "update", "--me", key["bureau"], "--service", world["bureau"], "--service-card",
               card["bureau"])
    updates = json.loads(done.stdout)["updates"]
    assert [u["platform"] for u in updates] == PLATFORMS and updates[0]["new"] == updates[0]["records"]
    registry = w / "bureau" / "registry.db"
    with Registry(registry) as reg:
        entities = reg.stats().entities
        members = reg.members()
    assert 0 < entities < sum(u["records"] for u in updates)

    # the lender: pseudonyms from platform_1's service, the answer from the bureau's, the decryption from
    # the authority's
    people = {n: {r["user_id"]: r for r in _rows(w / "data" / f"{n}.csv")} for n in PLATFORMS}
    applicants = tmp_path / "applicants.csv"
    chosen = list(people["platform_1"].values())[:12]
    applicants.write_text("app_id,resident_id\n" + "".join(f"a{i},{r['resident_id']}\n"
                                                           for i, r in enumerate(chosen)), encoding="utf-8")
    run("pseudonym", "request", "--me", key["bank_a"], "--applicants", applicants, "--reference-column", "app_id",
        "--out", tmp_path / "request.json", "--state", tmp_path / "state", "--platform", world["platform"],
        "--service-card", card["platform_1"], "--pseudonyms", tmp_path / "pseudonyms.csv")
    pseudonyms = _rows(tmp_path / "pseudonyms.csv")
    consents = tmp_path / "consents.csv"
    consents.write_text("reference,consent,purpose,issued,expires\n" + "".join(
        f"{r['reference']},{hashlib.sha256(r['reference'].encode()).hexdigest()},loan-application,"
        f"{_stamp(-1)},{_stamp(30)}\n" for r in pseudonyms), encoding="utf-8")
    run("query", "--me", key["bank_a"], "--pseudonyms", tmp_path / "pseudonyms.csv", "--consents", consents,
        "--purpose", "loan-application", "--out", tmp_path / "query.json", "--bureau", world["bureau"],
        "--service-card", card["bureau"], "--answer", tmp_path / "answer.json")
    run("open-answer", "--me", key["bank_a"], "--answer", tmp_path / "answer.json", "--authority",
        world["authority"], "--service-card", card["authority"], "--pseudonyms", tmp_path / "pseudonyms.csv",
        "--cards", card["bureau"], "--cards", card["authority"], "--out", tmp_path / "scores.csv")
    scores = {r["app_id"]: r for r in _rows(tmp_path / "scores.csv")}
    # every answer equals the plaintext sums over the records the bureau linked into the applicant's entity
    maps = {n: {r["token"]: r["user_id"] for r in _rows(Path(f"{tmp_path / n}.sub.json.map.csv"))}
            for n in PLATFORMS}
    with Registry(registry) as reg:
        entity_of = reg.find([bytes.fromhex(r["pseudonym"]) for r in pseudonyms])
    checked = 0
    for r in pseudonyms:
        line = scores[r["reference"]]
        entity = entity_of.get(bytes.fromhex(r["pseudonym"]))
        assert (line["found"] == "yes") == (entity is not None)
        if entity is None:
            continue
        records = [people[p][maps[p][t]] for p, t in members[entity]]
        assert int(line["contributors"]) == len(records)
        for col in SCORES:
            assert Decimal(line[f"{col}_sum"]) == sum(Decimal(x[col]) for x in records)
        checked += 1
    assert checked >= 10
    assert (w / "platform_1" / "oprf.log").read_text().count("\n") == 1  # the evaluation was logged
    assert (w / "authority" / "audit.log").read_text().count("\n") == 1  # and the decryption


def _raw(world, method: str, route: str, body: bytes = b"", *, signer: str = "platform_1", **changes):
    """A request signed by hand (then changed as ``changes`` say), sent with httpx; (status, error line)."""
    me = world["k"][signer]
    headers = sign_request(me, method, route, world["c"]["bureau"], body)
    headers.update(changes.pop("headers", {}))
    for name in changes.pop("drop", ()):
        headers.pop(name)
    response = httpx.request(method, world["bureau"] + route, content=changes.pop("content", body), headers=headers)
    data = response.json()
    assert set(data) == {"error"} or response.status_code < 400
    return response.status_code, data.get("error", "")


def test_bad_requests_get_a_4xx_with_one_line_and_change_nothing(world):
    service = world["bureau_service"]
    before = service.state.documents("submission")
    spec = json.dumps({"kind": "submission", "size": 5000, "sha256": "0" * 64, "chunk_size": 1024}).encode()
    assert _raw(world, "POST", "/v1/uploads", spec, drop=["pprl-signature"])[0] == 401  # unauthenticated
    status, error = _raw(world, "POST", "/v1/uploads", spec, signer="outsider")
    assert status == 403 and "not among this service's pinned cards" in error
    forged = sign_request(world["k"]["platform_2"], "POST", "/v1/uploads", world["c"]["bureau"], spec)
    status, error = _raw(world, "POST", "/v1/uploads", spec, headers={"pprl-signature": forged["pprl-signature"]})
    assert status == 401 and "does not verify" in error  # platform_2's signature on platform_1's request
    status, error = _raw(world, "POST", "/v1/uploads", spec, headers={TIME: str(int(time.time()) - 3600)})
    assert status == 401 and "stale request" in error
    status, error = _raw(world, "POST", "/v1/uploads", spec, content=spec[:-5])  # truncated on the way
    assert status == 400 and "does not match" in error
    status, error = _raw(world, "POST", "/v1/uploads", b"{not json")
    assert status == 400 and "not valid JSON" in error
    big = b"x" * (MAX_BODY + 1)
    status, error = _raw(world, "POST", "/v1/uploads", big)
    assert status == 413 and "/v1/uploads" in error
    # a replay: the very same signed request twice
    headers = sign_request(world["k"]["platform_1"], "GET", "/v1/uploads/none", world["c"]["bureau"])
    first = httpx.get(world["bureau"] + "/v1/uploads/none", headers=headers)
    again = httpx.get(world["bureau"] + "/v1/uploads/none", headers=headers)
    assert first.status_code == 404 and again.status_code == 409 and "replayed" in again.json()["error"]
    # out of order: completing an upload before its chunks
    client = Client(world["bureau"], world["k"]["platform_1"], [world["c"]["bureau"]], "bureau")
    opened = client.call("POST", "/v1/uploads", json.loads(spec))
    with pytest.raises(ServiceError, match="409 .*missing chunks 0, 1, 2, 3, 4"):
        client.call("POST", f"/v1/uploads/{opened['upload']}/complete")
    with pytest.raises(ServiceError, match="400 .*chunk 9 is out of range"):
        client.call("PUT", f"/v1/uploads/{opened['upload']}/chunks/9", body=b"x" * 1024)
    with pytest.raises(ServiceError, match="403 .*this request is for a bureau"):
        client.call("POST", "/v1/jobs", {"kind": "registry-update"})
    client.close()
    assert service.state.documents("submission") == before  # nothing stored


def test_uploads_resume_and_a_changed_chunk_is_refused(world, tmp_path):
    w, key = world["dir"], world["key"]
    run("submit", "--me", key["platform_2"], "--schema", ROOT / "examples" / "schema-cn.json", "--secret",
        w / "platform_2.secret", "--data", w / "data" / "platform_2.csv", "--id-column", "user_id",
        "--out", tmp_path / "sub.json")
    data = (tmp_path / "sub.json").read_bytes()
    client = Client(world["bureau"], world["k"]["platform_2"], [world["c"]["bureau"]], "bureau")
    digest = hashlib.sha256(data).hexdigest()
    opened = client.call("POST", "/v1/uploads", {"kind": "submission", "size": len(data), "sha256": digest,
                                                 "chunk_size": 1024})
    n = opened["chunks"]
    assert n > 4
    for i in range(0, n, 2):  # the connection broke after every other chunk
        client.call("PUT", f"/v1/uploads/{opened['upload']}/chunks/{i}", body=data[i * 1024:(i + 1) * 1024])
    with pytest.raises(ServiceError, match="409 .*already received with other bytes"):
        client.call("PUT", f"/v1/uploads/{opened['upload']}/chunks/0", body=b"y" * 1024)
    sent: list[int] = []
    summary = client.upload("submission", data, chunk_size=1024, progress=lambda i, total: sent.append(i))
    assert summary["document"] == load(tmp_path / "sub.json", Submission).hash
    assert summary["platform"] == "platform_2" and len(sent) == n
    assert client.call("GET", f"/v1/uploads/{opened['upload']}")["status"] == "complete"
    client.close()
    # checked in a child process, refused in one line all the same: another platform's submission, a damaged one
    with Client(world["bureau"], world["k"]["platform_1"], [world["c"]["bureau"]], "bureau") as other, \
            pytest.raises(ServiceError, match="403 .*a submission of 'platform_2' uploaded by 'platform_1'"):
        other.upload("submission", data)
    damaged = data.replace(b'"records"', b'"recordz"', 1)
    with Client(world["bureau"], world["k"]["platform_2"], [world["c"]["bureau"]], "bureau") as same, \
            pytest.raises(ServiceError, match="400 "):
        same.upload("submission", damaged)


def test_chunked_submissions_upload_and_update_a_registry(world, tmp_path):
    from pprl.documents.chunked import MAGIC

    key, card, w = world["key"], world["card"], world["dir"]
    bureau = BureauService(world["k"]["bureau"], str(tmp_path / "registry.db"),
                           [world["c"]["platform_1"], world["c"]["platform_2"]])
    with served(bureau) as url:
        for n in PLATFORMS:
            out = run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret",
                      w / f"{n}.secret", "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores",
                      ",".join(SCORES), "--paillier", w / "authority" / "paillier.pub.json", "--authority",
                      card["authority"], "--format", "chunked", "--out", tmp_path / f"{n}.sub", "--to", url,
                      "--service-card", card["bureau"])
            assert f"sent to {url}: submission {load(tmp_path / f'{n}.sub', Submission).hash}" in out.stderr
        done = run("registry", "update", "--me", key["bureau"], "--service", url, "--service-card", card["bureau"])
        updates = json.loads(done.stdout)["updates"]
        assert [u["platform"] for u in updates] == PLATFORMS
        assert updates[0]["submission"] == load(tmp_path / "platform_1.sub", Submission).hash
        with Registry(tmp_path / "registry.db") as reg:
            assert 0 < reg.stats().entities < sum(u["records"] for u in updates)
        damaged = bytearray((tmp_path / "platform_1.sub").read_bytes())
        damaged[len(MAGIC) + 3] ^= 1  # a token byte of chunk 0
        with Client(url, world["k"]["platform_1"], [world["c"]["bureau"]], "bureau") as client, \
                pytest.raises(ServiceError, match="400 .*chunk 0 .*does not match its digest"):
            client.upload("submission", bytes(damaged))


def test_a_client_pins_the_service_and_checks_every_response(world):
    with pytest.raises(SignatureError, match="not among your pinned cards"):
        Client(world["bureau"], world["k"]["bank_a"], [world["c"]["authority"]], "bureau")
    with pytest.raises(SignatureError, match="a authority; expected a bureau"):
        Client(world["authority"], world["k"]["bank_a"], [world["c"]["authority"]], "bureau")
    client = Client(world["bureau"], world["k"]["bank_a"], [world["c"]["bureau"]], "bureau")
    client.service = world["c"]["platform_1"]  # as if another party had answered: its signature is not there
    with pytest.raises(SignatureError, match="not signed by the pinned 'platform_1'"):
        client.call("GET", "/v1/jobs/none")
    client.close()
    with pytest.raises(PPRLError, match="cannot reach the service"):
        Client("http://127.0.0.1:9", world["k"]["bank_a"], [world["c"]["bureau"]], "bureau", retry_seconds=0.5)


def _openssl(*args: object) -> None:
    import subprocess

    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A deployment CA, the service's certificate (for 127.0.0.1) and a client certificate, made with openssl."""
    import shutil

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=pprl test CA",
             "-keyout", d / "ca.key", "-out", d / "ca.pem")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=pprl {name}", "-keyout", d / f"{name}.key",
                 "-out", d / f"{name}.csr")
        (d / f"{name}.ext").write_text(ext + "\n")
        _openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", d / f"{name}.ext", "-out", d / f"{name}.pem")
    return d


def test_tls_with_the_deployment_ca_and_mutual_tls(world, pki, monkeypatch, tmp_path):
    k, c = world["k"], world["c"]
    service = BureauService(k["bureau"], str(tmp_path / "registry.db"), [c["platform_1"]])
    options = {"tls_cert": str(pki / "server.pem"), "tls_key": str(pki / "server.key"),
               "tls_client_ca": str(pki / "ca.pem")}
    with served(service, **options) as url:
        assert url.startswith("https://")
        monkeypatch.delenv("PPRL_TLS_CA", raising=False)
        with pytest.raises(PPRLError, match="TLS failed .*PPRL_TLS_CA"):
            Client(url, k["platform_1"], [c["bureau"]], "bureau")  # the system CAs do not know the deployment's
        monkeypatch.setenv("PPRL_TLS_CA", str(pki / "ca.pem"))
        with pytest.raises(PPRLError, match="PPRL_TLS_CERT"):
            Client(url, k["platform_1"], [c["bureau"]], "bureau", retry_seconds=1)  # no client certificate
        monkeypatch.setenv("PPRL_TLS_CERT", str(pki / "client.pem"))
        monkeypatch.setenv("PPRL_TLS_KEY", str(pki / "client.key"))
        with Client(url, k["platform_1"], [c["bureau"]], "bureau") as client:
            assert client.call("GET", "/v1/health")["role"] == "bureau"


def test_signatures_hold_through_a_tls_terminating_gateway_and_a_forward_proxy(world, pki, monkeypatch):
    from service_harness import forwarding_proxy, served_app

    k, c = world["k"], world["c"]
    gateway = forwarding_proxy(world["bureau"], strip="/pprl-bureau")
    with served_app(gateway, tls_cert=str(pki / "server.pem"), tls_key=str(pki / "server.key")) as front:
        monkeypatch.setenv("PPRL_TLS_CA", str(pki / "ca.pem"))
        with Client(front + "/pprl-bureau", k["platform_1"], [c["bureau"]], "bureau") as client, \
                pytest.raises(ServiceError, match="404 .*no upload"):
            client.call("GET", "/v1/uploads/none")  # signed, verified and answered through the gateway
        assert gateway.seen[-1] == world["bureau"] + "/v1/uploads/none"
    monkeypatch.delenv("PPRL_TLS_CA")
    proxy = forwarding_proxy()
    with served_app(proxy) as forward:
        monkeypatch.setenv("PPRL_PROXY", forward)
        with Client(world["bureau"], k["platform_1"], [c["bureau"]], "bureau") as client:
            assert client.call("GET", "/v1/health")["service"] == "bureau"
        assert proxy.seen and proxy.seen[-1].endswith("/v1/health")


def test_threshold_holders_serve_their_parts_and_the_lender_opens_the_same_scores(tmp_path):
    from pprl.protocol.files import load_share

    w = tmp_path
    run("synth", "--people", 60, "--platforms", 2, "--out", w / "data", "--seed", 13)
    roles = {"platform_1": "platform", "platform_2": "platform", "bureau": "bureau", "authority": "authority",
             "holder_a": "authority", "holder_b": "authority", "holder_c": "authority", "bank_a": "lender"}
    for name, role in roles.items():
        run("init", name, "--role", role, "--dir", w / "keys")
    key = {n: w / "keys" / f"{n}.key" for n in roles}
    card = {n: w / "keys" / f"{n}.card.json" for n in roles}
    run("paillier", "keygen", "--me", key["authority"], "--dir", w / "auth", "--threshold", 2,
        *[a for h in ("holder_a", "holder_b", "holder_c") for a in ("--holders", card[h])])
    for n, peer in (("platform_1", "platform_2"), ("platform_2", "platform_1")):
        run("secret", "share", "--me", key[n], "--peers", card[peer], "--out", w / f"{n}.share.json")
    for n in PLATFORMS:
        run("secret", "combine", "--me", key[n], "--shares", w / "platform_1.share.json", "--shares",
            w / "platform_2.share.json", "--out", w / f"{n}.secret")
        run("submit", "--me", key[n], "--schema", ROOT / "examples" / "schema-cn.json", "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "auth" / "paillier.pub.json", "--authority", card["authority"],
            "--pseudonym-column", "resident_id", "--out", w / f"{n}.sub.json")
    run("registry", "update", "--me", key["bureau"], "--registry", w / "registry.db",
        *[a for n in PLATFORMS for a in ("--cards", card[n], "--submissions", w / f"{n}.sub.json")])
    people = _rows(w / "data" / "platform_1.csv")[:6]
    (w / "applicants.csv").write_text("app_id,resident_id\n" + "".join(
        f"a{i},{r['resident_id']}\n" for i, r in enumerate(people)), encoding="utf-8")
    run("pseudonym", "request", "--me", key["bank_a"], "--applicants", w / "applicants.csv", "--reference-column",
        "app_id", "--out", w / "request.json", "--state", w / "state")
    run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret", "--request",
        w / "request.json", "--cards", card["bank_a"], "--log", w / "oprf.log", "--out", w / "response.json")
    run("pseudonym", "finish", "--me", key["bank_a"], "--state", w / "state", "--response", w / "response.json",
        "--cards", card["platform_1"], "--out", w / "pseudonyms.csv")
    (w / "consents.csv").write_text("reference,consent,purpose,issued,expires\n" + "".join(
        f"{r['reference']},{hashlib.sha256(r['reference'].encode()).hexdigest()},loan-application,"
        f"{_stamp(-1)},{_stamp(30)}\n" for r in _rows(w / "pseudonyms.csv")), encoding="utf-8")
    run("query", "--me", key["bank_a"], "--pseudonyms", w / "pseudonyms.csv", "--consents", w / "consents.csv",
        "--purpose", "loan-application", "--out", w / "query.json")
    run("answer", "--me", key["bureau"], "--registry", w / "registry.db", "--query", w / "query.json",
        "--cards", card["bank_a"], "--out", w / "answer.json")
    pins = ["--cards", card["bureau"], "--cards", card["bank_a"], "--cards", card["authority"]]
    for h in ("holder_a", "holder_b"):  # the file path, for comparison
        run("decrypt-answer", "--me", key[h], "--share", w / "auth" / f"{h}.share.json", "--answer",
            w / "answer.json", *pins, "--audit-log", w / f"{h}.file.log", "--out", w / f"{h}.part.json")
    opened = ["open-answer", "--me", key["bank_a"], "--answer", w / "answer.json", "--pseudonyms",
              w / "pseudonyms.csv", "--cards", card["bureau"], "--cards", card["authority"]]
    run(*opened, "--parts", w / "holder_a.part.json", "--parts", w / "holder_b.part.json", "--out", w / "files.csv")
    c = {n: load_card(p) for n, p in card.items()}
    services = [HolderService(load_key(key[h]), [c["bureau"], c["bank_a"], c["authority"]], w / f"{h}.audit.log",
                              w / f"{h}.state.db",
                              share=load_share(load_key(key[h]), w / "auth" / f"{h}.share.json", dealer=c["authority"]))
                for h in ("holder_a", "holder_b")]
    with served(services[0]) as a, served(services[1]) as b:
        run(*opened, "--holders", a, "--holders", b, "--service-card", card["holder_a"], "--service-card",
            card["holder_b"], "--out", w / "served.csv")
    assert (w / "served.csv").read_text() == (w / "files.csv").read_text()
    assert any(r["found"] == "yes" for r in _rows(w / "served.csv"))
    for h in ("holder_a", "holder_b"):
        assert (w / f"{h}.audit.log").read_text().count("\n") == 1
