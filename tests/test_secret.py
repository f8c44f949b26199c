"""The contributory linkage secret among platforms."""

import os
import stat

import pytest

from pprl.errors import DecryptionError, DocumentError, KeyMismatchError
from pprl.protocol.files import combine_secrets, load_secret, share_secret

PLATFORMS = ["platform_1", "platform_2", "platform_3"]


@pytest.fixture()
def shares(parties, tmp_path):
    keys, cards = parties
    paths = []
    for name in PLATFORMS:
        peers = [cards[p] for p in PLATFORMS if p != name]
        paths.append(share_secret(keys[name], peers, tmp_path / f"{name}.share.json"))
    return paths


def test_all_platforms_get_the_same_secret(parties, shares, tmp_path):
    keys, _ = parties
    results = [combine_secrets(keys[n], shares, tmp_path / f"{n}.secret") for n in PLATFORMS]
    assert len({r.secret for r in results}) == 1
    assert len(results[0].secret) == 32
    loaded = load_secret(tmp_path / "platform_1.secret")
    assert loaded.secret == results[0].secret
    assert stat.S_IMODE(os.stat(tmp_path / "platform_1.secret").st_mode) == 0o600
    assert loaded.secret.hex() not in repr(loaded)


def test_fresh_ceremony_gives_a_fresh_secret(parties, shares, tmp_path):
    keys, cards = parties
    first = combine_secrets(keys["platform_1"], shares, tmp_path / "a.secret")
    again = [
        share_secret(keys[n], [cards[p] for p in PLATFORMS if p != n], tmp_path / f"{n}.again.json") for n in PLATFORMS
    ]
    second = combine_secrets(keys["platform_1"], again, tmp_path / "b.secret")
    assert first.secret != second.secret


def test_bureau_cannot_open(parties, shares, tmp_path):
    keys, _ = parties
    with pytest.raises(DecryptionError, match="not among this share's recipients"):
        combine_secrets(keys["bureau"], shares, tmp_path / "bureau.secret")
    assert not (tmp_path / "bureau.secret").exists()


def test_missing_and_duplicated_shares(parties, shares, tmp_path):
    keys, _ = parties
    with pytest.raises(DocumentError, match="missing share from platform_3"):
        combine_secrets(keys["platform_1"], shares[:2], tmp_path / "x.secret")
    with pytest.raises(DocumentError, match="second share"):
        combine_secrets(keys["platform_1"], [*shares, shares[1]], tmp_path / "x.secret")
    with pytest.raises(DocumentError, match="own share"):
        combine_secrets(keys["platform_1"], shares[1:], tmp_path / "x.secret")
    assert not (tmp_path / "x.secret").exists()


def test_share_from_a_different_ceremony_is_refused(parties, shares, tmp_path):
    keys, cards = parties
    other = share_secret(keys["platform_2"], [cards["platform_1"]], tmp_path / "other.json")
    with pytest.raises(KeyMismatchError, match="different participants"):
        combine_secrets(keys["platform_1"], [shares[0], other, shares[2]], tmp_path / "x.secret")


def test_a_share_replayed_from_another_ceremony_is_refused(parties, tmp_path):
    keys, cards = parties
    names = ["platform_1", "platform_2", "platform_3"]
    today = [share_secret(keys[n], [cards[p] for p in names if p != n], tmp_path / f"{n}.json") for n in names]
    old = share_secret(keys["platform_2"], [cards["platform_1"], cards["platform_3"]], tmp_path / "old.json",
                       ceremony="0" * 32)  # the same participants, an earlier ceremony
    with pytest.raises(KeyMismatchError, match="another ceremony"):
        combine_secrets(keys["platform_1"], [today[0], old, today[2]], tmp_path / "x.secret")
    assert not (tmp_path / "x.secret").exists()
    a = combine_secrets(keys["platform_1"], today, tmp_path / "a.secret")
    b = combine_secrets(keys["platform_3"], today, tmp_path / "b.secret")
    assert a.secret == b.secret


def test_shares_are_wrapped_under_a_one_time_key(parties, tmp_path):
    """Forward secrecy: the author's identity key, stolen later, does not open what it sent."""
    from pprl.crypto.exchange import unwrap
    from pprl.documents import Share, load
    from pprl.errors import DecryptionError

    keys, cards = parties
    path = share_secret(keys["platform_1"], [cards["platform_2"]], tmp_path / "s.json")
    doc = load(path, Share)
    context = b"pprl-linkage-secret-share-v1" + bytes.fromhex(doc.ceremony)
    blob = doc.payload.wrapped["platform_2"]
    with pytest.raises(DecryptionError):  # the author, with its own long-term key and the peer's card
        unwrap(keys["platform_1"].identity, "platform_2", cards["platform_2"].public.agree_pub, "platform_1",
               blob, context)
    assert len(unwrap(keys["platform_2"].identity, "platform_2", doc.ephemeral_pub, "platform_1", blob, context)) == 32
