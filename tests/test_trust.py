"""Trust is never optional: attacks by a man in the middle, a self-made bureau or dealer, a planted platform.

Each test is an attack that used to work (a document accepted because it was
self-consistent) and now fails: every receiver checks the signer against
cards it pinned itself, explicitly or in its trust store (``PPRL_TRUST``).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from cli_runner import cli_consortium, refused, run

from pprl.crypto.paillier.engine import encrypt_raw
from pprl.crypto.paillier.packing import PackingSpec
from pprl.crypto.paillier.packing_records import pack_records
from pprl.crypto.paillier.vector import PaillierPublicKey
from pprl.documents import (
    Card,
    DecryptionApproval,
    PsiRound,
    b64d,
    b64e,
    load,
    parse_json,
    read_document,
    seal,
    sign_document,
    write_document,
)
from pprl.errors import DocumentError, SignatureError
from pprl.protocol.audit import GENESIS, check_witnessed, make_entry, verify_entries, witness_head
from pprl.protocol.files import (
    blind_identifiers,
    init_party,
    init_session,
    load_card,
    load_key,
    partial_decrypt_release,
    reblind_round,
    threshold_keygen,
)
from pprl.sim.synth import generate_population

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "examples" / "schema-cn.json"
PLATFORMS = ["platform_1", "platform_2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = tmp_path_factory.mktemp("trust")
    key, card, _ = cli_consortium(w, PLATFORMS, seed=3)
    # the man in the middle: his own "authority" and "bureau", with the real parties' names
    for name, role in (("authority", "authority"), ("bureau", "bureau")):
        run("init", name, "--role", role, "--dir", w / "mitm")
    run("paillier", "keygen", "--me", w / "mitm" / "authority.key", "--bits", 2048, "--dir", w / "mitm" / "auth")
    return {"dir": w, "key": key, "card": card}


def _submit(world, paillier: Path, out: Path, *pins: object, ok: bool = False):
    w, key = world["dir"], world["key"]
    return run("submit", "--me", key["platform_1"], "--schema", SCHEMA, "--secret", w / "platform_1.secret",
               "--data", w / "data" / "platform_1.csv", "--id-column", "user_id", "--scores", "repay_score",
               "--paillier", paillier, *pins, "--out", out, ok=ok)


def test_a_substituted_paillier_key_is_refused(world, tmp_path, monkeypatch):
    w, card = world["dir"], world["card"]
    forged = w / "mitm" / "auth" / "paillier.pub.json"  # signed by a card named "authority" that is not
    out = tmp_path / "sub.json"
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    refused(_submit(world, forged, out), out, "--authority", "PPRL_TRUST")  # no pin, no trust store: refused
    refused(_submit(world, forged, out, "--authority", card["authority"]), out, "not among the given cards")
    store = tmp_path / "trust"
    store.mkdir()
    shutil.copy(card["authority"], store)
    monkeypatch.setenv("PPRL_TRUST", str(store))
    refused(_submit(world, forged, out), out, "not among the given cards")  # the trust store pins it too
    _submit(world, w / "authority" / "paillier.pub.json", out, ok=True)  # the real key, pinned by the store
    assert out.exists() and not Path(f"{out}.map.csv").stat().st_mode & 0o077


def test_a_trust_store_must_be_a_folder_of_cards(world, tmp_path, monkeypatch):
    out = tmp_path / "sub.json"
    monkeypatch.setenv("PPRL_TRUST", str(tmp_path / "nowhere"))
    refused(_submit(world, world["dir"] / "authority" / "paillier.pub.json", out), out, "not a folder")
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PPRL_TRUST", str(tmp_path / "empty"))
    refused(_submit(world, world["dir"] / "authority" / "paillier.pub.json", out), out, "holds no *.card.json")


def test_a_release_from_a_self_made_bureau_is_not_decrypted(world, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    w, key, card = world["dir"], world["key"], world["card"]
    subs = []
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", SCHEMA, "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--out", tmp_path / f"{n}.sub.json")
        subs += ["--submissions", tmp_path / f"{n}.sub.json"]
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    mitm = w / "mitm" / "bureau.key"  # the impostor links and aggregates the real submissions itself
    run("link", "--me", mitm, *cards, *subs, "--threshold", 0.8, "--out", tmp_path / "linkage.json")
    run("aggregate", "--me", mitm, "--linkage", tmp_path / "linkage.json", *subs, *cards,
        "--min-contributors", 1, "--out", tmp_path / "release.json")
    decrypt = ["decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
               "--release", tmp_path / "release.json", "--linkage", tmp_path / "linkage.json", *subs,
               "--audit-log", tmp_path / "audit.log", "--out", tmp_path / "aggregates.csv"]
    refused(run(*decrypt, ok=False), tmp_path / "aggregates.csv", "--cards", "PPRL_TRUST")
    refused(run(*decrypt, "--cards", card["bureau"], *cards, ok=False), tmp_path / "aggregates.csv",
            "release.json", "not among the given cards")
    assert not (tmp_path / "audit.log").exists()


def test_a_log_is_checked_against_pinned_cards(world, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    log = tmp_path / "audit.log"
    log.write_text("", encoding="utf-8")
    refused(run("audit", "verify", log, ok=False), tmp_path / "never", "--cards", "PPRL_TRUST")


def test_the_signers_role_is_the_pinned_cards_not_the_documents(world, tmp_path):
    """A platform's key signs a 'release' and claims, in the document, to be the bureau: refused."""
    w, key, card = world["dir"], world["key"], world["card"]
    platform = load_key(key["platform_1"])
    claimed = Card(name="platform_1", role="bureau", public=platform.card.public)  # same keys, false role
    doc = read_document(w / "authority" / "paillier.pub.json", "paillier-pub")
    forged = write_document(tmp_path / "pub.json", sign_document(doc, platform.identity, claimed))
    out = tmp_path / "sub.json"
    refused(_submit(world, forged, out, "--authority", card["platform_1"]), out, "signed by a platform, expected a "
                                                                                "authority")


def test_a_planted_platform_in_a_psi_session_is_refused(world, tmp_path):
    w, key, card = world["dir"], world["key"], world["card"]
    run("init", "platform_9", "--role", "platform", "--dir", tmp_path / "sybil")  # the bureau's own "platform"
    run("init", "platform_2", "--role", "platform", "--dir", tmp_path / "twin")  # a real name, other keys
    for label, extra in (("sybil", tmp_path / "sybil" / "platform_9.card.json"),
                         ("twin", tmp_path / "twin" / "platform_2.card.json")):
        platforms = [card["platform_1"], extra] if label == "twin" else [card["platform_1"], card["platform_2"], extra]
        run("psi", "init", "--me", key["bureau"], *[a for c in platforms for a in ("--cards", c)],
            "--identifier", "resident_id", "--out", tmp_path / f"{label}.session.json")
        out = tmp_path / f"{label}.r0.json"
        result = run("psi", "blind", "--me", key["platform_1"], "--session", tmp_path / f"{label}.session.json",
                     "--bureau", card["bureau"], "--peers", card["platform_2"], "--data", w / "data" / "platform_1.csv",
                     "--id-column", "user_id", "--out", out, "--state", tmp_path / f"{label}.state", ok=False)
        refused(result, out, "whose card you have not pinned")
        assert not (tmp_path / f"{label}.state").exists()


def test_a_share_dealt_by_someone_else_is_refused(world, tmp_path):
    card = world["card"]
    holders = {}
    for name in ("holder_a", "holder_b"):
        k, c = init_party(name, "authority", tmp_path / "keys")
        holders[name] = (load_key(k), load_card(c))
    k, _ = init_party("authority", "authority", tmp_path / "fake")  # a dealer named like the real one
    threshold_keygen(load_key(k), 1024, 2, [c for _, c in holders.values()], tmp_path / "dealt", _allow_insecure=True)
    me = holders["holder_a"][0]
    with pytest.raises(SignatureError, match="not among the given cards"):
        partial_decrypt_release(me, tmp_path / "dealt" / "holder_a.share.json", world["dir"] / "nothing.json",
                                tmp_path / "part.json", cards=[load_card(card["bureau"])],
                                dealer=load_card(card["authority"]), evidence=None, _allow_insecure=True)
    assert not (tmp_path / "part.json").exists()


def test_a_threshold_part_names_its_combiner_unless_asked_not_to(world, tmp_path):
    result = run("decrypt", "--partial", "--me", world["key"]["authority"], "--share", tmp_path / "s.json",
                 "--release", tmp_path / "r.json", "--out", tmp_path / "p.json", ok=False)
    assert result.exit_code == 2 and "--for COMBINER_CARD" in result.stderr


def test_psi_ciphertexts_are_rerandomised_at_every_hop_by_default(tmp_path):
    """Without fresh randomness the bureau could follow each element through the ring by its bytes."""
    names = ["p1", "p2"]
    keys, cards = {}, {}
    for name, role in (("p1", "platform"), ("p2", "platform"), ("bureau", "bureau"), ("authority", "authority")):
        k, c = init_party(name, role, tmp_path / "keys")
        keys[name], cards[name] = load_key(k), load_card(c)
    from pprl.crypto.paillier.vector import generate_keypair

    public, _ = generate_keypair(2048)
    population = generate_population(30, 2, seed=4)
    frames = dict(zip(names, (population.platforms["platform_1"], population.platforms["platform_2"])))
    session = init_session(keys["bureau"], [cards[n] for n in names], tmp_path / "session.json").path
    rounds = {n: blind_identifiers(keys[n], session, frames[n], "user_id", tmp_path / f"{n}.r0.json",
                                   tmp_path / f"{n}.state", paillier=public, scores=["repay_score"],
                                   bureau=cards["bureau"], platforms=[cards[m] for m in names]).path
              for n in names}
    fresh = reblind_round(keys["p2"], tmp_path / "p2.state", rounds["p1"], tmp_path / "fresh.json").path
    same = reblind_round(keys["p2"], tmp_path / "p2.state", rounds["p1"], tmp_path / "same.json",
                         rerandomize=False).path

    def ciphertexts(path: Path) -> set[bytes]:
        blob = b"".join(load(path, PsiRound).payload.scores.values())
        width = public.ciphertext_bytes
        return {blob[i : i + width] for i in range(0, len(blob), width)}

    before = ciphertexts(rounds["p1"])
    assert before and not before & ciphertexts(fresh)  # nothing the bureau saw before comes out again
    assert ciphertexts(same) == before  # (what --no-rerandomize would leak)


# -- malicious inputs from a platform -----------------------------------------------------------------


def _crafted_submission(world, tmp_path: Path, slot_value: int) -> tuple[Path, str]:
    """platform_1's real submission with one record's packed scores replaced by ``slot_value`` in slot 0
    (re-signed by platform_1, as a malicious platform would); returns it and the record's token."""
    doc = read_document(tmp_path / "platform_1.sub.json", "submission")
    header = doc["header"]
    spec = PackingSpec.from_dict(header["packing"])
    key = PaillierPublicKey.from_dict(header["paillier_key"])
    tight = spec.single()
    s = tight.slot_bits
    standard = slot_value | (spec.bound << s) | (1 << (spec.slots * s))  # slot 1 holds 0, the count slot 1
    crafted = encrypt_raw(key, pack_records([standard], spec))[0]
    blob = bytearray(b64d(doc["payload"]["scores_packed"]))
    width = key.ciphertext_bytes
    linked = {m[1] for e in read_document(tmp_path / "linkage.json", "linkage")["payload"]["entities"]
              for m in e["members"] if len(e["members"]) == 2 and m[0] == "platform_1"}
    index = next(i for i, t in enumerate(doc["payload"]["tokens"]) if t in linked)
    blob[index * width : (index + 1) * width] = int(crafted).to_bytes(width, "big")
    doc["payload"]["scores_packed"] = b64e(bytes(blob))
    me = load_key(world["key"]["platform_1"])
    path = write_document(tmp_path / "crafted.sub.json", sign_document(doc, me.identity, me.card))
    return path, doc["payload"]["tokens"][index]


def test_an_out_of_range_value_is_no_comparison_oracle(world, tmp_path, monkeypatch):
    """A platform's crafted slot value overflows the sum or not depending on the co-contributor's score.

    It used to make the authority refuse the whole release with an error naming the slot and position:
    a one-bit oracle, binary-searched to the other platform's exact score in ~17 releases. Now the
    release decrypts either way, the log entries look alike, and only the decryptor sees which sum
    could not be read.
    """
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    w, key, card = world["dir"], world["key"], world["card"]
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", SCHEMA, "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score,spend_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--out", tmp_path / f"{n}.sub.json")
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    real = [a for n in PLATFORMS for a in ("--submissions", tmp_path / f"{n}.sub.json")]
    run("link", "--me", key["bureau"], *cards, *real, "--threshold", 0.8, "--out", tmp_path / "linkage.json")
    spec = PackingSpec.from_dict(read_document(tmp_path / "platform_1.sub.json", "submission")["header"]["packing"])
    outcomes = {}
    for label, value in (("over", (1 << spec.slot_bits) - 1), ("under", 0)):
        crafted, _token = _crafted_submission(world, tmp_path, value)
        subs = ["--submissions", crafted, "--submissions", tmp_path / "platform_2.sub.json"]
        run("link", "--me", key["bureau"], *cards, *subs, "--threshold", 0.8, "--out", tmp_path / f"{label}.link.json")
        run("aggregate", "--me", key["bureau"], "--linkage", tmp_path / f"{label}.link.json", *subs, *cards,
            "--min-contributors", 2, "--out", tmp_path / f"{label}.release.json")
        result = run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
                     "--release", tmp_path / f"{label}.release.json", "--linkage", tmp_path / f"{label}.link.json",
                     *subs, *cards, "--cards", card["bureau"], "--audit-log", tmp_path / f"{label}.log",
                     "--out", tmp_path / f"{label}.csv")
        assert "slot" not in result.stderr and "position" not in result.stderr
        outcomes[label] = (result, (tmp_path / f"{label}.log").read_text(encoding="utf-8"))
    over, under = (json.loads(outcomes[k][1]) for k in ("over", "under"))
    assert over.keys() == under.keys() and over["entities"] == under["entities"]
    for field in ("seq", "event", "score_columns", "min_contributors", "noise", "privacy_budget", "platforms"):
        assert over[field] == under[field]
    assert "could not be read" in outcomes["over"][0].stderr  # the decryptor, and only it, is told
    assert "could not be read" not in outcomes["under"][0].stderr
    rows = list(csv.DictReader((tmp_path / "over.csv").read_text(encoding="utf-8").splitlines()))
    assert sum(1 for r in rows if r["repay_score_sum"] == "") == 1
    assert (tmp_path / "over.csv").stat().st_mode & 0o777 == 0o600


def test_unpacking_marks_a_bad_row_and_says_nothing():
    from pprl.crypto.paillier.packing import pack_rows, unpack

    spec = PackingSpec.plan(100, 2, 4, count_slot=True, maskable=True)
    good = pack_rows([[5, -7]], spec)[0]
    overflowing = good + ((1 << spec.slot_bits) << spec.position_bits)  # slot 2 past its headroom
    out = unpack([good, overflowing, 1 << (spec.total_bits + 1)], spec, None, invalid="mark")
    assert list(out[0]) == [5, -7] and list(out[1]) == [None, None] and list(out[2]) == [None, None]
    with pytest.raises(Exception, match="slot 2"):  # the default still explains, for callers that decrypt alone
        unpack([good, overflowing], spec, None)


def test_received_json_with_a_twice_given_key_or_nan_is_refused(world, tmp_path):
    with pytest.raises(DocumentError, match="a key is given twice"):
        parse_json('{"kind": "release", "kind": "submission"}', "x.json")
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(DocumentError, match="not a JSON number"):
            parse_json(f'{{"epsilon": {constant}}}', "x.json")
    # a signed card whose header says one thing to one reader and another to the next
    text = (world["card"]["bureau"]).read_text(encoding="utf-8")
    doubled = text.replace('"role": "bureau"', '"role": "platform", "role": "bureau"', 1)
    assert doubled != text
    (tmp_path / "bureau.card.json").write_text(doubled, encoding="utf-8")
    out = tmp_path / "sub.json"
    refused(_submit(world, world["dir"] / "authority" / "paillier.pub.json", out, "--authority",
                    tmp_path / "bureau.card.json"), out, "bureau.card.json", "given twice")


def test_crt_parameters_never_print_the_factors():
    from pprl.crypto.paillier.vector import generate_keypair

    _, private = generate_keypair(2048)
    assert str(private.crt.p) not in repr(private.crt) and str(private.crt.q) not in repr(private.crt)
    assert str(private.crt.p)[:20] not in repr(private) + str(private)


# -- the log anchored outside its keeper ----------------------------------------------------------------


def _noised_release(world, tmp_path: Path, name: str, *extra: object) -> Path:
    w, key, card = world["dir"], world["key"], world["card"]
    if not (tmp_path / "platform_2.clip.json").exists():
        for n in PLATFORMS:
            run("submit", "--me", key[n], "--schema", SCHEMA, "--secret", w / f"{n}.secret",
                "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
                "--clip", "repay_score=0:1000", "--paillier", w / "authority" / "paillier.pub.json",
                "--authority", card["authority"], "--out", tmp_path / f"{n}.clip.json")
        cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
        subs = [a for n in PLATFORMS for a in ("--submissions", tmp_path / f"{n}.clip.json")]
        run("link", "--me", key["bureau"], *cards, *subs, "--threshold", 0.8, "--out", tmp_path / "clip.link.json")
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    subs = [a for n in PLATFORMS for a in ("--submissions", tmp_path / f"{n}.clip.json")]
    out = tmp_path / f"{name}.release.json"
    run("aggregate", "--me", key["bureau"], "--linkage", tmp_path / "clip.link.json", *subs, *cards,
        "--noise", "laplace", "--epsilon", 1.0, *extra, "--out", out)
    return out


def _decrypt(world, release: Path, log: Path, out: Path, ok: bool = True):
    w, key, card = world["dir"], world["key"], world["card"]
    tmp = release.parent
    evidence = ["--linkage", tmp / "clip.link.json",
                *[a for n in PLATFORMS for a in ("--submissions", tmp / f"{n}.clip.json", "--cards", card[n])]]
    return run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
               "--release", release, *evidence, "--cards", card["bureau"], "--audit-log", log, "--max-epsilon", 5,
               "--out", out, ok=ok)


def test_a_truncated_log_shows_against_a_witnessed_head(world, tmp_path, monkeypatch):
    """Emptying the log resets the privacy budget and the chain still verifies; a witness's head shows it."""
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    card = world["card"]
    run("init", "regulator", "--role", "regulator", "--dir", tmp_path / "keys")
    regulator = tmp_path / "keys" / "regulator.key"
    reg_card = tmp_path / "keys" / "regulator.card.json"
    log = tmp_path / "audit.log"
    for i in range(2):
        _decrypt(world, _noised_release(world, tmp_path, f"r{i}"), log, tmp_path / f"r{i}.csv")
    run("audit", "witness", log, "--me", regulator, "--keeper", card["authority"], "--out", tmp_path / "head.json")
    pins = ["--cards", card["authority"], "--cards", reg_card]
    run("audit", "verify", log, *pins, "--witness", tmp_path / "head.json")
    kept = log.read_text(encoding="utf-8")
    log.write_text("", encoding="utf-8")  # the keeper empties its log: budget back to zero
    run("audit", "verify", log, *pins)  # ... and on its own the empty chain verifies
    bad = run("audit", "verify", log, *pins, "--witness", tmp_path / "head.json", ok=False)
    assert bad.exit_code == 1 and "truncated" in bad.stderr and "regulator" in bad.stderr
    log.write_text(kept.splitlines()[0] + "\n", encoding="utf-8")  # or drops the last entry
    assert "truncated" in run("audit", "verify", log, *pins, "--witness", tmp_path / "head.json", ok=False).stderr
    # a head from a witness nobody pinned proves nothing
    forged = run("audit", "verify", log, "--cards", card["authority"], "--witness", tmp_path / "head.json", ok=False)
    assert forged.exit_code == 1 and "not among the given cards" in forged.stderr


def test_a_release_carries_the_head_and_a_truncated_log_cannot_decrypt_it(world, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    key, card = world["key"], world["card"]
    log = tmp_path / "audit.log"
    _decrypt(world, _noised_release(world, tmp_path, "first"), log, tmp_path / "first.csv")
    # the keeper's own signed head, which the bureau puts into its next release (signed: anchored outside)
    run("audit", "witness", log, "--me", key["authority"], "--keeper", card["authority"],
        "--out", tmp_path / "head.json")
    anchored = _noised_release(world, tmp_path, "anchored", "--audit-head", tmp_path / "head.json",
                               "--cards", card["authority"])
    assert read_document(anchored, "release")["header"]["audit_head"]["entries"] == 1
    kept = log.read_text(encoding="utf-8")
    log.write_text("", encoding="utf-8")
    out = tmp_path / "anchored.csv"
    refused(_decrypt(world, anchored, log, out, ok=False), out, "truncated", "privacy budget")
    log.write_text(kept, encoding="utf-8")
    _decrypt(world, anchored, log, out)
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert entries[-1]["privacy_budget"]["repay_score"]["epsilon"] == pytest.approx(2.0)
    run("audit", "verify", log, "--cards", card["authority"], "--cards", card["bureau"], "--witness", anchored)
    # a head not signed by a party the bureau pinned is not carried
    refused(run("aggregate", "--me", key["bureau"], "--linkage", tmp_path / "clip.link.json",
                *[a for n in PLATFORMS for a in ("--submissions", tmp_path / f"{n}.clip.json")],
                *[a for n in PLATFORMS for a in ("--cards", card[n])], "--audit-head", tmp_path / "head.json",
                "--out", tmp_path / "x.json", ok=False), tmp_path / "x.json", "not among the given cards")


def test_an_edited_attested_head_entry_shows_against_a_witnessed_head(world, tmp_path):
    """An entry attested by holders' approvals alone is unsigned: at the head of a log its other fields
    could be edited and the log would still verify. A witnessed head catches it."""
    holders = [load_key(init_party(n, "authority", tmp_path / "keys")[0]) for n in ("holder_a", "holder_b")]
    release_hash, fingerprint = "ab" * 32, "cd" * 16
    approvals = [seal(DecryptionApproval(release_hash=release_hash, paillier_fingerprint=fingerprint,
                                         paillier_pub_hash="ef" * 32, holder=h.name, index=i + 1),
                      h.identity, h.card).wire for i, h in enumerate(holders)]
    entry = make_entry(1, GENESIS, None, None, "release", {
        "release_hash": release_hash, "linkage_hash": "01" * 32, "bureau": "bureau",
        "paillier_fingerprint": fingerprint, "entities": 12, "score_columns": ["repay_score"],
        "min_contributors": 2, "packing": None, "output_sha256": "02" * 32, "noise": None, "privacy_budget": {},
        "composition": "basic", "threshold": 2, "threshold_holders": [h.name for h in holders],
        "approvals": approvals,
    })
    cards = [h.card for h in holders]
    regulator = load_key(init_party("regulator", "regulator", tmp_path / "keys")[0])
    head = witness_head(regulator, [entry], holders[0].card, cards)
    edited = {**entry, "entities": 99}
    verify_entries([edited], cards)  # the hole: nothing signs 'entities'
    with pytest.raises(DocumentError, match="rewritten"):
        check_witnessed([edited], [head], [regulator.card], "holder_a")
    assert check_witnessed([entry], [head], [regulator.card], "holder_a") == 1


# -- decryptors check what they decrypt ------------------------------------------------------------------


def _linked_world(world, tmp_path: Path) -> dict:
    w, key, card = world["dir"], world["key"], world["card"]
    for n in PLATFORMS:
        run("submit", "--me", key[n], "--schema", SCHEMA, "--secret", w / f"{n}.secret",
            "--data", w / "data" / f"{n}.csv", "--id-column", "user_id", "--scores", "repay_score",
            "--paillier", w / "authority" / "paillier.pub.json", "--authority", card["authority"],
            "--out", tmp_path / f"{n}.sub.json")
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    subs = [a for n in PLATFORMS for a in ("--submissions", tmp_path / f"{n}.sub.json")]
    run("link", "--me", key["bureau"], *cards, *subs, "--threshold", 0.8, "--out", tmp_path / "linkage.json")
    return {"cards": cards, "subs": subs}


def _decrypt_checked(world, tmp_path: Path, release: Path, out: Path, *extra: object, ok: bool = True):
    w, key, card = world["dir"], world["key"], world["card"]
    return run("decrypt", "--me", key["authority"], "--paillier-key", w / "authority" / "paillier.key",
               "--release", release, "--cards", card["bureau"], *extra, "--audit-log", tmp_path / f"{out.stem}.log",
               "--out", out, ok=ok)


def test_a_decryptor_recomputes_the_release_and_keeps_its_own_floor(world, tmp_path, monkeypatch):
    """A bureau puts one platform's ciphertext where an entity's sum should be: without checking, the
    authority would decrypt that platform's private value; with the linkage and submissions, it refuses."""
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    key = world["key"]
    linked = _linked_world(world, tmp_path)
    run("aggregate", "--me", key["bureau"], "--linkage", tmp_path / "linkage.json", *linked["subs"],
        *linked["cards"], "--out", tmp_path / "release.json")
    evidence = ["--linkage", tmp_path / "linkage.json", *linked["subs"], *linked["cards"]]
    _decrypt_checked(world, tmp_path, tmp_path / "release.json", tmp_path / "honest.csv", *evidence)

    doc = read_document(tmp_path / "release.json", "release")
    sub = read_document(tmp_path / "platform_1.sub.json", "submission")
    public = PaillierPublicKey.from_dict(doc["header"]["paillier_key"])
    width = public.ciphertext_bytes
    sums = bytearray(b64d(doc["payload"]["sums"]["packed"]))
    single = b64d(sub["payload"]["scores_packed"])[:width]  # platform_1's first record, alone
    forged = json.loads(json.dumps(doc))
    forged["payload"]["sums"]["packed"] = b64e(single + bytes(sums[width:]))
    forged["payload"]["contributors"][0] = 1  # so that it decodes as one record ...
    forged["header"]["min_contributors"] = 1  # ... under a header that allows it
    bureau = load_key(key["bureau"])
    write_document(tmp_path / "forged.json", sign_document(forged, bureau.identity, bureau.card))
    out = tmp_path / "forged.csv"
    refused(_decrypt_checked(world, tmp_path, tmp_path / "forged.json", out, *evidence, ok=False), out,
            "forged.json", "records in the linkage, not 1")
    forged["payload"]["contributors"][0] = doc["payload"]["contributors"][0]  # keep the count honest
    write_document(tmp_path / "forged.json", sign_document(forged, bureau.identity, bureau.card))
    refused(_decrypt_checked(world, tmp_path, tmp_path / "forged.json", out, *evidence, ok=False), out,
            "forged.json", "is not the sum of its records")
    assert not (tmp_path / "forged.log").exists()
    # and without the evidence there is no decrypting at all
    result = _decrypt_checked(world, tmp_path, tmp_path / "forged.json", tmp_path / "unchecked.csv", ok=False)
    assert result.exit_code == 2 and "--linkage" in result.stderr and not (tmp_path / "unchecked.csv").exists()

    # the decryptor's own floor, whatever the release header says (here every entity spans the 2 platforms)
    out = tmp_path / "floor.csv"
    refused(_decrypt_checked(world, tmp_path, tmp_path / "release.json", out, *evidence, "--min-contributors", 3,
                             ok=False), out, "release.json", "below your floor of 3")
    # the evidence must be the bureau's and the platforms' own
    refused(_decrypt_checked(world, tmp_path, tmp_path / "release.json", tmp_path / "x.csv", "--linkage",
                             tmp_path / "linkage.json", *linked["subs"], ok=False), tmp_path / "x.csv",
            "holds no platform card")


def test_a_noisy_release_cannot_hide_a_platforms_ciphertext_in_its_noise(world, tmp_path, monkeypatch):
    """Noise is a fresh encryption the decryptor cannot recompute. A bureau could fold Enc(-v_B), made from
    platform_2's ciphertext, into an entity's 'noise' and so have the authority decrypt v_A alone. The
    bureau must prove it knows what it added; an addition made from a platform's ciphertext fails."""
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    key = world["key"]
    release = _noised_release(world, tmp_path, "noisy")
    doc = read_document(release, "release")
    assert doc["payload"]["added_proof"]["scheme"] == "pprl-known-plaintexts"
    _decrypt(world, release, tmp_path / "honest.log", tmp_path / "honest.csv")  # the honest one passes
    public = PaillierPublicKey.from_dict(doc["header"]["paillier_key"])
    width, n2 = public.ciphertext_bytes, public.nsquare
    sums = bytearray(b64d(doc["payload"]["sums"]["packed"]))
    record = int.from_bytes(b64d(read_document(tmp_path / "platform_2.clip.json",
                                               "submission")["payload"]["scores_packed"])[:width], "big")
    first = int.from_bytes(sums[:width], "big")
    sums[:width] = (first * pow(record, -1, n2) % n2).to_bytes(width, "big")  # ... minus a platform's record
    doc["payload"]["sums"]["packed"] = b64e(bytes(sums))
    bureau = load_key(key["bureau"])
    forged = write_document(tmp_path / "forged.release.json", sign_document(doc, bureau.identity, bureau.card))
    out = tmp_path / "forged.csv"
    refused(_decrypt(world, forged, tmp_path / "forged.log", out, ok=False), out, "forged.release.json",
            "does not verify")
    assert not (tmp_path / "forged.log").exists()


def test_a_submission_from_another_run_is_not_linked(world, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    w, key, card = world["dir"], world["key"], world["card"]

    def submit(name: str, run_id: str | None) -> Path:
        out = tmp_path / f"{name}.{run_id}.json"
        run("submit", "--me", key[name], "--schema", SCHEMA, "--secret", w / f"{name}.secret",
            "--data", w / "data" / f"{name}.csv", "--id-column", "user_id",
            *(["--run", run_id] if run_id else []), "--out", out)
        return out

    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    november = submit("platform_1", "2026-11")
    p1, p2 = submit("platform_1", "2026-12"), submit("platform_2", "2026-12")
    link = ["link", "--me", key["bureau"], *cards, "--threshold", 0.8, "--run", "2026-12"]
    run(*link, "--submissions", p1, "--submissions", p2, "--out", tmp_path / "linkage.json")
    assert read_document(tmp_path / "linkage.json", "linkage")["header"]["run"] == "2026-12"
    out = tmp_path / "replayed.json"
    refused(run(*link, "--submissions", november, "--submissions", p2, "--out", out, ok=False), out,
            "platform_1.2026-11.json", "run '2026-11', not run '2026-12'")
    refused(run(*link, "--submissions", submit("platform_1", None), "--submissions", p2, "--out", out, ok=False),
            out, "made for no run")
    bad = run("submit", "--me", key["platform_1"], "--schema", SCHEMA, "--secret", w / "platform_1.secret",
              "--data", w / "data" / "platform_1.csv", "--id-column", "user_id", "--run", "no spaces",
              "--out", tmp_path / "bad.json", ok=False)
    refused(bad, tmp_path / "bad.json", "--run")


def test_submissions_of_different_runs_never_link_and_a_rotating_schema_needs_the_run(world, tmp_path, monkeypatch):
    monkeypatch.delenv("PPRL_TRUST", raising=False)
    w, key, card = world["dir"], world["key"], world["card"]
    rotating = json.loads(SCHEMA.read_text(encoding="utf-8"))
    rotating["clkConfig"]["rotate"] = True
    schema = tmp_path / "rotating.json"
    schema.write_text(json.dumps(rotating), encoding="utf-8")

    def submit(name: str, run_id: str | None, ok: bool = True, out: Path | None = None):
        out = out or tmp_path / f"{name}.{run_id}.json"
        result = run("submit", "--me", key[name], "--schema", schema, "--secret", w / f"{name}.secret",
                     "--data", w / "data" / f"{name}.csv", "--id-column", "user_id",
                     *(["--run", run_id] if run_id else []), "--out", out, ok=ok)
        return out if ok else result

    out = tmp_path / "norun.json"
    refused(submit("platform_1", None, ok=False, out=out), out, "rotates its key per run", "--run")
    nov1, nov2 = submit("platform_1", "2026-11"), submit("platform_2", "2026-11")
    dec1 = submit("platform_1", "2026-12")
    header = {p: read_document(p, "submission")["header"] for p in (nov1, nov2, dec1)}
    assert header[nov1]["linkage_key_id"] == header[nov2]["linkage_key_id"] != header[dec1]["linkage_key_id"]
    cards = [a for n in PLATFORMS for a in ("--cards", card[n])]
    link = ["link", "--me", key["bureau"], *cards, "--threshold", 0.8]
    run(*link, "--submissions", nov1, "--submissions", nov2, "--out", tmp_path / "linkage.json")
    linked = read_document(tmp_path / "linkage.json", "linkage")
    assert linked["header"]["entities"] < 0.7 * sum(h["records"] for h in (header[nov1], header[nov2]))
    # Without --run the bureau still cannot link submissions of two runs together.
    out = tmp_path / "mixed.json"
    refused(run(*link, "--submissions", dec1, "--submissions", nov2, "--out", out, ok=False), out,
            "made for run '2026-11'")
    schema = SCHEMA  # the same with a schema that does not rotate
    refused(run(*link, "--submissions", submit("platform_1", "2026-12"), "--submissions", submit("platform_2", None),
                "--out", out, ok=False), out, "made for no run", "for run '2026-12'")
