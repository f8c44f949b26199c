"""Threshold decryption through files: keygen, shares, parts, combining, and what is refused.

The key is 2048-bit, the smallest the ordinary readers (platform submit,
bureau, holders) accept.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

import pprl
from pprl.crypto.exchange import unwrap
from pprl.crypto.paillier.packing import PackingSpec, unpack
from pprl.crypto.paillier.threshold.partials import PartialDecryption, partial_decrypt
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPublicKey,
    decode_fixed,
    encrypt_vector,
)
from pprl.documents import b64d, b64e, read_document, sign_document, write_document
from pprl.errors import (
    DecryptionError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
    SignatureError,
)
from pprl.protocol.files import (
    combine_release,
    init_party,
    load_card,
    load_key,
    load_paillier_public,
    load_share,
    load_threshold_public,
    partial_decrypt_release,
    release_evidence,
    threshold_keygen,
)
from pprl.protocol.threshold import dealer as th
from pprl.protocol.threshold import holder as threshold_holder

SCHEMA = Path(__file__).resolve().parent.parent / "examples" / "schema-cn.json"
HOLDERS = ("authority", "auditor_a", "auditor_b")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Parties, a 2-of-3 key dealt by the authority, and a signed release of two columns."""
    root = tmp_path_factory.mktemp("threshold")
    keys, cards = {}, {}
    for name, role in [("authority", "authority"), ("auditor_a", "authority"), ("auditor_b", "authority"),
                       ("bureau", "bureau"), ("platform_1", "platform")]:
        key_path, card_path = init_party(name, role, root / "keys")
        keys[name], cards[name] = load_key(key_path), load_card(card_path)
    keygen = threshold_keygen(keys["authority"], 2048, 2, [cards[h] for h in HOLDERS], root / "dealer",
                              _allow_insecure=True)
    public = load_paillier_public(keygen.public_path, cards["authority"])
    rng = random.Random(7)
    values = {"repay_score": [rng.randint(-10**6, 10**6) for _ in range(9)],
              "spend_score": [rng.randint(-50, 50) for _ in range(9)]}
    release = _write_release(root / "release.json", keys["bureau"], public, values)
    other_values = {c: [v + 1 for v in vals] for c, vals in values.items()}
    other_release = _write_release(root / "release2.json", keys["bureau"], public, other_values)
    return {"root": root, "keys": keys, "cards": cards, "keygen": keygen, "public": public,
            "values": values, "release": release, "other_release": other_release}


def _write_release(path: Path, bureau, public: PaillierPublicKey, values: dict[str, list[int]]) -> Path:
    """A release in the bureau's format: per-entity sums of two platforms' ciphertexts."""
    columns = list(values)
    count = len(values[columns[0]])
    sums = {}
    for column in columns:
        halves = [v // 2 for v in values[column]], [v - v // 2 for v in values[column]]
        enc = EncryptedVector.concat([encrypt_vector(public, h, workers=1) for h in halves])
        groups = [[i, count + i] for i in range(count)]
        sums[column] = b64e(enc.sum_groups(groups).to_bytes())
    doc = {
        "kind": "release",
        "version": 1,
        "header": {"created": "2026-01-01T00:00:00+00:00", "linkage_hash": "0" * 64,
                   "paillier_fingerprint": public.fingerprint, "paillier_key": public.to_dict(),
                   "score_columns": columns, "score_decimals": 0, "min_contributors": 2,
                   "entities": count, "suppressed": 0},
        "payload": {"entity_ids": [f"E{i:04d}" for i in range(count)], "contributors": [2] * count, "sums": sums},
    }
    return write_document(path, sign_document(doc, bureau.identity, bureau.card))


def _part(world, holder: str, out: str, release: Path | None = None, **kw) -> Path:
    kw.setdefault("cards", [world["cards"]["bureau"]])
    kw.setdefault("dealer", world["cards"]["authority"])
    kw.setdefault("evidence", None)  # these releases are made up to exercise the threshold crypto, not linked
    return partial_decrypt_release(world["keys"][holder], world["keygen"].share_paths[holder],
                                   release or world["release"], world["root"] / out, workers=1, **kw)


@pytest.fixture(scope="module")
def parts(world) -> dict[str, Path]:
    return {h: _part(world, h, f"{h}.part.json", cards=[world["cards"]["bureau"]]) for h in HOLDERS}


def _combine(world, paths, release: Path | None = None, **kw):
    kw.setdefault("me", world["keys"]["authority"])
    kw.setdefault("cards", [world["cards"]["bureau"]])
    kw.setdefault("authority", world["cards"]["authority"])
    return combine_release(paths, release or world["release"], world["keygen"].public_path, workers=1, **kw)


# --- keygen -------------------------------------------------------------------------------


def test_keygen_writes_public_key_and_wrapped_shares_only(world) -> None:
    keygen, cards = world["keygen"], world["cards"]
    files = sorted(p.name for p in (world["root"] / "dealer").iterdir())
    assert files == ["auditor_a.share.json", "auditor_b.share.json", "authority.share.json", "paillier.pub.json"]
    pub = read_document(keygen.public_path, "paillier-pub")
    assert pub["signer"]["name"] == "authority" and pub["fingerprint"] == keygen.fingerprint
    assert PaillierPublicKey.from_dict(pub["key"]) == world["public"]
    t = pub["threshold"]
    assert t["t"] == 2 and t["holders"] == list(HOLDERS) and t["delta"] == 6
    assert set(t["verification_keys"]) == set(HOLDERS)
    assert t["holder_fingerprints"] == {h: cards[h].fingerprint for h in HOLDERS}
    setup = load_threshold_public(keygen.public_path, cards["authority"])
    assert setup.holders == HOLDERS and setup.public.threshold == 2
    for holder, path in keygen.share_paths.items():
        assert os.stat(path).st_mode & 0o777 == 0o600
        doc = read_document(path, "paillier-share")
        assert doc["holder"] == holder and doc["index"] == HOLDERS.index(holder) + 1
        assert not {"p", "q", "d", "share", "secret"} & set(doc)


def test_keygen_refusals(world, tmp_path) -> None:
    keys, cards = world["keys"], world["cards"]
    holders = [cards[h] for h in HOLDERS]
    auth = keys["authority"]
    with pytest.raises(PolicyError, match="between 1 and the 3 holders"):
        threshold_keygen(auth, 1024, 0, holders, tmp_path, _allow_insecure=True)
    with pytest.raises(PolicyError):
        threshold_keygen(auth, 1024, 4, holders, tmp_path, _allow_insecure=True)
    with pytest.raises(DocumentError, match="listed twice"):
        threshold_keygen(auth, 1024, 2, holders + [cards["auditor_a"]], tmp_path, _allow_insecure=True)
    with pytest.raises(KeyFormatError, match="use 2048"):
        threshold_keygen(auth, 1024, 2, holders, tmp_path)
    with pytest.raises(KeyFormatError, match="only an authority"):
        threshold_keygen(keys["bureau"], 1024, 2, holders, tmp_path, _allow_insecure=True)
    with pytest.raises(DocumentError, match="already exists"):
        threshold_keygen(auth, 1024, 2, holders, world["root"] / "dealer", _allow_insecure=True)
    assert list(tmp_path.iterdir()) == []


# --- shares -------------------------------------------------------------------------------


def test_holder_opens_only_its_own_share(world, tmp_path) -> None:
    keys, keygen = world["keys"], world["keygen"]
    mine = load_share(keys["auditor_a"], keygen.share_paths["auditor_a"], dealer=world["cards"]["authority"])
    assert mine.holder == "auditor_a" and mine.share.index == 2
    with pytest.raises(DecryptionError, match="addressed to 'auditor_b'"):
        load_share(keys["auditor_a"], keygen.share_paths["auditor_b"], dealer=world["cards"]["authority"])
    # a different key that merely has the same name
    key_path, _ = init_party("auditor_b", "authority", tmp_path / "impostor")
    with pytest.raises(DecryptionError, match="another card"):
        load_share(load_key(key_path), keygen.share_paths["auditor_b"], dealer=world["cards"]["authority"])
    # re-addressing the file breaks the dealer's signature
    doc = read_document(keygen.share_paths["auditor_b"], "paillier-share")
    doc["holder"] = "auditor_a"
    write_document(tmp_path / "readdressed.json", doc)
    with pytest.raises(SignatureError):
        load_share(keys["auditor_a"], tmp_path / "readdressed.json", dealer=world["cards"]["authority"])


def test_dealer_cannot_reopen_a_share(world) -> None:
    """Shares are wrapped with an ephemeral key: the dealer's own X25519 key does not open them."""
    doc = read_document(world["keygen"].share_paths["auditor_a"], "paillier-share")
    auth, holder = world["keys"]["authority"], world["cards"]["auditor_a"]
    context = th.share_context(doc["fingerprint"], doc["index"], doc["paillier_pub_hash"])
    blob = b64d(doc["wrapped_share"])
    for me_name, peer_name in [("authority", "auditor_a"), ("auditor_a", "authority")]:
        with pytest.raises(DecryptionError):
            unwrap(auth.identity, me_name, holder.public.agree_pub, peer_name, blob, context)


# --- round trip ---------------------------------------------------------------------------


def test_any_two_holders_decrypt_the_release(world, parts) -> None:
    for pair in itertools.combinations(HOLDERS, 2):
        result = _combine(world, [parts[h] for h in pair], cards=[world["cards"]["bureau"]],
                          authority=world["cards"]["authority"])
        header, sums = result
        assert sums == world["values"]
        assert header["score_columns"] == ["repay_score", "spend_score"]
        assert result.holders == tuple(h for h in HOLDERS if h in pair)
        assert result.release["payload"]["entity_ids"][0] == "E0000"
    assert _combine(world, list(parts.values())).sums == world["values"]
    part_doc = read_document(parts["auditor_a"], "decryption-part")
    assert part_doc["header"]["holder"] == "auditor_a" and part_doc["header"]["index"] == 2
    assert part_doc["header"]["combiner"] is None  # public combining unless a combiner is named


def test_fewer_than_t_and_duplicates_refused(world, parts, tmp_path) -> None:
    with pytest.raises(PolicyError, match="need 2 parts .* got 1"):
        _combine(world, [parts["auditor_b"]])
    copy = tmp_path / "copy.json"
    copy.write_bytes(parts["auditor_b"].read_bytes())
    with pytest.raises(DocumentError, match="second part from holder 'auditor_b'"):
        _combine(world, [parts["auditor_b"], copy])


def test_part_for_another_release_refused(world, parts) -> None:
    stale = _part(world, "auditor_b", "stale.part.json", release=world["other_release"])
    with pytest.raises(DocumentError, match="holder 'auditor_b' is for a different release"):
        _combine(world, [parts["authority"], stale])
    fresh = _part(world, "authority", "fresh.part.json", release=world["other_release"])
    expected = {c: [v + 1 for v in vals] for c, vals in world["values"].items()}
    assert _combine(world, [fresh, stale], release=world["other_release"]).sums == expected


def test_tampered_and_forged_part_files_refused(world, parts, tmp_path) -> None:
    keys = world["keys"]
    doc = read_document(parts["auditor_a"], "decryption-part")
    # any edit breaks the holder's signature
    edited = json.loads(json.dumps(doc))
    edited["payload"]["proofs"]["repay_score"]["z"] = b64e(b"\x01" * 200)
    write_document(tmp_path / "edited.json", edited)
    with pytest.raises(SignatureError, match="claims to be from holder 'auditor_a'"):
        _combine(world, [parts["authority"], tmp_path / "edited.json"])
    # re-signed by someone who is not a holder
    write_document(tmp_path / "bureau.json", sign_document(doc, keys["bureau"].identity, keys["bureau"].card))
    with pytest.raises(SignatureError, match="'bureau', who is not a holder"):
        _combine(world, [parts["authority"], tmp_path / "bureau.json"])
    # a holder passing off another holder's part as its own
    write_document(tmp_path / "swapped.json", sign_document(doc, keys["auditor_b"].identity, keys["auditor_b"].card))
    with pytest.raises(DocumentError, match="signed by holder 'auditor_b' names another holder"):
        _combine(world, [parts["authority"], tmp_path / "swapped.json"])
    # a card with a holder's name but other keys
    key_path, _ = init_party("auditor_a", "authority", tmp_path / "impostor")
    impostor = load_key(key_path)
    write_document(tmp_path / "impostor.json", sign_document(doc, impostor.identity, impostor.card))
    with pytest.raises(SignatureError, match="holder 'auditor_a' but is not signed"):
        _combine(world, [parts["authority"], tmp_path / "impostor.json"])


def test_dishonest_holder_is_named(world, parts, monkeypatch) -> None:
    """A holder signs a part whose values are wrong: the proof fails and names it."""
    keygen, keys = world["keygen"], world["keys"]
    other = load_share(keys["auditor_b"], keygen.share_paths["auditor_b"], dealer=world["cards"]["authority"]).share
    n, n2 = world["public"].n, world["public"].nsquare

    def altered(share, enc, **kw):
        good = partial_decrypt(share, enc, **kw)
        values = list(good.values)
        values[0] = values[0] * (1 + n) % n2
        return PartialDecryption(good.index, tuple(values), good.proof)

    def with_other_share(share, enc, **kw):
        part = partial_decrypt(other, enc, **kw)
        return PartialDecryption(share.index, part.values, part.proof)

    for i, cheat in enumerate((altered, with_other_share)):
        monkeypatch.setattr(threshold_holder, "partial_decrypt", cheat)  # where the holder step reads it
        bad = _part(world, "auditor_a", f"cheat{i}.part.json")
        monkeypatch.undo()
        with pytest.raises(DecryptionError, match="holder 'auditor_a', column 'repay_score'"):
            _combine(world, [parts["authority"], bad])


def test_part_addressed_to_another_combiner_refused(world, parts) -> None:
    keys, cards = world["keys"], world["cards"]
    to_b = _part(world, "auditor_a", "to_b.part.json", combiner=cards["auditor_b"])
    with pytest.raises(DecryptionError, match="addressed to 'auditor_b', not to 'authority'"):
        _combine(world, [parts["authority"], to_b])
    # the named combiner can use it (with its own part, also addressed to it)
    b_own = _part(world, "auditor_b", "b_own.part.json", combiner=cards["auditor_b"])
    assert _combine(world, [to_b, b_own], me=keys["auditor_b"]).sums == world["values"]


def test_bad_releases_refused(world, tmp_path) -> None:
    keys, cards = world["keys"], world["cards"]
    doc = read_document(world["release"], "release")
    write_document(tmp_path / "by_platform.json", sign_document(doc, keys["platform_1"].identity, keys["platform_1"].card))
    with pytest.raises(SignatureError, match="expected a bureau"):  # a pinned card, but not a bureau's
        _part(world, "auditor_a", "x.json", release=tmp_path / "by_platform.json",
              cards=[cards["bureau"], cards["platform_1"]])
    with pytest.raises(SignatureError, match="not among the given cards"):
        _part(world, "auditor_a", "x.json", release=tmp_path / "by_platform.json")
    doc["header"]["paillier_fingerprint"] = "0" * 32
    write_document(tmp_path / "other_key.json", sign_document(doc, keys["bureau"].identity, keys["bureau"].card))
    with pytest.raises(KeyMismatchError):
        _part(world, "auditor_a", "y.json", release=tmp_path / "other_key.json")
    # combining against an ordinary public key (as paillier_keygen writes: no 'threshold' object)
    pub = read_document(world["keygen"].public_path, "paillier-pub")
    del pub["threshold"]
    write_document(tmp_path / "plain.pub.json", sign_document(pub, keys["authority"].identity, cards["authority"]))
    with pytest.raises(DocumentError, match="not a threshold key"):
        combine_release([], world["release"], tmp_path / "plain.pub.json", me=keys["authority"],
                        cards=[cards["bureau"]], authority=cards["authority"])


@pytest.mark.parametrize("records_per_ciphertext", [1, 2])
def test_end_to_end_with_real_submissions(world, tmp_path, records_per_ciphertext) -> None:
    """Platforms submit under the threshold key unchanged; bureau links and aggregates; 2 holders decrypt.

    Also with two records per ciphertext (all a 1024-bit key holds): aligned, masked sums combine the same.
    """
    keys, cards, keygen = dict(world["keys"]), dict(world["cards"]), world["keygen"]
    population = pprl.generate_population(40, 2, seed=5)
    names = sorted(population.platforms)
    for name in names:
        key_path, card_path = init_party(name, "platform", tmp_path / "keys")
        keys[name], cards[name] = load_key(key_path), load_card(card_path)
    shares = [pprl.share_secret(keys[n], [cards[p] for p in names if p != n], tmp_path / n / "share.json") for n in names]
    secrets = {n: pprl.combine_secrets(keys[n], shares, tmp_path / n / "linkage.secret") for n in names}
    subs = {
        n: pprl.submit(keys[n], SCHEMA, secrets[n], population.platforms[n], "user_id", tmp_path / n / "sub.json",
                       paillier=keygen.public_path, authority=cards["authority"], scores=["repay_score", "spend_score"],
                       records_per_ciphertext=records_per_ciphertext)
        for n in names
    }
    linkage = pprl.link(keys["bureau"], [cards[n] for n in names], [s.path for s in subs.values()], 0.8,
                        tmp_path / "linkage.json")
    release = pprl.aggregate(keys["bureau"], linkage.path, [s.path for s in subs.values()], 2, tmp_path / "release.json",
                             cards=[cards[n] for n in names])
    assert release.released > 5
    parts = [partial_decrypt_release(keys[h], keygen.share_paths[h], release.path, tmp_path / f"{h}.part.json",
                                     cards=[cards["bureau"]], dealer=cards["authority"],
                                     evidence=release_evidence(linkage.path, [s.path for s in subs.values()],
                                                               [cards[n] for n in names]))
             for h in ("auditor_a", "auditor_b")]
    result = combine_release(parts, release.path, keygen.public_path, me=keys["authority"],
                             cards=[cards["bureau"]], authority=cards["authority"])

    score = {}
    for n in names:
        mapping = pd.read_csv(subs[n].map_path, dtype=str, keep_default_na=False)
        frame = population.platforms[n].astype(str).set_index("user_id")
        for token, user in zip(mapping["token"], mapping["user_id"]):
            score[(n, token)] = {c: Decimal(frame.loc[user, c]) for c in ("repay_score", "spend_score")}
    members = {e["entity_id"]: e["members"] for e in read_document(linkage.path, "linkage")["payload"]["entities"]}
    decimals = int(result.header["score_decimals"])
    ids = result.release["payload"]["entity_ids"]
    spec = PackingSpec.from_dict(result.header["packing"])
    assert spec.records_per_ciphertext == records_per_ciphertext
    columns = unpack(result.sums["packed"], spec, result.release["payload"]["contributors"])
    for j, column in enumerate(("repay_score", "spend_score")):
        got = decode_fixed(list(columns[:, j]), decimals)
        want = [sum(score[(p, t)][column] for p, t, _ in members[e]) for e in ids]
        assert [Decimal(str(g)) for g in got] == want
