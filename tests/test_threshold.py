"""Threshold Paillier primitive: dealing, partial decryption, proofs, combining.

Keys are 512-bit (``_allow_insecure``) so the file stays fast; the arithmetic
does not depend on the key size. Ciphertexts come from the ordinary
``encrypt_vector`` and are summed the way the bureau sums them.
"""

from __future__ import annotations

import itertools
import math
import random

import gmpy2
import pytest

from pprl.crypto.paillier.threshold.partials import (
    PartialDecryption,
    PartialProof,
    ThresholdKeyShare,
    ThresholdPublicKey,
    combine_partials,
    deal,
    generate_safe_prime,
    partial_decrypt,
    verify_partial,
)
from pprl.crypto.paillier.vector import EncryptedVector, encrypt_vector, generate_keypair, raw_encrypt
from pprl.errors import (
    DataValidationError,
    DecryptionError,
    KeyFormatError,
    KeyMismatchError,
    PolicyError,
)


@pytest.fixture(scope="module")
def key23() -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    return deal(512, 2, 3, _allow_insecure=True)


@pytest.fixture(scope="module")
def key35() -> tuple[ThresholdPublicKey, list[ThresholdKeyShare]]:
    return deal(512, 3, 5, _allow_insecure=True)


def _values(count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(-10**12, 10**12) for _ in range(count)]


def _bureau_sums(public, per_platform: list[list[int]], groups: list[list[int]]) -> tuple[EncryptedVector, list[int]]:
    """Encrypt each platform's scores, concatenate and sum per group, as the bureau does."""
    encs = [encrypt_vector(public, vals, workers=1) for vals in per_platform]
    flat = [v for vals in per_platform for v in vals]
    return EncryptedVector.concat(encs).sum_groups(groups), [sum(flat[i] for i in g) for g in groups]


# --- keys ---------------------------------------------------------------------------------


def test_safe_prime_is_safe_and_sized() -> None:
    for bits in (64, 256):
        p = generate_safe_prime(bits)
        assert p.bit_length() == bits and p >> (bits - 2) == 0b11
        assert gmpy2.is_prime(p, 50) and gmpy2.is_prime((p - 1) // 2, 50)
    with pytest.raises(DataValidationError):
        generate_safe_prime(32)


def test_deal_structure(key35) -> None:
    tpk, shares = key35
    n = tpk.public.n
    assert tpk.public.bits == 512 and tpk.threshold == 3 and tpk.holders == 5
    assert tpk.delta == math.factorial(5)
    assert [s.index for s in shares] == [1, 2, 3, 4, 5]
    n2 = tpk.public.nsquare
    for s in shares:
        assert gmpy2.powmod(tpk.verification_base, tpk.delta * s.value, n2) == tpk.verification_key(s.index)
        assert str(s.value) not in repr(s)
        assert ThresholdKeyShare.from_bytes(tpk, s.index, s.to_bytes()) == s
    assert str(n) not in repr(tpk)
    with pytest.raises(KeyMismatchError, match="share 1"):
        ThresholdKeyShare(tpk, 1, shares[1].value)


@pytest.mark.parametrize(
    ("bits", "t", "holders"),
    [(512, 0, 3), (512, 4, 3), (512, 1, 0), (511, 2, 3), (1000, 2, 3), (512, 2, 65)],
)
def test_deal_refuses_bad_parameters(bits: int, t: int, holders: int) -> None:
    with pytest.raises(DataValidationError):
        deal(bits, t, holders, _allow_insecure=bits != 1000)


# --- decrypting ---------------------------------------------------------------------------


def test_two_of_three_any_pair_decrypts_bureau_sums(key23) -> None:
    tpk, shares = key23
    platforms = [_values(12, 1), _values(9, 2), [-5, -(10**15), 0, 7]]
    groups = [[0, 12], [1, 13, 21], [2], [3, 22], [4, 14, 23], [], [24, 5], [20]]
    enc, expected = _bureau_sums(tpk.public, platforms, groups)
    assert any(v < 0 for v in expected)
    parts = [partial_decrypt(s, enc, workers=1) for s in shares]
    for part in parts:
        verify_partial(tpk, part, enc)
    for subset in itertools.combinations(parts, 2):
        assert combine_partials(tpk, list(subset), enc, workers=1) == expected
    assert combine_partials(tpk, parts[::-1], enc, workers=1) == expected


def test_three_of_five_every_subset(key35) -> None:
    tpk, shares = key35
    vals = _values(6, 3) + [tpk.public.max_int, -tpk.public.max_int, -1, 0]
    a = encrypt_vector(tpk.public, vals, workers=1)
    b = encrypt_vector(tpk.public, [-v // 2 for v in vals], workers=1)
    enc = a + b
    expected = [v + (-v // 2) for v in vals]
    parts = [partial_decrypt(s, enc, workers=1) for s in shares]
    for k in (3, 4, 5):
        for subset in itertools.combinations(parts, k):
            assert combine_partials(tpk, list(subset), enc, workers=1) == expected


def test_one_of_n_and_empty_vector() -> None:
    tpk, shares = deal(256, 1, 2, _allow_insecure=True)
    enc = encrypt_vector(tpk.public, [-3, 4], workers=1)
    for s in shares:
        assert combine_partials(tpk, [partial_decrypt(s, enc, workers=1)], enc) == [-3, 4]
    empty = EncryptedVector(tpk.public, [])
    assert combine_partials(tpk, [partial_decrypt(shares[0], empty)], empty) == []


def test_overflow_band_is_refused(key23) -> None:
    tpk, shares = key23
    n = tpk.public.n
    enc = EncryptedVector(tpk.public, [raw_encrypt(tpk.public, 5, 7), raw_encrypt(tpk.public, n // 2, 11)])
    parts = [partial_decrypt(s, enc, workers=1) for s in shares[:2]]
    with pytest.raises(DecryptionError, match="position 2"):
        combine_partials(tpk, parts, enc)


def test_processes_give_the_same_result(key23) -> None:
    tpk, shares = key23
    vals = _values(80, 4)
    enc = encrypt_vector(tpk.public, vals, workers=1)
    parts = [partial_decrypt(s, enc, workers=2) for s in shares[1:]]
    assert parts[0].values == partial_decrypt(shares[1], enc, workers=1).values
    verify_partial(tpk, parts[0], enc, workers=2)
    assert combine_partials(tpk, parts, enc, workers=2) == vals


# --- refusing -----------------------------------------------------------------------------


def test_fewer_than_t_parts_refused(key35) -> None:
    tpk, shares = key35
    enc = encrypt_vector(tpk.public, [1, 2], workers=1)
    parts = [partial_decrypt(s, enc, workers=1) for s in shares[:2]]
    with pytest.raises(PolicyError, match="need 3 parts .* got 2"):
        combine_partials(tpk, parts, enc)
    with pytest.raises(PolicyError, match="got 0"):
        combine_partials(tpk, [], enc)


def test_duplicate_holder_refused(key23) -> None:
    tpk, shares = key23
    enc = encrypt_vector(tpk.public, [1], workers=1)
    part = partial_decrypt(shares[1], enc, workers=1)
    with pytest.raises(DataValidationError, match="holder 2 gave more than one part"):
        combine_partials(tpk, [part, part], enc)


def _assert_refused(tpk, part, enc, holder: int, context: bytes = b"") -> None:
    with pytest.raises(DecryptionError, match=f"holder {holder}"):
        verify_partial(tpk, part, enc, context=context)


def test_forged_parts_are_detected_and_named(key23) -> None:
    tpk, shares = key23
    n, n2 = tpk.public.n, tpk.public.nsquare
    vals = _values(5, 5)
    enc = encrypt_vector(tpk.public, vals, workers=1)
    good = partial_decrypt(shares[1], enc, context=b"release-1", workers=1)
    verify_partial(tpk, good, enc, context=b"release-1")

    # one value altered (still a valid unit: shifts that element's plaintext)
    altered = list(good.values)
    altered[3] = altered[3] * (1 + n) % n2
    forged = PartialDecryption(2, tuple(altered), good.proof)
    _assert_refused(tpk, forged, enc, 2, b"release-1")
    with pytest.raises(DecryptionError, match="holder 2"):
        combine_partials(
            tpk, [partial_decrypt(shares[0], enc, context=b"release-1", workers=1), forged], enc, context=b"release-1"
        )

    # computed with holder 3's share, presented as holder 2's
    other = partial_decrypt(shares[2], enc, context=b"release-1", workers=1)
    _assert_refused(tpk, PartialDecryption(2, other.values, other.proof), enc, 2, b"release-1")

    # made for another ciphertext vector of the same length, or another context
    enc_b = encrypt_vector(tpk.public, vals, workers=1)
    _assert_refused(tpk, good, enc_b, 2, b"release-1")
    _assert_refused(tpk, good, enc, 2, b"release-2")

    # proof tampered, or of absurd size
    _assert_refused(tpk, PartialDecryption(2, good.values, PartialProof(good.proof.e, good.proof.z + 1)), enc, 2, b"release-1")
    _assert_refused(tpk, PartialDecryption(2, good.values, PartialProof(good.proof.e, 1 << 5000)), enc, 2, b"release-1")

    # malformed values: not a unit, wrong count
    _assert_refused(tpk, PartialDecryption(2, (n,) + good.values[1:], good.proof), enc, 2, b"release-1")
    _assert_refused(tpk, PartialDecryption(2, good.values[:-1], good.proof), enc, 2, b"release-1")
    with pytest.raises(DecryptionError, match="holder 9"):
        verify_partial(tpk, PartialDecryption(9, good.values, good.proof), enc, context=b"release-1")


def test_other_key_refused(key23) -> None:
    tpk, shares = key23
    other_public, _ = generate_keypair(512, _allow_insecure=True)
    enc = encrypt_vector(other_public, [1], workers=1)
    with pytest.raises(KeyMismatchError):
        partial_decrypt(shares[0], enc)
    own = encrypt_vector(tpk.public, [1], workers=1)
    parts = [partial_decrypt(s, own, workers=1) for s in shares[:2]]
    with pytest.raises(KeyMismatchError):
        combine_partials(tpk, parts, enc)


def test_serialisation_round_trip(key23) -> None:
    tpk, shares = key23
    enc = encrypt_vector(tpk.public, [-8, 9, 10], workers=1)
    part = partial_decrypt(shares[0], enc, workers=1)
    proof = PartialProof.from_dict(part.proof.to_dict())
    again = PartialDecryption.from_bytes(tpk.public, 1, part.values_to_bytes(tpk.public), proof)
    assert again == part
    verify_partial(tpk, again, enc)
    with pytest.raises(DecryptionError):
        PartialProof.from_dict({"e": "not base64!"})
    with pytest.raises(DecryptionError, match="holder 1"):
        PartialDecryption.from_bytes(tpk.public, 1, part.values_to_bytes(tpk.public)[:-1], proof)


def test_public_key_checks(key23) -> None:
    tpk, _ = key23
    with pytest.raises(KeyFormatError):
        ThresholdPublicKey(tpk.public, 4, tpk.verification_base, tpk.verification_keys)
    with pytest.raises(KeyFormatError):
        ThresholdPublicKey(tpk.public, 2, tpk.public.n, tpk.verification_keys)


def test_threshold_keys_carry_the_derived_djn_base():
    """Threshold keys encrypt with DJN too (they used to fall back to r^n, about 10x slower)."""
    from pprl.crypto.paillier.keys import derive_djn_hs
    from pprl.crypto.paillier.vector import PaillierPublicKey

    tpk, shares = deal(512, 2, 3, _allow_insecure=True)
    assert tpk.public.has_djn and tpk.public.djn_hs == derive_djn_hs(tpk.public.n)
    assert PaillierPublicKey.from_dict(tpk.public.to_dict(), allow_small=True).has_djn
    enc = encrypt_vector(tpk.public, [5, -7, 123456])  # DJN-encrypted, threshold-decrypted
    parts = [partial_decrypt(s, enc) for s in shares[:2]]
    assert combine_partials(tpk, parts, enc) == [5, -7, 123456]


def test_threshold_documents_without_a_djn_base_still_work():
    """A threshold public key dealt before the DJN base existed loads, encrypts with r^n, and decrypts."""
    from pprl.crypto.paillier.djn import djn_params
    from pprl.crypto.paillier.vector import PaillierPublicKey

    tpk, shares = deal(512, 2, 3, _allow_insecure=True)
    old_doc = {k: v for k, v in tpk.public.to_dict().items() if k != "djn_hs"}
    old = PaillierPublicKey.from_dict(old_doc, allow_small=True)
    assert not old.has_djn and old == tpk.public
    assert djn_params(old, 500) is None  # plain r^n
    old_tpk = ThresholdPublicKey(old, tpk.threshold, tpk.verification_base, tpk.verification_keys)
    values = [3, -9, 10**9, 0] * 40
    enc = encrypt_vector(old, values, workers=1)
    old_shares = [ThresholdKeyShare(old_tpk, s.index, s.value) for s in shares]
    parts = [partial_decrypt(s, enc, workers=1) for s in (old_shares[0], old_shares[2])]
    assert combine_partials(old_tpk, parts, enc, workers=1) == values
    # the same shares open DJN ciphertexts under the current document (table path: >= 128 values)
    enc = encrypt_vector(tpk.public, values, workers=1)
    parts = [partial_decrypt(s, enc, workers=1) for s in shares[1:]]
    assert combine_partials(tpk, parts, enc, workers=1) == values
