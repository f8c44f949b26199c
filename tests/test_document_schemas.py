"""The documents' JSON Schemas: valid, complete, true to what pprl writes, and enforced by every reader.

One module-scoped world runs the consortium through the CLI (cli_runner):
the CLK path with clipped scores, two records per ciphertext and release
noise; a 2-of-3 threshold key (dealt through the parties API at 2048 bits,
which the CLI refuses, to keep this fast) with parts for public combining
and for a named combiner, combined with and without a combiner key; and the
exact-identifier path with a revealing PSI session. Every document and audit
log line it leaves must validate in full, items included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from cli_runner import cli_consortium, refused, run
from jsonschema import Draft202012Validator
from referencing.exceptions import Unresolvable

from pprl.cli.tools import DOCUMENT_KINDS
from pprl.documents import KINDS, document_class, document_hash, read_document, sign_document, write_document
from pprl.documents.validation import MAX_CHARS, MAX_ITEMS, SCHEMA_KINDS, registry, schema_for, validate_document
from pprl.errors import DocumentError
from pprl.protocol.files import load_card, load_key, threshold_keygen

ROOT = Path(__file__).resolve().parents[1]
SCHEMAS = ROOT / "pprl" / "documents" / "schemas"
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2"]
HOLDERS = ["holder_a", "holder_b", "holder_c"]
SECRET_KINDS = ("key", "secret", "paillier-key", "psi-state", "pseudonym-state")


# --------------------------------------------------------------------------- the schemas themselves


def _schema_files() -> dict[str, dict[str, Any]]:
    return {p.name.removesuffix(".schema.json"): json.loads(p.read_text(encoding="utf-8"))
            for p in sorted(SCHEMAS.glob("*.schema.json"))}


def _walk(node: Any, path: str = ""):
    """Every (path, subschema dict) in a schema."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def test_every_schema_is_valid_draft_2020_12_with_id_title_and_description():
    files = _schema_files()
    assert set(files) == {*SCHEMA_KINDS, "common"}
    for stem, schema in files.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", stem
        assert schema["$id"] == f"https://pprl.dev/schemas/{stem}-1.json", stem
        assert schema["title"] and len(schema["description"]) > 40, stem
        if stem != "common":
            assert schema["properties"]["kind"] == {"const": stem}, stem
            assert {"kind", "version"} <= set(schema["required"]), stem
            assert schema["additionalProperties"] is False, stem  # unknown top-level fields are refused
    assert schema_for("card") == files["card"]  # what the package loads (importlib.resources) is what is here


def test_every_kind_pprl_writes_has_a_schema():
    # the one registry of kinds (pprl.documents.KINDS) is what pprl writes and `pprl inspect` reads
    written = set(KINDS)
    assert {"key", "card", "submission", "linkage", "release", "audit-entry", "psi-state"} <= written
    assert written == set(SCHEMA_KINDS), written ^ set(SCHEMA_KINDS)
    assert set(DOCUMENT_KINDS) == written


def test_every_ref_resolves_locally_and_nothing_is_fetched():
    for stem, schema in _schema_files().items():
        resolver = registry().resolver(base_uri=schema["$id"])
        for path, node in _walk(schema):
            if "$ref" in node:
                assert isinstance(resolver.lookup(node["$ref"]).contents, dict), (stem, path)
    with pytest.raises(Unresolvable):  # no retrieval: an unknown document is an error, not a download
        registry().resolver().lookup("https://pprl.dev/schemas/unknown-1.json")


def test_secret_schemas_describe_fields_without_example_values():
    files = _schema_files()
    for kind in SECRET_KINDS:
        assert "SECRET" in files[kind]["description"], kind
        for path, node in _walk(files[kind]):
            assert not {"examples", "default", "example"} & set(node), (kind, path)


# --------------------------------------------------------------------------- real documents


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Every kind of document from a real run. Commands that are not given their pins find them in the
    trust store (PPRL_TRUST: the keys folder, where every party's card is), as a deployment would."""
    w = tmp_path_factory.mktemp("schemas-world")
    os.environ["PPRL_TRUST"] = str(w / "keys")
    try:
        return _world(w)
    finally:
        del os.environ["PPRL_TRUST"]


def _world(w: Path) -> dict[str, Any]:
    key, card, _ = cli_consortium(w, PLATFORMS, seed=11)
    pub = w / "authority" / "paillier.pub.json"
    for name in HOLDERS:
        run("init", name, "--role", "authority", "--dir", w / "keys")
        card[name], key[name] = w / "keys" / f"{name}.card.json", w / "keys" / f"{name}.key"
    threshold_keygen(load_key(key["authority"]), 2048, 2, [load_card(card[h]) for h in HOLDERS], w / "th",
                     _allow_insecure=True)
    th_pub = w / "th" / "paillier.pub.json"
    clip = ["--clip", "repay_score=0:1000", "--clip", "spend_score=0:100000"]
    for name in PLATFORMS:
        common = ["--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
                  "--data", w / "data" / f"{name}.csv", "--id-column", "user_id"]
        scores = ["--scores", "repay_score,spend_score", "--authority", card["authority"]]
        run("submit", *common, *scores, "--paillier", pub, *clip, "--records-per-ciphertext", 2,
            "--out", w / f"{name}.sub.json")
        run("submit", *common, *scores, "--paillier", th_pub, "--out", w / f"{name}.th-sub.json")
    run("submit", "--me", key["platform_1"], "--schema", SCHEMA, "--secret", w / "platform_1.secret",
        "--data", w / "data" / "platform_1.csv", "--id-column", "user_id", "--pseudonym-column", "resident_id",
        "--out", w / "linkage-only.sub.json")
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    for prefix, threshold in (("", "auto"), ("th-", 0.8)):
        subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.{prefix or ''}sub.json")]
        run("link", "--me", key["bureau"], *cards, *subs, "--threshold", threshold, "--out", w / f"{prefix}linkage.json")
        noise = [] if prefix else ["--noise", "laplace", "--epsilon", 1.0]
        run("aggregate", "--me", key["bureau"], "--linkage", w / f"{prefix}linkage.json", *subs,
            "--min-contributors", 2, *noise, "--out", w / f"{prefix}release.json")
    evidence = {prefix: ["--linkage", w / f"{prefix}linkage.json",
                         *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.{prefix}sub.json")]]
                for prefix in ("", "th-")}
    run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "release.json", *evidence[""], "--audit-log", w / "audit.log",
        "--out", w / "aggregates.csv")
    # the authority's log head, witnessed, and a release that carries it
    run("audit", "witness", w / "audit.log", "--me", key["authority"], "--keeper", card["authority"],
        "--out", w / "head.json")
    subs = [a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")]
    run("aggregate", "--me", key["bureau"], "--linkage", w / "linkage.json", *subs, "--audit-head",
        w / "head.json", "--out", w / "anchored-release.json")
    for holder, extra in (("holder_a", ["--public-part"]), ("holder_b", ["--for", card["authority"]]),
                          ("holder_c", ["--public-part"])):
        run("decrypt", "--partial", "--me", key[holder], "--share", w / "th" / f"{holder}.share.json",
            "--release", w / "th-release.json", *evidence["th-"], *extra, "--out", w / f"{holder}.part.json")
    combine = ["decrypt", "--combine", "--release", w / "th-release.json", *evidence["th-"],
               "--parts", w / "holder_a.part.json"]
    run(*combine, "--me", key["authority"], "--parts", w / "holder_b.part.json",
        "--audit-log", w / "th-audit.log", "--out", w / "th-aggregates.csv")
    run(*combine, "--parts", w / "holder_c.part.json", "--audit-log", w / "attested.log", "--out", w / "th2.csv")
    _psi(w, key, card, pub)
    _pseudonyms(w, key, card)
    return {"dir": w, "key": key, "card": card}


def _pseudonyms(w: Path, key: dict[str, Path], card: dict[str, Path]) -> None:
    """A lender's pseudonym request, a platform's response and the lender's state, through the CLI."""
    run("init", "bank_a", "--role", "lender", "--dir", w / "keys")
    key["bank_a"], card["bank_a"] = w / "keys" / "bank_a.key", w / "keys" / "bank_a.card.json"
    (w / "pseudonyms").mkdir()
    run("pseudonym", "request", "--me", key["bank_a"], "--applicants", w / "data" / "platform_1.csv",
        "--reference-column", "user_id", "--out", w / "pseudonyms" / "request.json",
        "--state", w / "pseudonyms" / "bank_a.state")
    run("pseudonym", "evaluate", "--me", key["platform_1"], "--secret", w / "platform_1.secret",
        "--request", w / "pseudonyms" / "request.json", "--cards", card["bank_a"],
        "--log", w.parent / f"{w.name}.oprf-log", "--out", w / "pseudonyms" / "response.json")  # the log: no document
    # a consented query answered from a registry, and its masked decryption for the lender
    lender = w / "lender"
    lender.mkdir()
    for name in PLATFORMS:
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret", "--data",
            w / "data" / f"{name}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--pseudonym-column", "resident_id",
            "--out", lender / f"{name}.sub.json")
    registry = w.parent / f"{w.name}.registry.db"  # a database, not a document
    run("registry", "update", "--me", key["bureau"], "--registry", registry,
        *[a for n in PLATFORMS for a in ("--cards", card[n])],
        *[a for n in PLATFORMS for a in ("--submissions", lender / f"{n}.sub.json")])
    run("pseudonym", "finish", "--me", key["bank_a"], "--state", w / "pseudonyms" / "bank_a.state",
        "--response", w / "pseudonyms" / "response.json", "--cards", card["platform_1"],
        "--out", lender / "pseudonyms.csv")
    with (lender / "pseudonyms.csv").open(encoding="utf-8") as fh:
        references = [line.split(",")[0] for line in fh.read().splitlines()[1:4]]
    with (lender / "consents.csv").open("w", encoding="utf-8") as fh:
        fh.write("reference,consent,purpose,issued,expires\n")
        for i, ref in enumerate(references):
            fh.write(f"{ref},{i:064x},loan-application,2026-01-01T00:00:00+00:00,2099-01-01T00:00:00+00:00\n")
    with (lender / "pseudonyms.csv").open(encoding="utf-8") as fh:
        rows = fh.read().splitlines()
    (lender / "asked.csv").write_text("\n".join(rows[:4]) + "\n", encoding="utf-8")
    run("query", "--me", key["bank_a"], "--pseudonyms", lender / "asked.csv", "--consents", lender / "consents.csv",
        "--purpose", "loan-application", "--out", lender / "query.json")
    run("answer", "--me", key["bureau"], "--registry", registry, "--query", lender / "query.json",
        "--cards", card["bank_a"], "--receipts", lender / "receipts", "--out", lender / "answer.json")
    run("decrypt-answer", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--answer", lender / "answer.json", "--cards", card["bureau"], "--cards", card["bank_a"],
        "--audit-log", w.parent / f"{w.name}.answers.log", "--out", lender / "decryption.json")


def _psi(w: Path, key: dict[str, Path], card: dict[str, Path], pub: Path) -> None:
    """A revealing two-platform PSI session through the CLI: rounds, states, release and reveals."""
    run("psi", "init", "--me", key["bureau"], *[a for p in PLATFORMS for a in ("--cards", card[p])],
        "--identifier", "resident_id", "--reveal-intersection", "--out", w / "psi" / "session.json")
    for name in PLATFORMS:
        run("psi", "blind", "--me", key[name], "--session", w / "psi" / "session.json", "--data",
            w / "data" / f"{name}.csv", "--id-column", "user_id", "--scores", "repay_score,spend_score",
            "--paillier", pub, "--out", w / "psi" / f"{name}.r0.json", "--state", w / "psi" / f"{name}.state")
    for name, other in zip(PLATFORMS, reversed(PLATFORMS)):
        run("psi", "reblind", "--me", key[other], "--state", w / "psi" / f"{other}.state",
            "--input", w / "psi" / f"{name}.r0.json", "--out", w / "psi" / f"{name}.r1.json")
    run("psi", "aggregate", "--me", key["bureau"], "--session", w / "psi" / "session.json",
        *[a for p in PLATFORMS for a in ("--inputs", w / "psi" / f"{p}.r1.json")], "--min-contributors", 2,
        "--out", w / "psi" / "release.json")
    run("psi", "reveal", "--me", key["platform_1"], "--state", w / "psi" / "platform_1.state",
        "--input", w / "psi" / "platform_1.reveal.json", "--out", w / "psi" / "platform_1.members.csv")


def _documents(w: Path) -> list[tuple[str, dict[str, Any]]]:
    """(where, document) for every JSON document and audit-log line in the world."""
    found = []
    for path in sorted(p for p in w.rglob("*") if p.is_file() and p.suffix not in (".csv",)):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".log":
            found += [(f"{path.name}:{i}", json.loads(line)) for i, line in enumerate(text.splitlines(), 1)]
        else:
            found.append((path.name, json.loads(text)))
    return found


def test_every_document_of_a_real_run_validates_in_full(world):
    seen: dict[str, int] = {}
    for where, doc in _documents(world["dir"]):
        validate_document(doc, doc["kind"], where, full=True)
        seen[doc["kind"]] = seen.get(doc["kind"], 0) + 1
        approvals = [*doc.get("approvals", []), *([doc["payload"]["approval"]] if doc["kind"] == "decryption-part" else [])]
        for approval in approvals:  # embedded documents of their own kind
            validate_document(approval, "decryption-approval", f"{where}: approval", full=True)
            seen["decryption-approval"] = seen.get("decryption-approval", 0) + 1
    assert set(seen) == set(SCHEMA_KINDS), set(SCHEMA_KINDS) - set(seen)
    assert seen["audit-entry"] == 3 and seen["paillier-share"] == 3 and seen["psi-reveal"] == 2


def test_the_documents_cover_the_optional_forms(world):
    w = world["dir"]
    packing = json.loads((w / "platform_1.sub.json").read_text())["header"]["packing"]
    assert packing["records_per_ciphertext"] == 2 and packing["mask_bits"] >= 40 and packing["count_slot"] is True
    assert "records_per_ciphertext" not in json.loads((w / "th-release.json").read_text())["header"]["packing"]
    assert json.loads((w / "release.json").read_text())["header"]["noise"]["mechanism"] == "laplace"
    assert json.loads((w / "linkage-only.sub.json").read_text())["header"]["packing"] is None
    payloads = [json.loads((w / f"{h}.part.json").read_text())["payload"] for h in HOLDERS]
    assert "parts" in payloads[1] and "values" in payloads[0]
    attested = json.loads((w / "attested.log").read_text())
    assert "signature" not in attested and len(attested["approvals"]) == 2


def test_an_answer_audit_entry_validates_in_full(world):
    w = world["dir"]
    (line,) = (w.parent / f"{w.name}.answers.log").read_text(encoding="utf-8").splitlines()
    entry = json.loads(line)
    validate_document(entry, "audit-entry", "answers.log:1", full=True)
    assert entry["event"] == "answer" and entry["lender"] == "bank_a" and len(entry["consents"]) == 3


def test_every_document_of_a_real_run_round_trips_through_its_typed_class(world):
    seen = set()
    for where, doc in _documents(world["dir"]):
        typed = document_class(doc["kind"]).from_dict(doc, where)
        assert typed.to_dict() == doc, where  # the class declares every field, nothing lost or added
        if not where.endswith(tuple(f".log:{i}" for i in range(1, 9))):  # log lines are written key-sorted
            assert json.dumps(typed.to_dict()) == json.dumps(doc), where  # and writes them in the same order
        assert typed.hash == document_hash(doc)
        seen.add(doc["kind"])
    assert seen == set(KINDS) - {"decryption-approval"}  # approvals travel inside parts and log entries


def test_inspect_prints_an_allowlist_never_payloads_or_secrets(world):
    secret_fields = {"payload", "signature", "sign_seed", "agree_seed", "secret", "p", "q", "wrapped_share",
                     "ephemeral_pub", "approvals", "session"}
    for where, doc in _documents(world["dir"]):
        header = document_class(doc["kind"]).from_dict(doc, where).public_header()
        assert not secret_fields & set(header), (where, secret_fields & set(header))
        assert set(header) <= {"kind", "version", "signer", *document_class(doc["kind"]).PUBLIC}
        if "signer" in doc:
            assert set(header["signer"]) == {"name", "role", "fingerprint"}


# --------------------------------------------------------------------------- refusals


def _edited(world, source: str, out: str, signer: str | None, edit) -> Path:
    """A copy of a document after ``edit``, signed again by ``signer`` so only its shape is wrong."""
    w = world["dir"]
    doc = json.loads((w / source).read_text(encoding="utf-8"))
    edit(doc)
    if signer is not None:
        me = load_key(world["key"][signer])
        doc = sign_document(doc, me.identity, me.card)
    return write_document(w / out, doc)


def test_submission_with_records_as_a_string_isrefused(world):
    w = world["dir"]
    bad = _edited(world, "platform_1.th-sub.json", "records-string.sub.json", "platform_1",
                  lambda d: d["header"].update(records=str(d["header"]["records"])))
    cards = [a for n in PLATFORMS for a in ("--cards", world["card"][n])]
    result = run("link", "--me", world["key"]["bureau"], *cards, "--submissions", bad,
                 "--submissions", w / "platform_2.th-sub.json", "--out", w / "refused-linkage.json", ok=False)
    line = refused(result, w / "refused-linkage.json", "records-string.sub.json", "header.records", "integer")
    assert "found string" in line


def test_release_without_entity_ids_isrefused(world):
    w = world["dir"]
    bad = _edited(world, "release.json", "no-ids.release.json", "bureau", lambda d: d["payload"].pop("entity_ids"))
    log = w / "refused-audit.log"
    result = run("decrypt", "--me", world["key"]["authority"], "--paillier-key", w / "authority" / "paillier.key",
                 "--release", bad, "--linkage", w / "linkage.json",
                 *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.sub.json")],
                 *[a for n in PLATFORMS for a in ("--cards", world["card"][n])], "--cards", world["card"]["bureau"],
                 "--audit-log", log, "--out", w / "refused.csv", ok=False)
    refused(result, w / "refused.csv", "no-ids.release.json", "payload.entity_ids", "missing")
    assert not log.exists()


def test_card_with_an_unknown_field_isrefused(world):
    w = world["dir"]
    bad = _edited(world, "keys/platform_2.card.json", "extra.card.json", "platform_2", lambda d: d.update(extra=1))
    result = run("link", "--me", world["key"]["bureau"], "--cards", world["card"]["platform_1"], "--cards", bad,
                 *[a for n in PLATFORMS for a in ("--submissions", w / f"{n}.th-sub.json")],
                 "--out", w / "refused2-linkage.json", ok=False)
    refused(result, w / "refused2-linkage.json", "extra.card.json", "extra", "unknown field")


def test_errors_never_show_values(world, tmp_path):
    secret_text = "NOT-BASE64-BUT-SECRET-9f8e7d"
    doc = json.loads((world["dir"] / "keys" / "platform_1.key").read_text())
    for value in (secret_text, {"v": secret_text}, [secret_text]):
        path = write_document(tmp_path / "bad.key", {**doc, "sign_seed": value}, private=True)
        with pytest.raises(DocumentError) as caught:
            read_document(path, "key")
        message = str(caught.value)
        assert "\n" not in message and "bad.key" in message and "sign_seed" in message
        assert secret_text not in message and doc["agree_seed"] not in message


def test_runtime_checks_a_bounded_prefix_and_full_checks_everything(world):
    doc = json.loads((world["dir"] / "platform_1.th-sub.json").read_text())
    doc["payload"]["tokens"] = [f"{i:024x}" for i in range(MAX_ITEMS + 5)]
    doc["payload"]["tokens"][-1] = 12345  # beyond the prefix: the code's own checks catch such a file
    validate_document(doc, "submission", "late.json")
    with pytest.raises(DocumentError, match=rf"late.json: .*payload.tokens\[{MAX_ITEMS + 4}\]: expected string"):
        validate_document(doc, "submission", "late.json", full=True)
    doc["payload"]["tokens"][3] = 12345
    with pytest.raises(DocumentError, match=r"payload.tokens\[3\]: expected string, found integer"):
        validate_document(doc, "submission", "early.json")
    doc["payload"]["tokens"][3], doc["payload"]["tokens"][-1] = f"{3:024x}", f"{MAX_ITEMS + 4:024x}"
    doc["header"]["schema_hash"] = "a" * (MAX_CHARS + 100)  # a long string is cut, but never to a valid one
    with pytest.raises(DocumentError, match=r"header.schema_hash: expected a string matching"):
        validate_document(doc, "submission", "long.json")



# --------------------------------------------------------------------------- the direct check (no jsonschema)

_ODD_VALUES: list[Any] = [None, True, False, 0, 1, -1, 1.0, 2.5, -0.5, 2**70, "", "x", "0" * 64, "ab" * 12,
                          "2026-01-01T00:00:00+00:00", "YWJj", "YWJjZA==\n", [], [1], ["x", "x"], {}, {"a": 1}]


def _nodes(doc: Any, path: tuple = ()):
    yield path
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            yield from _nodes(v, (*path, i))


def _mutations(doc: dict[str, Any], rng, count: int):
    """``count`` copies of ``doc``, each changed at one random place: a value replaced (by one of an odd set, or
    by another value of the same document), a key dropped or added, an item appended or repeated."""
    import copy

    paths = list(_nodes(doc))
    values = _ODD_VALUES + [_get(doc, p) for p in rng.sample(paths, min(10, len(paths)))]
    for _ in range(count):
        out = copy.deepcopy(doc)
        path = rng.choice(paths[1:])
        parent, last = _get(out, path[:-1]), path[-1]
        how = rng.randrange(5)
        if how == 0 and isinstance(parent, dict):
            del parent[last]
        elif how == 1 and isinstance(parent, dict):
            parent[rng.choice(["extra", "x" * 65, "tokens", "records"])] = rng.choice(values)
        elif how == 2 and isinstance(parent, list):
            parent.append(copy.deepcopy(rng.choice([parent[0], *values])))
        else:
            parent[last] = copy.deepcopy(rng.choice(values))
        yield out


def _get(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def test_the_direct_check_gives_jsonschemas_verdict_on_mutated_documents_of_every_kind(world):
    import random

    from pprl.documents import validation

    rng = random.Random(14)
    validators = {k: Draft202012Validator(schema_for(k), registry=registry()) for k in SCHEMA_KINDS}
    seen: dict[str, list[int]] = {}
    docs = _documents(world["dir"])
    docs += [(f"{w}: approval", a) for w, d in docs for a in d.get("approvals", [])]
    for where, doc in docs:
        kind = "decryption-approval" if where.endswith(": approval") else doc["kind"]
        schema = validation._schemas()[kind]
        for i, mutated in enumerate([doc, *_mutations(doc, rng, 40)]):
            for instance in (mutated, validation._bounded(mutated)):
                theirs = validators[kind].is_valid(instance)
                ours = validation._valid(instance, schema, schema["$id"])  # _Unsure would fail the test
                assert ours is theirs, (where, kind, i)
                assert validation._conforms(instance, kind) is theirs
                seen.setdefault(kind, [0, 0])[theirs] += 1
    assert set(seen) == set(SCHEMA_KINDS)
    assert all(valid and invalid for invalid, valid in seen.values()), seen  # both verdicts met for every kind


def test_a_refusal_reads_the_same_with_and_without_the_direct_check(world, monkeypatch):
    doc = json.loads((world["dir"] / "platform_1.sub.json").read_text())
    doc["header"]["records"] = "12"
    messages = []
    for off in ("", "1"):
        monkeypatch.setenv("PPRL_NO_FAST_SCHEMA", off)
        with pytest.raises(DocumentError) as caught:
            validate_document(doc, "submission", "s.json")
        messages.append(str(caught.value))
    assert messages[0] == messages[1] == "s.json: not a valid submission document: header.records: expected integer, found string"
