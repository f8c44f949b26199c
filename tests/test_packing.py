"""Packing several fixed-point score columns into one Paillier plaintext."""

from __future__ import annotations

import json
import random
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from pprl.crypto.paillier import packing
from pprl.crypto.paillier.packing import (
    PackingSpec,
    decrypt_packed,
    encrypt_packed,
    fixed_bound,
    pack_rows,
    unpack,
)
from pprl.crypto.paillier.vector import (
    EncryptedVector,
    decode_fixed,
    decrypt_vector,
    encode_fixed,
    encrypt_vector,
    generate_keypair,
)
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    DocumentError,
    KeyMismatchError,
    PolicyError,
)

_rng = random.Random(99)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024, _allow_insecure=True)


@pytest.fixture(scope="module")
def spec():
    # Scores up to ±1,000,000.00 at 2 decimals, sums of up to 1,000 records.
    return PackingSpec.plan(fixed_bound("1000000", 2), 3, 1000, key=1024, decimals=2)


def test_plan_is_tight_and_proven(spec):
    assert spec.bound == 10**8 and spec.offset == 10**8
    assert spec.slot_bits == (2 * 10**8 * 1000).bit_length() == 38
    assert 2 * spec.bound * spec.max_summands < 2**spec.slot_bits
    assert spec.total_bits == 114
    with pytest.raises(PolicyError):  # one bit less could overflow
        PackingSpec(3, spec.slot_bits - 1, spec.bound, spec.max_summands)


def test_spec_dict_round_trip(spec):
    d = json.loads(json.dumps(spec.to_dict()))
    assert d["scheme"] == "pprl-pack" and d["version"] == 1
    assert PackingSpec.from_dict(d) == spec
    legacy = {k: v for k, v in d.items() if k != "count_slot"}  # count_slot is optional
    assert PackingSpec.from_dict(legacy) == spec
    for bad in ({**d, "scheme": "x"}, {**d, "extra": 1}, {**d, "slots": "3"}, {**d, "count_slot": 1}, [d]):
        with pytest.raises(DocumentError):
            PackingSpec.from_dict(bad)
    with pytest.raises(PolicyError):  # a document cannot smuggle in an unsafe spec
        PackingSpec.from_dict({**d, "slot_bits": 20})


def test_spec_refuses_what_does_not_fit_the_key():
    wide = PackingSpec.plan(10**30, 30, 10**6)  # 30 slots of 121 bits
    with pytest.raises(PolicyError) as info:
        wide.check_key(2048)
    assert "2045" in str(info.value)
    with pytest.raises(PolicyError):
        PackingSpec.plan(10**30, 30, 10**6, key=2048)
    assert PackingSpec.plan(10**30, 16, 10**6, key=2048).total_bits == 1936  # 16·121 ≤ 2045
    with pytest.raises(PolicyError):
        PackingSpec.plan(10**30, 17, 10**6, key=2048)  # 17·121 = 2057 > 2045


def test_refusal_happens_before_packing(keys, monkeypatch):
    pub, _ = keys
    too_wide = PackingSpec.plan(10**40, 8, 10**6)  # 8·154 bits > 1021

    def boom(*args, **kwargs):
        raise AssertionError("packed before checking the spec")

    monkeypatch.setattr(packing, "pack_rows", boom)
    with pytest.raises(PolicyError):
        encrypt_packed(pub, np.zeros((2, 8), dtype=np.int64), too_wide)


@pytest.mark.parametrize(
    "bad",
    [{"slots": 0}, {"slot_bits": 0}, {"bound": -1}, {"max_summands": 0}, {"decimals": -1}, {"slots": 1.5}],
)
def test_spec_field_checks(bad):
    fields = {"slots": 3, "slot_bits": 40, "bound": 100, "max_summands": 10, "decimals": 0} | bad
    with pytest.raises(DataValidationError):
        PackingSpec(**fields)


def test_pack_unpack_round_trip_with_negatives(spec):
    rows = np.array([[0, 0, 0], [1, -1, 10**8], [-(10**8), 10**8, -5], [123, -456, 789]], dtype=np.int64)
    packed = pack_rows(rows, spec)
    assert all(0 <= p < 2**spec.total_bits for p in packed)
    assert packed[0] == sum(spec.bound << (j * spec.slot_bits) for j in range(3))
    assert (unpack(packed, spec, [1] * 4) == rows.astype(object)).all()
    assert unpack(packed, spec, np.ones(4, dtype=np.int64)).dtype == object


def test_fractional_scores_round_trip(keys, spec):
    pub, priv = keys
    scores = [["1532.40", "-0.015", "999999.99"], ["-1000000", "0.5", "12.34"]]
    fixed = np.array([encode_fixed(row, 2) for row in scores], dtype=object)
    enc = encrypt_packed(pub, fixed, spec)
    out = decrypt_packed(priv, enc, spec, [1, 1])
    decoded = [decode_fixed(list(row), spec.decimals) for row in out]
    assert decoded[0] == [Decimal("1532.40"), Decimal("-0.02"), Decimal("999999.99")]
    assert decoded[1] == [Decimal("-1000000.00"), Decimal("0.50"), Decimal("12.34")]


def test_sums_of_m_records_give_exact_column_sums(keys, spec):
    pub, priv = keys
    b = spec.bound
    records = np.array([[_rng.randint(-b, b) for _ in range(3)] for _ in range(40)], dtype=np.int64)
    records[0] = [b, b, b]
    records[1] = [-b, -b, -b]
    enc = encrypt_packed(pub, pd.DataFrame(records, columns=["a", "b", "c"]), spec)
    assert len(enc) == 40
    groups = [list(range(40)), [0, 1], [5], [], [0, 2, 4, 6, 8]]
    sums = decrypt_packed(priv, enc.sum_groups(groups), spec, [len(g) for g in groups], workers=1)
    for g, row in zip(groups, sums, strict=True):
        assert list(row) == [int(records[g, j].sum()) if g else 0 for j in range(3)]
    # The extremes at full headroom: max_summands copies of ±B in every slot.
    top = EncryptedVector.concat([enc[0]] * 1)  # one ciphertext
    total = top * spec.max_summands
    assert list(decrypt_packed(priv, total, spec, [spec.max_summands])[0]) == [b * spec.max_summands] * 3
    low = enc[1] * spec.max_summands
    assert list(decrypt_packed(priv, low, spec, [spec.max_summands])[0]) == [-b * spec.max_summands] * 3


def test_packed_plaintexts_are_plain_nonnegative_values_too(keys, spec):
    pub, priv = keys
    rows = np.array([[1, -2, 3]])
    packed = pack_rows(rows, spec)
    assert decrypt_vector(priv, encrypt_packed(pub, rows, spec)) == packed
    assert list(decrypt_packed(priv, encrypt_vector(pub, packed), spec, [1])[0]) == [1, -2, 3]


def test_full_crt_path_for_wide_specs(keys):
    pub, priv = keys
    wide = PackingSpec.plan(10**60, 4, 100, key=pub)  # 4·207 bits: above |p| - 64
    assert wide.total_bits + 64 >= priv.p.bit_length()
    rows = np.array([[10**60, -(10**60), 5, 0], [1, 2, 3, 4]], dtype=object)
    out = decrypt_packed(priv, encrypt_packed(pub, rows, wide, method="plain"), wide, [1, 1])
    assert (out == rows).all()


def test_values_beyond_bound_or_not_integers_refused(spec):
    b = spec.bound
    with pytest.raises(DataValidationError) as info:
        pack_rows(np.array([[0, 0, 0], [0, b + 1, 0]]), spec)
    assert "row 2, column 2" in str(info.value) and str(b + 1) not in str(info.value)
    with pytest.raises(DataValidationError):
        pack_rows(np.array([[0, -b - 1, 0]], dtype=object), spec)
    with pytest.raises(DataValidationError):
        pack_rows(np.array([[0.5, 0, 0]]), spec)
    with pytest.raises(DataValidationError):
        pack_rows(np.array([[1, 2]]), spec)  # wrong number of columns
    with pytest.raises(DataValidationError):
        pack_rows(np.array([[1, True, 2]], dtype=object), spec)


def test_unpack_refuses_wrong_counts_and_garbage(spec):
    packed = pack_rows(np.array([[5, 5, 5]]), spec)
    with pytest.raises(PolicyError):
        unpack(packed, spec, [spec.max_summands + 1])
    with pytest.raises(DataValidationError):
        unpack(packed, spec, [1, 1])
    with pytest.raises(DataValidationError):
        unpack(packed, spec, [-1])
    with pytest.raises(DecryptionError):  # claims 0 summands, but slots are non-zero
        unpack(packed, spec, [0])
    with pytest.raises(DecryptionError):
        unpack([2**spec.total_bits], spec, [1])


def test_decrypt_packed_detects_tampering_and_key_mismatch(keys, spec):
    pub, priv = keys
    enc = encrypt_packed(pub, np.array([[1, 2, 3]]), spec)
    shifted = EncryptedVector(pub, [enc.ciphertexts[0] * (1 + (2**900) * pub.n) % pub.nsquare])
    with pytest.raises(DecryptionError):
        decrypt_packed(priv, shifted, spec, [1])
    other_pub, other_priv = generate_keypair(1024, _allow_insecure=True)
    with pytest.raises(KeyMismatchError):
        decrypt_packed(other_priv, enc, spec, [1])
    # Reduced into the other key's range (n² differs per key), it decrypts to noise under that key.
    foreign = EncryptedVector(other_pub, [c % other_pub.nsquare for c in enc.ciphertexts])
    with pytest.raises(DecryptionError):
        decrypt_packed(other_priv, foreign, spec, [1])


def test_parallel_packed_encryption(keys, spec):
    pub, priv = keys
    rows = np.array([[_rng.randint(-1000, 1000) for _ in range(3)] for _ in range(300)], dtype=np.int64)
    enc = encrypt_packed(pub, rows, spec, workers=2)
    out = decrypt_packed(priv, enc, spec, [1] * 300, workers=2)
    assert (out == rows.astype(object)).all()


def test_count_slot_carries_and_checks_the_number_of_summands(keys):
    pub, priv = keys
    spec = PackingSpec.plan(10**8, 3, 1000, key=pub, decimals=2, count_slot=True)
    assert spec.total_bits == 4 * spec.slot_bits
    assert PackingSpec.from_dict(spec.to_dict()) == spec
    rows = np.array([[1, -2, 3], [10**8, -(10**8), 0], [-7, 7, 7], [0, 0, 0]], dtype=np.int64)
    enc = encrypt_packed(pub, rows, spec)
    groups = [[0, 1, 2], [3], [], [0, 2]]
    agg = enc.sum_groups(groups)
    expect = [[int(rows[g, j].sum()) if g else 0 for j in range(3)] for g in groups]
    counts = [len(g) for g in groups]
    assert decrypt_packed(priv, agg, spec, counts).tolist() == expect
    assert decrypt_packed(priv, agg, spec, None).tolist() == expect  # counts read from the plaintexts
    with pytest.raises(DecryptionError):  # a bureau claiming 4 records where it summed 3
        decrypt_packed(priv, agg, spec, [4, 1, 0, 2])
    without = PackingSpec.plan(10**8, 3, 1000)
    with pytest.raises(DataValidationError):
        unpack([0], without, None)
