"""Build glue for pprl's C extensions: the Dice kernel, the PSI hash-to-curve map, the AVX-512 IFMA and
AVX2 Montgomery kernels behind Paillier, and the CLK masker.

Everything else (metadata, dependencies, packages) lives in setup.cfg; this
file only declares ``pprl.matching.dice._dice``, ``pprl.crypto._h2c``,
``pprl.crypto._montexp``, ``pprl.crypto._avx2exp`` and ``pprl.encoding._bloom``
because setup.cfg cannot.  All follow one policy: declared ``optional``, built
with the same flags, so where one cannot be built the install still succeeds
and its loader falls back to a pure path with identical results (see
``pprl/_native.py``): the numpy Dice kernel (``pprl.matching.dice.fallback``, an
order of magnitude slower), the Python reference of
``pprl.crypto.hash_to_curve`` (~10x slower; ``_h2c`` needs ``unsigned
__int128``: gcc or clang on 64-bit targets), gmpy2 for ``pprl.crypto.montexp``
(``_montexp``'s AVX-512 functions carry ``target("avx512f,avx512ifma")``
attributes and ``_avx2exp``'s ``target("avx2")``; each runs only when the CPU
reports its instructions at run time, and off x86-64 builds as a stub whose
``available()`` is False) and the Python masker of ``pprl.encoding.masks``
(``_bloom`` is portable C).  The tests check that the extensions were built
where they should be.

Flags: -O3 for the kernel loops, and -ffp-contract=off so the compiler never
fuses a multiply and an add into an FMA -- similarities must stay
bit-identical to anonlink's and to the numpy fallback.  No -march/-mpopcnt:
the kernel picks POPCNT, AVX2 or AVX-512 at run time, so one build runs on any
x86-64 (and on aarch64, where the portable code is used).
"""

from __future__ import annotations

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

__all__: list[str] = []

_GCC_LIKE_FLAGS = ["-O3", "-ffp-contract=off", "-fno-fast-math", "-std=gnu99"]
_MSVC_FLAGS = ["/O2", "/fp:precise"]


class _BuildExt(build_ext):
    """Add compiler-specific optimisation flags to the extensions."""

    def build_extensions(self) -> None:
        flags = _MSVC_FLAGS if self.compiler.compiler_type == "msvc" else _GCC_LIKE_FLAGS
        for ext in self.extensions:
            ext.extra_compile_args = [*flags, *ext.extra_compile_args]
        super().build_extensions()


setup(
    ext_modules=[
        Extension("pprl.matching.dice._dice", sources=["pprl/matching/dice/_dice.c"], depends=["pprl/_cpu.h"],
                  optional=True),
        Extension("pprl.crypto._h2c", sources=["pprl/crypto/_h2c.c"], depends=["pprl/crypto/_sha512.h", "pprl/_cpu.h"],
                  optional=True),
        Extension("pprl.crypto._montexp", sources=["pprl/crypto/_montexp.c"], depends=["pprl/_cpu.h"],
                  optional=True),
        Extension("pprl.crypto._avx2exp", sources=["pprl/crypto/_avx2exp.c"], depends=["pprl/_cpu.h"],
                  optional=True),
        Extension("pprl.encoding._bloom", sources=["pprl/encoding/_bloom.c"], optional=True),
    ],
    cmdclass={"build_ext": _BuildExt},
)
