"""RFC 9380 hash_to_curve (curve25519_XMD:SHA-512_ELL2_RO_): the C map against the RFC and the reference.

Vectors (``vectors/rfc9380.json``) are RFC 9380's own: Appendix J.4.1 for the
suite (u0/u1, Q0/Q1, P) and Appendix K.3 for expand_message_xmd(SHA-512).
Beyond them, the C path is compared with the pure-Python reference on
thousands of random and edge-case inputs, and its outputs are checked to be
curve points of prime order.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import nacl.bindings
import pytest

from pprl.crypto import hash_to_curve as h2c
from pprl.errors import DataValidationError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc9380.json").read_text())
SUITE = VECTORS["curve25519_XMD:SHA-512_ELL2_RO_"]
XMD = VECTORS["expand_message_xmd_SHA-512"]
P = h2c.P

needs_c = pytest.mark.skipif(not h2c.HAVE_C, reason="the C extension pprl.crypto._h2c is not built")


@pytest.fixture(autouse=True)
def _c_path_on(monkeypatch):
    """The C-path tests run the C path even when the suite runs with PPRL_NO_H2C set."""
    monkeypatch.delenv("PPRL_NO_H2C", raising=False)


def _le(b: bytes) -> int:
    return int.from_bytes(b, "little")


def _be48(x: int) -> bytes:
    return x.to_bytes(48, "big")


def _hex(x: int) -> str:
    return f"{x:064x}"


# ------------------------------------------------------------------ RFC vectors


@pytest.mark.parametrize("vec", XMD["vectors"], ids=lambda v: f"{v['msg'][:8]}-{v['len_in_bytes']}")
def test_expand_message_xmd_sha512_rfc_vectors(vec):
    got = h2c.expand_message_xmd(vec["msg"].encode(), XMD["dst"].encode(), vec["len_in_bytes"])
    assert got.hex() == vec["uniform_bytes"]


@pytest.mark.parametrize("vec", SUITE["vectors"], ids=lambda v: v["msg"][:8] or "empty")
def test_reference_matches_rfc_vectors(vec):
    dst, msg = SUITE["dst"].encode(), vec["msg"].encode()
    u0, u1 = h2c.hash_to_field(msg, dst)
    assert [_hex(u0), _hex(u1)] == vec["u"]
    for u, q in ((u0, vec["Q0"]), (u1, vec["Q1"])):
        s, t = h2c.map_to_curve(u)
        assert (_hex(s), _hex(t)) == (q["x"], q["y"])
    x, y = h2c.hash_to_curve_reference(msg, dst)
    assert (_hex(x), _hex(y)) == (vec["P"]["x"], vec["P"]["y"])
    assert h2c.hash_to_group_reference([msg], dst) == x.to_bytes(32, "little")


@needs_c
@pytest.mark.parametrize("vec", SUITE["vectors"], ids=lambda v: v["msg"][:8] or "empty")
def test_c_matches_rfc_vectors(vec):
    from pprl.crypto import _h2c

    dst, msg = SUITE["dst"].encode(), vec["msg"].encode()
    field = h2c.field_bytes([msg], dst)
    assert field == h2c.expand_message_xmd(msg, dst, 96)
    for half, q in ((field[:48], vec["Q0"]), (field[48:], vec["Q1"])):
        s, t = _h2c.elligator2(half)
        assert (_hex(_le(s)), _hex(_le(t))) == (q["x"], q["y"])
    u, v = _h2c.map_to_point(field)
    assert (_hex(_le(u)), _hex(_le(v))) == (vec["P"]["x"], vec["P"]["y"])
    assert _h2c.map_to_u(field) == u
    assert h2c.hash_to_group([msg], dst) == u


# ------------------------------------------------------------------ C against the reference


@needs_c
def test_c_expand_message_xmd_matches_python_across_block_boundaries():
    """The C SHA-512 / expand_message_xmd (96 bytes) against hashlib's, for lengths around 128-byte blocks."""
    from pprl.crypto import _h2c

    rng = random.Random(512)
    for n in [0, 1, 3, 16, 63, 64, 65, 107, 108, 109, 111, 112, 113, 127, 128, 129, 239, 240, 241, 255, 256, 1000]:
        msg = rng.randbytes(n)
        for dst in (b"x", rng.randbytes(200), rng.randbytes(255), SUITE["dst"].encode()):
            assert _h2c.expand_message_xmd96(msg, dst) == h2c.expand_message_xmd(msg, dst, 96)


@needs_c
def test_c_hash_to_u_is_xmd_then_map_and_checks_its_inputs():
    from pprl.crypto import _h2c

    msgs = [f"{i:018d}".encode() for i in range(300)] + [b"", bytes(500)]
    dst = b"pprl-test-all-c"
    assert _h2c.hash_to_u(msgs, dst) == _h2c.map_to_u(h2c.field_bytes(msgs, dst))
    assert _h2c.hash_to_u(tuple(msgs), dst) == _h2c.hash_to_u(msgs, dst)
    assert _h2c.hash_to_u([], dst) == b""
    with pytest.raises(TypeError, match="position 2") as exc:
        _h2c.hash_to_u([b"a", "secret-text"], dst)
    assert "secret-text" not in str(exc.value)
    with pytest.raises(ValueError, match="DST"):
        _h2c.hash_to_u([b"a"], b"")
    with pytest.raises(ValueError, match="DST"):
        _h2c.hash_to_u([b"a"], bytes(256))



def _edge_field_elements() -> list[int]:
    """48-byte inputs around the reduction and the map's special values (0, -1, +-1/2 ...)."""
    inv2 = pow(2, P - 2, P)
    small = [0, 1, 2, 3, P - 1, P - 2, inv2, P - inv2, h2c.A, P - h2c.A]
    unreduced = [P, P + 1, 2 * P, (1 << 255) - 1, 1 << 255, (1 << 384) - 1, (1 << 383), 19 << 255]
    return small + unreduced


@needs_c
def test_c_elligator2_matches_reference_on_edges_and_random():
    from pprl.crypto import _h2c

    rng = random.Random(9380)
    inputs = _edge_field_elements() + [rng.getrandbits(384) for _ in range(500)]
    for x in inputs:
        s, t = _h2c.elligator2(_be48(x))
        assert (_le(s), _le(t)) == h2c.map_to_curve(x % P)


@needs_c
def test_c_map_matches_reference_on_random_inputs():
    from pprl.crypto import _h2c

    rng = random.Random(25519)
    edges = _edge_field_elements()
    pairs = [(a, b) for a in edges[:6] for b in edges[:6]] + [(a, rng.getrandbits(384)) for a in edges]
    pairs += [(rng.getrandbits(384), rng.getrandbits(384)) for _ in range(3000)]
    blob = b"".join(_be48(a) + _be48(b) for a, b in pairs)
    got = _h2c.map_to_u(blob)
    for i, (a, b) in enumerate(pairs):
        ref = h2c.map_field_elements(a % P, b % P)
        if ref is None:
            assert got[32 * i : 32 * i + 32] == bytes(32)  # the neutral element comes out as u = 0
            continue
        assert _le(got[32 * i : 32 * i + 32]) == ref[0]
        if i % 10 == 0:
            u, v = _h2c.map_to_point(blob[96 * i : 96 * i + 96])
            assert (_le(u), _le(v)) == ref


@needs_c
def test_batches_and_chunks_agree_with_single_calls():
    from pprl.crypto import _h2c

    rng = random.Random(7)
    blob = rng.randbytes(96 * 5000)  # more than one C chunk (4096)
    batch = _h2c.map_to_u(blob)
    assert len(batch) == 32 * 5000
    for i in list(range(0, 5000, 97)) + [4095, 4096, 4999]:
        assert batch[32 * i : 32 * i + 32] == _h2c.map_to_u(blob[96 * i : 96 * i + 96])
    assert _h2c.map_to_u(b"") == b""
    with pytest.raises(ValueError, match="96-byte"):
        _h2c.map_to_u(bytes(95))
    with pytest.raises(ValueError):
        _h2c.map_to_point(bytes(95))


# ------------------------------------------------------------------ group properties


@needs_c
def test_outputs_are_prime_order_curve_points():
    from pprl.crypto import _h2c

    dst = b"pprl-test-subgroup"
    for i in range(12):
        u, v = _h2c.map_to_point(h2c.field_bytes([f"person-{i}".encode()], dst))
        pt = (_le(u), _le(v))
        assert h2c.on_curve(pt)
        assert h2c.in_prime_order_subgroup(pt)  # ORDER * P is the identity


def test_reference_outputs_are_prime_order_points_and_map_outputs_are_not_cleared():
    dst = b"pprl-test-subgroup"
    pt = h2c.hash_to_curve_reference(b"someone", dst)
    assert pt is not None and h2c.on_curve(pt) and h2c.in_prime_order_subgroup(pt)
    q = h2c.map_to_curve(h2c.hash_to_field(b"someone", dst)[0])
    assert h2c.on_curve(q)  # a curve point, but (almost surely) of order 8L, not L
    assert not h2c.in_prime_order_subgroup(q)


def test_blinding_commutes_on_hashed_points():
    msgs = [f"user{i}".encode() for i in range(50)]
    hashed = h2c.hash_to_group(msgs, b"pprl-test-commute")
    k1, k2 = hashlib.sha256(b"k1").digest(), hashlib.sha256(b"k2").digest()
    for i in range(len(msgs)):
        e = hashed[32 * i : 32 * i + 32]
        one = nacl.bindings.crypto_scalarmult(k2, nacl.bindings.crypto_scalarmult(k1, e))
        two = nacl.bindings.crypto_scalarmult(k1, nacl.bindings.crypto_scalarmult(k2, e))
        assert one == two


# ------------------------------------------------------------------ fallback, DST, errors


def test_fallback_is_the_reference(monkeypatch):
    msgs = [f"id-{i}".encode() for i in range(30)] + [b"", "名字".encode()]
    fast = h2c.hash_to_group(msgs, b"pprl-test-fallback")
    monkeypatch.setattr(h2c, "_h2c", None)
    assert h2c.hash_to_group(msgs, b"pprl-test-fallback") == fast


@needs_c
def test_switch_sends_hash_to_group_to_the_reference_at_every_call(monkeypatch):
    """PPRL_NO_H2C, read at every call, runs the Python reference: same output as the C path."""
    monkeypatch.delenv("PPRL_NO_H2C", raising=False)
    msgs = [f"id-{i}".encode() for i in range(20)] + [b"", bytes(range(256))]
    assert h2c.h2c_enabled()
    fast = h2c.hash_to_group(msgs, b"pprl-test-switch")
    calls = []
    reference = h2c.hash_to_group_reference

    def counted(messages, dst):
        calls.append(len(messages))
        return reference(messages, dst)

    monkeypatch.setattr(h2c, "hash_to_group_reference", counted)
    monkeypatch.setenv("PPRL_NO_H2C", "1")
    assert not h2c.h2c_enabled() and h2c.HAVE_H2C and h2c.HAVE_C
    assert h2c.hash_to_group(msgs, b"pprl-test-switch") == fast
    assert calls == [len(msgs)]
    monkeypatch.setenv("PPRL_NO_H2C", "0")
    assert h2c.h2c_enabled()
    assert h2c.hash_to_group(msgs, b"pprl-test-switch") == fast and calls == [len(msgs)]


def test_field_bytes_is_expand_message_xmd():
    msgs = [b"", b"abc", bytes(range(256)) * 3]
    dst = b"pprl-test-xmd"
    assert h2c.field_bytes(msgs, dst) == b"".join(h2c.expand_message_xmd(m, dst, 96) for m in msgs)


def test_make_dst_hashes_oversize_tags():
    assert h2c.make_dst(b"x" * 255) == b"x" * 255
    assert h2c.make_dst(b"x" * 256) == hashlib.sha512(b"H2C-OVERSIZE-DST-" + b"x" * 256).digest()
    with pytest.raises(DataValidationError):
        h2c.make_dst(b"")
    with pytest.raises(DataValidationError):
        h2c.expand_message_xmd(b"m", b"x" * 256, 32)


def test_neutral_element_is_refused_without_naming_the_identifier(monkeypatch):
    class Fake:
        @staticmethod
        def hash_to_u(messages: list[bytes], dst: bytes) -> bytes:
            return bytes(32 * len(messages))

    monkeypatch.setattr(h2c, "_h2c", Fake)
    with pytest.raises(DataValidationError, match="neutral element") as exc:
        h2c.hash_to_group([b"secret-identifier-123"], b"pprl-test")
    assert "secret-identifier-123" not in str(exc.value)


def test_c_extension_built_where_it_should_be():
    """The extension is optional at install time; on 64-bit Linux (CI, our machines) it must be there."""
    import platform
    import sys

    if sys.platform.startswith("linux") and platform.machine() in ("x86_64", "aarch64"):
        assert h2c.HAVE_C, "pprl.crypto._h2c failed to build: PSI would silently use the slow Python path"
