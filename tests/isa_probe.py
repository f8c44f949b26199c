"""Run by tests/test_isa_emulated.py, natively and under qemu-user CPU models: one JSON line on stdout.

It reports which variant each native dispatcher picks on this CPU (Dice kernel,
Paillier Montgomery kernel, X25519 batch, Bloom masker) and small fixed
workloads run on that choice and on every other path the CPU offers: Dice
candidates of seeded random CLKs, Paillier encryption with fixed randomness
(textbook r^n and DJN's fixed-base table) and CRT decryption, PSI hash and
blind, CLK encoding. Results are SHA-256 digests (no identifiers or scores on
stdout), so two runs agree exactly when their outputs are identical.

It also calls every kernel entry point with each variant the CPU lacks: the C
code must refuse with a Python exception (``refused``), never execute it (which
is SIGILL on a CPU without the instructions).

``python tests/isa_probe.py``         the probe (inherits the PPRL_NO_* switches of its environment)
``python tests/isa_probe.py bare``    the C extensions alone, loaded from their files without pprl or
numpy (numpy >= 2.4 needs x86-64-v2), for baseline x86-64 without POPCNT: variants, the portable
Dice kernel on a small job checked against pure Python, X25519, RFC 9380 hashing, Bloom masks
``python tests/isa_probe.py canary avx512|avx2|none``  execute one AVX-512 / AVX2 instruction
(or just ``ret``) from an executable page: proves the emulated CPU traps what it lacks.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import random
import struct
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Machine code, each ending in `ret`: vpxord zmm0,zmm0,zmm0 (EVEX: AVX-512F); vpxor ymm0,ymm0,ymm0
# (VEX.256: AVX2); vzeroupper after either so no dirty upper state leaks into the caller.
_CANARIES = {
    "avx512": bytes.fromhex("62f17d48efc0" "c5f877" "c3"),
    "avx2": bytes.fromhex("c5fdefc0" "c5f877" "c3"),
    "none": bytes.fromhex("c3"),
}
# The probe's Paillier key: 1024 bits keeps it quick under emulation; the kernels run the same code for every
# limb count (their limits are tested natively in test_montexp.py and test_avx2exp.py).
KEY_BITS = 1024


def canary(kind: str) -> None:
    """Execute the instruction of ``kind``; a CPU without it kills the process with SIGILL."""
    import ctypes
    import mmap

    code = _CANARIES[kind]
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    ctypes.CFUNCTYPE(None)(address)()
    print(f"executed {kind}")


def digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else repr(part).encode())
        h.update(b"\x00")
    return h.hexdigest()[:32]


@contextmanager
def switches(**values: str) -> Iterator[None]:
    """Set PPRL_NO_* switches for the block (the dispatchers read them at every call)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def dice_part() -> dict[str, Any]:
    """Candidates between seeded random CLKs (near-duplicates planted), two widths; every Dice variant."""
    import numpy as np

    from pprl.matching.dice import native
    from pprl.matching.dice.similarity import dice_pairs, find_candidates

    rng = np.random.default_rng(20261207)
    shapes = []
    for rows, width in ((48, 128), (24, 260)):  # 16 words; 32.5 words (a tail word, odd split points)
        a = (rng.random((rows, width * 8)) < 0.3).astype(np.uint8)
        b = (rng.random((rows, width * 8)) < 0.3).astype(np.uint8)
        b[: rows // 2] = a[: rows // 2] ^ (rng.random((rows // 2, width * 8)) < 0.04)
        shapes.append((np.packbits(a, axis=1), np.packbits(b, axis=1)))

    def run() -> str:
        parts = []
        for a, b in shapes:
            found = find_candidates([a, b], 0.6, workers=1)
            i, j, s = dice_pairs(a, b, 0.3, workers=1, chunk_rows=8)
            best = dice_pairs(a, b, 0.3, workers=1, k=2)  # the top-k heaps
            parts += [found.similarity.tobytes(), found.record.tobytes(), i.tobytes(), j.tobytes(), s.tobytes()]
            parts += [len(i), *(x.tobytes() for x in best)]
        return digest(*parts)

    chosen = {str(width): native.current_isa(-(-width // 8)) for width in (128, 260)}
    out: dict[str, Any] = {"chosen": chosen, "available": list(native.isas()), "result": run(), "paths": {}}
    for isa in native.isas():
        native.force_isa(isa)
        try:
            out["paths"][isa] = run()
        finally:
            native.force_isa(None)
    # The bit-sliced filter (AVX2 inside the avx2 and avx512 variants, portable C on the others), where the
    # kernel has it: pinned on, as these jobs are too small for its cost model to pick it.
    if hasattr(native, "_BITSLICE"):
        for isa in native.isas():
            if isa == "neon":
                continue
            native.force_isa(isa)
            native._BITSLICE = True
            try:
                out["paths"][f"{isa}+bitslice"] = run()
            finally:
                native._BITSLICE = None
                native.force_isa(None)
    with switches(PPRL_NO_DICE="1"):
        out["paths"]["numpy"] = run()
    return out


def _blum_prime(seed: bytes, bits: int) -> int:
    import gmpy2

    x = int.from_bytes(hashlib.shake_256(seed).digest(bits // 8), "big") | (3 << (bits - 2))
    p = gmpy2.next_prime(x)
    while p % 4 != 3:
        p = gmpy2.next_prime(p)
    return int(p)


def paillier_part() -> dict[str, Any]:
    """A fixed KEY_BITS-bit key: textbook and DJN encryption with fixed randomness, CRT decryption."""
    import gmpy2

    from pprl.crypto import montexp
    from pprl.crypto.paillier.engine import decrypt_chunk
    from pprl.crypto.paillier.fixed_base_table import FixedBaseTable
    from pprl.crypto.paillier.keys import PaillierPrivateKey, PaillierPublicKey, make_djn_hs, raw_encrypt

    p, q = _blum_prime(b"isa-probe p", KEY_BITS // 2), _blum_prime(b"isa-probe q", KEY_BITS // 2)
    n = p * q
    private = PaillierPrivateKey(PaillierPublicKey(n, make_djn_hs(p, q)), p, q)
    public = private.public_key
    n2 = public.nsquare
    plaintexts = [0, 1, 7, 2**40 + 3, n - 1]  # five: one full group of four and a remainder on AVX2
    # Textbook r^n (gmpy2 on every CPU) with a fixed r, once; DJN's h_s^a with fixed a on the kernel.
    textbook = raw_encrypt(public, plaintexts[3], int.from_bytes(hashlib.shake_256(b"r").digest(200), "big") % n)
    exponents = [int.from_bytes(hashlib.shake_256(b"a%d" % k).digest(28), "big") for k in range(5)]
    expected_obf = [int(gmpy2.powmod(public.djn_hs, a, n2)) for a in exponents]

    def run() -> str:
        table = FixedBaseTable.build_fast(public.djn_hs, n2, 224, 4)
        obf = [int(x) for x in table.pow_many(exponents)]
        if obf != expected_obf:
            raise AssertionError("fixed-base table products differ from gmpy2.powmod")
        djn = [(1 + m * n) * r % n2 for m, r in zip(plaintexts, obf)]
        if decrypt_chunk(private.crt, [textbook, *djn]) != [plaintexts[3], *plaintexts]:
            raise AssertionError("decryption did not give the plaintexts back")
        return digest(textbook, djn)

    chosen = {"n2": montexp.kernel_for(n2), "p2": montexp.kernel_for(p * p), "q2": montexp.kernel_for(q * q)}
    result = run()
    out: dict[str, Any] = {
        "chosen": chosen, "have_ifma": montexp.HAVE_IFMA, "have_avx2mont": montexp.HAVE_AVX2MONT,
        "result": result, "paths": {chosen["n2"] or "gmpy2": result},
    }
    for off in ((), ("PPRL_NO_IFMA",), ("PPRL_NO_IFMA", "PPRL_NO_AVX2MONT")):
        with switches(**dict.fromkeys(off, "1")):
            kernel = montexp.kernel_for(n2) or "gmpy2"
            if kernel not in out["paths"]:
                out["paths"][kernel] = run()
    return out


def psi_part() -> dict[str, Any]:
    """H(x)^k of a few identifiers with a fixed key; every X25519 path and libsodium."""
    from pprl.crypto import hash_to_curve as h2c
    from pprl.crypto import psi

    key = psi.PSIKey(hashlib.sha256(b"isa-probe psi key").digest())
    peer = psi.PSIKey(hashlib.sha256(b"isa-probe psi peer key").digest())
    domain = psi.make_domain("isa-probe", "resident_id", "session-1")
    items = [f"probe-{k:04d}" for k in range(9)] + ["", "王小明", "x" * 300]

    def run() -> str:
        blinded = psi.blind(key, items, domain, workers=1)  # fused hash+ladder in C on a vector path
        both = psi.reblind(peer, blinded, workers=1)  # the ladder alone
        return digest(psi.hash_to_group(items, domain, workers=1), blinded, both)

    out: dict[str, Any] = {
        "chosen": h2c.x25519_isa() or "libsodium", "available": list(h2c.x25519_isas()),
        "h2c": h2c.h2c_enabled(), "result": run(), "paths": {},
    }
    for isa in h2c.x25519_isas():
        h2c.force_x25519_isa(isa)
        try:
            out["paths"][isa] = run()
        finally:
            h2c.force_x25519_isa(None)
    with switches(PPRL_NO_X25519="1"):
        out["paths"]["libsodium"] = run()
    return out


def clk_part() -> dict[str, Any]:
    """CLKs of a few rows under the clkhash-compatible example schema, C masker and Python path."""
    from pprl.encoding import bloom
    from pprl.encoding.clk import encode_records
    from pprl.encoding.schema import load_schema

    schema = load_schema(ROOT / "examples" / "schema-cn-clkhash.json")
    names = ["张三", "李小明", "王伟", "Zhang Wei", "欧阳娜娜", ""]
    rows = [
        [str(k), name, "男" if k % 2 else "女", f"19{70 + k}-0{1 + k}-1{k}", f"1380000{k:04d}",
         f"11010119{70 + k}0{1 + k}1{k}000{k}", "北京市海淀区" * (k + 1), str(k), str(2 * k), str(3 * k)]
        for k, name in enumerate(names)
    ]

    def run() -> str:
        return digest(encode_records(rows, schema, b"isa-probe secret", workers=1).tobytes())

    out: dict[str, Any] = {"chosen": "c" if bloom.bloom_enabled() else "python", "result": run(), "paths": {}}
    with switches(PPRL_NO_BLOOM="1"):
        out["paths"]["python"] = run()
    return out


# ------------------------------------------------------------------ the C extensions alone (no numpy)

_DICE_ISAS = ("generic", "popcnt", "avx2", "avx512", "neon")  # the kernel's variant codes, in order
_X25519_ISAS = ("portable", "avx2", "ifma")


def load_extension(name: str) -> ModuleType:
    """Import the built extension ``name`` from its file, without importing pprl's packages (nor numpy)."""
    base = ROOT.joinpath(*name.split("."))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = base.with_name(base.name + suffix)
        if path.exists():
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise SystemExit(f"{name} is not built")


def dice_kernel_job(dice: ModuleType) -> dict[str, str]:
    """A small job straight on ``_dice.pairs`` with every variant code: the pairs' digest, or "refused".

    Rows of 9 words (one AVX-512 vector and a tail), sorted by popcount as the
    kernel expects, every right row in every left row's window, no checkpoint;
    the pairs are checked against a pure-Python Dice first.
    """
    rng = random.Random(20261207)
    nwords, n, m, threshold = 9, 40, 30, 0.55

    def row() -> list[int]:
        return [rng.getrandbits(64) & rng.getrandbits(64) for _ in range(nwords)]  # density 1/4

    left = [row() for _ in range(n)]
    right = [row() for _ in range(m)]
    right[:10] = [[w ^ (1 << rng.randrange(64)) for w in r] for r in left[:10]]

    def popcount(r: list[int]) -> int:
        return sum(bin(w).count("1") for w in r)

    def pack(fmt: str, values: list[int]) -> bytes:
        return struct.pack(f"<{len(values)}{fmt}", *values)

    a_order = sorted(range(n), key=lambda i: popcount(left[i]))
    b_order = sorted(range(m), key=lambda j: popcount(right[j]))
    args = (
        pack("Q", [w for i in a_order for w in left[i]]), pack("I", [popcount(left[i]) for i in a_order]),
        pack("q", a_order), pack("Q", [w for j in b_order for w in right[j]]),
        pack("I", [popcount(right[j]) for j in b_order]), pack("I", [0] * m), pack("q", b_order),
        pack("q", [0] * n), pack("q", [m] * n), dice.need_table(threshold, 64 * nwords), nwords, 0, n, -1.0, -1,
    )
    expected = sorted(
        (i, j, 2.0 * sum(bin(x & y).count("1") for x, y in zip(left[i], right[j])) / (popcount(left[i]) + popcount(right[j])))
        for i in range(n) for j in range(m)
    )
    expected = [pair for pair in expected if pair[2] >= threshold]
    if len(expected) < 10:
        raise AssertionError("the Dice job finds too few pairs to test anything")
    out = {}
    for code, name in enumerate(_DICE_ISAS):
        try:
            bi, bj, bs = dice.pairs(*args, code, nwords)
        except ValueError:
            out[name] = "refused"
            continue
        k = len(bi) // 8
        got = sorted(zip(struct.unpack(f"<{k}q", bi), struct.unpack(f"<{k}q", bj), struct.unpack(f"<{k}d", bs)))
        if got != expected:
            raise AssertionError(f"Dice variant {name} differs from pure Python")
        out[name] = digest(got)  # sorted: the vector variants emit a group's pairs in another order
    return out


def x25519_every_path(h2c: ModuleType, key: bytes, points: bytes, messages: list[bytes], dst: bytes) -> dict[str, str]:
    """``_h2c.x25519`` and the fused hash+ladder on each path code: the outputs' digest, or "refused"."""
    out = {}
    for code, name in enumerate(_X25519_ISAS):
        try:
            out[name] = digest(h2c.x25519(key, points, code), h2c.hash_to_u_x25519(messages, dst, key, code))
        except ValueError:
            out[name] = "refused"
    return out


def bare() -> dict[str, Any]:
    """The extensions on their own: what each reports, and small known workloads (see the module doc)."""
    dice = load_extension("pprl.matching.dice._dice")
    h2c = load_extension("pprl.crypto._h2c")
    bloom = load_extension("pprl.encoding._bloom")
    messages = [b"", b"abc", "王小明".encode(), b"x" * 300]
    dst = b"pprl-isa-probe-bare-dst"
    points = h2c.hash_to_u(messages, dst)
    key = hashlib.sha256(b"isa-probe bare key").digest()
    table = bloom.Table(b"bare key", 1024, 2, False, True, 20, False)
    return {
        "dice_isas": list(dice.isas()),
        "x25519_cpu_isa": _X25519_ISAS[h2c.cpu_isa()],
        "ifma_available": bool(load_extension("pprl.crypto._montexp").available()),
        "avx2mont_available": bool(load_extension("pprl.crypto._avx2exp").available()),
        "dice": dice_kernel_job(dice),
        "x25519": x25519_every_path(h2c, key, points, messages, dst),
        "h2c": digest(points, h2c.expand_message_xmd96(b"abc", dst)),
        "bloom": digest(table.masks(["", "a", "abc", "王小明", "Zhang Wei " * 20])),
    }


# ------------------------------------------------------------------ what the dispatchers refuse


def refusals() -> dict[str, str]:
    """Each variant this CPU lacks, asked for at every layer: "refused" (an exception) or "ran"."""
    from pprl.crypto import hash_to_curve as h2c
    from pprl.crypto import montexp
    from pprl.matching.dice import native

    out: dict[str, str] = {}

    def attempt(name: str, call: Callable[[], object]) -> None:
        try:
            call()
        except (ValueError, RuntimeError):
            out[name] = "refused"
        else:
            out[name] = "ran"

    dice = load_extension("pprl.matching.dice._dice")
    for name, result in dice_kernel_job(dice).items():
        if name not in native.isas():
            out[f"dice.pairs:{name}"] = "refused" if result == "refused" else "ran"
            attempt(f"dice.force_isa:{name}", lambda name=name: native.force_isa(name))
    native.force_isa(None)
    key, points = bytes(range(32)), bytes([9] + [0] * 31) * 4
    for name in _X25519_ISAS:
        if name not in h2c.x25519_isas():
            attempt(f"x25519:{name}", lambda name=name: h2c.x25519(key, points, name))
            attempt(f"hash_to_group_x25519:{name}",
                    lambda name=name: h2c.hash_to_group_x25519([b"a"], b"dst", key, name))
    modulus = (1 << 1023) + 1155  # odd, in both kernels' range; never reached: the CPU check comes first
    size = (modulus.bit_length() + 7) // 8
    for kernel, have in (("ifma", montexp.HAVE_IFMA), ("avx2", montexp.HAVE_AVX2MONT)):
        if not have:
            attempt(f"MontgomeryTable.build:{kernel}",
                    lambda kernel=kernel: montexp.MontgomeryTable.build(3, modulus, 4, 2, kernel))
            extension = load_extension("pprl.crypto._montexp" if kernel == "ifma" else "pprl.crypto._avx2exp")
            limbs = montexp.limbs_for(modulus.bit_length()) if kernel == "ifma" else 40
            attempt(f"{kernel}.build_table", lambda extension=extension, limbs=limbs: extension.build_table(
                (3).to_bytes(size, "little"), 4, 2, modulus.to_bytes(size, "little"), (1).to_bytes(size, "little"),
                1, limbs))
    return out


def main() -> None:
    if sys.argv[1:2] == ["canary"]:
        canary(sys.argv[2])
        return
    if sys.argv[1:2] == ["bare"]:
        print(json.dumps(bare(), sort_keys=True))
        return
    parts: dict[str, Callable[[], dict[str, Any]]] = {
        "dice": dice_part, "paillier": paillier_part, "psi": psi_part, "clk": clk_part,
    }
    report: dict[str, Any] = {name: part() for name, part in parts.items()}
    report["refused"] = refusals()
    report["switches"] = {name: value for name, value in os.environ.items() if name.startswith("PPRL_NO_")}
    print(json.dumps(report, sort_keys=True))


if __name__ == "__main__":
    main()
