"""Several records per ciphertext: layout, alignment by the bureau, masks, decryption (single and threshold)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from pprl.crypto.paillier.engine import decrypt_chunk
from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, encrypt_packed, fixed_bound, pack_rows, unpack
from pprl.crypto.paillier.packing_records import (
    blinding_plaintexts,
    blinding_vector,
    extract_targets,
    record_addresses,
    sum_records,
)
from pprl.crypto.paillier.threshold.partials import combine_partials, deal, partial_decrypt
from pprl.crypto.paillier.vector import EncryptedVector, generate_keypair
from pprl.errors import DataValidationError, DecryptionError, DocumentError, PolicyError
from pprl.protocol.submit import score_packing


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024, _allow_insecure=True)


def _spec(records: int, bound: int = 1000, slots: int = 2, summands: int = 8) -> PackingSpec:
    return PackingSpec.plan(bound, slots, summands, count_slot=True, records_per_ciphertext=records)


def _platforms(spec: PackingSpec, sizes: list[int], seed: int) -> list[np.ndarray]:
    rng = random.Random(seed)
    b = spec.bound
    return [np.array([[rng.randint(-b, b) for _ in range(spec.slots)] for _ in range(n)], dtype=object)
            for n in sizes]


def _bureau(public, spec, mats, groups_local, workers=1):
    """Encrypt per platform, concatenate, map (platform, row) to addresses, align and sum."""
    encs = [encrypt_packed(public, m, spec, workers=workers) for m in mats]
    addresses, position = [], 0
    for enc, m in zip(encs, mats):
        addresses.append(record_addresses(position, len(m), spec))
        position += len(enc)
    groups = [[addresses[d][r] for d, r in g] for g in groups_local]
    expected = [[sum(int(mats[d][r][c]) for d, r in g) for c in range(spec.slots)] for g in groups_local]
    return encs, sum_records(EncryptedVector.concat(encs), groups, spec, workers=workers), expected


def _groups(sizes: list[int], seed: int) -> list[list[tuple[int, int]]]:
    rng = random.Random(seed)
    groups = [[(d, i) for d in range(len(sizes)) if i < sizes[d] and rng.random() < 0.7] for i in range(max(sizes))]
    groups += [[], [(0, 0 + 1), (0, 2)], [(1, sizes[1] - 1)]]  # empty; two records of one ciphertext; a last slot
    return groups


def test_dict_form_round_trips_and_one_record_form_is_unchanged() -> None:
    one = _spec(1)
    assert set(one.to_dict()) == {"scheme", "version", "slots", "slot_bits", "bound", "max_summands",
                                  "decimals", "count_slot"}
    four = _spec(4)
    d = four.to_dict()
    assert d["records_per_ciphertext"] == 4 and d["mask_bits"] == 40
    assert PackingSpec.from_dict(d) == four and PackingSpec.from_dict(one.to_dict()) == one
    assert four.single() == one
    with pytest.raises(DocumentError, match="go together"):
        PackingSpec.from_dict({k: v for k, v in d.items() if k != "mask_bits"})
    with pytest.raises(DocumentError, match="go together"):
        PackingSpec.from_dict({**one.to_dict(), "records_per_ciphertext": 1, "mask_bits": 40})
    with pytest.raises(PolicyError, match="mask_bits"):
        PackingSpec.from_dict({**d, "mask_bits": 20})
    with pytest.raises(DocumentError):
        PackingSpec.from_dict({**d, "records_per_ciphertext": 0})


def test_consortium_packing_fits_five_records_at_2048_bits_and_refuses_six() -> None:
    base = PackingSpec.plan(fixed_bound(10**9, 2), 3, 64, decimals=2, count_slot=True)
    assert base.max_records_per_ciphertext(2048) == 5 and base.max_records_per_ciphertext(3072) == 7
    five = PackingSpec.plan(fixed_bound(10**9, 2), 3, 64, key=2048, decimals=2, count_slot=True,
                            records_per_ciphertext=5)
    assert five.position_bits == 44 + 41 and five.total_bits == (4 * 5 + 4) * 85 <= 2045
    with pytest.raises(PolicyError, match="holds at most 5"):
        PackingSpec.plan(fixed_bound(10**9, 2), 3, 64, key=2048, decimals=2, count_slot=True,
                         records_per_ciphertext=6)


def test_pack_rows_interleaves_fields_of_consecutive_records() -> None:
    spec = _spec(3)
    rows = np.array([[1, -2], [3, 4], [-5, 6], [7, 8]], dtype=object)
    packed = pack_rows(rows, spec)
    s, w, b = spec.slot_bits, spec.position_bits, spec.bound
    assert len(packed) == 2
    want = 0
    for j, (v0, v1) in enumerate(rows[:3].tolist()):
        for f, v in enumerate([v0 + b, v1 + b, 1]):  # two value slots and the count slot
            want += v << (w * (f * 3 + j))
    assert packed[0] == want
    assert packed[1] == (7 + b) + ((8 + b) << (w * 3)) + (1 << (w * 6))  # zero-filled slots 1 and 2
    assert max(packed).bit_length() <= 3 * 3 * w and s < w


@pytest.mark.parametrize("records", [2, 3, 4])
def test_aligned_masked_sums_decrypt_to_the_plaintext_sums(keys, records) -> None:
    public, private = keys
    spec = _spec(records)
    spec.check_key(public)
    sizes = [23, 17, 9]
    mats = _platforms(spec, sizes, seed=records)
    encs, summed, expected = _bureau(public, spec, mats, _groups(sizes, seed=records))
    assert [len(e) for e in encs] == [-(-n // records) for n in sizes]
    counts = [len(g) for g in _groups(sizes, seed=records)]
    blinded = summed + blinding_vector(public, spec, len(summed))
    assert decrypt_packed(private, blinded, spec, counts).tolist() == expected
    assert unpack(decrypt_chunk(private.crt, blinded.ciphertexts), spec, None).tolist() == expected


def test_noise_rides_on_the_targets_as_one_more_summand(keys) -> None:
    public, private = keys
    spec = _spec(4)
    sizes = [12, 13]
    mats = _platforms(spec, sizes, seed=5)
    groups = _groups(sizes, seed=5)
    _, summed, expected = _bureau(public, spec, mats, groups)
    noise = np.array([[random.Random(i).randint(-9, 9) for _ in range(spec.slots)] for i in range(len(groups))],
                     dtype=object)
    rows = pack_rows(noise, spec.single())
    blinded = summed + blinding_vector(public, spec, len(groups), rows)
    got = decrypt_packed(private, blinded, spec, [len(g) + 1 for g in groups]).tolist()
    assert got == [[e + int(n) for e, n in zip(exp, nrow)] for exp, nrow in zip(expected, noise.tolist())]


def test_masks_cover_every_region_around_the_targets(keys) -> None:
    public, private = keys
    spec = _spec(4)
    sizes = [16, 16, 16]
    mats = _platforms(spec, sizes, seed=9)
    groups = [[(0, i), (1, (i + 5) % 16), (2, (i + 10) % 16)] for i in range(16)]
    _, summed, _ = _bureau(public, spec, mats, groups)
    r, w, s = spec.records_per_ciphertext, spec.position_bits, spec.slot_bits
    region_bits = (r - 1) * w
    garbage_bound = 1 << ((r - 2) * w + s)

    def regions(x: int) -> list[int]:
        return [(x >> (w * f * r)) & ((1 << region_bits) - 1) for f in range(spec.fields + 1)]

    bare = decrypt_chunk(private.crt, summed.ciphertexts)
    masked = decrypt_chunk(private.crt, (summed + blinding_vector(public, spec, len(groups))).ciphertexts)
    assert extract_targets(bare, spec) == extract_targets(masked, spec)
    for x, y in zip(bare, masked):
        assert all(g < garbage_bound for g in regions(x))  # other records' slots: what must not be seen
        assert any(g > 0 for g in regions(x))
        # Masked: each region is garbage plus a uniform 2^(σ+...) mask, so it exceeds the garbage bound
        # (probability of failing 2^-40 per region) and never carries into a target.
        assert all(g >= garbage_bound for g in regions(y))
        assert y < 1 << spec.total_bits


def test_blinding_without_noise_leaves_targets_zero() -> None:
    spec = _spec(3)
    for value in blinding_plaintexts(spec, 50):
        assert extract_targets([value], spec) == [0]
    assert blinding_plaintexts(_spec(1), 3) == [0, 0, 0]


def test_bad_plaintexts_and_addresses_are_refused(keys) -> None:
    public, private = keys
    spec = _spec(3)
    w, r = spec.position_bits, spec.records_per_ciphertext
    with pytest.raises(DecryptionError, match="position 1 is out of range"):
        extract_targets([1 << spec.total_bits], spec)
    guard = 1 << (w * (r - 1) + spec.slot_bits)  # a set guard bit above the first target
    with pytest.raises(DecryptionError, match="position 2, slot 1"):
        extract_targets([0, guard], spec)
    junk = EncryptedVector(public, [pow(7, 12345, public.nsquare)])
    with pytest.raises(DecryptionError):
        decrypt_packed(private, junk, spec, [1])
    enc = encrypt_packed(public, np.zeros((4, 2), dtype=object), spec, workers=1)
    with pytest.raises(DataValidationError, match="record address outside 0..5"):
        sum_records(enc, [[0, 6]], spec)
    with pytest.raises(DataValidationError, match="lists an index twice"):
        sum_records(enc, [[1, 1]], spec)


def test_one_record_per_ciphertext_is_the_plain_group_sum(keys) -> None:
    public, _ = keys
    spec = _spec(1)
    enc = encrypt_packed(public, np.ones((5, 2), dtype=object), spec, workers=1)
    groups = [[0, 3], [4], []]
    assert sum_records(enc, groups, spec) == enc.sum_groups(groups)
    assert list(record_addresses(7, 3, spec)) == [7, 8, 9]
    assert list(record_addresses(2, 4, _spec(3))) == [6, 7, 8, 9]


def test_two_of_three_threshold_key_decrypts_aligned_sums() -> None:
    tpk, shares = deal(512, 2, 3, _allow_insecure=True)
    spec = PackingSpec.plan(10, 1, 4, count_slot=True, records_per_ciphertext=3)
    spec.check_key(tpk.public)
    sizes = [8, 7]
    mats = _platforms(spec, sizes, seed=3)
    groups = [[(0, i), (1, (i * 3) % 7)] for i in range(7)] + [[(0, 7)]]
    _, summed, expected = _bureau(tpk.public, spec, mats, groups)
    blinded = summed + blinding_vector(tpk.public, spec, len(groups))
    parts = [partial_decrypt(s, blinded, workers=1) for s in shares[1:]]
    plain = combine_partials(tpk, parts, blinded, workers=1)
    assert unpack(plain, spec, [len(g) for g in groups]).tolist() == expected


def test_platform_packing_refuses_too_many_records_for_the_key(keys) -> None:
    public, _ = keys  # 1024 bits: the consortium's four 44-bit slots fit two records, not three
    assert score_packing(["a", "b", "c"], public, 2).records_per_ciphertext == 2
    with pytest.raises(PolicyError, match="holds at most 2"):
        score_packing(["a", "b", "c"], public, 3)
