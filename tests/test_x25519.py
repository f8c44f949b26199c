"""pprl's batched X25519 (in pprl.crypto._h2c) against RFC 7748, libsodium, and each path against the others.

Every path this CPU runs (``portable`` radix 2^51; ``avx2``, four ladders per
vector; ``ifma``, eight) must give libsodium's ``crypto_scalarmult`` bytes, including on inputs
at the limb bounds (u with every bit set, non-canonical u >= p, keys of all
ones or zeros), and must refuse (an all-zero result) exactly the inputs
libsodium refuses. The PSI layer must keep its behaviour whichever path runs.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import pytest

from pprl.crypto import hash_to_curve as h2c
from pprl.crypto import psi
from pprl.errors import DataValidationError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "rfc7748.json").read_text(encoding="utf-8"))
P = (1 << 255) - 19
PATHS = h2c.x25519_isas()
SWITCHES = ("PPRL_NO_X25519", "PPRL_NO_AVX2", "PPRL_NO_IFMA", "PPRL_NO_AVX512", "PPRL_NO_H2C")

pytestmark = pytest.mark.skipif(not h2c.HAVE_X25519, reason="the _h2c extension is not built")


@pytest.fixture(autouse=True)
def _automatic(monkeypatch):
    for switch in SWITCHES:
        monkeypatch.delenv(switch, raising=False)
    h2c.force_x25519_isa(None)
    yield
    h2c.force_x25519_isa(None)


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def sodium(key: bytes, points: bytes) -> bytes:
    """libsodium, one element at a time; 32 zero bytes where it refuses."""
    out = bytearray()
    for i in range(0, len(points), 32):
        try:
            out += nacl.bindings.crypto_scalarmult(key, points[i : i + 32])
        except nacl.exceptions.RuntimeError:
            out += bytes(32)
    return bytes(out)


# The 7 small-order inputs libsodium's has_small_order lists (0, 1, two of order 8, p-1, p, p+1),
# the same with bit 255 set, and other inputs at the limb bounds.
SMALL_ORDER = [0, 1, 325606250916557431795983626356110631294008115727848805560023387167927233504,
               39382357235489614581723060781553021112529911719440698176882885853963445705823, P - 1, P, P + 1]
EDGES = ([_le(x) for x in SMALL_ORDER] + [_le(x | 1 << 255) for x in SMALL_ORDER]
         + [_le(x) for x in (2, 9, P - 2, P + 2, P + 18, (1 << 255) - 1, (1 << 256) - 1, (1 << 255) - 20,
                             (1 << 51) - 1, (1 << 26) - 1, 1 << 254)]
         + [bytes([0xFF] * 31 + [0x7F]), bytes([0xFF] * 32), bytes([0x80] * 32)])
KEYS = [bytes(32), bytes([0xFF] * 32), bytes([0x55] * 32), bytes([0xAA] * 32)]


def test_the_best_vector_path_runs_by_default():
    assert PATHS[0] == "portable"
    # the portable ladder only when forced: without a vector path libsodium runs (it is faster there)
    assert h2c.x25519_isa() == (PATHS[-1] if len(PATHS) > 1 else None)


@pytest.mark.parametrize("path", PATHS)
def test_rfc7748_vectors(path):
    for v in VECTORS["scalarmult"]:
        # 13 = 8 + 4 + 1: an IFMA group, an AVX2 group and a portable tail, as far as the path has them
        got = h2c.x25519(bytes.fromhex(v["scalar"]), bytes.fromhex(v["u"]) * 13, path)
        assert got == bytes.fromhex(v["out"]) * 13


@pytest.mark.parametrize("path", PATHS)
def test_rfc7748_iterated(path):
    it = VECTORS["iterated"]
    k = u = bytes.fromhex(it["start"])
    for i in range(1000):
        out = h2c.x25519(k, u * 13, path)
        assert out == out[:32] * 13  # every lane and the tail agree
        k, u = out[:32], k
        if i == 0:
            assert k == bytes.fromhex(it["after_1"])
    assert k == bytes.fromhex(it["after_1000"])


@pytest.mark.parametrize("path", PATHS)
def test_random_inputs_match_libsodium(path):
    for n in (1, 3, 4, 5, 8, 13, 257):
        key = secrets.token_bytes(32)
        points = secrets.token_bytes(32 * n)  # random u: about half off the curve (on the twist), some top bits set
        assert h2c.x25519(key, points, path) == sodium(key, points)


@pytest.mark.parametrize("path", PATHS)
def test_edge_inputs_and_keys_match_libsodium(path):
    points = b"".join(EDGES)
    for key in [*KEYS, secrets.token_bytes(32)]:
        got = h2c.x25519(key, points, path)
        assert got == sodium(key, points)
        # libsodium refuses every listed small-order input; so do we (all-zero output)
        for i in range(2 * len(SMALL_ORDER)):
            assert got[32 * i : 32 * i + 32] == bytes(32)


def test_every_path_agrees_with_the_portable_one():
    key = secrets.token_bytes(32)
    points = secrets.token_bytes(32 * 1001) + b"".join(EDGES)
    reference = h2c.x25519(key, points, "portable")
    for path in PATHS:
        assert h2c.x25519(key, points, path) == reference


@pytest.mark.parametrize("path", PATHS)
def test_fused_hash_and_blind_equals_hash_then_x25519(path):
    dst = psi.hash_dst(psi.make_domain("test", "fused"))
    messages = [f"id-{i}".encode() for i in range(37)] + [b"", bytes(300)]
    key = secrets.token_bytes(32)
    hashed = h2c.hash_to_group(messages, dst)
    assert h2c.hash_to_group_x25519(messages, dst, key, path) == sodium(key, hashed)


def test_force_and_switches_pick_the_path(monkeypatch):
    with pytest.raises(ValueError):
        h2c.force_x25519_isa("no-such-path")
    for path in PATHS:
        h2c.force_x25519_isa(path)
        assert h2c.x25519_isa() == path
    h2c.force_x25519_isa(None)
    for switch in ("PPRL_NO_IFMA", "PPRL_NO_AVX512"):
        monkeypatch.setenv(switch, "1")
        assert h2c.x25519_isa() == ("avx2" if "avx2" in PATHS else None)
        monkeypatch.delenv(switch)
    monkeypatch.setenv("PPRL_NO_AVX512", "1")
    monkeypatch.setenv("PPRL_NO_AVX2", "1")
    assert h2c.x25519_isa() is None  # no vector path: libsodium
    h2c.force_x25519_isa("portable")
    assert h2c.x25519_isa() == "portable"  # forcing overrides the ISA switches
    monkeypatch.setenv("PPRL_NO_X25519", "1")
    assert h2c.x25519_isa() is None  # but not PPRL_NO_X25519


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        h2c.x25519(bytes(31), bytes(32), "portable")
    with pytest.raises(ValueError):
        h2c.x25519(bytes(32), bytes(33), "portable")
    assert h2c.x25519(bytes(32), b"", "portable") == b""


# ------------------------------------------------------------------ the PSI layer, on every path and on libsodium

def _configure(monkeypatch, path: str | None) -> None:
    if path is None:
        monkeypatch.setenv("PPRL_NO_X25519", "1")
    else:
        h2c.force_x25519_isa(path)


@pytest.mark.parametrize("path", [*PATHS, None])
def test_psi_results_are_identical_on_every_path(monkeypatch, path):
    domain = psi.make_domain("test", "paths")
    key = psi.PSIKey(bytes(range(32)))
    items = [f"{i:018d}" for i in range(4100)]  # over the threading threshold: several batches
    h2c.force_x25519_isa(None)
    monkeypatch.setenv("PPRL_NO_X25519", "1")
    expected_blind = psi.blind(key, items, domain, workers=2)
    expected_reblind = psi.reblind(key, expected_blind, workers=1)
    monkeypatch.delenv("PPRL_NO_X25519")
    _configure(monkeypatch, path)
    assert psi.blind(key, items, domain, workers=2) == expected_blind
    assert psi.blind(key, items[:10], domain, workers=1) == expected_blind[: 32 * 10]
    assert psi.reblind(key, expected_blind, workers=2) == expected_reblind


@pytest.mark.parametrize("path", [*PATHS, None])
def test_psi_refuses_a_small_order_element_at_its_position(monkeypatch, path):
    _configure(monkeypatch, path)
    key = psi.PSIKey.generate()
    good = psi.blind(key, ["a", "b", "c", "d", "e"], psi.make_domain("t"))
    order8 = _le(SMALL_ORDER[2])
    blob = good[:96] + order8 + good[96:]
    with pytest.raises(DataValidationError, match="position 4"):
        psi.reblind(key, blob, what="request")


@pytest.mark.parametrize("path", [*PATHS, None])
def test_psi_two_party_flow(monkeypatch, path):
    _configure(monkeypatch, path)
    domain = psi.make_domain("test", "flow")
    client, server = psi.PsiClient(domain), psi.PsiServer(domain, reveal_intersection=True)
    mine = [f"c{i}" for i in range(50)] + [f"s{i}" for i in range(7)]
    theirs = [f"s{i}" for i in range(30)]
    request = client.create_request(mine)
    setup = server.setup(theirs)
    response = server.process_request(request)
    assert client.intersection(setup, response) == list(range(50, 57))


def test_identifiers_as_text_or_bytes_blind_alike():
    domain = psi.make_domain("test", "text")
    key = psi.PSIKey.generate()
    text = ["甲-1", "b", "c"]
    raw = [x.encode("utf-8") for x in text]
    assert psi.blind(key, text, domain) == psi.blind(key, raw, domain) == psi.blind(key, [text[0], *raw[1:]], domain)
    with pytest.raises(DataValidationError, match="position 2"):
        psi.blind(key, ["a", 7, "c"], domain)  # type: ignore[list-item]
