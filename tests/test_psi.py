"""The exact-identifier path: normaliser, ECDH PSI primitive, and the K-platform intersection-sum.

Parties are real (identity keys in tmp_path); Paillier keys are 2048-bit, the
smallest a loader accepts. Sums are checked exactly against plaintext, person by
person, through a revealing session (platforms map entity ids back to their
users) and through the authority's unchanged ``decrypt_release``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import stat
from decimal import Decimal
from pathlib import Path

import nacl.bindings
import pandas as pd
import pytest

from pprl.crypto import hash_to_curve
from pprl.crypto import psi as psi_crypto
from pprl.crypto.paillier.packing import PackingSpec, unpack
from pprl.crypto.paillier.vector import generate_keypair
from pprl.documents import read_document, sign_document, write_document
from pprl.encoding.normalise.identifiers import (
    normalise_mobile,
    normalise_resident_id,
    resident_id_check_char,
)
from pprl.errors import (
    DataValidationError,
    DocumentError,
    KeyMismatchError,
    PolicyError,
    PPRLError,
    SignatureError,
)
from pprl.protocol.files import (
    aggregate_intersection,
    blind_identifiers,
    combine_release,
    count_intersection,
    decrypt_release,
    init_party,
    init_session,
    load_card,
    load_key,
    load_paillier_public,
    load_session,
    partial_decrypt_release,
    psi_evidence,
    reblind_round,
    reveal_members,
    threshold_keygen,
    verify_log,
)
from pprl.protocol.psi import reblind_schedule, ring_order
from pprl.sim.psi_demo import run_exact_demo

# ------------------------------------------------------------------ normaliser


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("110105491231002", "11010519491231002X"),            # 15 -> 18, check char X
        ("11010519491231002X", "11010519491231002X"),
        ("11010519491231002x", "11010519491231002X"),          # lower-case x
        ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),  # full-width
        ("１１０１０５４９１２３１００２", "11010519491231002X"),          # full-width 15-digit
        (" 110105 19491231 002X ", "11010519491231002X"),      # spaces
        ("110105194912310021", None),                          # bad check digit
        ("110105194902300027", None),                          # 30 February
        ("010105194912310029", None),                          # leading zero region
        ("11010519491231002", None),                           # 17 characters
        ("1101051949123100X2", None),                          # X not last
        ("", None),
        (None, None),
    ],
)
def test_resident_id_normaliser(raw, canonical):
    assert normalise_resident_id(raw) == canonical


def test_resident_id_check_char_matches_synth():
    from pprl.sim.synth import resident_id_check_digit

    for body in ("11010519491231002", "44030619900101123", "65010220001231999"):
        assert resident_id_check_char(body) == resident_id_check_digit(body)
    with pytest.raises(DataValidationError):
        resident_id_check_char("123")


@pytest.mark.parametrize(
    "raw, canonical",
    [
        ("+86 138 0013 8000", "13800138000"),
        ("0086-13800138000", "13800138000"),
        ("+8613800138000", "13800138000"),
        ("8613800138000", "13800138000"),
        ("138-0013-8000", "13800138000"),
        ("１３８００１３８０００", "13800138000"),
        ("(138) 0013.8000", "13800138000"),
        ("12800138000", None),        # second digit 2
        ("1380013800", None),         # 10 digits
        ("+1 138 0013 8000", None),
        ("phone", None),
        (None, None),
    ],
)
def test_mobile_normaliser(raw, canonical):
    assert normalise_mobile(raw) == canonical


def test_normalisers_undo_synth_format_variants():
    """Every format variant the synthesiser produces maps back to the clean value (typos aside)."""
    from pprl.sim.synth import generate_population

    messy = generate_population(400, 2, seed=11, corruption=1.0)
    clean = generate_population(400, 2, seed=11, corruption=0.0)
    for name in messy.platforms:
        for a, b in zip(messy.platforms[name]["resident_id"], clean.platforms[name]["resident_id"]):
            assert normalise_resident_id(a) == b
        assert all(normalise_mobile(b) == b for b in clean.platforms[name]["mobile"])


# ------------------------------------------------------------------ primitive


def test_hash_to_group_domain_separation_and_determinism():
    d1, d2 = psi_crypto.make_domain("pprl", "resident_id", "s1"), psi_crypto.make_domain("pprl", "resident_id", "s2")
    ident = "11010519491231002X"
    a = psi_crypto.hash_to_group([ident], d1)
    assert a == psi_crypto.hash_to_group([ident], d1)
    assert a != psi_crypto.hash_to_group([ident], d2)
    assert a != psi_crypto.hash_to_group([ident], psi_crypto.make_domain("pprl", "mobile", "s1"))
    # length prefixes make the encoding unambiguous: ("ab","c") and ("a","bc") differ
    assert psi_crypto.make_domain("ab", "c") != psi_crypto.make_domain("a", "bc")
    assert len(a) == 32 and psi_crypto.check_elements(a) == 1


def test_hash_to_group_regression_vector():
    """Pins the construction (RFC 9380 curve25519_XMD:SHA-512_ELL2_RO_ -> Montgomery u); a change breaks sessions."""
    got = psi_crypto.hash_to_group(["11010519491231002X"], psi_crypto.make_domain("pprl-test-vector"))
    assert got.hex() == PINNED_VECTOR


def test_hash_to_group_is_rfc9380_with_the_session_dst():
    """psi's H is exactly RFC 9380 hash_to_curve with DST = SUITE || len || domain (reference recomputation)."""
    d = psi_crypto.make_domain("check")
    dst = psi_crypto.SUITE + len(d).to_bytes(2, "big") + d
    items = [f"id-{i}".encode() for i in range(20)]
    got = psi_crypto.split_elements(psi_crypto.hash_to_group(items, d))
    for item, ours in zip(items, got):
        u, _ = hash_to_curve.hash_to_curve_reference(item, dst)
        assert ours == u.to_bytes(32, "little")
    long_domain = psi_crypto.make_domain("x" * 300)
    long_dst = hashlib.sha512(b"H2C-OVERSIZE-DST-" + psi_crypto.SUITE + len(long_domain).to_bytes(2, "big")
                              + long_domain).digest()
    u, _ = hash_to_curve.hash_to_curve_reference(b"id", long_dst)
    assert psi_crypto.hash_to_group([b"id"], long_domain) == u.to_bytes(32, "little")


def test_blinding_commutes_and_threads_agree():
    d = psi_crypto.make_domain("t")
    k1, k2, k3 = (psi_crypto.PSIKey.generate() for _ in range(3))
    ids = [f"user{i}" for i in range(5000)]
    one = psi_crypto.blind(k1, ids, d, workers=1)
    assert psi_crypto.blind(k1, ids, d, workers=2) == one
    a = psi_crypto.reblind(k3, psi_crypto.reblind(k2, one))
    b = psi_crypto.reblind(k1, psi_crypto.reblind(k3, psi_crypto.blind(k2, ids, d, workers=1)))
    assert a == b
    assert psi_crypto.blind(k2, ids[:5], d) != one[: 5 * 32]
    assert repr(k1) == "PSIKey(<secret>)" and k1.secret.hex() not in str(k1)


def test_invalid_elements_refused():
    k = psi_crypto.PSIKey.generate()
    with pytest.raises(DataValidationError, match="whole number"):
        psi_crypto.reblind(k, b"\x01" * 33)
    p_bytes = ((1 << 255) - 19).to_bytes(32, "little")           # u = p: not canonical
    with pytest.raises(DataValidationError, match="position 1"):
        psi_crypto.reblind(k, p_bytes)
    with pytest.raises(DataValidationError, match="position 2"):
        psi_crypto.reblind(k, b"\x09" + bytes(31) + bytes(32))   # the all-zero element
    with pytest.raises(DataValidationError, match="position 1"):
        psi_crypto.reblind(k, b"\x01" + bytes(31))             # u = 1: small order, X25519 gives 0
    good = psi_crypto.blind(k, ["a", "b"], psi_crypto.make_domain("t"), workers=1)
    with pytest.raises(DataValidationError, match="position 3 "):
        psi_crypto.reblind(k, good + b"\x01" + bytes(31), workers=1)


def test_direct_and_wrapped_x25519_agree(monkeypatch):
    """The direct libsodium call and PyNaCl's public wrapper give the same elements and errors."""
    k = psi_crypto.PSIKey.generate()
    blob = psi_crypto.blind(k, [f"id{i}" for i in range(300)], psi_crypto.make_domain("t"), workers=1)
    direct = psi_crypto.reblind(k, blob, workers=1)
    monkeypatch.setattr(psi_crypto, "_RAW_SCALARMULT", None)
    assert psi_crypto.reblind(k, blob, workers=1) == direct
    assert direct[:32] == nacl.bindings.crypto_scalarmult(k.secret, blob[:32])
    with pytest.raises(DataValidationError, match="position 301 "):
        psi_crypto.reblind(k, blob + b"\x01" + bytes(31), workers=1)


def test_two_party_plain_psi():
    d = psi_crypto.make_domain("plain")
    client_items = [f"c{i}" for i in range(300)]
    server_items = [f"c{i}" for i in range(150, 600)]
    server, client = psi_crypto.PsiServer(d), psi_crypto.PsiClient(d)
    request = client.create_request(client_items)
    setup = server.setup(server_items)
    assert client.intersection_size(setup, server.process_request(request)) == 150
    revealing = psi_crypto.PsiServer(d, reveal_intersection=True)
    setup = revealing.setup(server_items)
    got = client.intersection(setup, revealing.process_request(request))
    assert got == list(range(150, 300))


# ------------------------------------------------------------------ parties


@pytest.fixture(scope="module")
def paillier():
    return generate_keypair(2048)


@pytest.fixture()
def world(tmp_path, paillier):
    """Three platforms, a bureau and an authority, with small hand-made data sets."""
    keys, cards = {}, {}
    for name, role in [("p1", "platform"), ("p2", "platform"), ("p3", "platform"),
                       ("bureau", "bureau"), ("authority", "authority")]:
        k, c = init_party(name, role, tmp_path / "keys")
        keys[name], cards[name] = load_key(k), load_card(c)
    return tmp_path, keys, cards, paillier


def _rid(n: int) -> str:
    body = f"1101051980{(n % 12) + 1:02d}{(n % 28) + 1:02d}{n % 1000:03d}"
    return body + resident_id_check_char(body)


def _frames(people: dict[str, list[int]]) -> dict[str, pd.DataFrame]:
    """Per platform, the persons (ints) it holds; scores depend on (platform, person)."""
    out = {}
    for p, persons in people.items():
        pi = int(p[1:])
        out[p] = pd.DataFrame({
            "user_id": [f"{p}-u{x}" for x in persons],
            "resident_id": [_rid(x) if (x + pi) % 2 else _rid(x).lower() for x in persons],
            "mobile": [f"1380013{x:04d}" for x in persons],
            "repay_score": [str(500 + 7 * x + pi) for x in persons],
            "spend_score": [f"{x * 1.25 + pi / 100:.2f}" for x in persons],
        })
    return out


def _blind(cards, me, session, *args, **kwargs):
    """``blind_identifiers`` with the pins a platform keeps: the bureau's card and the platforms' cards."""
    kwargs.setdefault("bureau", cards["bureau"])
    kwargs.setdefault("platforms", [c for c in cards.values() if c.role == "platform"])
    return blind_identifiers(me, session, *args, **kwargs)


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(Path(path).read_text(encoding="utf-8").splitlines()))


def _score(p: str, x: int) -> tuple[Decimal, Decimal]:
    pi = int(p[1:])
    return Decimal(500 + 7 * x + pi), Decimal(f"{x * 1.25 + pi / 100:.2f}")


def _run(world, people, *, min_contributors=2, reveal=True, identifier="resident_id"):
    root, keys, cards, (pub, priv) = world
    names = list(people)
    frames = _frames(people)
    session = init_session(keys["bureau"], [cards[n] for n in names], root / "session.json",
                           identifier=identifier, reveal_intersection=reveal).path
    current = {}
    for n in names:
        r = _blind(cards, keys[n], session, frames[n], "user_id", root / n / "r0.json", root / n / "state",
                              paillier=pub, scores=["repay_score", "spend_score"], bureau=cards["bureau"])
        current[n] = r.path
    sess = load_session(session, cards["bureau"], [cards[n] for n in names])
    for step, pairs in enumerate(reblind_schedule(sess), start=1):
        for platform, origin in pairs:
            current[origin] = reblind_round(keys[platform], root / platform / "state", current[origin],
                                            root / platform / f"r{step}.{origin}.json").path
    rel = aggregate_intersection(keys["bureau"], session, [current[n] for n in names], min_contributors,
                                 root / "bureau" / "release.json")
    dec = decrypt_release(keys["authority"], priv, rel.path, root / "authority" / "audit.log",
                          root / "authority" / "aggregates.csv", cards=[cards["bureau"]],
                          evidence=psi_evidence(session, [current[n] for n in names], [cards[n] for n in names],
                                                min_contributors))
    verify_log(root / "authority" / "audit.log", [cards["authority"]])
    return session, current, rel, dec


def _expected(people, min_contributors):
    holders: dict[int, list[str]] = {}
    for p, persons in people.items():
        for x in persons:
            holders.setdefault(x, []).append(p)
    out = {}
    for x, ps in holders.items():
        if len(ps) >= min_contributors:
            out[x] = (len(ps), sum(_score(p, x)[0] for p in ps), sum(_score(p, x)[1] for p in ps))
    return holders, out


def _check_sums_by_reveal(world, people, min_contributors):
    """Every released person's decrypted sums equal the plaintext sums (via each platform's reveal)."""
    root, keys, _, _ = world
    aggregates = {r["entity_id"]: r for r in _csv(root / "authority" / "aggregates.csv")}
    _holders, expected = _expected(people, min_contributors)
    person_of_entity = {}
    for p in people:
        res = reveal_members(keys[p], root / p / "state", root / "bureau" / f"{p}.reveal.json",
                             root / p / "members.csv")
        assert stat.S_IMODE(os.stat(res.path).st_mode) == 0o600
        for row in _csv(res.path):
            x = int(row["user_id"].split("-u")[1])
            assert person_of_entity.setdefault(row["entity_id"], x) == x
        assert res.members == sum(1 for x in people[p] if x in expected)
    assert set(person_of_entity) == set(aggregates)
    for entity, x in person_of_entity.items():
        row = aggregates[entity]
        n, repay, spend = expected[x]
        assert int(row["contributors"]) == n
        assert Decimal(row["repay_score_sum"]) == repay
        assert Decimal(row["spend_score_sum"]) == spend


def test_threshold_key_decrypts_a_psi_release(world):
    """A PSI release under a 2-of-3 threshold key: two holders' parts give the exact plaintext sums."""
    root, keys, cards, _ = world
    holders = ["authority", "h1", "h2"]
    for name in holders[1:]:
        k, c = init_party(name, "authority", root / "keys")
        keys[name], cards[name] = load_key(k), load_card(c)
    keygen = threshold_keygen(keys["authority"], 2048, 2, [cards[h] for h in holders], root / "dealer",
                              _allow_insecure=True)
    pub = load_paillier_public(keygen.public_path, cards["authority"])
    people = {"p1": list(range(20)), "p2": list(range(12, 30))}
    frames = _frames(people)
    session = init_session(keys["bureau"], [cards["p1"], cards["p2"]], root / "ts.json").path
    r = {n: _blind(cards, keys[n], session, frames[n], "user_id", root / f"t{n}.json", root / f"t{n}.state",
                              paillier=pub, scores=["repay_score", "spend_score"]).path for n in people}
    done = {"p1": reblind_round(keys["p2"], root / "tp2.state", r["p1"], root / "tp1.r1.json").path,
            "p2": reblind_round(keys["p1"], root / "tp1.state", r["p2"], root / "tp2.r1.json").path}
    rel = aggregate_intersection(keys["bureau"], session, [done["p1"], done["p2"]], 2, root / "trel.json")
    parts = [partial_decrypt_release(keys[h], keygen.share_paths[h], rel.path, root / f"{h}.part.json",
                                     cards=[cards["bureau"]], dealer=cards["authority"], workers=1,
                                     evidence=psi_evidence(session, [done["p1"], done["p2"]],
                                                           [cards["p1"], cards["p2"]]),
                                     _allow_insecure=True) for h in ("h1", "h2")]
    combined = combine_release(parts, rel.path, cards=[cards["bureau"]], authority=cards["authority"], workers=1,
                               _allow_insecure=True)  # key taken from the parts
    spec = PackingSpec.from_dict(combined.header["packing"])
    sums = unpack(combined.sums["packed"], spec, combined.release["payload"]["contributors"])
    _holders, expected = _expected(people, 2)
    assert len(sums) == rel.released == len(expected) == 8
    assert sum(Decimal(int(v)) / 100 for v in sums[:, 0]) == sum(e[1] for e in expected.values())
    assert sum(Decimal(int(v)) / 100 for v in sums[:, 1]) == sum(e[2] for e in expected.values())
    assert sorted(Decimal(int(v)) / 100 for v in sums[:, 0]) == sorted(e[1] for e in expected.values())


def test_two_platforms_exact_sums(world):
    people = {"p1": list(range(40)), "p2": list(range(25, 70))}
    _, _, rel, dec = _run(world, people)
    assert rel.intersection == 15 and rel.released == 15 and rel.suppressed == 0
    assert dec.entities == 15
    _check_sums_by_reveal(world, people, 2)


def test_three_platforms_exact_sums_and_release_format(world):
    people = {"p1": list(range(30)), "p2": list(range(20, 50)), "p3": [*range(5), *range(25, 28), *range(60, 70)]}
    session, current, rel, dec = _run(world, people)
    _holders, expected = _expected(people, 2)
    assert rel.intersection == len(expected) == dec.entities
    _check_sums_by_reveal(world, people, 2)
    root = world[0]
    doc = read_document(rel.path, "release")
    clk_like = ["created", "linkage_hash", "paillier_fingerprint", "paillier_key", "score_columns",
                "score_decimals", "packing", "min_contributors", "clip", "noise", "entities", "suppressed",
                "platforms"]
    assert list(doc["header"]) == clk_like
    assert doc["header"]["platforms"] == sorted(people)  # the session's platform set, named in the release
    assert list(doc["payload"]) == ["entity_ids", "contributors", "sums", "join_index"]  # join order: for the decryptor
    assert list(doc["payload"]["sums"]) == ["packed"]  # every column in one ciphertext per person
    assert doc["header"]["linkage_hash"] == rel.transcript_hash
    audit = [json.loads(line) for line in (root / "authority" / "audit.log").read_text().splitlines()]
    assert audit[-1]["linkage_hash"] == rel.transcript_hash and audit[-1]["entities"] == dec.entities
    assert audit[-1]["platforms"] == sorted(people)  # ... and in the log
    counts = count_intersection(world[1]["bureau"], session, [current[n] for n in people])
    assert counts.intersection == len(expected)
    assert counts.by_contributors == {2: sum(1 for v in expected.values() if v[0] == 2),
                                      3: sum(1 for v in expected.values() if v[0] == 3)}


def test_min_contributors_policy(world):
    people = {"p1": list(range(30)), "p2": list(range(20, 50)), "p3": [*range(5), *range(25, 28), *range(60, 70)]}
    _, _, rel, _dec = _run(world, people, min_contributors=3, reveal=True)
    _holders, expected3 = _expected(people, 3)
    _, expected2 = _expected(people, 2)
    assert rel.released == len(expected3) == 3          # persons 25, 26, 27
    assert rel.suppressed == len(expected2) - len(expected3)
    _check_sums_by_reveal(world, people, 3)


def test_no_reveal_session_and_mobile_identifier(world):
    people = {"p1": list(range(20)), "p2": list(range(10, 30))}
    _, current, rel, _dec = _run(world, people, reveal=False, identifier="mobile")
    root = world[0]
    assert rel.released == 10 and rel.reveal_paths == ()
    _, expected = _expected(people, 2)
    rows = list(_csv(root / "authority" / "aggregates.csv"))
    got = sorted((int(r["contributors"]), Decimal(r["repay_score_sum"]), Decimal(r["spend_score_sum"])) for r in rows)
    assert got == sorted(expected.values())
    doc = read_document(current["p1"], "psi-round")
    assert "tokens" not in doc["payload"]


def test_nothing_identifying_leaves_a_platform(world):
    people = {"p1": list(range(12)), "p2": list(range(6, 18))}
    _session, _current, _rel, _ = _run(world, people)
    root = world[0]
    frames = _frames(people)
    secrets_ = {v for f in frames.values() for c in ("user_id", "resident_id", "mobile") for v in f[c]}
    secrets_ |= {_rid(x) for x in range(18)}
    travelling = [p for p in root.rglob("*.json") if "keys" not in p.parts]
    for path in travelling:
        text = path.read_text()
        assert not any(s in text for s in secrets_), path
    state = root / "p1" / "state"
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o600


def _blind_two(world, *, reveal=False):
    root, keys, cards, (pub, _) = world
    frames = _frames({"p1": list(range(10)), "p2": list(range(5, 15))})
    session = init_session(keys["bureau"], [cards["p1"], cards["p2"]], root / "session.json",
                           reveal_intersection=reveal).path
    r = {n: _blind(cards, keys[n], session, frames[n], "user_id", root / f"{n}.r0.json", root / f"{n}.state",
                              paillier=pub, scores=["repay_score"]).path for n in ("p1", "p2")}
    return session, r


def test_tampered_round_file_refused(world):
    root, keys, _, _ = world
    _session, r = _blind_two(world)
    raw = r["p1"].read_bytes()
    for where in (len(raw) // 2, len(raw) // 3, raw.index(b'"records"') + 12, len(raw) - 30):
        bad = bytearray(raw)
        bad[where] ^= 0x01
        target = root / "tampered.json"
        target.write_bytes(bytes(bad))
        out = root / "should-not-exist.json"
        with pytest.raises(PPRLError) as exc:
            reblind_round(keys["p2"], root / "p2.state", target, out)
        assert "tampered.json" in str(exc.value)
        assert "\n" not in str(exc.value)
        assert not out.exists()


def test_round_from_another_session_refused(world):
    root, keys, cards, (pub, _) = world
    session, r = _blind_two(world)
    other = init_session(keys["bureau"], [cards["p1"], cards["p2"]], root / "other.json").path
    frames = _frames({"p1": list(range(10))})
    stray = _blind(cards, keys["p1"], other, frames["p1"], "user_id", root / "stray.json", root / "stray.state",
                              paillier=pub, scores=["repay_score"]).path
    with pytest.raises(DocumentError, match="another PSI session"):
        reblind_round(keys["p2"], root / "p2.state", stray, root / "x.json")
    with pytest.raises(DocumentError, match="another PSI session"):
        aggregate_intersection(keys["bureau"], session, [stray, r["p2"]], 2, root / "rel.json")
    assert not (root / "x.json").exists() and not (root / "rel.json").exists()


def test_round_with_a_foreign_packing_refused(world):
    """A platform signing a round packed its own way (less headroom) is refused before any sum."""
    root, keys, _cards, _ = world
    _session, r = _blind_two(world)
    doc = read_document(r["p1"], "psi-round")
    doc["header"]["packing"] = {**doc["header"]["packing"], "max_summands": 2}
    body = {k: v for k, v in doc.items() if k not in ("signer", "signature")}
    write_document(root / "foreign.json", sign_document(body, keys["p1"].identity, keys["p1"].card))
    with pytest.raises(DocumentError, match="foreign.json.*(packing|headroom)"):
        reblind_round(keys["p2"], root / "p2.state", root / "foreign.json", root / "x.json")
    assert not (root / "x.json").exists()


def test_ring_order_enforced(world):
    root, keys, _cards, _ = world
    session, r = _blind_two(world)
    with pytest.raises(PolicyError, match="own list"):
        reblind_round(keys["p1"], root / "p1.state", r["p1"], root / "x.json")
    done = reblind_round(keys["p2"], root / "p2.state", r["p1"], root / "p1.r1.json").path
    with pytest.raises(PolicyError, match="already blinded by every platform"):
        reblind_round(keys["p2"], root / "p2.state", done, root / "x.json")
    with pytest.raises(PolicyError, match="still needs blinding by p1"):
        aggregate_intersection(keys["bureau"], session, [done, r["p2"]], 2, root / "rel.json")
    with pytest.raises(PolicyError, match="no complete list from p2"):
        aggregate_intersection(keys["bureau"], session, [done], 2, root / "rel.json")
    with pytest.raises(KeyMismatchError):
        reblind_round(keys["p1"], root / "p2.state", r["p2"], root / "x.json")     # someone else's state
    with pytest.raises(SignatureError):
        aggregate_intersection(keys["p1"], session, [done], 2, root / "rel.json")  # not the session's bureau
    assert not (root / "x.json").exists() and not (root / "rel.json").exists()
    assert ring_order(["a", "b", "c"], "b") == ["b", "c", "a"]


def test_three_platform_ring_refuses_wrong_hop(world):
    root, keys, cards, (_pub, _) = world
    frames = _frames({"p1": [1, 2], "p2": [2, 3], "p3": [3, 4]})
    session = init_session(keys["bureau"], [cards["p1"], cards["p2"], cards["p3"]], root / "s.json").path
    r = {n: _blind(cards, keys[n], session, frames[n], "user_id", root / f"{n}.r0.json", root / f"{n}.st").path
         for n in ("p1", "p2", "p3")}
    with pytest.raises(PolicyError, match="next hop is 'p2', not 'p3'"):
        reblind_round(keys["p3"], root / "p3.st", r["p1"], root / "x.json")
    with pytest.raises(PolicyError, match="nothing to sum"):
        hop = {o: reblind_round(keys[p], root / f"{p}.st", r[o], root / f"{o}.r1.json").path
               for p, o in [("p2", "p1"), ("p3", "p2"), ("p1", "p3")]}
        final = [reblind_round(keys[p], root / f"{p}.st", hop[o], root / f"{o}.r2.json").path
                 for p, o in [("p3", "p1"), ("p1", "p2"), ("p2", "p3")]]
        assert count_intersection(keys["bureau"], session, final).intersection == 2
        aggregate_intersection(keys["bureau"], session, final, 2, root / "rel.json")
    assert not (root / "rel.json").exists()


def test_blind_input_checks(world):
    root, keys, cards, (pub, _) = world
    session = init_session(keys["bureau"], [cards["p1"], cards["p2"]], root / "s.json").path
    frame = _frames({"p1": [1, 2, 3]})["p1"]
    dup = pd.concat([frame, frame.iloc[[0]].assign(user_id="other")], ignore_index=True)
    with pytest.raises(DataValidationError, match="rows 1 and 4") as exc:
        _blind(cards, keys["p1"], session, dup, "user_id", root / "o.json", root / "st", paillier=pub,
                          scores=["repay_score"])
    assert _rid(1) not in str(exc.value)
    bad = frame.assign(resident_id=["110105194912310021", "", frame.resident_id[2]])
    res = _blind(cards, keys["p1"], session, bad, "user_id", root / "o.json", root / "st")
    assert (res.records, res.skipped) == (1, 2)
    with pytest.raises(DocumentError, match="already exists"):
        _blind(cards, keys["p1"], session, frame, "user_id", root / "o2.json", root / "st")
    with pytest.raises(KeyMismatchError, match="not 'mobile'"):
        _blind(cards, keys["p1"], session, frame, "user_id", root / "o3.json", root / "st3", identifier="mobile")
    with pytest.raises(KeyMismatchError, match="not one of this session's platforms"):
        _blind(cards, keys["p3"], session, frame, "user_id", root / "o4.json", root / "st4")
    with pytest.raises(SignatureError):
        _blind(cards, keys["p1"], session, frame, "user_id", root / "o5.json", root / "st5", bureau=cards["p2"])
    for name in ("o2.json", "o3.json", "st3", "o4.json", "st4", "o5.json", "st5"):
        assert not (root / name).exists()


def test_run_exact_demo(tmp_path):
    summary = run_exact_demo(tmp_path / "demo", 60, 3, seed=2)
    assert summary.ok, summary.render()
    assert summary.intersection == summary.intersection_truth > 0
    assert "all equal" in summary.render()


PINNED_VECTOR = "bf0b2d6e641345d8593dbfe1ecd1555d481175988d02f9f15266e9c3a3d10533"
