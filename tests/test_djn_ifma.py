"""DJN fixed-base table products on AVX-512 IFMA against the gmpy2 table path, and encryption through both."""

from __future__ import annotations

import random

import gmpy2
import numpy as np
import pytest

from pprl.crypto import montexp
from pprl.crypto.paillier import djn as paillier_djn
from pprl.crypto.paillier.djn import FixedBaseTable, djn_params, get_table
from pprl.crypto.paillier.engine import encrypt_raw
from pprl.crypto.paillier.packing import PackingSpec, decrypt_packed, encrypt_packed, fixed_bound
from pprl.crypto.paillier.vector import decrypt_vector, encrypt_vector, generate_keypair
from pprl.errors import DataValidationError

needs_ifma = pytest.mark.skipif(
    not montexp.HAVE_IFMA,
    reason="pprl.crypto._montexp is not built or this CPU lacks AVX-512 IFMA: only the gmpy2 path runs",
)

_rng = random.Random(20261126)


@pytest.fixture(autouse=True)
def _ifma_on(monkeypatch):
    monkeypatch.delenv("PPRL_NO_IFMA", raising=False)
    paillier_djn.clear_memory_cache()
    yield
    paillier_djn.clear_memory_cache()


@pytest.fixture(scope="module")
def keys():
    return {bits: generate_keypair(bits, _allow_insecure=bits < 2048) for bits in (1024, 2048)}


def _exponents(ell: int, w: int, count: int) -> list[int]:
    """Random exponents plus the edge cases: 0, 1, all ones, top bit only, all-max / all-zero digits."""
    all_max = sum(((1 << w) - 1) << (w * i) for i in range(0, ell // w, 2))
    edge = [0, 1, (1 << ell) - 1, 1 << (ell - 1), all_max, ((1 << ell) - 1) ^ all_max, (1 << w) - 1,
            ((1 << (ell % w or w)) - 1) << (ell - (ell % w or w))]  # only the (partial) top window
    short = [_rng.getrandbits(_rng.randrange(1, ell + 1)) for _ in range(count // 4)]
    return edge + short + [_rng.getrandbits(ell) for _ in range(count - len(short))]


@needs_ifma
@pytest.mark.parametrize(
    ("bits", "ell", "w"),
    [(1024, 512, 10), (1024, 256, 8), (2048, 1024, 10), (2048, 1021, 7), (2048, 224, 12)],
)
def test_ifma_products_equal_gmpy2_table(keys, bits, ell, w):
    pub, _ = keys[bits]
    n2 = pub.nsquare
    assert montexp.modulus_supported(n2)
    plain = FixedBaseTable.build(pub.djn_hs, n2, ell, w)
    fast = FixedBaseTable.build_fast(pub.djn_hs, n2, ell, w)
    assert fast.mont is not None and fast._rows is None  # Montgomery form only
    converted = FixedBaseTable.build(pub.djn_hs, n2, ell, w)
    assert converted.use_montgomery() and converted._rows is None
    es = _exponents(ell, w, 2000)
    want = plain.pow_many(es)  # gmpy2 path (no Montgomery form)
    assert fast.pow_many(es) == want
    assert converted.pow_many(es) == want
    assert [fast.pow(e) for e in es[:50]] == want[:50]
    for e, r in zip(es[:40], want[:40]):
        assert r == gmpy2.powmod(pub.djn_hs, e, n2)
    assert fast.rows == plain.rows  # rebuilt from the Montgomery form
    with pytest.raises(DataValidationError):
        fast.pow_many([1 << ell])
    with pytest.raises(DataValidationError):
        fast.pow(-1)


@needs_ifma
def test_table_products_guards(keys):
    pub, _ = keys[1024]
    table = montexp.MontgomeryTable.build(pub.djn_hs, pub.nsquare, 4, 3)
    assert montexp.table_products(table, []) == []
    assert montexp.table_products(table, [(1 << 12) - 1]) == [gmpy2.powmod(pub.djn_hs, (1 << 12) - 1, pub.nsquare)]
    with pytest.raises(ValueError):
        montexp.table_products(table, [1 << 12])
    with pytest.raises(ValueError):
        montexp.table_products(table, [-1])
    nb = table.nbytes
    mod = table.modulus.to_bytes(nb, "little")
    args = (table.data, 4, 3, b"\0\0", 2, mod, table.k0, table.limbs)
    with pytest.raises(ValueError):
        montexp._montexp.table_products(table.data[:-8], *args[1:])  # table length != rows * 2^w * L
    with pytest.raises(ValueError):
        montexp._montexp.table_products(table.data, 5, *args[2:])  # window does not match
    with pytest.raises(ValueError):
        montexp._montexp.table_products(*args[:3], b"\0\0\0", 2, *args[5:])  # partial exponent
    with pytest.raises(ValueError):
        montexp._montexp.table_products(*args[:5], (table.modulus + 1).to_bytes(nb, "little"), *args[6:])
    with pytest.raises(ValueError):
        montexp.MontgomeryTable.build(3, 2**64 + 1, 4, 3)  # below MIN_BITS: not taken
    # to/from Montgomery form round trip
    xs = [1, 2, table.modulus - 1] + [_rng.randrange(1, table.modulus) for _ in range(9)]
    r2 = montexp._mont_params(table.modulus)[2]
    blob = montexp._montexp.to_montgomery(b"".join(x.to_bytes(nb, "little") for x in xs), mod, r2,
                                          table.k0, table.limbs)
    back = montexp._montexp.from_montgomery(blob, mod, table.k0, table.limbs)
    assert [int.from_bytes(back[i : i + nb], "little") for i in range(0, len(back), nb)] == xs
    big = montexp._montexp.to_montgomery(b"".join(x.to_bytes(nb, "big") for x in xs), mod, r2, table.k0,
                                         table.limbs, True)
    assert big == blob
    for bad in (0, table.modulus, table.modulus + 1, 256**nb - 1):  # entries must be in [1, M)
        with pytest.raises(ValueError):
            montexp._montexp.to_montgomery(bad.to_bytes(nb, "little"), mod, r2, table.k0, table.limbs)


def test_3072_bit_keys_fall_back_to_gmpy2():
    pub, priv = generate_keypair(3072)
    assert pub.nsquare.bit_length() > montexp.MAX_BITS and not montexp.modulus_supported(pub.nsquare)
    table = FixedBaseTable.build_fast(pub.djn_hs, pub.nsquare, 256, 4)
    assert table.mont is None and not table.use_montgomery()
    for e in [0, 1, (1 << 256) - 1] + [_rng.getrandbits(256) for _ in range(5)]:
        assert table.pow(e) == gmpy2.powmod(pub.djn_hs, e, pub.nsquare)
    values = [_rng.randrange(-(10**12), 10**12) for _ in range(130)]
    enc = encrypt_vector(pub, values, workers=1, exponent_bits=256, window=4)
    assert get_table(djn_params(pub, 130, exponent_bits=256, window=4)).mont is None
    assert decrypt_vector(priv, enc, workers=1) == values


@pytest.fixture(params=["ifma", "avx2", "gmpy2"])
def path(request, monkeypatch):
    if request.param == "ifma":
        if not montexp.HAVE_IFMA:
            pytest.skip("no AVX-512 IFMA: the C path cannot run here")
    elif request.param == "avx2":
        if not montexp.HAVE_AVX2MONT:
            pytest.skip("no AVX2 kernel: the C path cannot run here")
        monkeypatch.setenv("PPRL_NO_IFMA", "1")
    else:
        monkeypatch.setenv("PPRL_NO_IFMA", "1")
        monkeypatch.setenv(montexp.AVX2_SWITCH, "1")
    return request.param


def test_encrypt_round_trips(keys, path):
    pub, priv = keys[2048]
    values = [0, 1, -1, pub.max_int, -pub.max_int] + [_rng.randrange(-(10**12), 10**12) for _ in range(200)]
    enc = encrypt_vector(pub, values, workers=1)  # >= TABLE_THRESHOLD: the table path
    params = djn_params(pub, len(values))
    assert params.use_table
    mont = get_table(params).mont
    assert (mont is not None) == (path != "gmpy2")
    assert mont is None or mont.kernel == path
    assert decrypt_vector(priv, enc, workers=1) == values
    rows = np.array([[_rng.randrange(-(10**8), 10**8 + 1) for _ in range(3)] for _ in range(150)], dtype=object)
    spec = PackingSpec.plan(fixed_bound("1000000", 2), 3, 1000, key=2048, decimals=2)
    encp = encrypt_packed(pub, rows, spec, workers=1)
    assert (decrypt_packed(priv, encp, spec, [1] * len(rows), workers=1) == rows).all()


@needs_ifma
def test_table_switches_to_gmpy2_when_disabled_later(keys, monkeypatch):
    pub, priv = keys[1024]
    table = FixedBaseTable.build_fast(pub.djn_hs, pub.nsquare, 512, 6)
    es = _exponents(512, 6, 100)
    want = table.pow_many(es)
    monkeypatch.setenv("PPRL_NO_IFMA", "1")
    assert table.pow_many(es) == want  # through the rebuilt mpz rows
    assert table._rows is not None


def _forbidden(*args, **kwargs):
    raise AssertionError("table was rebuilt")


@needs_ifma
def test_forked_workers_inherit_the_montgomery_table(keys, monkeypatch):
    pub, priv = keys[1024]
    values = list(range(-150, 150))
    params = djn_params(pub, len(values))
    table = get_table(params)  # built here; the workers must not build again
    assert table.mont is not None
    monkeypatch.setattr(FixedBaseTable, "build", _forbidden)
    monkeypatch.setattr(FixedBaseTable, "build_fast", _forbidden)
    monkeypatch.setattr(montexp.MontgomeryTable, "build", _forbidden)
    monkeypatch.setattr(montexp.MontgomeryTable, "from_rows", _forbidden)
    raw = [v % pub.n for v in values]
    cts = encrypt_raw(pub, raw, workers=2)
    assert len(cts) == len(values) and len(set(int(c) for c in cts)) == len(values)
    enc = encrypt_vector(pub, values, workers=2)
    assert decrypt_vector(priv, enc, workers=1) == values


@needs_ifma
def test_disk_cache_is_loaded_and_converted(keys, tmp_path, monkeypatch):
    pub, _ = keys[1024]
    params = djn_params(pub, 10_000, window=6, cache_dir=tmp_path)
    built = get_table(params)  # built on IFMA, written in plain form
    assert built.mont is not None
    es = _exponents(params.exponent_bits, 6, 300)
    want = built.pow_many(es)
    paillier_djn.clear_memory_cache()
    monkeypatch.setattr(FixedBaseTable, "build", _forbidden)
    monkeypatch.setattr(FixedBaseTable, "build_fast", _forbidden)
    loaded = get_table(params)
    assert loaded.mont is not None and loaded._rows is None
    assert loaded.pow_many(es) == want
    assert want == [gmpy2.powmod(pub.djn_hs, e, pub.nsquare) for e in es]


@needs_ifma
@pytest.mark.parametrize("damage", [None, "flip-body", "reseal-entry", "reseal-out-of-range", "reseal-zero"])
def test_cache_file_read_into_montgomery_form(keys, damage):
    import hashlib

    pub, _ = keys[1024]
    w, ell = 5, 512
    plain = FixedBaseTable.build(pub.djn_hs, pub.nsquare, ell, w)
    data = bytearray(plain.to_bytes(pub.fingerprint, pub.djn_hs))
    width = pub.ciphertext_bytes
    start = data.index(b"}") + 1
    entry = start + 7 * (2**w - 1) * width  # T[7][1]: the row-continuity check always sees it
    if damage == "flip-body":
        data[len(data) // 2] ^= 0x01
    elif damage is not None:
        body = data[:-32]
        if damage == "reseal-entry":
            body[entry + 9] ^= 0x10
        else:
            body[entry : entry + width] = b"\xff" * width if damage == "reseal-out-of-range" else bytes(width)
        data = body + hashlib.sha256(bytes(body)).digest()
    kw = {"base": pub.djn_hs, "modulus": pub.nsquare, "exponent_bits": ell, "window": w,
          "fingerprint": pub.fingerprint}
    fast = FixedBaseTable.from_bytes(bytes(data), montgomery=True, **kw)
    if damage is None:
        assert fast is not None and fast.mont is not None and fast._rows is None
        es = _exponents(ell, w, 500)
        assert fast.pow_many(es) == plain.pow_many(es)
        assert fast.rows == plain.rows
    else:
        assert fast is None
        assert FixedBaseTable.from_bytes(bytes(data), **kw) is None
