"""Paillier vectors: known answers, homomorphic algebra, serialisation, phe interop.

Most tests use a 512-bit key (``_allow_insecure``) so the file stays fast; the
arithmetic does not depend on the key size.
"""

from __future__ import annotations

import base64
import random
from decimal import Decimal

import numpy as np
import phe
import pytest

from pprl.crypto.paillier.vector import (
    EncryptedVector,
    PaillierPrivateKey,
    PaillierPublicKey,
    decode_fixed,
    decrypt_vector,
    encode_fixed,
    encrypt_vector,
    generate_keypair,
    raw_encrypt,
)
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    DocumentError,
    KeyFormatError,
    KeyMismatchError,
    PPRLError,
)

# Toy known-answer vector (the classic textbook example): p=293, q=433, g=n+1.
TOY_P, TOY_Q, TOY_R = 293, 433, 74384
TOY_M, TOY_C = 10100, 935906717


@pytest.fixture(scope="module")
def keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_keypair(512, _allow_insecure=True)


@pytest.fixture(scope="module")
def other_keys() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    return generate_keypair(512, _allow_insecure=True)


@pytest.fixture(scope="module")
def toy() -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    pub = PaillierPublicKey(TOY_P * TOY_Q)
    return pub, PaillierPrivateKey(pub, TOY_P, TOY_Q)


# --- known answers -------------------------------------------------------------------


def test_toy_known_answer_encrypt(toy):
    pub, _ = toy
    assert pub.n == 126869 and pub.g == 126870 and pub.nsquare == 126869**2
    assert raw_encrypt(pub, TOY_M, TOY_R) == TOY_C
    # phe computes the same textbook value for the same r.
    assert pub.to_phe().raw_encrypt(TOY_M, r_value=TOY_R) == TOY_C


def test_toy_known_answer_decrypt(toy):
    pub, priv = toy
    assert decrypt_vector(priv, EncryptedVector(pub, [TOY_C])) == [TOY_M]
    assert priv.to_phe().raw_decrypt(TOY_C) == TOY_M


def test_raw_encrypt_refuses_bad_inputs(toy):
    pub, _ = toy
    with pytest.raises(DataValidationError):
        raw_encrypt(pub, pub.n, TOY_R)  # m must be < n
    with pytest.raises(DataValidationError):
        raw_encrypt(pub, 1, 0)
    with pytest.raises(DataValidationError):
        raw_encrypt(pub, 1, TOY_P)  # shares a factor with n


# --- round trips and algebra ------------------------------------------------------------

_rng = random.Random(20240607)
VECTORS = {
    "empty": [],
    "zero": [0],
    "small": [1, -1, 0, 2, -2, 10100],
    "random": [_rng.randint(-(10**12), 10**12) for _ in range(40)],
    "scores": [153240, -2, 0, 99999999, -99999999],
}


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_round_trip(keys, name):
    pub, priv = keys
    values = VECTORS[name]
    enc = encrypt_vector(pub, values)
    assert len(enc) == len(values)
    assert decrypt_vector(priv, enc) == values


def test_round_trip_range_edges_and_numpy(keys):
    pub, priv = keys
    edge = [pub.max_int, -pub.max_int, pub.max_int - 1, -pub.max_int + 1]
    assert decrypt_vector(priv, encrypt_vector(pub, edge)) == edge
    arr = np.array([3, -4, 0, 2**40], dtype=np.int64)
    assert decrypt_vector(priv, encrypt_vector(pub, arr)) == arr.tolist()


def test_encryption_is_randomised(keys):
    pub, _ = keys
    a, b = encrypt_vector(pub, [5, 5]), encrypt_vector(pub, [5, 5])
    assert len(set(a.ciphertexts + b.ciphertexts)) == 4


@pytest.mark.parametrize(
    "bad",
    [[1.5], [True], ["7"], [None], np.array([1.0, 2.0]), np.array([[1, 2]])],
    ids=["float", "bool", "str", "none", "float-array", "2d-array"],
)
def test_encrypt_refuses_non_integers(keys, bad):
    with pytest.raises(DataValidationError):
        encrypt_vector(keys[0], bad)


def test_encrypt_refuses_out_of_range_without_echoing_value(keys):
    pub, _ = keys
    too_big = pub.n // 3
    for value in (too_big, -too_big):
        with pytest.raises(PPRLError) as info:
            encrypt_vector(pub, [0, value])
        assert "position 2" in str(info.value)
        assert str(abs(value)) not in str(info.value)


def test_addition_is_elementwise(keys):
    pub, priv = keys
    a = [_rng.randint(-(10**9), 10**9) for _ in range(25)]
    b = [_rng.randint(-(10**9), 10**9) for _ in range(25)]
    total = encrypt_vector(pub, a) + encrypt_vector(pub, b)
    assert decrypt_vector(priv, total) == [x + y for x, y in zip(a, b)]


def test_sum_over_list_and_subtraction(keys):
    pub, priv = keys
    rows = [[1, 2, 3], [-10, 0, 7], [100, -200, 0], [5, 5, 5]]
    encs = [encrypt_vector(pub, r) for r in rows]
    assert decrypt_vector(priv, sum(encs)) == [sum(col) for col in zip(*rows)]
    assert decrypt_vector(priv, np.int64(0) + encs[0]) == rows[0]
    assert decrypt_vector(priv, encs[0] - encs[1]) == [11, 2, -4]
    assert decrypt_vector(priv, -encs[0]) == [-1, -2, -3]


def test_scalar_multiplication(keys):
    pub, priv = keys
    enc = encrypt_vector(pub, [3, -4, 0, 25])
    assert decrypt_vector(priv, enc * 7) == [21, -28, 0, 175]
    assert decrypt_vector(priv, 7 * enc) == [21, -28, 0, 175]
    assert decrypt_vector(priv, np.int64(-3) * enc) == [-9, 12, 0, -75]
    assert decrypt_vector(priv, enc * 0) == [0, 0, 0, 0]
    assert decrypt_vector(priv, enc * [1, 2, 3, -1]) == [3, -8, 0, -25]
    assert decrypt_vector(priv, enc * np.array([2, 2, 2, 2])) == [6, -8, 0, 50]
    with pytest.raises(DataValidationError):
        enc * [1, 2]
    with pytest.raises(TypeError):
        enc * 1.5


def test_sum_groups_matches_plaintext_sums(keys):
    pub, priv = keys
    values = [_rng.randint(-1000, 1000) for _ in range(30)]
    groups = [[0, 1, 2], [29], [], list(range(10, 30)), np.array([5, 3]), range(3, 5)]
    enc = encrypt_vector(pub, values).sum_groups(groups)
    assert len(enc) == len(groups)
    assert decrypt_vector(priv, enc) == [sum(values[i] for i in g) for g in groups]


@pytest.mark.parametrize("groups", [[[0, 3]], [[-1]], [[0, 0]], [[1.0]]])
def test_sum_groups_refuses_bad_indices(keys, groups):
    enc = encrypt_vector(keys[0], [1, 2, 3])
    with pytest.raises(DataValidationError):
        enc.sum_groups(groups)


def test_indexing(keys):
    pub, priv = keys
    values = [10, 11, 12, 13, 14]
    enc = encrypt_vector(pub, values)
    assert decrypt_vector(priv, enc[1]) == [11]
    assert decrypt_vector(priv, enc[-1]) == [14]
    assert decrypt_vector(priv, enc[np.int64(2)]) == [12]
    assert decrypt_vector(priv, enc[1:4]) == [11, 12, 13]
    assert decrypt_vector(priv, enc[[4, 0]]) == [14, 10]
    assert decrypt_vector(priv, enc[np.array([3, 3])]) == [13, 13]
    assert decrypt_vector(priv, enc[np.array([True, False, True, False, False])]) == [10, 12]
    assert [decrypt_vector(priv, e)[0] for e in enc] == values
    with pytest.raises(IndexError):
        enc[5]
    with pytest.raises(IndexError):
        enc[[0, 9]]


def test_concat(keys, other_keys):
    pub, priv = keys
    a, b = encrypt_vector(pub, [1, 2]), encrypt_vector(pub, [-3])
    assert decrypt_vector(priv, EncryptedVector.concat([a, b, a])) == [1, 2, -3, 1, 2]
    with pytest.raises(DataValidationError):
        EncryptedVector.concat([])
    with pytest.raises(KeyMismatchError):
        EncryptedVector.concat([a, encrypt_vector(other_keys[0], [1])])


def test_rerandomize_changes_ciphertexts_not_plaintexts(keys):
    pub, priv = keys
    enc = encrypt_vector(pub, [7, -7, 0])
    fresh = enc.rerandomize()
    assert fresh != enc
    assert not set(fresh.ciphertexts) & set(enc.ciphertexts)
    assert decrypt_vector(priv, fresh) == [7, -7, 0]


def test_overflow_is_detected_not_wrapped(keys):
    pub, priv = keys
    enc = encrypt_vector(pub, [pub.max_int, 1])
    with pytest.raises(DecryptionError) as info:
        decrypt_vector(priv, enc + enc)
    assert "position 1" in str(info.value)


def test_length_mismatch_refused(keys):
    pub, _ = keys
    with pytest.raises(DataValidationError):
        encrypt_vector(pub, [1, 2]) + encrypt_vector(pub, [1])


def test_key_mismatch(keys, other_keys):
    (pub, _priv), (pub2, priv2) = keys, other_keys
    a, b = encrypt_vector(pub, [1]), encrypt_vector(pub2, [1])
    with pytest.raises(KeyMismatchError):
        a + b
    with pytest.raises(KeyMismatchError):
        decrypt_vector(priv2, a)
    with pytest.raises(KeyMismatchError):
        PaillierPrivateKey(pub, priv2.p, priv2.q)


# --- serialisation -----------------------------------------------------------------------


def test_bytes_round_trip_fixed_width(keys):
    pub, priv = keys
    assert pub.ciphertext_bytes == 128  # 512-bit n -> 1024-bit n^2
    # The empty group gives ciphertext 1: still written at full width.
    empty_sum = encrypt_vector(pub, [1]).sum_groups([[]])
    enc = EncryptedVector.concat([encrypt_vector(pub, [0, -5, 123]), empty_sum])
    blob = enc.to_bytes()
    assert len(blob) == 4 * pub.ciphertext_bytes
    assert blob[-pub.ciphertext_bytes :] == (1).to_bytes(pub.ciphertext_bytes, "big")
    back = EncryptedVector.from_bytes(pub, blob)
    assert back == enc
    assert decrypt_vector(priv, back) == [0, -5, 123, 0]
    assert EncryptedVector.from_bytes(pub, b"") == EncryptedVector(pub, [])


def test_from_bytes_refuses_tampering(keys):
    pub, _ = keys
    width = pub.ciphertext_bytes
    blob = encrypt_vector(pub, [1, 2]).to_bytes()
    for bad in (blob[:-1], blob + b"\x00", blob[1:]):
        with pytest.raises(DocumentError):
            EncryptedVector.from_bytes(pub, bad)
    for c in (0, pub.nsquare, pub.n, 2**(8 * width) - 1):
        with pytest.raises(DocumentError):
            EncryptedVector.from_bytes(pub, blob[:width] + c.to_bytes(width, "big"))
    with pytest.raises(DocumentError):
        EncryptedVector.from_bytes(pub, "not bytes")  # type: ignore[arg-type]


def test_non_unit_ciphertext_named_by_position_in_a_long_vector(keys):
    """Units are checked a block at a time; a bad block is rescanned to name the exact position."""
    pub, _ = keys
    good = [int(c) for c in encrypt_vector(pub, list(range(10)), workers=1).ciphertexts] * 1000
    assert len(EncryptedVector(pub, good)) == 10_000
    for pos in (1, 4096, 4097, 10_000):
        bad = list(good)
        bad[pos - 1] = pub.n * 7 % pub.nsquare
        with pytest.raises(DocumentError, match=f"position {pos} "):
            EncryptedVector(pub, bad)


def test_public_key_dict_round_trip_and_fingerprint(keys, other_keys):
    pub, _ = keys
    d = pub.to_dict()
    assert d["bits"] == 512 and len(base64.b64decode(d["n"])) == 64
    assert PaillierPublicKey.from_dict(d, allow_small=True) == pub
    assert len(pub.fingerprint) == 32 and int(pub.fingerprint, 16) >= 0
    assert pub.fingerprint == PaillierPublicKey(pub.n).fingerprint
    assert pub.fingerprint != other_keys[0].fingerprint


def _b64(x: int, width: int | None = None) -> str:
    width = width or (x.bit_length() + 7) // 8
    return base64.b64encode(x.to_bytes(width, "big")).decode()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: [d],
        lambda d: {"bits": d["bits"]},
        lambda d: {**d, "n": "!!notbase64!!"},
        lambda d: {**d, "n": 12345},
        lambda d: {**d, "bits": d["bits"] + 1},
        lambda d: {**d, "bits": True},
        lambda d: {**d, "n": _b64(int.from_bytes(base64.b64decode(d["n"]), "big") + 1)},  # even
        lambda d: {**d, "n": "AA" + d["n"]},  # non-canonical (leading zero byte)
        lambda d: {"n": _b64(2**521 - 1), "bits": 521},  # prime
    ],
)
def test_public_key_malformed_dicts(keys, mutate):
    with pytest.raises(KeyFormatError):
        PaillierPublicKey.from_dict(mutate(keys[0].to_dict()), allow_small=True)


def test_small_public_key_refused_by_default(keys):
    with pytest.raises(KeyFormatError):
        PaillierPublicKey.from_dict(keys[0].to_dict())


def test_private_key_dict_round_trip(keys, other_keys):
    pub, priv = keys
    d = priv.to_dict()
    assert PaillierPrivateKey.from_dict(d, allow_small=True) == priv
    assert PaillierPrivateKey.from_dict(d, pub, allow_small=True) == priv
    bare = {"p": d["p"], "q": d["q"]}
    assert PaillierPrivateKey.from_dict(bare, pub) == priv
    assert PaillierPrivateKey.from_dict(bare, allow_small=True).public_key == pub
    with pytest.raises(KeyMismatchError):
        PaillierPrivateKey.from_dict(d, other_keys[0], allow_small=True)
    with pytest.raises(KeyMismatchError):
        PaillierPrivateKey.from_dict(bare, other_keys[0])
    with pytest.raises(KeyFormatError):
        PaillierPrivateKey.from_dict(bare)  # 512-bit n without allow_small


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d, priv: "p,q",
        lambda d, priv: {"q": d["q"]},
        lambda d, priv: {**d, "p": "***"},
        lambda d, priv: {**d, "p": _b64(1)},
        lambda d, priv: {**d, "q": d["p"]},
    ],
)
def test_private_key_malformed_dicts(keys, mutate):
    pub, priv = keys
    with pytest.raises((KeyFormatError, KeyMismatchError)):
        PaillierPrivateKey.from_dict(mutate(priv.to_dict(), priv), pub)


def test_private_key_composite_factor_refused():
    # n = 15 * 7 = 105: p*q matches n, but 15 is not prime.
    with pytest.raises(KeyFormatError):
        PaillierPrivateKey(PaillierPublicKey(105), 15, 7)


def test_private_key_never_shown(keys):
    _, priv = keys
    for text in (repr(priv), str(priv)):
        for secret in (priv.p, priv.q):
            assert str(secret) not in text
            assert hex(secret)[2:] not in text
        assert "p=" not in text and "q=" not in text


def test_generate_keypair_guards():
    with pytest.raises(DataValidationError):
        generate_keypair(512)
    with pytest.raises(DataValidationError):
        generate_keypair(1025)
    with pytest.raises(DataValidationError, match="at least 2048"):  # 1024-bit keys are for tests only
        generate_keypair(1024)
    small, _ = generate_keypair(1024, _allow_insecure=True)
    with pytest.raises(KeyFormatError, match="too small"):  # and loaders refuse them
        PaillierPublicKey.from_dict(small.to_dict())
    pub, priv = generate_keypair(2048)
    assert pub.bits == 2048 and priv.p * priv.q == pub.n
    assert PaillierPublicKey.from_dict(pub.to_dict()) == pub


# --- phe interop -------------------------------------------------------------------------


def test_phe_interop(keys):
    pub, priv = keys
    phe_pub, phe_priv = pub.to_phe(), priv.to_phe()
    assert PaillierPublicKey.from_phe(phe_pub) == pub
    assert PaillierPrivateKey.from_phe(phe_priv) == priv
    values = [42, -17, 0, 10**15]
    theirs = [phe_pub.encrypt(x).ciphertext(be_secure=False) for x in values]
    assert decrypt_vector(priv, EncryptedVector(pub, theirs)) == values
    ours = encrypt_vector(pub, values)
    assert [phe_priv.decrypt(phe.EncryptedNumber(phe_pub, c)) for c in ours.ciphertexts] == values
    assert [phe_priv.raw_decrypt(c) for c in ours.ciphertexts] == [v % pub.n for v in values]
    # Homomorphic sum taken by phe agrees with ours.
    phe_sum = sum(phe.EncryptedNumber(phe_pub, c) for c in ours.ciphertexts)
    assert phe_priv.decrypt(phe_sum) == sum(values)


# --- parallel ------------------------------------------------------------------------------


def test_parallel_matches_sequential(keys, capsys):
    pub, priv = keys
    values = [_rng.randint(-(10**6), 10**6) for _ in range(300)]
    seq = encrypt_vector(pub, values, workers=1)
    par = encrypt_vector(pub, values, workers=2, progress=True)
    assert "encrypt" in capsys.readouterr().err
    assert par != seq  # fresh randomness in the workers
    assert decrypt_vector(priv, par, workers=2) == values
    assert decrypt_vector(priv, seq, workers=1) == values
    assert decrypt_vector(priv, par.rerandomize(workers=2), workers=1) == values


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_bad_worker_count(keys, workers):
    with pytest.raises(DataValidationError):
        encrypt_vector(keys[0], [1], workers=workers)


# --- fixed point ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "decimals", "expected"),
    [
        ("1532.40", 2, 153240),
        ("-0.015", 2, -2),  # half-even: -1.5 -> -2
        ("0.025", 2, 2),  # half-even: 2.5 -> 2
        ("0.035", 2, 4),
        ("-0.025", 2, -2),
        ("0.0250001", 2, 3),
        ("1e3", 1, 10000),
        (" 7 ", 0, 7),
        ("-0.001", 2, 0),
        ("1e-50", 2, 0),
        (0.1, 3, 100),
        (-2.675, 2, -268),  # decimal "2.675", not the binary float below it
        (np.float32(0.1), 1, 1),
        (12, 2, 1200),
        (np.int64(-3), 1, -30),
        (Decimal("99.995"), 2, 10000),
    ],
)
def test_encode_fixed(value, decimals, expected):
    assert encode_fixed([value], decimals) == [expected]


def test_decode_fixed_is_exact():
    expected = [Decimal("1532.40"), Decimal("-0.02"), Decimal("0.00")]
    assert decode_fixed([153240, -2, 0], 2) == expected
    assert str(decode_fixed([153240], 2)[0]) == "1532.40"
    big = 10**40 + 7  # beyond the default 28-digit decimal context
    assert str(decode_fixed([big], 3)[0]) == "10000000000000000000000000000000000000.007"
    assert decode_fixed(encode_fixed(["1532.40", "-0.015"], 2), 2) == expected[:2]


@pytest.mark.parametrize(
    "bad",
    ["abc", "", "NaN", "-inf", "Infinity", "1_000", "1,5"]
    + [float("nan"), float("inf"), None, True, [1]],
)
def test_encode_fixed_rejects_with_position_not_value(bad):
    with pytest.raises(DataValidationError) as info:
        encode_fixed(["1.0", "2.0", bad], 2)
    message = str(info.value)
    assert "position 3" in message
    if isinstance(bad, str) and bad:
        assert bad.lower() not in message.lower()


def test_fixed_point_argument_checks():
    with pytest.raises(DataValidationError):
        encode_fixed(["1"], -1)
    with pytest.raises(DataValidationError):
        decode_fixed([1.5], 2)  # type: ignore[list-item]


def test_fixed_point_through_encryption(keys):
    pub, priv = keys
    scores = ["1532.40", "-0.015", "0", "250.5"]
    enc = encrypt_vector(pub, encode_fixed(scores, 2))
    total = decode_fixed(decrypt_vector(priv, enc.sum_groups([[0, 1, 2, 3]])), 2)
    assert total == [Decimal("1532.40") - Decimal("0.02") + Decimal("250.50")]
