"""The C masker ``pprl.encoding._bloom`` against the Python path, mask for mask and CLK for CLK.

Both paths must give identical masks for every text and setting the extension
takes (n-grams, positional, exact; both strategies; more than 32 bits per token;
tokens across BLAKE2b block boundaries; CJK and astral characters), whole
encodings and reports must not depend on ``PPRL_NO_BLOOM``, and features the
extension does not cover must be left to the Python path.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pprl.encoding import bloom
from pprl.encoding.clk import encode_with_report
from pprl.encoding.hashing import Hashing
from pprl.encoding.masks import build_encoders
from pprl.encoding.schema import load_schema
from pprl.encoding.tokens import ExactComparison, NgramComparison, NumericComparison
from pprl.errors import DataValidationError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
SECRET = b"bloom native test secret"

needs_bloom = pytest.mark.skipif(not bloom.HAVE_BLOOM, reason="pprl.encoding._bloom is not built")


@pytest.fixture(autouse=True)
def _switch_off(monkeypatch):
    monkeypatch.delenv(bloom.BLOOM_SWITCH, raising=False)


def python_mask(text: str, hashing: Hashing, hasher: bloom.TokenHasher) -> int:
    """The reference: clkhash's bits per token, each token's mask from TokenHasher, ORed."""
    tokens = hashing.comparison.tokenize(text)
    if not tokens:
        return 0
    mask = 0
    for token, k in zip(tokens, hashing.bits_per_token(len(tokens))):
        if k:
            mask |= hasher.mask(token, k)
    return mask


ALPHABET = "ab z09-王李张小明伟é🙂"


def random_texts(rng: random.Random, count: int) -> list[str]:
    sizes = [0, 1, 2, 3, 7, 31, 32, 33, 43, 64, 127, 128, 129, 300]
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.choice(sizes))) for _ in range(count)]


COMPARISONS = [ExactComparison(), NgramComparison(1), NgramComparison(2), NgramComparison(3),
               NgramComparison(1, True), NgramComparison(2, True)]


@needs_bloom
@pytest.mark.parametrize("comparison", COMPARISONS, ids=repr)
@pytest.mark.parametrize("strategy", ["bitsPerToken", "bitsPerFeature"])
@pytest.mark.parametrize(("length", "bits"), [(8, 3), (64, 33), (1024, 100), (1024, 7), (4096, 200),
                                              (65536, 70), (1024, 2048)])
def test_masks_equal_the_python_path(comparison, strategy, length, bits):
    rng = random.Random(f"{comparison!r}{strategy}{length}{bits}")
    key = rng.randbytes(rng.choice([1, 17, 32, 64]))
    hashing = Hashing(comparison, strategy, bits)
    hasher = bloom.TokenHasher("blakeHash", (key, b""), "utf-8", length)
    masker = bloom.native_masker(hashing, key, "utf-8", length)
    assert masker is not None
    texts = random_texts(rng, 40)
    texts += texts[:5]  # repeated values hit the token memo
    got = masker.masks(texts)
    assert got == [python_mask(t, hashing, hasher) for t in texts]
    assert sum(1 for m in got if m) > 20  # the test compares something


@needs_bloom
@pytest.mark.parametrize("size", [1, 127, 128, 129, 255, 256, 257, 384])
def test_tokens_across_blake2b_blocks(size):
    """Exact tokens of exactly one, two or three 128-byte blocks (and one byte either side)."""
    key = bytes(range(64))
    hashing = Hashing(ExactComparison(), "bitsPerToken", 40)
    hasher = bloom.TokenHasher("blakeHash", (key, b""), "utf-8", 1024)
    masker = bloom.native_masker(hashing, key, "utf-8", 1024)
    assert masker is not None
    texts = ["x" * size, "é" * (size // 2) + "y" * (size % 2), "张" * (size // 3) + "z" * (size % 3)]
    assert [len(t.encode()) for t in texts] == [size] * 3
    assert masker.masks(texts) == [python_mask(t, hashing, hasher) for t in texts]


@needs_bloom
def test_token_memo_is_bounded_and_emptying_it_changes_nothing():
    key = b"k" * 64
    hashing = Hashing(ExactComparison(), "bitsPerToken", 5)
    hasher = bloom.TokenHasher("blakeHash", (key, b""), "utf-8", 256)
    masker = bloom.native_masker(hashing, key, "utf-8", 256)
    assert masker is not None
    texts = [str(i) for i in range((1 << 17) + 1000)]
    first = masker.masks(texts)
    assert 0 < masker.memo_size() <= 1 << 17
    again = masker.masks(texts[:300] + texts[-300:])
    assert again == first[:300] + first[-300:]
    sample = texts[:50] + texts[-50:]
    assert [first[int(t)] for t in sample] == [python_mask(t, hashing, hasher) for t in sample]
    masker.clear()
    assert masker.memo_size() == 0
    assert masker.masks(sample) == [first[int(t)] for t in sample]


@needs_bloom
def test_long_tokens_bound_the_memo_by_bytes():
    key = b"k" * 64
    hashing = Hashing(ExactComparison(), "bitsPerToken", 40)
    hasher = bloom.TokenHasher("blakeHash", (key, b""), "utf-8", 512)
    masker = bloom.native_masker(hashing, key, "utf-8", 512)
    assert masker is not None
    texts = [f"{i:0300d}" for i in range(60_000)]  # 18 MB of tokens: more than the memo keeps
    got = masker.masks(texts)
    assert masker.memo_size() < 60_000
    for i in (0, 1, 30_000, 59_999):
        assert got[i] == python_mask(texts[i], hashing, hasher)


@needs_bloom
def test_ascii_feature_refuses_other_text():
    masker = bloom.native_masker(Hashing(NgramComparison(2), "bitsPerFeature", 50), b"key", "ascii", 128)
    assert masker is not None
    assert masker.masks(["abc"])[0] != 0
    with pytest.raises(UnicodeError):
        masker.masks(["abc", "abé"])


@needs_bloom
def test_surrogates_are_refused_and_no_utf8_copy_is_left_on_the_texts():
    masker = bloom.native_masker(Hashing(NgramComparison(2), "bitsPerFeature", 50), b"key", "utf-8", 128)
    exact = bloom.native_masker(Hashing(ExactComparison(), "bitsPerToken", 5), b"key", "utf-8", 128)
    assert masker is not None and exact is not None
    for m in (masker, exact):
        with pytest.raises(UnicodeError):
            m.masks(["ab\ud800c"])
    texts = ["".join(["张三", str(i), "路"]) for i in range(3)]  # fresh, non-ASCII strings
    sizes = [sys.getsizeof(t) for t in texts]
    masker.masks(texts)
    exact.masks(texts)
    assert [sys.getsizeof(t) for t in texts] == sizes  # PyUnicode_AsUTF8 would have grown them


@pytest.mark.parametrize("switch", ["0", "1"])
def test_a_surrogate_is_a_data_error_on_both_paths(switch, monkeypatch):
    monkeypatch.setenv(bloom.BLOOM_SWITCH, switch)
    schema = load_schema(EXAMPLES / "schema-cn-clkhash.json")
    rows = [["1", "张三", "男", "1990-01-01", "13800000000", "110101199001010000", "北京", "1", "2", "3"]] * 3
    rows[1] = [*rows[1][:6], "北\ud800京", "1", "2", "3"]
    with pytest.raises(DataValidationError, match=r"row 2, column 'address'"):
        encode_with_report(rows, schema, SECRET, workers=1)


@needs_bloom
@pytest.mark.parametrize(("hashing", "key", "encoding", "length"), [
    (Hashing(NgramComparison(2), "bitsPerToken", 20, "doubleHash"), b"k", "utf-8", 1024),
    (Hashing(NumericComparison(1.0, 2), "bitsPerToken", 20), b"k", "utf-8", 1024),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"k", "utf-16", 1024),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"k", "no-such-codec", 1024),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"", "utf-8", 1024),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"k" * 65, "utf-8", 1024),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"k", "utf-8", 4),
    (Hashing(NgramComparison(2), "bitsPerToken", 20), b"k", "utf-8", 1 << 17),
    (Hashing(NgramComparison(2), "bitsPerToken", 2049), b"k", "utf-8", 1024),
], ids=["doubleHash", "numeric", "utf-16", "unknown codec", "no key", "long key", "short", "long", "bits"])
def test_features_the_extension_does_not_cover_stay_in_python(hashing, key, encoding, length):
    assert bloom.native_masker(hashing, key, encoding, length) is None


@needs_bloom
def test_table_refuses_settings_it_cannot_compute():
    from pprl.encoding import _bloom  # noqa: PLC0415 - the extension itself, only here

    for args in [(b"", 1024, 2, False, True, 10, False), (b"k", 1000, 2, False, True, 10, False),
                 (b"k", 1024, -1, False, True, 10, False), (b"k", 1024, 2, False, True, 0, False)]:
        with pytest.raises(ValueError):
            _bloom.Table(*args)


def test_salted_features_use_the_python_path():
    schema = load_schema({
        "version": "3+pprl",
        "clkConfig": {"l": 512, "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64}},
        "features": [
            {"identifier": "dob", "format": {"type": "string", "encoding": "utf-8"},
             "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 10}}},
            {"identifier": "name", "format": {"type": "string", "encoding": "utf-8"},
             "salt": {"feature": "dob"},
             "hashing": {"comparison": {"type": "ngram", "n": 2}, "strategy": {"bitsPerToken": 10}}},
        ],
    })
    encoders = build_encoders(schema, ((b"a" * 64, b"b" * 64), (b"c" * 64, b"d" * 64)))
    assert [enc.native is not None for enc in encoders] == [bloom.HAVE_BLOOM, False]


def synth_frame(n: int = 1500):
    from pprl.sim.synth import generate_population

    return generate_population(n, 1, seed=5, corruption=0.4).platforms["platform_1"]


@needs_bloom
@pytest.mark.parametrize("schema_name", ["schema-cn.json", "schema-cn-clkhash.json"])
def test_switch_is_read_at_every_batch_and_both_paths_encode_the_same(schema_name, monkeypatch):
    schema = load_schema(EXAMPLES / schema_name)
    frame = synth_frame()
    frame.loc[::40, "mobile"] = "12345"  # refused by cn_mobile: counted as invalid
    frame.loc[1::40, "resident_id"] = "123"
    frame.loc[2::40, "address"] = ""
    assert bloom.bloom_enabled()
    native = encode_with_report(frame, schema, SECRET, workers=1)
    monkeypatch.setenv(bloom.BLOOM_SWITCH, "1")
    assert not bloom.bloom_enabled() and bloom.HAVE_BLOOM
    python = encode_with_report(frame, schema, SECRET, workers=1)
    assert np.array_equal(native.clks, python.clks)
    assert native.report == python.report
    assert native.clks.any(axis=1).mean() > 0.9
    assert native.report.feature("address").missing >= len(frame) // 40
    if schema_name == "schema-cn.json":
        assert native.report.feature("mobile").invalid >= len(frame) // 40
    monkeypatch.setenv(bloom.BLOOM_SWITCH, "0")
    assert bloom.bloom_enabled()


@needs_bloom
def test_worker_processes_use_the_same_masks():
    schema = load_schema(EXAMPLES / "schema-cn.json")
    frame = synth_frame(3000)
    serial = encode_with_report(frame, schema, SECRET, workers=1)
    parallel = encode_with_report(frame, schema, SECRET, workers=2)
    assert np.array_equal(serial.clks, parallel.clks) and serial.report == parallel.report


def test_switch_set_before_import():
    """Set before the interpreter starts, the switch turns the path off but the extension is still loaded."""
    code = "import pprl.encoding.bloom as b; print(b.HAVE_BLOOM, b.bloom_enabled())"
    env = {k: v for k, v in os.environ.items() if k != bloom.BLOOM_SWITCH}
    plain = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.split()
    off = subprocess.run([sys.executable, "-c", code], env={**env, bloom.BLOOM_SWITCH: "1"}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
    assert plain == [str(bloom.HAVE_BLOOM)] * 2
    assert off == [str(bloom.HAVE_BLOOM), "False"]


def test_extension_is_built_on_linux_cpython():
    """Optional at install time, but this portable C builds wherever the other extensions do."""
    if not sys.platform.startswith("linux") or sys.implementation.name != "cpython":
        pytest.skip("only required on Linux CPython")
    from pprl.matching.dice import native as dice_native

    if not dice_native.HAVE_DICE:
        pytest.skip("no C extensions built here")
    assert bloom.HAVE_BLOOM


def test_without_the_extension_every_feature_takes_the_python_path(monkeypatch):
    """As on an install where the C could not be built: no masker, the same CLKs (checked above)."""
    monkeypatch.setattr(bloom, "_bloom", None)
    assert not bloom.bloom_enabled()
    schema = load_schema(EXAMPLES / "schema-cn.json")
    encoders = build_encoders(schema, tuple((bytes([i]) * 64, bytes([i + 1]) * 64) for i in range(10)))
    assert encoders and all(enc.native is None for enc in encoders)
    result = encode_with_report(synth_frame(200), schema, SECRET, workers=1)
    assert result.clks.any(axis=1).all()
