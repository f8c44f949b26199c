"""DJN-form encryption, fixed-base tables and their on-disk cache, DJN keys in dict form.

Keys are 512/1024 bits (``_allow_insecure`` for 512) except one 2048-bit smoke test.
"""

from __future__ import annotations

import base64
import secrets

import gmpy2
import numpy as np
import pandas as pd
import phe
import pytest

from pprl.crypto.paillier import djn as paillier_djn
from pprl.crypto.paillier.djn import (
    FixedBaseTable,
    default_window,
    djn_params,
    get_table,
    min_exponent_bits,
)
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    decrypt_vector,
    encrypt_vector,
    generate_keypair,
)
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    KeyFormatError,
    PolicyError,
)


@pytest.fixture(autouse=True)
def _no_default_disk_cache(monkeypatch):
    monkeypatch.delenv("PPRL_CACHE_DIR", raising=False)


@pytest.fixture(scope="module")
def keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_keypair(512, _allow_insecure=True)


@pytest.fixture(scope="module")
def keys1024() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_keypair(1024, _allow_insecure=True)


VALUES = [0, 1, -1, 153240, -99999999, 10**30, -(10**30), 7, -7, 42]


# --- keys ------------------------------------------------------------------------------------


def test_generated_keys_are_blum_with_djn_base(keys1024):
    pub, priv = keys1024
    assert pub.bits == 1024 and pub.has_djn
    assert priv.p % 4 == 3 and priv.q % 4 == 3 and gmpy2.gcd(priv.p - 1, priv.q - 1) == 2
    # h_s is an n-th residue of large order: h_s^((p-1)(q-1)) = 1, h_s != ±1 mod n.
    assert gmpy2.powmod(pub.djn_hs, (priv.p - 1) * (priv.q - 1), pub.nsquare) == 1
    assert pub.djn_hs % pub.n not in (1, pub.n - 1)
    plain_pub, _ = generate_keypair(512, djn=False, _allow_insecure=True)
    assert not plain_pub.has_djn and "djn_hs" not in plain_pub.to_dict()


def test_key_dict_with_djn_round_trips_and_old_dicts_load(keys1024):
    pub, priv = keys1024
    d = pub.to_dict()
    assert len(base64.b64decode(d["djn_hs"])) == pub.ciphertext_bytes
    back = PaillierPublicKey.from_dict(d, allow_small=True)
    assert back == pub and back.djn_hs == pub.djn_hs
    old = {"n": d["n"], "bits": d["bits"]}  # written before djn_hs existed
    legacy = PaillierPublicKey.from_dict(old, allow_small=True)
    assert legacy == pub and not legacy.has_djn and legacy.fingerprint == pub.fingerprint
    assert hash(legacy) == hash(pub)
    pd_ = priv.to_dict()
    assert PaillierPrivateKey.from_dict(pd_, allow_small=True).public_key.djn_hs == pub.djn_hs
    # An old public key passed alongside a new private key file keeps the DJN base.
    assert PaillierPrivateKey.from_dict(pd_, legacy, allow_small=True).public_key.djn_hs == pub.djn_hs
    # Ciphertexts under the legacy key object and the DJN one mix freely.
    enc = encrypt_vector(pub, [5]) + encrypt_vector(legacy, [6])
    assert decrypt_vector(priv, enc) == [11]


@pytest.mark.parametrize(
    "bad_hs",
    [lambda n: 1, lambda n: n * n - 1, lambda n: n + 1, lambda n: n, lambda n: n * n + 5],
    ids=["one", "minus-one", "one-mod-n", "shares-factor", "too-big"],
)
def test_bad_djn_base_refused(keys, bad_hs):
    pub, _ = keys
    with pytest.raises(KeyFormatError):
        PaillierPublicKey(pub.n, bad_hs(pub.n))


def test_djn_base_field_malformed(keys):
    d = keys[0].to_dict()
    for bad in ("!!", base64.b64encode(b"\x01" * 5).decode(), 17):
        with pytest.raises(KeyFormatError):
            PaillierPublicKey.from_dict({**d, "djn_hs": bad}, allow_small=True)


def test_private_key_refuses_non_residue_base(keys):
    pub, priv = keys
    # (1+n)·h_s is a unit but not an n-th residue: it would shift every plaintext. It is not the base
    # derived from n either, so the public key alone already refuses it.
    with pytest.raises(KeyFormatError, match="derived from n"):
        PaillierPublicKey(pub.n, pub.djn_hs * (1 + pub.n) % pub.nsquare)


def test_the_djn_base_is_derived_from_n_and_nobody_chooses_it(keys):
    from pprl.crypto.paillier.keys import derive_djn_hs

    pub, priv = keys
    assert pub.djn_hs == derive_djn_hs(pub.n)  # anyone can recompute it from n alone
    order_two = pub.nsquare - 1  # (-1)^n: every ciphertext would carry r^n = ±1
    for chosen in (order_two, pow(7, pub.n, pub.nsquare)):  # even a genuine n-th residue, if chosen
        with pytest.raises(KeyFormatError):
            PaillierPublicKey(pub.n, chosen)


def test_with_djn_upgrades_an_old_key():
    pub, priv = generate_keypair(512, djn=False, _allow_insecure=True)
    upgraded = priv.with_djn()
    assert upgraded.public_key.has_djn and upgraded.public_key == pub
    assert upgraded.with_djn() is upgraded
    assert decrypt_vector(priv, encrypt_vector(upgraded.public_key, VALUES)) == VALUES


# --- DJN encryption --------------------------------------------------------------------------


@pytest.mark.parametrize("count", [len(VALUES), 300])  # below / above the table threshold
def test_djn_round_trip_negatives_and_sums(keys, count):
    pub, priv = keys
    values = (VALUES * 40)[:count]
    enc = encrypt_vector(pub, values, method="djn", workers=1)
    assert decrypt_vector(priv, enc) == values
    total = enc.sum_groups([list(range(count)), [0, 1, 2]])
    assert decrypt_vector(priv, total) == [sum(values), sum(values[:3])]
    assert decrypt_vector(priv, enc + enc) == [2 * v for v in values]


def test_djn_is_default_and_randomised(keys):
    pub, _ = keys
    a, b = encrypt_vector(pub, [5, 5]), encrypt_vector(pub, [5, 5])
    assert len(set(a.ciphertexts + b.ciphertexts)) == 4
    assert djn_params(pub, 1) is not None and djn_params(pub, 1, method="plain") is None


def test_phe_decrypts_djn_ciphertexts(keys1024):
    pub, priv = keys1024
    phe_pub, phe_priv = pub.to_phe(), priv.to_phe()
    enc = encrypt_vector(pub, VALUES, method="djn")
    assert [phe_priv.decrypt(phe.EncryptedNumber(phe_pub, c)) for c in enc.ciphertexts] == VALUES
    phe_sum = sum(phe.EncryptedNumber(phe_pub, c) for c in enc.ciphertexts)
    assert phe_priv.decrypt(phe_sum) == sum(VALUES)


def test_plain_method_and_missing_base(keys):
    pub, priv = keys
    assert decrypt_vector(priv, encrypt_vector(pub, VALUES, method="plain")) == VALUES
    legacy = pub.without_djn()
    assert decrypt_vector(priv, encrypt_vector(legacy, VALUES)) == VALUES  # falls back to r^n
    with pytest.raises(DataValidationError):
        encrypt_vector(legacy, [1], method="djn")
    with pytest.raises(DataValidationError):
        encrypt_vector(pub, [1], method="fast")


def test_exponent_length_policy(keys1024):
    pub, priv = keys1024
    assert djn_params(pub, 1).exponent_bits == 512  # |n|/2
    assert min_exponent_bits(2048) == 224 and min_exponent_bits(3072) == 256
    with pytest.raises(PolicyError):
        encrypt_vector(pub, [1], exponent_bits=100)
    enc = encrypt_vector(pub, [3, -3], exponent_bits=160)
    assert decrypt_vector(priv, enc) == [3, -3]
    for bad in (True, 1.5, 10**6):
        with pytest.raises(DataValidationError):
            encrypt_vector(pub, [1], exponent_bits=bad)
    with pytest.raises(DataValidationError):
        encrypt_vector(pub, [1], window=0)


def test_numpy_and_pandas_inputs_parallel_with_progress(keys, capsys):
    pub, priv = keys
    values = np.arange(-150, 150, dtype=np.int64)
    enc = encrypt_vector(pub, pd.Series(values), workers=2, progress=True)
    assert "encrypt" in capsys.readouterr().err
    assert decrypt_vector(priv, enc, workers=2) == values.tolist()
    quiet = encrypt_vector(pub, values, workers=1, progress=False)
    assert capsys.readouterr().err == ""
    assert decrypt_vector(priv, quiet.rerandomize(workers=2)) == values.tolist()
    with pytest.raises(DataValidationError):
        encrypt_vector(pub, pd.Series([1.5, 2.0]))


def test_rerandomize_uses_djn(keys):
    pub, priv = keys
    enc = encrypt_vector(pub, [7, -7])
    fresh = enc.rerandomize(method="djn")
    assert not set(fresh.ciphertexts) & set(enc.ciphertexts)
    assert decrypt_vector(priv, fresh) == [7, -7]


def test_tampered_ciphertext_is_detected(keys):
    pub, priv = keys
    enc = encrypt_vector(pub, [1])
    shifted = EncryptedVector(pub, [enc.ciphertexts[0] * (1 + (pub.n // 2) * pub.n) % pub.nsquare])
    with pytest.raises(DecryptionError):
        decrypt_vector(priv, shifted)


def test_2048_bit_smoke():
    pub, priv = generate_keypair(2048)
    assert pub.bits == 2048 and pub.has_djn
    params = djn_params(pub, 1)
    assert params.exponent_bits == 1024 and params.window == 10 and not params.use_table
    values = [123456789, -987654321, 0]
    enc = encrypt_vector(pub, values)
    assert decrypt_vector(priv, enc) == values
    assert priv.to_phe().decrypt(phe.EncryptedNumber(pub.to_phe(), enc.ciphertexts[1])) == values[1]


# --- fixed-base tables -----------------------------------------------------------------------


@pytest.mark.parametrize("window", [1, 3, 8, 10])
def test_table_pow_equals_powmod(keys, window):
    pub, _ = keys
    n2 = pub.nsquare
    table = FixedBaseTable.build(pub.djn_hs, n2, 256, window)
    for e in [0, 1, 2, 2**256 - 1, 2**window, 2 ** (window * 3) + 5] + [
        secrets.randbits(256) for _ in range(30)
    ]:
        assert table.pow(e) == gmpy2.powmod(pub.djn_hs, e, n2)
    with pytest.raises(DataValidationError):
        table.pow(2**256)
    with pytest.raises(DataValidationError):
        table.pow(-1)


def test_default_window_respects_memory_budget():
    assert default_window(512, 1024) == 10  # 2048-bit key: 54 MB
    assert default_window(768, 1536) == 9  # 3072-bit key
    big = paillier_djn.LARGE_TABLE_MEMORY_BUDGET
    assert default_window(512, 1024, big) == 12 and default_window(768, 1536, big) == 11
    for width, ell in [(512, 1024), (768, 1536), (1024, 2048)]:
        w = default_window(width, ell)
        assert -(-ell // w) * (2**w - 1) * width <= paillier_djn.TABLE_MEMORY_BUDGET


def _params(pub, cache_dir):
    return djn_params(pub, 10_000, window=6, cache_dir=cache_dir)


def test_cache_file_round_trip(keys, tmp_path, monkeypatch):
    pub, priv = keys
    params = _params(pub, tmp_path)
    assert params.use_table
    paillier_djn.clear_memory_cache()
    built = get_table(params)
    files = list(tmp_path.glob("djn-*.table"))
    assert len(files) == 1 and pub.fingerprint in files[0].name
    assert not list(tmp_path.glob(".tmp-*"))  # atomic write left no temp file
    paillier_djn.clear_memory_cache()
    monkeypatch.setattr(FixedBaseTable, "build", _forbidden_build)
    loaded = get_table(params)  # must come from disk
    assert loaded.rows == built.rows
    # The env var selects the directory; small inputs use the table once it is in memory.
    monkeypatch.setenv("PPRL_CACHE_DIR", str(tmp_path))
    paillier_djn.clear_memory_cache()
    assert not djn_params(pub, 3, window=6).use_table  # a file alone does not pay for 3 values
    big = djn_params(pub, 500, window=6)
    assert big.use_table and big.cache_dir == str(tmp_path)
    enc = encrypt_vector(pub, list(range(-250, 250)), window=6)  # loads the file
    assert decrypt_vector(priv, enc) == list(range(-250, 250))
    assert djn_params(pub, 3, window=6).use_table
    assert decrypt_vector(priv, encrypt_vector(pub, [4, -4, 0], window=6)) == [4, -4, 0]


def _forbidden_build(*args, **kwargs):
    raise AssertionError("table was rebuilt instead of loaded")


@pytest.mark.parametrize("damage", ["flip-body", "truncate", "reseal", "other-header"])
def test_corrupted_cache_is_recomputed(keys, tmp_path, damage):
    import hashlib

    pub, _ = keys
    params = _params(pub, tmp_path)
    paillier_djn.clear_memory_cache()
    good = get_table(params)
    path = next(tmp_path.glob("djn-*.table"))
    data = bytearray(path.read_bytes())
    if damage == "flip-body":
        data[len(data) // 2] ^= 0x01
    elif damage == "truncate":
        data = data[:-100]
    elif damage == "reseal":  # edit an entry and recompute the digest: algebra catches it
        body = data[:-32]
        start = body.index(b"}") + 1  # end of the JSON header: entries follow
        row5_entry1 = start + 5 * (2**6 - 1) * pub.ciphertext_bytes
        body[row5_entry1 + 5] ^= 0xFF
        data = body + hashlib.sha256(bytes(body)).digest()
    else:
        data = data.replace(b'"window":6', b'"window":7')
    path.write_bytes(bytes(data))
    paillier_djn.clear_memory_cache()
    table = FixedBaseTable.from_bytes(
        path.read_bytes(), base=pub.djn_hs, modulus=pub.nsquare, exponent_bits=256,
        window=6, fingerprint=pub.fingerprint,
    )
    assert table is None  # refused, never trusted
    again = get_table(params)  # recomputed ...
    assert again.rows == good.rows
    assert FixedBaseTable.from_bytes(  # ... and the file replaced by a good one
        path.read_bytes(), base=pub.djn_hs, modulus=pub.nsquare, exponent_bits=256,
        window=6, fingerprint=pub.fingerprint,
    ) is not None


def test_unwritable_cache_dir_is_ignored(keys, tmp_path):
    pub, _ = keys
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    params = djn_params(pub, 10_000, window=4, cache_dir=blocker / "sub")
    paillier_djn.clear_memory_cache()
    table = get_table(params)
    assert table.pow(12345) == gmpy2.powmod(pub.djn_hs, 12345, pub.nsquare)
