"""The pseudonym OPRF: blinded evaluation gives the same pseudonym as the key holder's direct one, and hides the input."""

from __future__ import annotations

import secrets

import pytest

from pprl.crypto import oprf
from pprl.crypto.hash_to_curve import ORDER
from pprl.crypto.psi import hash_to_group, make_domain
from pprl.errors import DataValidationError

IDS = ["110101199003077777", "440301198805051234", "31010119910812104X"]


def test_blind_evaluate_finalize_equals_direct_evaluation():
    key = oprf.derive_key(b"s" * 32, "resident_id")
    blinding = oprf.blind_inputs(IDS, "resident_id")
    evaluated = oprf.evaluate(key, blinding.elements)
    assert oprf.finalize(blinding, IDS, evaluated) == oprf.pseudonyms(key, IDS)
    assert len({*oprf.pseudonyms(key, IDS)}) == len(IDS)


def test_pseudonyms_depend_on_key_kind_and_input():
    a = oprf.derive_key(b"s" * 32, "resident_id")
    b = oprf.derive_key(b"t" * 32, "resident_id")
    c = oprf.derive_key(b"s" * 32, "mobile")
    assert oprf.pseudonyms(a, IDS) != oprf.pseudonyms(b, IDS)
    assert oprf.pseudonyms(a, IDS) != oprf.pseudonyms(c, IDS)


def test_blinded_elements_are_fresh_and_not_the_hash():
    first, second = oprf.blind_inputs(IDS[:1], "resident_id"), oprf.blind_inputs(IDS[:1], "resident_id")
    assert first.elements != second.elements  # a fresh r each time: the evaluator cannot link two requests
    assert first.elements != hash_to_group(IDS[:1], make_domain("pprl-pseudonym", "resident_id"))
    assert "elements" not in repr(first) and IDS[0] not in repr(first)


def test_every_unblinding_scalar_clamps_to_an_inverse():
    for _ in range(50):
        d = int.from_bytes(secrets.token_bytes(32), "little") % ORDER or 1
        raw = oprf._clamped_form(d)
        if raw is not None:
            assert oprf._clamp(raw) % ORDER == d  # the clamped value X25519 uses is d itself, mod the order


def test_a_wrong_evaluation_is_refused():
    key = oprf.derive_key(b"s" * 32, "resident_id")
    blinding = oprf.blind_inputs(IDS, "resident_id")
    with pytest.raises(DataValidationError):
        oprf.finalize(blinding, IDS, oprf.evaluate(key, blinding.elements)[:32])
    with pytest.raises(DataValidationError):
        oprf.evaluate(key, b"\x00" * 31)
    with pytest.raises(DataValidationError):
        oprf.evaluate(key, b"\x00" * 32)  # not a group element (small order)
