"""Identity keys and pairwise exchange, checked against RFC vectors."""

import json
from pathlib import Path

import pytest

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
