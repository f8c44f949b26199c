"""The proof that the maker of some ciphertexts knows their plaintexts (what a bureau adds to its sums)."""

from __future__ import annotations

import pytest

from pprl.crypto.paillier.proofs import encrypt_known, prove_known, verify_known
from pprl.crypto.paillier.vector import EncryptedVector, decrypt_raw, generate_keypair
from pprl.errors import DataValidationError, DecryptionError, DocumentError


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(2048)


def test_known_plaintexts_encrypt_and_prove(keys):
    public, private = keys
    plain = [0, 7, 10**12, public.n - 5]
    cts, exps = encrypt_known(public, plain)
    assert decrypt_raw(private, EncryptedVector._trusted(public, cts)) == [p % public.n for p in plain]
    proof = prove_known(public, cts, plain, exps, b"release-1")
    verify_known(public, cts, proof, b"release-1", source="r.json")
    assert len({c for c in encrypt_known(public, [7, 7])[0]}) == 2  # fresh randomness every time


def test_an_addition_the_prover_does_not_know_fails(keys):
    public, _ = keys
    plain = [3, 4, 5]
    cts, exps = encrypt_known(public, plain)
    victim, _ = encrypt_known(public, [123456])  # a platform's ciphertext: its plaintext unknown to the prover
    n2 = public.nsquare
    swapped = [cts[0] * pow(victim[0], -1, n2) % n2, *cts[1:]]  # 'noise' minus the victim's value
    for guess in (plain[0], 0, plain[0] - 123456):  # the prover can only guess what it now adds
        proof = prove_known(public, swapped, [guess, *plain[1:]], exps, b"ctx")
        with pytest.raises(DecryptionError, match="does not verify"):
            verify_known(public, swapped, proof, b"ctx", source="r.json")


def test_a_proof_is_bound_to_its_ciphertexts_and_context(keys):
    public, _ = keys
    cts, exps = encrypt_known(public, [1, 2])
    proof = prove_known(public, cts, [1, 2], exps, b"ctx")
    with pytest.raises(DecryptionError):
        verify_known(public, cts, proof, b"another release", source="r.json")
    with pytest.raises(DecryptionError):
        verify_known(public, list(reversed(cts)), proof, b"ctx", source="r.json")
    with pytest.raises(DecryptionError):
        verify_known(public, cts, {**proof, "z1": str(int(proof["z1"]) + 1)}, b"ctx", source="r.json")
    with pytest.raises(DocumentError, match="no proof"):
        verify_known(public, cts, None, b"ctx", source="r.json")
    with pytest.raises(DataValidationError):
        encrypt_known(public.without_djn(), [1])
