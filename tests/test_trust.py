"""Trust is never optional: attacks by a man in the middle, a self-made bureau or dealer, a planted platform.

Each test is an attack that used to work (a document accepted because it was
self-consistent) and now fails: every receiver checks the signer against
cards it pinned itself, explicitly or in its trust store (``PPRL_TRUST``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_runner import cli_consortium, refused, run

from pprl.documents import Card, PsiRound, load, read_document, sign_document, write_document
from pprl.errors import SignatureError
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
               "--release", tmp_path / "release.json", "--audit-log", tmp_path / "audit.log",
               "--out", tmp_path / "aggregates.csv"]
    refused(run(*decrypt, ok=False), tmp_path / "aggregates.csv", "--cards", "PPRL_TRUST")
    refused(run(*decrypt, "--cards", card["bureau"], ok=False), tmp_path / "aggregates.csv",
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
                                dealer=load_card(card["authority"]), _allow_insecure=True)
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

    public, _ = generate_keypair(1024)
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
