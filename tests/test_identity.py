"""Identity keys and pairwise exchange, checked against RFC vectors."""

import base64
import json
import secrets
from pathlib import Path

import nacl.bindings
import pytest

from pprl.crypto import identity
from pprl.crypto.exchange import hkdf_sha256, unwrap, wrap
from pprl.crypto.identity import IdentityKey, PublicIdentity, verify_signature
from pprl.errors import DecryptionError, KeyFormatError, SignatureError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc.json").read_text())
h = bytes.fromhex


@pytest.mark.parametrize("name", ["rfc8032_ed25519_test1", "rfc8032_ed25519_test2"])
def test_ed25519_rfc8032(name):
    v = VECTORS[name]
    key = IdentityKey(sign_seed=h(v["secret"]), agree_seed=bytes(32))
    assert key.public().sign_pub == h(v["public"])
    assert key.sign(h(v["message"])) == h(v["signature"])
    verify_signature(h(v["public"]), h(v["message"]), h(v["signature"]))
    bad = bytearray(h(v["signature"]))
    bad[0] ^= 1
    with pytest.raises(SignatureError):
        verify_signature(h(v["public"]), h(v["message"]), bytes(bad))


def test_x25519_rfc7748():
    v = VECTORS["rfc7748_x25519"]
    alice = IdentityKey(sign_seed=bytes(32), agree_seed=h(v["alice_private"]))
    bob = IdentityKey(sign_seed=bytes(32), agree_seed=h(v["bob_private"]))
    assert alice.public().agree_pub == h(v["alice_public"])
    assert bob.public().agree_pub == h(v["bob_public"])
    assert alice.agree(h(v["bob_public"])) == h(v["shared"])
    assert bob.agree(h(v["alice_public"])) == h(v["shared"])


def test_hkdf_rfc5869():
    v = VECTORS["rfc5869_hkdf_sha256_test1"]
    assert hkdf_sha256(h(v["ikm"]), v["length"], h(v["salt"]), h(v["info"])) == h(v["okm"])


def test_wrap_round_trip_and_binding():
    a, b, c = IdentityKey.generate(), IdentityKey.generate(), IdentityKey.generate()
    blob = wrap(a, "alice", b.public().agree_pub, "bob", b"share", b"ctx")
    assert unwrap(b, "bob", a.public().agree_pub, "alice", blob, b"ctx") == b"share"
    with pytest.raises(DecryptionError):  # third party
        unwrap(c, "bob", a.public().agree_pub, "alice", blob, b"ctx")
    with pytest.raises(DecryptionError):  # names bound
        unwrap(b, "carol", a.public().agree_pub, "alice", blob, b"ctx")
    with pytest.raises(DecryptionError):  # context bound
        unwrap(b, "bob", a.public().agree_pub, "alice", blob, b"other")
    tampered = bytearray(blob)
    tampered[20] ^= 1
    with pytest.raises(DecryptionError):
        unwrap(b, "bob", a.public().agree_pub, "alice", bytes(tampered), b"ctx")


def test_repr_hides_secrets_and_bad_keys_refused():
    key = IdentityKey.generate()
    assert key.sign_seed.hex() not in repr(key)
    with pytest.raises(KeyFormatError):
        IdentityKey(sign_seed=b"short", agree_seed=bytes(32))
    with pytest.raises(KeyFormatError):
        PublicIdentity(sign_pub=b"x" * 31, agree_pub=bytes(32))


def test_libsodium_gives_pycryptodomes_keys_and_secrets_and_refuses_the_same_peers():
    from Crypto.Protocol import DH
    from Crypto.PublicKey import ECC
    from Crypto.Signature import eddsa

    for _ in range(20):
        a, b = IdentityKey.generate(), IdentityKey.generate()
        assert a.public().sign_pub == eddsa.import_private_key(a.sign_seed).public_key().export_key(format="raw")
        ours = DH.import_x25519_private_key(a.agree_seed)
        assert a.public().agree_pub == ours.public_key().export_key(format="raw")
        theirs = DH.import_x25519_public_key(b.public().agree_pub)
        assert a.agree(b.public().agree_pub) == DH.key_agreement(static_priv=ours, static_pub=theirs,
                                                                 kdf=lambda z: bytes(z))
    low_order = [bytes(32), (1).to_bytes(32, "little"), h(
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")]
    me = IdentityKey(sign_seed=bytes(32), agree_seed=ECC.generate(curve="Curve25519").seed)
    for point in low_order:  # small-order points give an all-zero secret: refused, not used
        with pytest.raises(KeyFormatError):
            me.agree(point)


# -- the checks of a card's public keys (libsodium; the pure-Python form where its build lacks crypto_core) --

_P = 2**255 - 19


def _enc(point):
    x, y, z, _ = point
    zi = pow(z, -1, _P)
    x, y = x * zi % _P, y * zi % _P
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def _decoded(key: bytes):
    return identity._ed_decode(int.from_bytes(key, "little") & ((1 << 255) - 1), key[31] >> 7)


def _ed25519_cases() -> dict[str, list[bytes]]:
    """Keys by what is wrong with them: every small-order point (both sign bits), non-canonical encodings,
    points outside the prime-order subgroup (a real key plus a torsion point), not on the curve, valid."""
    valid = [IdentityKey(sign_seed=bytes([i]) * 32, agree_seed=bytes(32)).public().sign_pub for i in range(1, 9)]
    eight = h("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")  # a point of order 8
    torsion = [identity._ed_mul(k, _decoded(eight)) for k in range(8)]
    small = {_enc(t) for t in torsion}
    small |= {bytes(s[:31]) + bytes([s[31] | 0x80]) for s in small}  # the sign bit set (x = 0: no such point)
    return {
        "small order": sorted(small),
        "not canonically encoded": [((_P + k) | (s << 255)).to_bytes(32, "little") for k in (0, 1, 2, 18)
                                    for s in (0, 1)],
        "not in the prime-order subgroup": [_enc(identity._ed_add(_decoded(v), t)) for v in valid[:3]
                                            for t in torsion[1:4]],
        "not a point of the curve": [(y | (s << 255)).to_bytes(32, "little") for y in (2, 7) for s in (0, 1)],
        "": valid,
    }


@pytest.fixture(params=["libsodium", "python"])
def key_check(request, monkeypatch):
    """The card key check on each path: libsodium's crypto_core, or its pure-Python form."""
    if request.param == "python":
        monkeypatch.setenv("PPRL_NO_SODIUM_CORE", "1")
    else:
        monkeypatch.delenv("PPRL_NO_SODIUM_CORE", raising=False)
        if not nacl.bindings.has_crypto_core_ed25519:
            pytest.skip("this PyNaCl's libsodium is a minimal build")
    identity._key_problem.cache_clear()
    yield request.param
    identity._key_problem.cache_clear()


def test_ed25519_key_check_is_libsodiums_on_both_paths(key_check):
    agree = IdentityKey.generate().public().agree_pub
    for reason, keys in _ed25519_cases().items():
        assert keys
        for key in keys:
            assert bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key)) is (reason == ""), key.hex()
            assert identity._ed25519_valid(key) is (reason == ""), (key_check, key.hex())
            if reason:
                assert reason in identity._ed25519_problem(key)
                with pytest.raises(KeyFormatError, match="not a valid Ed25519/X25519 public key"):
                    PublicIdentity(sign_pub=key, agree_pub=agree)
            else:
                assert identity._ed25519_problem(key) == ""
                PublicIdentity(sign_pub=key, agree_pub=agree)


def test_x25519_key_check_refuses_what_pycryptodome_refused():
    from Crypto.Protocol import DH

    p = _P
    x1 = 325606250916557431795983626356110631294008115727848805560023387167927233504
    x2 = 39382357235489614581723060781553021112529911719440698176882885853963445705823
    edges = [0, 1, 2, 9, x1, x2, p - 1, p, p + 1, p + 2, 2**255 - 1]
    keys = [(u | (top << 255)).to_bytes(32, "little") for u in edges for top in (0, 1)]
    keys += [secrets.token_bytes(32) for _ in range(200)]
    sign = IdentityKey.generate().public().sign_pub
    for key in keys:
        try:
            DH.import_x25519_public_key(key)
            theirs = True
        except ValueError:
            theirs = False
        assert (identity._x25519_problem(key) == "") is theirs, key.hex()
        if not theirs:
            with pytest.raises(KeyFormatError):
                PublicIdentity(sign_pub=sign, agree_pub=key)


def test_a_card_with_a_small_order_signing_key_is_refused(tmp_path, key_check):
    from cli_runner import refused, run

    from pprl.protocol.files import load_card

    run("init", "platform_1", "--role", "platform", "--dir", tmp_path)
    run("init", "bureau", "--role", "bureau", "--dir", tmp_path)
    card = json.loads((tmp_path / "platform_1.card.json").read_text())
    for small in (bytes(32), (1).to_bytes(32, "little"), h("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")):
        card["signer"]["sign_pub"] = base64.b64encode(small).decode()
        evil = tmp_path / "evil.card.json"
        evil.write_text(json.dumps(card))
        with pytest.raises(KeyFormatError, match="evil.card.json.*small order"):
            load_card(evil)
        out = tmp_path / "linkage.json"
        line = refused(run("link", "--me", tmp_path / "bureau.key", "--cards", evil, "--submissions",
                           tmp_path / "none.json", "--out", out, ok=False), out, "evil.card.json", "small order")
        assert "Ed25519" in line
