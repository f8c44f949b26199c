"""The AVX2 Montgomery kernel (pprl/crypto/_avx2exp.c) against gmpy2: powmod, fixed-base tables,
DJN encryption and CRT decryption bit-identical across the IFMA, AVX2 and gmpy2 paths."""

from __future__ import annotations

import platform
import random

import gmpy2
import phe
import pytest

from pprl.crypto import montexp
from pprl.crypto.paillier import djn as paillier_djn
from pprl.crypto.paillier.djn import FixedBaseTable, djn_params, get_table, obfuscate
from pprl.crypto.paillier.engine import decrypt_chunk, encrypt_raw
from pprl.crypto.paillier.vector import decrypt_vector, encrypt_vector, generate_keypair

needs_avx2 = pytest.mark.skipif(
    not montexp.HAVE_AVX2MONT, reason="pprl.crypto._avx2exp is not built or this CPU lacks AVX2"
)
_rng = random.Random(20261208)
PATHS = ["ifma", "avx2", "gmpy2"]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    for name in ("PPRL_NO_IFMA", montexp.AVX2_SWITCH, "PPRL_NO_AVX2"):
        monkeypatch.delenv(name, raising=False)
    paillier_djn.clear_memory_cache()
    yield
    paillier_djn.clear_memory_cache()


def _use(path: str, monkeypatch) -> None:
    """Route montexp to one path (skip when this machine cannot run it)."""
    if path == "ifma" and not montexp.HAVE_IFMA:
        pytest.skip("no AVX-512 IFMA here")
    if path == "avx2" and not montexp.HAVE_AVX2MONT:
        pytest.skip("no AVX2 kernel here")
    if path != "ifma":
        monkeypatch.setenv("PPRL_NO_IFMA", "1")
    if path == "gmpy2":
        monkeypatch.setenv(montexp.AVX2_SWITCH, "1")


@pytest.fixture(scope="module")
def keys():
    return {bits: generate_keypair(bits, _allow_insecure=bits < 2048) for bits in (1024, 2048)}


def test_built_where_expected():
    if platform.machine() in ("x86_64", "AMD64"):
        assert montexp._avx2exp is not None, "pprl.crypto._avx2exp failed to build: no-IFMA CPUs use gmpy2"


def test_switches(monkeypatch):
    if not montexp.HAVE_AVX2MONT:
        assert not montexp.avx2_enabled()
        return
    assert montexp.avx2_enabled()
    monkeypatch.setenv(montexp.AVX2_SWITCH, "1")
    assert not montexp.avx2_enabled() and not montexp.avx2_supported(2**2048 - 1)
    monkeypatch.setenv(montexp.AVX2_SWITCH, "0")
    assert montexp.avx2_enabled()
    monkeypatch.setenv("PPRL_NO_AVX2", "1")
    assert not montexp.avx2_enabled()


@needs_avx2
@pytest.mark.parametrize("bits", [256, 300, 1000, 1023, 2048, 2049, 3000, 4096, 4313, montexp.AVX2_MAX_BITS])
def test_powmod_matches_gmpy2(bits, monkeypatch):
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    m = _rng.getrandbits(bits) | (1 << (bits - 1)) | 1
    assert montexp.kernel_for(m) == "avx2"
    bases = [0, 1, 2, m - 1, m, m + 5, -3, 7 * m + 2] + [_rng.randrange(m) for _ in range(9)]
    for e in [0, 1, 2, 31, 32, 33, (1 << 64) - 1, _rng.getrandbits(bits // 2), _rng.getrandbits(bits + 7)]:
        got = montexp.powmod_many(bases, e, m)
        assert [int(x) for x in got] == [int(gmpy2.powmod(b, e, m)) for b in bases], (bits, e)


@needs_avx2
def test_kernel_limits(monkeypatch):
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    assert montexp.kernel_for(2**(montexp.AVX2_MAX_BITS + 1) - 1) is None  # above the 160 limbs
    assert montexp.kernel_for(2**200 + 1) is None  # below MIN_BITS gmpy2 is as fast
    assert montexp.kernel_for(2**1024) is None  # even
    ext = montexp._avx2exp
    m = (1 << 1024) - 159
    nb, limbs, r2, k0 = montexp._mont_params(m, "avx2")
    mod = m.to_bytes(nb, "little")
    with pytest.raises(ValueError):
        ext.powmod_batch(b"\0" * nb, b"\1", mod, r2, k0, limbs - 1)  # modulus too large for the limbs
    with pytest.raises(ValueError):
        ext.powmod_batch(b"\0" * nb, b"\1", (m + 1).to_bytes(nb, "little"), r2, k0, limbs)  # even
    with pytest.raises(ValueError):
        ext.powmod_batch(b"\0" * (nb + 1), b"\1", mod, r2, k0, limbs)  # not whole numbers
    with pytest.raises(ValueError):
        ext.powmod_batch(b"\0" * nb, b"\1", mod, r2, k0, 161)  # too many limbs
    for bad in (0, m, m + 1, 256**nb - 1):  # table entries must be in [1, M)
        with pytest.raises(ValueError):
            ext.to_montgomery(bad.to_bytes(nb, "little"), mod, r2, k0, limbs)


@needs_avx2
@pytest.mark.parametrize("bits, ell, w", [(1024, 512, 1), (1024, 512, 5), (1024, 500, 7), (2048, 1024, 10)])
def test_table_products_match_gmpy2(keys, bits, ell, w, monkeypatch):
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    pub, _ = keys[bits]
    table = FixedBaseTable.build_fast(pub.djn_hs, pub.nsquare, ell, w)
    assert table.mont is not None and table.mont.kernel == "avx2" and table._rows is None
    plain = FixedBaseTable.build(pub.djn_hs, pub.nsquare, ell, w)
    assert table.rows == plain.rows  # from_montgomery gives the gmpy2 table back
    top = (1 << ell) - 1
    es = [0, 1, top, 1 << (ell - 1), (1 << w) - 1] + [_rng.getrandbits(_rng.randrange(1, ell + 1)) for _ in range(40)]
    table._rows = None
    got = table.pow_many(es)
    assert got == plain.pow_many(es) == [gmpy2.powmod(pub.djn_hs, e, pub.nsquare) for e in es]
    conv = FixedBaseTable.build(pub.djn_hs, pub.nsquare, ell, w)
    assert conv.use_montgomery() and conv.mont.kernel == "avx2"
    assert conv.pow_many(es) == got


@needs_avx2
def test_disk_cache_loads_into_the_avx2_form(keys, tmp_path, monkeypatch):
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    pub, _ = keys[1024]
    params = djn_params(pub, 10_000, window=6, cache_dir=tmp_path)
    built = get_table(params)
    es = [_rng.getrandbits(params.exponent_bits) for _ in range(50)]
    want = built.pow_many(es)
    paillier_djn.clear_memory_cache()
    loaded = get_table(params)
    assert loaded.mont is not None and loaded.mont.kernel == "avx2" and loaded._rows is None
    assert loaded.pow_many(es) == want == [gmpy2.powmod(pub.djn_hs, e, pub.nsquare) for e in es]


def test_same_randomness_same_ciphertexts_on_every_path(keys, monkeypatch):
    """DJN obfuscators and CRT decryption: bit-identical on IFMA, AVX2 and gmpy2 (those this CPU has)."""
    pub, priv = keys[2048]
    params = djn_params(pub, 200)
    es = [0, 1, (1 << params.exponent_bits) - 1] + [_rng.getrandbits(params.exponent_bits) for _ in range(37)]
    cts = [_rng.randrange(1, pub.nsquare) for _ in range(21)]
    results = {}
    for path in PATHS:
        if (path == "ifma" and not montexp.HAVE_IFMA) or (path == "avx2" and not montexp.HAVE_AVX2MONT):
            continue
        with monkeypatch.context() as mp:
            _use(path, mp)
            paillier_djn.clear_memory_cache()
            mont = get_table(params).mont
            assert (mont.kernel if mont is not None else "gmpy2") == path
            results[path] = ([int(x) for x in obfuscate(params, es)], decrypt_chunk(priv.crt, cts))
    assert len({repr(v) for v in results.values()}) == 1, sorted(results)
    assert results["gmpy2"][0] == [int(gmpy2.powmod(pub.djn_hs, e, pub.nsquare)) for e in es]


@pytest.mark.parametrize("path", PATHS)
def test_round_trip_and_phe_interop(keys, path, monkeypatch):
    _use(path, monkeypatch)
    pub, priv = keys[2048]
    values = [0, 1, -1, pub.max_int, -pub.max_int] + [_rng.randrange(-(10**12), 10**12) for _ in range(200)]
    enc = encrypt_vector(pub, values, workers=1)
    assert decrypt_vector(priv, enc, workers=1) == values
    raw = [_rng.randrange(pub.n) for _ in range(150)]
    cts = encrypt_raw(pub, raw, workers=1)
    ppub, ppriv = pub.to_phe(), priv.to_phe()
    assert [ppriv.raw_decrypt(int(c)) for c in cts[:20]] == raw[:20]
    assert decrypt_chunk(priv.crt, cts) == raw
    theirs = [ppub.raw_encrypt(m) for m in raw[:20]]  # phe's r^n ciphertexts decrypt on our path
    assert decrypt_chunk(priv.crt, theirs) == raw[:20]
    assert isinstance(phe.EncryptedNumber(ppub, int(cts[0])), phe.EncryptedNumber)


def test_3072_bit_keys_stay_on_gmpy2(monkeypatch):
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    pub, priv = generate_keypair(3072)
    assert pub.nsquare.bit_length() > montexp.AVX2_MAX_BITS and montexp.kernel_for(pub.nsquare) is None
    values = [_rng.randrange(-(10**12), 10**12) for _ in range(130)]
    enc = encrypt_vector(pub, values, workers=1, exponent_bits=256, window=4)
    assert get_table(djn_params(pub, 130, exponent_bits=256, window=4)).mont is None
    assert decrypt_vector(priv, enc, workers=1) == values  # p² (3072 bits) goes to the AVX2 kernel
