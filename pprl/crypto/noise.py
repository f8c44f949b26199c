"""Exact integer noise samplers for releasing sums with differential privacy.

Discrete Laplace (two-sided geometric) and discrete Gaussian samplers, and
:func:`gaussian_sigma` (the classic bound). Every random bit comes from
:mod:`secrets` and all arithmetic is exact (:class:`fractions.Fraction`), never
floating-point sampling.

Design: docs/release-policy.md#noise-samplers
"""

from __future__ import annotations

import math
import numbers
import secrets
from fractions import Fraction

from pprl.errors import DataValidationError, PolicyError

__all__ = [
    "bernoulli_exp",
    "discrete_gaussian",
    "discrete_laplace",
    "discrete_laplace_variance",
    "gaussian_sigma",
]


def _fraction(x: object, name: str) -> Fraction:
    """``x`` as an exact Fraction (floats via their shortest repr, so 0.1 is 1/10)."""
    if isinstance(x, bool) or not isinstance(x, numbers.Real | Fraction):
        raise DataValidationError(f"{name} must be a number")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise DataValidationError(f"{name} must be finite")
        return Fraction(repr(x))
    return Fraction(x)  # type: ignore[call-overload]  # any other Real Fraction takes (ints, Rationals)


def _bernoulli(p: Fraction) -> bool:
    """True with probability exactly ``p`` (0 ≤ p ≤ 1)."""
    return secrets.randbelow(p.denominator) < p.numerator


def bernoulli_exp(gamma: Fraction | int) -> bool:
    """True with probability exactly exp(-gamma), gamma ≥ 0 rational (CKS Algorithm 1)."""
    gamma = Fraction(gamma)
    if gamma < 0:
        raise DataValidationError("bernoulli_exp needs gamma >= 0")
    while gamma > 1:  # exp(-gamma) = exp(-1)^floor(gamma) · exp(-(gamma - floor(gamma)))
        if not bernoulli_exp(1):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1


def discrete_laplace(scale: Fraction | float) -> int:
    """One sample of the discrete Laplace with the given scale t: P(x) ∝ exp(-|x|/t) (CKS Algorithm 2).

    A scale of 0 returns 0 (no noise).
    """
    t = _fraction(scale, "scale")
    if t < 0:
        raise DataValidationError("discrete Laplace scale must be >= 0")
    if t == 0:
        return 0
    num, den = t.numerator, t.denominator  # scale = num/den
    while True:
        u = secrets.randbelow(num)
        if not bernoulli_exp(Fraction(u, num)):
            continue
        v = 0
        while bernoulli_exp(1):
            v += 1
        y = (u + num * v) // den
        negative = secrets.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_gaussian(sigma2: Fraction | float) -> int:
    """One sample of the discrete Gaussian with variance parameter σ² (CKS Algorithm 3).

    A σ² of 0 returns 0 (no noise).
    """
    s2 = _fraction(sigma2, "sigma^2")
    if s2 < 0:
        raise DataValidationError("discrete Gaussian sigma^2 must be >= 0")
    if s2 == 0:
        return 0
    t = math.isqrt(s2.numerator // s2.denominator) + 1  # floor(sigma) + 1
    while True:
        y = discrete_laplace(t)
        if bernoulli_exp((abs(y) - s2 / t) ** 2 / (2 * s2)):
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
