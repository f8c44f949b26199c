"""Exact integer noise samplers for releasing sums with differential privacy.

Discrete Laplace (two-sided geometric) and discrete Gaussian samplers, and
:func:`gaussian_sigma` (the classic bound). Every random bit comes from
:mod:`secrets`, or from a :class:`KeyedStream` (HMAC-SHA256 in counter mode
under a secret key) where the same noise must come out again for the same
inputs; all arithmetic is exact (:class:`fractions.Fraction`), never
floating-point sampling.

Design: docs/release-policy.md#noise-samplers
"""

from __future__ import annotations

import hashlib
import hmac
import math
import numbers
import secrets
from fractions import Fraction
from typing import Protocol

from pprl.errors import DataValidationError, PolicyError

__all__ = [
    "KeyedStream",
    "RandomSource",
    "bernoulli_exp",
    "discrete_gaussian",
    "discrete_laplace",
    "discrete_laplace_variance",
    "gaussian_sigma",
]


class RandomSource(Protocol):
    """What the samplers draw from: :mod:`secrets` itself, or a :class:`KeyedStream`."""

    def randbelow(self, n: int) -> int: ...


class KeyedStream:
    """Uniform integers from HMAC-SHA256(key, label || counter): the same (key, label), the same draws.

    Indistinguishable from random to whoever lacks ``key`` (32 secret bytes).
    Rejection sampling makes :meth:`randbelow` exactly uniform.
    """

    def __init__(self, key: bytes, label: bytes) -> None:
        if len(key) < 32:
            raise DataValidationError("a keyed stream needs a key of at least 32 bytes")
        self._key, self._label, self._counter = bytes(key), bytes(label), 0
        self._buffer = b""

    def _take(self, count: int) -> bytes:
        while len(self._buffer) < count:
            block = self._label + self._counter.to_bytes(8, "big")
            self._buffer += hmac.new(self._key, block, hashlib.sha256).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        return out

    def randbelow(self, n: int) -> int:
        if n <= 0:
            raise DataValidationError("randbelow needs n >= 1")
        bits = (n - 1).bit_length()
        if bits == 0:
            return 0
        mask = (1 << bits) - 1
        while True:
            x = int.from_bytes(self._take((bits + 7) // 8), "big") & mask
            if x < n:
                return x


def _fraction(x: object, name: str) -> Fraction:
    """``x`` as an exact Fraction (floats via their shortest repr, so 0.1 is 1/10)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real | Fraction):
        raise DataValidationError(f"{name} must be a number")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise DataValidationError(f"{name} must be finite")
        return Fraction(repr(x))
    return Fraction(x)  # type: ignore[call-overload]  # any other Real Fraction takes (ints, Rationals)


def _bernoulli(p: Fraction, rng: RandomSource) -> bool:
    """True with probability exactly ``p`` (0 ≤ p ≤ 1)."""
    return rng.randbelow(p.denominator) < p.numerator


def bernoulli_exp(gamma: Fraction | int, rng: RandomSource = secrets) -> bool:
    """True with probability exactly exp(-gamma), gamma ≥ 0 rational (CKS Algorithm 1)."""
    gamma = Fraction(gamma)
    if gamma < 0:
        raise DataValidationError("bernoulli_exp needs gamma >= 0")
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) · exp(-(gamma - floor(gamma)))
        if not bernoulli_exp(1, rng):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k, rng):
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Fraction | float, rng: RandomSource = secrets) -> int:
    """One sample of the discrete Laplace with the given scale t: P(x) ∝ exp(-|x|/t) (CKS Algorithm 2).

    A scale of 0 returns 0 (no noise). ``rng``: :mod:`secrets` or a :class:`KeyedStream`.
    """
    t = _fraction(scale, "scale")
    if t < 0:
        raise DataValidationError("discrete Laplace scale must be >= 0")
    if t == 0:
        return 0
    num, den = t.numerator, t.denominator  # scale = num/den
    while True:
        u = rng.randbelow(num)
        if not bernoulli_exp(Fraction(u, num), rng):
            continue
        v = 0
        while bernoulli_exp(1, rng):
            v += 1
        y = (u + num * v) // den
        negative = rng.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_gaussian(sigma2: Fraction | float, rng: RandomSource = secrets) -> int:
    """One sample of the discrete Gaussian with variance parameter σ² (CKS Algorithm 3).

    A σ² of 0 returns 0 (no noise). ``rng``: :mod:`secrets` or a :class:`KeyedStream`.
    """
    s2 = _fraction(sigma2, "sigma^2")
    if s2 < 0:
        raise DataValidationError("discrete Gaussian sigma^2 must be >= 0")
    if s2 == 0:
        return 0
    t = math.isqrt(s2.numerator // s2.denominator) + 1  # floor(sigma) + 1
    while True:
        y = discrete_laplace(t, rng)
        if bernoulli_exp((abs(y) - s2 / t) ** 2 / (2 * s2), rng):
            return y


def discrete_laplace_variance(scale: float) -> float:
    """Theoretical variance 2q/(1-q)² of the discrete Laplace, q = exp(-1/scale)."""
    if scale <= 0:
        return 0.0
    q = math.exp(-1.0 / scale)
    return 2.0 * q / (1.0 - q) ** 2


def gaussian_sigma(sensitivity: int, epsilon: float, delta: float) -> Fraction:
    """σ² (rounded *up* to an integer, so never less noise) from the classic bound sqrt(2 ln(1.25/δ))·Δ/ε.

    PolicyError unless 0 < ε < 1 and 0 < δ < 1: the classic bound is proven
    only for ε < 1.
    """
    if not 0 < epsilon < 1:
        raise PolicyError("gaussian noise uses the classic bound sqrt(2 ln(1.25/delta))*sensitivity/epsilon, "
                          "proven only for 0 < epsilon < 1; use a smaller epsilon or laplace noise")
    if not 0 < delta < 1:
        raise PolicyError("gaussian noise needs 0 < delta < 1")
    sigma = math.sqrt(2.0 * math.log(1.25 / delta)) * sensitivity / epsilon
    return Fraction(math.ceil(sigma * sigma * (1 + 1e-9)))
