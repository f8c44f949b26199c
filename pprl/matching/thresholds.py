"""Choosing the Dice threshold from the similarities alone, without labels.

:func:`best_match_sample` (each sampled record's best and second-best
similarity), :func:`fit_mixture` (a two-component mixture on the logit scale,
deterministic EM: Gaussian non-matches, which all second-best similarities
are taken to be, and Gaussian matches plus an atom at exact agreement),
:func:`estimate_f1_curve` (the linkage's F1 the fit predicts at each
threshold, counting the wrong best matches the greedy solver blocks) and
:func:`choose_threshold` (the threshold where that estimate peaks, clamped to
[0.5, 0.95]).

Design: docs/design.md#automatic-threshold
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pprl.errors import DataValidationError
from pprl.matching.dice.similarity import dice_pairs, popcounts

__all__ = [
    "check_datasets",
    "BestMatchSample",
    "MixtureFit",
    "ThresholdChoice",
    "DEFAULT_THRESHOLD",
    "F1Estimate",
    "THRESHOLD_RANGE",
    "best_match_sample",
    "choose_threshold",
    "estimate_f1_curve",
    "fit_mixture",
    "keyed_choice",
]

#: Used when the similarities do not show two populations.
DEFAULT_THRESHOLD = 0.8
#: The automatic threshold is clamped to this range.
THRESHOLD_RANGE = (0.5, 0.95)
#: Fewer top-1 values than this and the fit is not trusted.
MIN_SAMPLE = 30

_EXACT = 1.0 - 1e-9  # a Dice coefficient this high is exact agreement (identical encodings)
_EPS = 1e-3  # similarities are clipped to [_EPS, 1 - _EPS] before the logit
_MIN_SD = 0.02  # logit units; keeps a component from collapsing onto a spike
_SPARSE_NONMATCH_SD = 2.0  # see choose_threshold: the rule when nearly every record has a match
_FLOOR_NONMATCH_SD = 1.0  # see choose_threshold: never below the non-match mean + 1 sd (candidate count)
_F1_GRID = np.round(np.arange(0.05, 0.9995, 0.001), 3)  # thresholds the F1 estimate is evaluated at
_SQRT_2PI = math.sqrt(2.0 * math.pi)


def keyed_choice(seed: bytes, label: str, population: int, k: int) -> np.ndarray:
    """``k`` distinct indices from ``range(population)``, drawn from SHAKE-256(seed, label).

    A partial Fisher-Yates shuffle driven by a hash stream rather than numpy's
    generators, whose algorithms may change between numpy versions: the same
    seed gives the same choice on every machine and release.  Returned in the
    order drawn.
    """
    if not isinstance(seed, (bytes, bytearray)):
        raise TypeError("seed must be bytes")
    if population < 0 or k < 0 or k > population:
        raise ValueError(f"cannot choose {k} of {population}")
    stream = hashlib.shake_256(b"pprl keyed choice\x00" + label.encode() + b"\x00" + bytes(seed)).digest(8 * k)
    draws = np.frombuffer(stream, dtype="<u8")
    swapped: dict[int, int] = {}
    out = np.empty(k, dtype=np.int64)
    for i in range(k):
        # 64-bit draws: the modulo bias is below 2**-40 for any realistic population.
        j = i + int(draws[i]) % (population - i)
        out[i] = swapped.get(j, j)
        swapped[j] = swapped.get(i, i)
    return out


@dataclass(frozen=True)
class BestMatchSample:
    """Best and second-best similarities of sampled records, per other dataset.

    Row ``m`` says: record ``record[m]`` of dataset ``dataset[m]`` has its best
    match in dataset ``other[m]`` at record ``partner[m]`` with similarity
    ``top1[m]`` (Hamming distance ``hamming[m]`` between the two encodings),
    and its second best there at similarity ``top2[m]`` (NaN when that dataset
    has a single record).
    """

    dataset: np.ndarray
    record: np.ndarray
    other: np.ndarray
    partner: np.ndarray
    top1: np.ndarray
    top2: np.ndarray
    hamming: np.ndarray
    records_sampled: int = 0

    def __len__(self) -> int:
        return int(self.top1.shape[0])

    def record_ids(self) -> np.ndarray:
        """One int64 per row naming its sampled record (dataset and record), for ``records=``."""
        stride = int(self.record.max()) + 1 if self.record.shape[0] else 1
        return self.dataset.astype(np.int64) * stride + self.record.astype(np.int64)


def check_datasets(datasets: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Contiguous 2-D uint8 CLK arrays of one width; DataValidationError naming the bad one."""
    arrays = []
    for n, d in enumerate(datasets):
        if not isinstance(d, np.ndarray) or d.dtype != np.uint8 or d.ndim != 2:
            raise DataValidationError(f"datasets[{n}] must be a 2-D uint8 array of CLK bytes")
        arrays.append(np.ascontiguousarray(d))
    if len({d.shape[1] for d in arrays}) > 1:
        raise DataValidationError("datasets have encodings of different lengths")
    return arrays


def _top2_numpy(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fallback when dice_pairs has no ``k``: the two best pairs per row of ``a``."""
    i, j, s = dice_pairs(a, b, 0.0)
    order = np.lexsort((j, -s, i))
    i, j, s = i[order], j[order], s[order]
    first = np.r_[True, i[1:] != i[:-1]]
    rank = np.arange(i.shape[0]) - np.maximum.accumulate(np.where(first, np.arange(i.shape[0]), 0))
    keep = rank < 2
    return i[keep], j[keep], s[keep]


def _top2(a: np.ndarray, b: np.ndarray, workers: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        return dice_pairs(a, b, 0.0, k=2, workers=workers)
    except TypeError:  # an older similarity module without k / workers
        return _top2_numpy(a, b)


def best_match_sample(
    datasets: Sequence[np.ndarray],
    *,
    size: int = 1000,
    seed: bytes = b"",
    workers: int | None = None,
) -> BestMatchSample:
    """Top-1 and top-2 similarities of about ``size`` sampled records, against every other dataset.

    Records are drawn from the datasets in proportion to their sizes with
    :func:`keyed_choice` under ``seed`` (all of them when there are at most
    ``size``).  Each sampled record is compared with every record of every
    other dataset (no threshold, no blocking), so the cost is
    ``size x records`` comparisons.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    arrays = check_datasets(datasets)
    sizes = [d.shape[0] for d in arrays]
    total = sum(sizes)
    popcounts_all = [popcounts(d) for d in arrays]
    if total <= size:
        take = sizes
    else:
        take = [min(n, max(1, round(size * n / total))) if n else 0 for n in sizes]
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("dataset", "record", "other", "partner", "top1", "top2", "hamming")}
    sampled = 0
    for d, (x, n, t) in enumerate(zip(arrays, sizes, take)):
        if t == 0 or len(arrays) < 2:
            continue
        rows = np.sort(keyed_choice(seed, f"best-match sample {d}", n, t))
        sampled += rows.shape[0]
        a = x[rows]
        for e, y in enumerate(arrays):
            if e == d or y.shape[0] == 0:
                continue
            i, j, s = _top2(a, y, workers)
            order = np.lexsort((j, -s, i))
            i, j, s = i[order], j[order], s[order]
            first = np.r_[True, i[1:] != i[:-1]] if i.shape[0] else np.zeros(0, bool)
            starts = np.flatnonzero(first)
            i1, j1, s1 = i[starts], j[starts], s[starts]
            second = starts + 1
            has2 = (second < i.shape[0]) & (np.r_[i, -1][np.minimum(second, i.shape[0])] == i1)
            s2 = np.full(i1.shape[0], np.nan)
            s2[has2] = s[second[has2]]
            pa = popcounts_all[d][rows[i1]]
            pb = popcounts_all[e][j1]
            ham = np.rint((pa + pb) * (1.0 - s1)).astype(np.int64)
            cols["dataset"].append(np.full(i1.shape[0], d, np.int64))
            cols["record"].append(rows[i1])
            cols["other"].append(np.full(i1.shape[0], e, np.int64))
            cols["partner"].append(j1.astype(np.int64))
            cols["top1"].append(s1.astype(np.float64))
            cols["top2"].append(s2)
            cols["hamming"].append(ham)
    arrays_out = {
        k: (np.concatenate(v) if v else np.empty(0, np.float64 if k in ("top1", "top2") else np.int64))
        for k, v in cols.items()
    }
    return BestMatchSample(**arrays_out, records_sampled=sampled)


def _logit(s: np.ndarray) -> np.ndarray:
    s = np.clip(np.asarray(s, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(s / (1.0 - s))


def _normal_pdf(x: np.ndarray, mean: float, sd: float) -> np.ndarray:
    z = (x - mean) / sd
    return np.exp(-0.5 * z * z) / (sd * _SQRT_2PI)


@dataclass(frozen=True)
class MixtureFit:
    """A two-component mixture on logit(similarity).

    Component 0 is the non-match population (Gaussian), component 1 the
    match population: a share ``exact_weight`` of it at exact agreement
    (similarity 1, identical encodings), the rest Gaussian with ``mean[1]``,
    ``sd[1]``.  ``weight_top1`` / ``weight_top2`` are the match weights among
    best / second-best similarities (:func:`fit_mixture` fixes the latter at
    0).  ``posterior(s)`` is the probability that a best-match pair with
    similarity ``s`` is a match.
    """

    mean: tuple[float, float]
    sd: tuple[float, float]
    weight_top1: float
    weight_top2: float
    iterations: int
    converged: bool
    n_top1: int
    n_top2: int
    log_likelihood: float
    exact_weight: float = 0.0

    def posterior(self, similarity: Any) -> np.ndarray:
        """P(match | best-match similarity), elementwise."""
        s = np.asarray(similarity, dtype=np.float64)
        x = _logit(s)
        w = self.weight_top1
        m = w * (1.0 - self.exact_weight) * _normal_pdf(x, self.mean[1], self.sd[1])
        n = (1.0 - w) * _normal_pdf(x, self.mean[0], self.sd[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            p = np.where(m + n > 0, m / (m + n), (x > self.mean[1]).astype(np.float64))
        if self.exact_weight > 0.0:
            p = np.where(s >= _EXACT, 1.0, p)
        return p

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (rounded)."""
        return {
            "model": ("2-component mixture on logit(similarity): gaussian non-matches (every second-best value), "
                      f"gaussian matches with {100 * self.exact_weight:.1f}% at exact agreement"),
            "mean_logit": [round(v, 6) for v in self.mean],
            "sd_logit": [round(v, 6) for v in self.sd],
            "match_weight_top1": round(self.weight_top1, 6),
            "match_weight_top2": round(self.weight_top2, 6),
            "n_top1": self.n_top1,
            "n_top2": self.n_top2,
            "iterations": self.iterations,
            "converged": self.converged,
        }


def fit_mixture(
    top1: Any, top2: Any = None, *, max_iter: int = 1000, tol: float = 1e-10
) -> MixtureFit:
    """Fit the two-component mixture by EM from a deterministic start (see the module docstring).

    ``top1`` are best-match similarities, ``top2`` (optional; NaN entries are
    ignored) second-best ones.  Raises DataValidationError for fewer than two
    values or values outside [0, 1].

    Second-best similarities are all taken as non-matches (``weight_top2`` is
    0): a record's second best is a match only where the other dataset holds
    the same person twice, which a one-to-one linkage cannot link anyway.
    They pin the non-match component down, including the hard non-matches
    (relatives, namesakes) that sit just below the true match.  Exact
    agreement (similarity 1) is an atom of the match component rather than a
    far tail of its Gaussian, which it would otherwise widen until the
    component overlaps the non-matches.
    """
    s1 = np.asarray(top1, dtype=np.float64).ravel()
    s2 = np.asarray([] if top2 is None else top2, dtype=np.float64).ravel()
    s2 = s2[~np.isnan(s2)]
    s1 = s1[~np.isnan(s1)]
    if s1.shape[0] < 2:
        raise DataValidationError("need at least two best-match similarities to fit a mixture")
    if (s1.min() < 0) or (s1.max() > 1) or (s2.shape[0] and (s2.min() < 0 or s2.max() > 1)):
        raise DataValidationError("similarities must lie in [0, 1]")
    x1, x2 = _logit(s1), _logit(s2)
    exact1 = s1 >= _EXACT
    n1 = x1.shape[0]

    # Deterministic start: non-matches from the second-best values (or the
    # lower half of the best ones), matches from the best values far above them.
    ref = x2 if x2.shape[0] >= 10 else np.sort(x1)[: max(2, n1 // 2)]
    m0 = float(np.median(ref))
    s0 = max(float(1.4826 * np.median(np.abs(ref - m0))), _MIN_SD)
    far = x1 > m0 + 4.0 * s0
    high = x1[far & ~exact1]
    if high.shape[0] < 2:
        high = np.sort(x1[~exact1] if (~exact1).sum() >= 2 else x1)[-max(2, n1 // 4):]
    m1 = float(np.median(high))
    s1d = max(float(np.std(high)), s0)
    w1 = min(max((high.shape[0] + exact1.sum()) / n1, 0.05), 0.95)
    q = float(exact1.sum()) / max(1.0, float(high.shape[0] + exact1.sum()))  # exact share of the matches

    previous = -math.inf
    converged = False
    iterations = 0
    loglik = -math.inf
    for iterations in range(1, max_iter + 1):  # noqa: B007 (read after the loop)
        # E-step, best matches: non-match, Gaussian match or exact-agreement match.
        f0 = (1.0 - w1) * _normal_pdf(x1, m0, s0)
        f1 = np.where(exact1, w1 * q, w1 * (1.0 - q) * _normal_pdf(x1, m1, s1d))
        den = np.maximum(f0 + f1, 1e-300)
        r = f1 / den
        # Second-best values are non-matches: the match weight among them is 0.
        loglik = float(np.log(den).sum() + np.log(np.maximum(_normal_pdf(x2, m0, s0), 1e-300)).sum())
        # M-step.
        w1 = float(np.clip(r.mean(), 1e-6, 1 - 1e-6))
        rg = np.where(exact1, 0.0, r)  # responsibilities of the Gaussian part
        r1, rg1 = float(r.sum()), float(rg.sum())
        r0 = float((1.0 - r).sum()) + x2.shape[0]
        if r1 <= 1e-9 or r0 <= 1e-9:
            break
        q = float(np.clip((r1 - rg1) / r1, 0.0, 1.0 - 1e-6))
        if rg1 > 1e-9:
            m1 = float((rg * x1).sum() / rg1)
            s1d = max(math.sqrt(float((rg * (x1 - m1) ** 2).sum() / rg1)), _MIN_SD)
        m0 = float((((1.0 - r) * x1).sum() + x2.sum()) / r0)
        s0 = max(math.sqrt(float((((1.0 - r) * (x1 - m0) ** 2).sum() + ((x2 - m0) ** 2).sum()) / r0)), _MIN_SD)
        if abs(loglik - previous) <= tol * max(1.0, abs(loglik)):
            converged = True
            break
        previous = loglik
    return MixtureFit(
        mean=(m0, m1),
        sd=(s0, s1d),
        weight_top1=w1,
        weight_top2=0.0,
        iterations=iterations,
        converged=converged,
        n_top1=int(n1),
        n_top2=int(x2.shape[0]),
        log_likelihood=loglik,
        exact_weight=q,
    )


def _one_population_bic(fit: MixtureFit, top1: np.ndarray, top2: np.ndarray) -> tuple[float, float]:
    """BIC of the fit and of one Gaussian for every value (no match population); lower is better."""
    xs = _logit(np.concatenate([top1, top2]))
    n = xs.shape[0]
    sd = max(float(np.std(xs)), _MIN_SD)
    one = float(np.log(np.maximum(_normal_pdf(xs, float(np.mean(xs)), sd), 1e-300)).sum())
    k_two = 5 + (1 if fit.exact_weight > 0.0 else 0)  # means, sds, weight (+ exact share)
    return -2.0 * fit.log_likelihood + k_two * math.log(n), -2.0 * one + 2 * math.log(n)


@dataclass(frozen=True)
class ThresholdChoice:
    """The chosen threshold and how it was chosen."""

    threshold: float
    method: str
    fit: MixtureFit | None = None
    reason: str = ""
    clamped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def posterior(self, similarity: Any) -> np.ndarray | None:
        """Estimated match probability of best-match pairs, or None without a usable fit."""
        return None if self.fit is None else self.fit.posterior(similarity)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": self.threshold, "method": self.method}
        if self.reason:
            out["reason"] = self.reason
        if self.clamped:
            out["clamped"] = True
        if self.fit is not None:
            out["fit"] = self.fit.as_dict()
        out.update(self.extra)
        return out


def _crossing(fit: MixtureFit) -> float | None:
    """Similarity between the component means where the posterior crosses 0.5."""
    lo, hi = fit.mean
    if not hi > lo:
        return None
    grid = np.linspace(lo, hi, 4097)
    s = 1.0 / (1.0 + np.exp(-grid))
    post = fit.posterior(s)
    above = np.flatnonzero(post >= 0.5)
    if above.shape[0] == 0 or post[0] >= 0.5:
        return None
    k = int(above[0])
    # Bisection between grid[k-1] (< 0.5) and grid[k] (>= 0.5).
    a, b = float(grid[k - 1]), float(grid[k])
    for _ in range(60):
        mid = 0.5 * (a + b)
        if fit.posterior(1.0 / (1.0 + math.exp(-mid)))[()] >= 0.5:
            b = mid
        else:
            a = mid
    return 1.0 / (1.0 + math.exp(-b))


@dataclass(frozen=True)
class F1Estimate:
    """The linkage quality the fit predicts at each threshold of ``thresholds``."""

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray

    @property
    def best(self) -> float:
        """The threshold with the highest estimated F1 (the lowest such one on ties)."""
        return float(self.thresholds[int(np.argmax(self.f1))])


def estimate_f1_curve(fit: MixtureFit, top1: Any, thresholds: Any = None, *, records: Any = None) -> F1Estimate:
    """Estimated precision, recall and F1 of a greedy linkage at each threshold, without labels.

    Every sampled best match ``top1[m]`` is right with the fit's posterior
    probability ``p_m``.  The greedy solver takes pairs in decreasing
    similarity and links a pair only while both records are free, so a wrong
    best match is linked only if its partner has not been linked already, at
    a higher similarity; a right one nearly always is.  Going through the
    sample from the highest similarity down, the share of records already
    linked is ``L = sum(linked) / n`` and a best match is linked with
    probability ``p_m + (1 - p_m) * (1 - L)`` (its expected right part
    ``p_m``, its wrong part ``(1 - p_m) * (1 - L)``).  At threshold ``t`` the
    expected right links are the sum of ``p_m`` with ``top1[m] >= t``, the
    wrong ones the sum of the wrong parts, the links to find the sum of all
    ``p_m``.  With many records without a match (where the partner is often
    taken by its own match) this admits wrong-looking best matches that the
    posterior alone would refuse, which is where F1 peaks.

    ``records`` (optional, one id per value of ``top1``) names the sampled
    record each best match belongs to.  With three or more datasets a record
    has one best match per other dataset, and the solver refuses a wrong
    partner that is already in a group through *any* of its links, so the
    share of free partners is the share of sampled records none of whose
    best matches is linked yet (tracked per record), not one minus the share
    of linked best matches.  Without ``records`` every value is its own
    record, which is exact with two datasets.
    """
    x = np.asarray(top1, dtype=np.float64).ravel()
    if records is None:
        ids = np.arange(x.shape[0])
    else:
        ids = np.asarray(records).ravel()
        if ids.shape[0] != x.shape[0]:
            raise ValueError(f"records has {ids.shape[0]} entries for {x.shape[0]} similarities")
    keep = ~np.isnan(x)
    x, ids = x[keep], ids[keep]
    grid = _F1_GRID if thresholds is None else np.asarray(thresholds, dtype=np.float64).ravel()
    order = np.argsort(-x, kind="stable")
    x = x[order]
    _, record_of = np.unique(ids[order], return_inverse=True)
    p = fit.posterior(x)
    n = x.shape[0]
    wrong = np.empty(n)
    unlinked = np.ones(int(record_of.max()) + 1 if n else 0)  # P(record not yet in a group)
    free = float(unlinked.shape[0])
    for m in range(n):  # a sequential recurrence over about a thousand values
        wrong[m] = (1.0 - p[m]) * (free / unlinked.shape[0])
        k = record_of[m]
        before = unlinked[k]
        unlinked[k] = before * (1.0 - min(1.0, p[m] + wrong[m]))
        free += unlinked[k] - before
    right_cum = np.concatenate([[0.0], np.cumsum(p)])
    wrong_cum = np.concatenate([[0.0], np.cumsum(wrong)])
    kept = np.searchsorted(-x, -grid, side="right")  # how many have top1 >= t
    right, wrong_kept, total = right_cum[kept], wrong_cum[kept], float(right_cum[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(right + wrong_kept > 0, right / (right + wrong_kept), 1.0)
        recall = np.where(total > 0, right / total, 1.0)
        f1 = np.where(right + wrong_kept + total > 0, 2.0 * right / (right + wrong_kept + total), 0.0)
    return F1Estimate(grid, precision, recall, f1)


def choose_threshold(
    top1: Any,
    top2: Any = None,
    *,
    default: float = DEFAULT_THRESHOLD,
    clamp: tuple[float, float] = THRESHOLD_RANGE,
    records: Any = None,
) -> ThresholdChoice:
    """The threshold where the greedy linkage's estimated F1 peaks (see the module docstring).

    With a match population distinct from the non-matches, the threshold is
    the maximum of :func:`estimate_f1_curve` (no labels), kept at or above the
    non-match mean + 1 sd; ``extra`` records the posterior's 0.5 crossing and
    the rule.  When nearly every record has a match (the posterior is
    above 0.5 even at the non-match mean), it is the non-match mean + 2 sd.
    Falls back to ``default`` (method ``"default"``, with a reason) when there
    are fewer than :data:`MIN_SAMPLE` best-match values, or the fit shows no
    match population distinct from the non-matches: a match component not
    above the non-matches, components that do not each dominate the other
    9:1 at their own means, a mixture that explains
    the similarities no better than one population (by BIC, the penalty
    for its extra parameters included), or no posterior crossing between the
    means.

    ``records`` (optional, one id per value of ``top1``, e.g.
    :meth:`BestMatchSample.record_ids`) goes to
    :func:`estimate_f1_curve`; give it with three or more datasets.
    """
    lo, hi = clamp
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"clamp range {clamp!r} must satisfy 0 < lo <= hi <= 1")
    s1 = np.asarray(top1, dtype=np.float64).ravel()
    ids = None
    if records is not None:
        ids = np.asarray(records).ravel()
        if ids.shape[0] != s1.shape[0]:
            raise ValueError(f"records has {ids.shape[0]} entries for {s1.shape[0]} similarities")
        ids = ids[~np.isnan(s1)]
    s1 = s1[~np.isnan(s1)]
    if s1.shape[0] < MIN_SAMPLE:
        return ThresholdChoice(default, "default", reason=f"only {s1.shape[0]} best-match similarities (need {MIN_SAMPLE})")
    s2 = np.asarray([] if top2 is None else top2, dtype=np.float64).ravel()
    s2 = s2[~np.isnan(s2)]
    fit = fit_mixture(s1, s2)
    m0, m1 = fit.mean
    # Each component must dominate the other at its own mean by 9:1 (equal priors).
    f0 = _normal_pdf(np.array([m0, m1]), m0, fit.sd[0])
    f1 = _normal_pdf(np.array([m0, m1]), m1, fit.sd[1])
    if not (m1 > m0 and f1[0] * 9.0 <= f0[0] and f0[1] * 9.0 <= f1[1]):
        return ThresholdChoice(default, "default", fit=None, reason="no separate match population in the similarities")
    bic_two, bic_one = _one_population_bic(fit, s1, s2)
    if bic_two >= bic_one:
        return ThresholdChoice(
            default, "default", fit=None, reason="one population explains the similarities as well as two"
        )
    crossing = _crossing(fit)
    extra: dict[str, Any] = {}
    if crossing is not None:
        extra["posterior_crossing"] = round(crossing, 6)
        # Where the linkage's estimated F1 peaks (see estimate_f1_curve), but not below the
        # non-match mean + 1 sd: below it the candidate pairs multiply for little gain.
        estimate = estimate_f1_curve(fit, s1, records=ids)
        floor = 1.0 / (1.0 + math.exp(-(m0 + _FLOOR_NONMATCH_SD * fit.sd[0])))
        crossing = max(estimate.best, floor)
        extra["rule"] = ("maximum of the estimated F1 of the greedy linkage, not below the non-match mean + 1 sd"
                         if crossing == floor else "maximum of the estimated F1 of the greedy linkage")
    elif fit.posterior(1.0 / (1.0 + math.exp(-m0)))[()] >= 0.5:
        # Nearly every sampled record has a match: a best-match pair is more
        # likely right than wrong even at the non-match mean, and expected
        # errors only fall as the threshold falls.  What limits it then is
        # the non-matches themselves (wrong candidates cost time, and hedge
        # against a misfit): stop where 2.3 % of the best non-matches reach
        # the threshold (mean + 2 sd).
        crossing = 1.0 / (1.0 + math.exp(-(m0 + _SPARSE_NONMATCH_SD * fit.sd[0])))
        extra["rule"] = "non-match mean + 2 sd (nearly every record has a match)"
    else:
        return ThresholdChoice(
            default, "default", fit=None, reason="posterior never reaches 0.5 below the match population"
        )
    t = min(max(crossing, lo), hi)
    return ThresholdChoice(round(t, 6), "auto", fit=fit, clamped=t != crossing, extra=extra)
