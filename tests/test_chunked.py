"""The chunked form of submissions: the same document as JSON, read back chunk by chunk, refused when altered.

A module world of three platforms (80 people) submits through the CLI with ``--format chunked`` (two records per
ciphertext, so chunk boundaries must fall between ciphertexts); the bureau links, aggregates and the authority
decrypts exact sums from them. The library tests write one prepared submission in both forms and compare what
each reads back; the tamper tests change one byte or cut the file and expect a one-line refusal.
"""

from __future__ import annotations

import csv
import json
import struct
from decimal import Decimal
from pathlib import Path

import pytest
from cli_runner import cli_consortium, linked_members, run

from pprl.documents import Submission, load, load_any, save, seal
from pprl.documents.chunked import END, MAGIC, is_chunked, read_chunked, write_chunked
from pprl.errors import DocumentError, SignatureError
from pprl.protocol.files import load_card, load_key, load_submission

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2", "platform_3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("chunked")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=11)
    for name in PLATFORMS:
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id", "--scores", "repay_score,spend_score",
            "--records-per-ciphertext", 2, "--format", "chunked", "--out", w / f"{name}.sub.json")
    return {"dir": w, "card": card, "key": key}


def _args(world, option, names=PLATFORMS, suffix=""):
    return [a for n in names for a in (option, world["card"][n] if option == "--cards" else
                                       world["dir"] / f"{n}.sub.json{suffix}")]


@pytest.fixture(scope="module")
def flow(world):
    """link, aggregate (release in the chunked form too) and decrypt, on the chunked submissions."""
    w = world["dir"]
    assert all(is_chunked(w / f"{n}.sub.json") for n in PLATFORMS)
    cards, subs = _args(world, "--cards"), _args(world, "--submissions")
    run("link", "--me", world["key"]["bureau"], *cards, *subs, "--threshold", 0.8, "--out", w / "linkage.json")
    run("aggregate", "--me", world["key"]["bureau"], "--linkage", w / "linkage.json", *subs, *cards,
        "--min-contributors", 2, "--format", "chunked", "--out", w / "release.json")
    assert is_chunked(w / "release.json")
    run("decrypt", "--me", world["key"]["authority"], "--paillier-key", w / "authority" / "paillier.key",
        "--release", w / "release.json", "--linkage", w / "linkage.json", *subs, *cards,
        "--cards", world["card"]["bureau"], "--audit-log", w / "audit.log", "--out", w / "aggregates.csv")
    return w


def test_cli_flow_on_chunked_submissions_decrypts_exact_sums(world, flow):
    w = flow
    members, scores = linked_members(w, PLATFORMS)
    released = list(csv.DictReader((w / "aggregates.csv").read_text(encoding="utf-8").splitlines()))
    assert released and len(released) == sum(1 for m in members.values() if len(m) >= 2)
    for row in released:
        group = members[row["entity_id"]]
        for column in ("repay_score", "spend_score"):
            assert Decimal(row[f"{column}_sum"]) == sum(Decimal(scores[m][column]) for m in group)
    header = json.loads(run("inspect", w / "platform_1.sub.json").stdout)
    assert header["kind"] == "submission" and header["signer"]["name"] == "platform_1"
    assert "payload" not in header and "chunked" not in header


def test_a_release_reads_back_the_same_in_both_forms(world, flow, tmp_path):
    from pprl.documents import Release

    chunked = load(flow / "release.json", Release)
    assert chunked.payload.added_proof is not None  # two records per ciphertext: masked sums, with their proof
    assert set(chunked.wire["payload"]) == {"added_proof"} and "sums/packed" in chunked.wire["chunked"]["columns"]
    bureau = load_key(world["key"]["bureau"])
    as_json = load(save(tmp_path / "r.json", seal(chunked, bureau.identity, bureau.card)), Release)
    assert as_json.payload == chunked.payload and as_json.header == chunked.header
    again = load(write_chunked(tmp_path / "r.pprl", as_json, bureau.identity, bureau.card, rows_per_chunk=3).source,
                 Release)
    assert again.payload == as_json.payload and len(again.wire["chunked"]["chunks"]) > 1


def test_chunked_holds_no_identifier_or_score(world):
    w = world["dir"]
    raw = (w / "platform_1.sub.json").read_bytes()
    rows = list(csv.DictReader((w / "data" / "platform_1.csv").read_text(encoding="utf-8").splitlines()))
    checked = 0
    for row in rows[:20]:
        for column in ("user_id", "name", "mobile", "resident_id", "repay_score", "spend_score"):
            value = row[column]
            if len(value.encode("utf-8")) >= 6:
                assert value.encode("utf-8") not in raw, column
                checked += 1
    assert checked >= 40


def _prepared(world):
    """One platform's submission, as JSON (signed) and chunked (signed again), from the same records."""
    w = world["dir"]
    doc = load(w / "platform_2.sub.json", Submission)
    key = load_key(world["key"]["platform_2"])
    return doc, key


@pytest.mark.parametrize("rows_per_chunk", [1, 2, 7, 64, 1 << 16])
def test_both_forms_read_back_the_same_document(world, tmp_path, rows_per_chunk):
    doc, key = _prepared(world)
    as_json = save(tmp_path / "s.json", seal(doc, key.identity, key.card))
    as_chunks = tmp_path / "s.pprl"
    written = write_chunked(as_chunks, doc, key.identity, key.card, rows_per_chunk=rows_per_chunk)
    a, b = load(as_json, Submission), load(as_chunks, Submission)
    assert a.header == b.header and a.payload == b.payload
    assert b.hash == written.hash and b.wire == written.wire and a.hash != b.hash
    cards = [load_card(world["card"][n]) for n in PLATFORMS]
    va, vb = load_submission(as_json, cards), load_submission(as_chunks, cards)
    assert (va.clks == vb.clks).all() and va.platform == vb.platform == "platform_2"
    trailer = b.wire["chunked"]
    step = max(2, rows_per_chunk - rows_per_chunk % 2)  # two records per ciphertext: chunks end between ciphertexts
    assert [c["rows"] for c in trailer["chunks"][:-1]] == [step] * (len(trailer["chunks"]) - 1)
    assert isinstance(load_any(as_chunks), Submission)


def test_chunked_is_smaller_than_json(world, tmp_path):
    doc, key = _prepared(world)
    size_json = save(tmp_path / "s.json", seal(doc, key.identity, key.card)).stat().st_size
    size_chunked = write_chunked(tmp_path / "s.pprl", doc, key.identity, key.card) and (tmp_path / "s.pprl").stat().st_size
    assert size_chunked < size_json * 0.8


def _write(world, tmp_path, rows_per_chunk=16):
    doc, key = _prepared(world)
    path = tmp_path / "s.pprl"
    write_chunked(path, doc, key.identity, key.card, rows_per_chunk=rows_per_chunk)
    return path


def _trailer_span(data: bytes) -> tuple[int, int]:
    (length,) = struct.unpack("<Q", data[-len(END) - 8:-len(END)])
    end = len(data) - len(END) - 8
    return end - length, end


def test_a_changed_payload_byte_is_refused_naming_the_chunk(world, tmp_path):
    path = _write(world, tmp_path)
    data = bytearray(path.read_bytes())
    start, _ = _trailer_span(bytes(data))
    trailer = json.loads(bytes(data[start:-len(END) - 8]))
    first = sum(trailer["chunked"]["chunks"][0]["sizes"])
    data[len(MAGIC) + first + 5] ^= 1  # a token byte of chunk 1
    path.write_bytes(bytes(data))
    with pytest.raises(DocumentError, match=r"s\.pprl: chunk 1 \(records 16-31\) does not match its digest"):
        load(path, Submission)


@pytest.mark.parametrize("cut", ["truncated", "no end mark", "extra bytes", "empty", "trailer length"])
def test_a_damaged_frame_is_refused(world, tmp_path, cut):
    path = _write(world, tmp_path)
    data = path.read_bytes()
    start, end = _trailer_span(data)
    damaged = {
        "truncated": data[:len(data) // 2],
        "no end mark": data[:-1],
        "extra bytes": data[:len(MAGIC)] + b"x" + data[len(MAGIC):],
        "empty": MAGIC,
        "trailer length": data[:end] + struct.pack("<Q", len(data)) + END,
    }[cut]
    path.write_bytes(damaged)
    with pytest.raises(DocumentError, match=r"s\.pprl: chunked document"):
        load(path, Submission)


def _edit_trailer(path: Path, change) -> None:
    data = path.read_bytes()
    start, end = _trailer_span(data)
    trailer = json.loads(data[start:end])
    change(trailer)
    text = json.dumps(trailer, separators=(",", ":")).encode()
    path.write_bytes(data[:start] + text + struct.pack("<Q", len(text)) + END)


def test_a_changed_header_fails_the_signature(world, tmp_path):
    path = _write(world, tmp_path)
    _edit_trailer(path, lambda t: t["header"].update(score_decimals=t["header"]["score_decimals"] + 1))
    cards = [load_card(world["card"][n]) for n in PLATFORMS]
    with pytest.raises(SignatureError, match="does not verify"):
        load_submission(path, cards)


def test_a_changed_digest_is_refused_before_the_signature(world, tmp_path):
    path = _write(world, tmp_path)
    _edit_trailer(path, lambda t: t["chunked"]["chunks"][0].update(sha256="0" * 64))
    with pytest.raises(DocumentError, match="chunk 0 .* does not match its digest"):
        load(path, Submission)


@pytest.mark.parametrize("change", [
    lambda t: t["chunked"].update(format="pprl-chunked-9"),
    lambda t: t["chunked"].update(columns=["clks"]),
    lambda t: t["chunked"]["chunks"][0].update(rows=0),
    lambda t: t["chunked"]["chunks"][0].update(sizes=[1, 2]),
    lambda t: t["chunked"]["chunks"][0].update(rows=t["chunked"]["chunks"][0]["rows"] + 1),
    lambda t: t["header"].update(records="many"),
    lambda t: t.update(kind="linkage"),
])
def test_a_malformed_trailer_is_refused(world, tmp_path, change):
    path = _write(world, tmp_path)
    _edit_trailer(path, change)
    with pytest.raises(DocumentError, match=r"s\.pprl: "):
        load(path, Submission)


def test_signed_by_an_unpinned_party_is_refused(world, tmp_path):
    doc, _ = _prepared(world)
    other = load_key(world["key"]["platform_3"])
    path = tmp_path / "s.pprl"
    write_chunked(path, doc, other.identity, other.card)  # platform_3 signs platform_2's header
    cards = [load_card(world["card"][n]) for n in PLATFORMS]
    with pytest.raises(DocumentError, match="header names 'platform_2' but 'platform_3' signed it"):
        load_submission(path, cards)
    with pytest.raises(SignatureError, match="not among the given cards"):
        load_submission(path, [load_card(world["card"]["platform_2"])])


def test_a_chunked_file_of_a_kind_without_that_form_is_refused(world, tmp_path):
    from pprl.documents import Linkage

    path = _write(world, tmp_path)
    with pytest.raises(DocumentError, match="is a 'submission' document; expected linkage"):
        read_chunked(path, Linkage)


def test_a_linkage_only_submission_has_no_score_column(world, tmp_path):
    w = world["dir"]
    run("submit", "--me", world["key"]["platform_1"], "--schema", SCHEMA, "--secret", w / "platform_1.secret",
        "--data", w / "data" / "platform_1.csv", "--id-column", "user_id", "--pseudonym-column", "resident_id",
        "--format", "chunked", "--out", tmp_path / "s.pprl")
    doc = load_submission(tmp_path / "s.pprl", [load_card(world["card"]["platform_1"])]).doc
    assert doc.payload.scores_packed is None and len(doc.payload.pseudonyms) == 32 * doc.header.records
    assert doc.wire["chunked"]["columns"] == ["tokens", "clks", "pseudonyms"]
    assert doc.wire["payload"] == {"scores_packed": None}


def test_a_trailer_that_carries_column_data_is_refused(world, tmp_path):
    path = _write(world, tmp_path)
    _edit_trailer(path, lambda t: t["payload"].update(clks="AAAA"))
    with pytest.raises(DocumentError, match="trailer carries a column's data"):
        load(path, Submission)


def test_a_failed_write_leaves_nothing(world, tmp_path):
    doc, key = _prepared(world)
    other = load_key(world["key"]["platform_3"])
    with pytest.raises(Exception, match="does not belong"):
        write_chunked(tmp_path / "s.pprl", doc, key.identity, other.card)
    assert list(tmp_path.iterdir()) == []
