"""Batched modular exponentiation: the AVX-512 IFMA path against gmpy2, and decryption through both paths."""

from __future__ import annotations

import platform
import random
import sys

import gmpy2
import numpy as np
import pytest

from pprl.crypto import montexp
from pprl.crypto.paillier.engine import decrypt_chunk, decrypt_chunk_mod_p
from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, encrypt_packed, fixed_bound
from pprl.crypto.paillier.vector import decrypt_vector, encrypt_vector, generate_keypair

needs_ifma = pytest.mark.skipif(
    not montexp.HAVE_IFMA,
    reason="pprl.crypto._montexp is not built or this CPU lacks AVX-512 IFMA: only the gmpy2 path runs",
)

_rng = random.Random(20261125)


def _odd(bits: int) -> int:
    return _rng.getrandbits(bits) | (1 << (bits - 1)) | 1


def _want(bases, e, m) -> list[int]:
    return [int(gmpy2.powmod(b, e, m)) for b in bases]


@pytest.fixture(autouse=True)
def _ifma_on(monkeypatch):
    monkeypatch.delenv("PPRL_NO_IFMA", raising=False)


def test_cpu_with_ifma_gets_the_extension():
    """The extension is optional at install time; on x86-64 Linux CPUs with IFMA it must be built and used."""
    if not (sys.platform.startswith("linux") and platform.machine() == "x86_64"):
        pytest.skip("only checked on x86-64 Linux")
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        flags = f.read().split()
    if "avx512ifma" not in flags:
        pytest.skip("this CPU does not report avx512ifma")
    assert montexp._montexp is not None, "pprl.crypto._montexp failed to build: decryption silently uses gmpy2"
    assert montexp.HAVE_IFMA and montexp.ifma_enabled()


def test_limbs_for():
    assert montexp.limbs_for(2048) == 40 and montexp.limbs_for(4096) == 80
    assert montexp.limbs_for(1024) == 24 and montexp.limbs_for(414) == 8 and montexp.limbs_for(415) == 16
    for bits in range(2, montexp.MAX_BITS + 1, 7):
        limbs = montexp.limbs_for(bits)
        assert limbs % 8 == 0 and 52 * limbs >= bits + 2 and 52 * (limbs - 8) < bits + 2
    assert montexp.limbs_for(montexp.MAX_BITS) == 80


@needs_ifma
@pytest.mark.parametrize("bits", [256, 384, 512, 777, 1024, 1500, 2048, 2049, 3072, 4096, montexp.MAX_BITS])
def test_random_against_gmpy2(bits):
    """Random moduli, bases (also above the modulus and negative) and exponents of many lengths."""
    for _ in range(6):
        m = _odd(bits)
        for ebits in (1, 2, 5, 6, 63, 64, 65, 200, bits // 2, bits):
            if bits > 3000 and ebits > 200 and _rng.random() < 0.7:
                continue  # keep the big sizes quick: gmpy2 takes ~9 ms per 4096-bit exponentiation
            e = _rng.getrandbits(ebits) | (1 << (ebits - 1))
            bases = [_rng.getrandbits(bits) % m for _ in range(7)]
            bases += [_rng.getrandbits(bits + 40), -_rng.getrandbits(bits)]
            assert montexp.powmod_many(bases, e, m) == _want(bases, e, m), (bits, ebits)


@needs_ifma
def test_thousands_of_2048_bit_bases_and_every_group_size():
    """Batch lengths 1..9 cover every tail of the lockstep groups; then 2000 random bases."""
    m, e = _odd(2048), _rng.getrandbits(1024)
    for count in range(1, 10):
        bases = [_rng.getrandbits(2048) for _ in range(count)]
        assert montexp.powmod_many(bases, e, m) == _want(bases, e, m)
    e = _rng.getrandbits(48)
    bases = [_rng.getrandbits(2048) for _ in range(2000)]
    assert montexp.powmod_many(bases, e, m) == _want(bases, e, m)


@needs_ifma
@pytest.mark.parametrize("bits", [
    256, 412, 413, 414, 415, 416, 417, 520, 832, 1246, 1247, 1248, 1249, 2078, 2079, 2080, 2081, 4158,
])
def test_limb_boundaries_and_edge_values(bits):
    """Moduli just below/above 52-bit-limb and 8-limb boundaries; special bases and exponents."""
    for m in (_odd(bits), (1 << bits) - 1, (1 << (bits - 1)) + 1):
        bases = [0, 1, 2, m - 1, m - 2, m, m + 1, 2 * m - 1, 2 * m, 3 * m + 5, -1, (1 << bits) - 1]
        for e in (0, 1, 2, 3, 31, 32, 33, (1 << 64) - 1, (1 << 100) - 1, (1 << 101), m - 1):
            assert montexp.powmod_many(bases, e, m) == _want(bases, e, m), (bits, m, e)


@needs_ifma
def test_all_ones_exponents():
    m = _odd(2048)
    bases = [_rng.getrandbits(2048) for _ in range(3)]
    for ebits in (5, 10, 1023, 1024, 1025, 2048):
        e = (1 << ebits) - 1
        assert montexp.powmod_many(bases, e, m) == _want(bases, e, m)


@needs_ifma
def test_c_path_is_taken_and_checks_its_arguments():
    m = _odd(1024)
    nbytes, limbs = 128, montexp.limbs_for(1024)
    r2 = (pow(2, 2 * 52 * limbs, m)).to_bytes(nbytes, "little")
    k0 = -pow(m, -1, 1 << 52) % (1 << 52)
    base = 12345
    out = montexp._montexp.powmod_batch(
        base.to_bytes(nbytes, "little"), (65537).to_bytes(3, "little"), m.to_bytes(nbytes, "little"), r2, k0, limbs
    )
    assert int.from_bytes(out, "little") == pow(base, 65537, m)
    args = (b"\0" * nbytes, b"\1", m.to_bytes(nbytes, "little"), r2, k0)
    with pytest.raises(ValueError):
        montexp._montexp.powmod_batch(*args, 12)  # not a multiple of 8
    with pytest.raises(ValueError):
        montexp._montexp.powmod_batch(*args, 8)  # modulus too large for 8 limbs
    with pytest.raises(ValueError):
        montexp._montexp.powmod_batch(b"\0" * nbytes, b"\1", (m + 1).to_bytes(nbytes, "little"), r2, k0, limbs)
    with pytest.raises(ValueError):
        montexp._montexp.powmod_batch(b"\0" * (nbytes + 1), *args[1:], limbs)


def test_fallbacks_match_pow(monkeypatch):
    """Even, tiny and oversized moduli, negative exponents, empty input and PPRL_NO_IFMA go through gmpy2."""
    cases = [
        ([3, 5, 7], 10, 1 << 64),
        ([3, 5, 7], 10, _odd(2048) + 1),
        ([3, 5, 7], 10, 1),
        ([3, 5, 7], 1000, 101),
        ([3, 5, 7], 100, _odd(montexp.MAX_BITS + 1)),
        ([3, 5, 7], -3, 1000003),
    ]
    for bases, e, m in cases:
        assert montexp.powmod_many(bases, e, m) == [pow(b, e, m) for b in bases]
    assert montexp.powmod_many([], 5, _odd(2048)) == []
    assert montexp.powmod_many(iter([2, 3]), 5, 1000003) == [32, 243]
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    assert not montexp.ifma_enabled()
    m = _odd(2048)
    bases = [_rng.getrandbits(2048) for _ in range(4)]
    assert montexp.powmod_many(bases, m >> 1, m) == _want(bases, m >> 1, m)


@needs_ifma
def test_switch_is_read_at_every_call(monkeypatch):
    """PPRL_NO_IFMA follows pprl._native.disabled: "" and "0" keep the C path, anything else turns it off."""
    m = _odd(1024)
    bases = [_rng.getrandbits(1024) for _ in range(5)]
    fast = montexp.powmod_many(bases, m >> 3, m)
    for value, on in (("", True), ("0", True), (" 0 ", True), ("1", False), ("yes", False)):
        monkeypatch.setenv("PPRL_NO_IFMA", value)
        assert montexp.ifma_enabled() is on and montexp.modulus_supported(m) is on
        assert montexp.HAVE_IFMA
        assert montexp.powmod_many(bases, m >> 3, m) == fast == _want(bases, m >> 3, m)


# --- decryption through both paths -----------------------------------------------------------


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(1024, _allow_insecure=True)


@pytest.fixture(params=["ifma", "gmpy2"])
def path(request, monkeypatch):
    if request.param == "ifma":
        if not montexp.HAVE_IFMA:
            pytest.skip("no AVX-512 IFMA: the C path cannot run here")
        monkeypatch.delenv("PPRL_NO_IFMA", raising=False)
    else:
        monkeypatch.setenv("PPRL_NO_IFMA", "1")
    return request.param


def test_decrypt_vector_round_trip(keys, path):
    pub, priv = keys
    values = [0, 1, -1, 10**30, -(10**30), pub.max_int, -pub.max_int] + [_rng.randrange(-(10**12), 10**12)
                                                                        for _ in range(40)]
    enc = encrypt_vector(pub, values, workers=1)
    assert decrypt_vector(priv, enc, workers=1) == values
    total = enc.sum_groups([list(range(len(values)))])
    assert decrypt_vector(priv, total, workers=1) == [sum(values)]


def test_decrypt_kernels_identical_on_both_paths(keys, monkeypatch):
    pub, priv = keys
    cts = list(encrypt_vector(pub, list(range(-20, 20)), workers=1)._c)
    cts += [0, 1, pub.nsquare - 1]  # not ciphertexts, but both paths must still agree
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    want_full, want_p = decrypt_chunk(priv.crt, cts), decrypt_chunk_mod_p(priv.crt, cts)
    monkeypatch.delenv("PPRL_NO_IFMA")
    assert decrypt_chunk(priv.crt, cts) == want_full
    assert decrypt_chunk_mod_p(priv.crt, cts) == want_p


def test_decrypt_packed_round_trip(keys, path):
    pub, priv = keys
    rows = np.array([[_rng.randrange(-(10**8), 10**8 + 1) for _ in range(3)] for _ in range(10)], dtype=object)
    small = PackingSpec.plan(fixed_bound("1000000", 2), 3, 1000, key=1024, decimals=2)  # mod-p kernel
    enc = encrypt_packed(pub, rows, small, workers=1)
    assert (decrypt_packed(priv, enc, small, [1] * 10, workers=1) == rows).all()
    sums = decrypt_packed(priv, enc.sum_groups([[0, 1, 2], [3, 4]]), small, [3, 2], workers=1)
    assert (sums == np.array([rows[:3].sum(axis=0), rows[3:5].sum(axis=0)])).all()
