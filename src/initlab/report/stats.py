"""Statistics behind the verdicts: t intervals that keep their coverage at a few seeds, the
power a check has at its seeds, and the one rule that turns checks into a verdict.

A check's verdict is HOLDS, FAILS or UNDECIDED; a case's or a finding's is `aggregate` of its
checks': HOLDS or FAILS when they all agree, PARTLY when some hold and some fail, else
INCONCLUSIVE.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDS, FAILS, UNDECIDED = "HOLDS", "FAILS", "UNDECIDED"  # a check
PARTLY, INCONCLUSIVE = "PARTLY", "INCONCLUSIVE"  # a case or finding, beside HOLDS and FAILS
POWER = 0.8  # the power at which a check's detectable effect and needed seeds are stated


@dataclass
class Interval:
    """An estimate with its confidence bounds, from a t distribution."""
    estimate: float
    low: float
    high: float
    n: int  # the smallest group size behind it
    se: float  # standard error of the estimate
    tail: float  # error allowed on each side: (1 - confidence) / 2, or alpha when one-sided


def contrast_interval(groups, weights, confidence: float) -> Interval:
    """CI of sum_i w_i * mean(group_i), groups independent with their own variances (Welch's t
    with Welch-Satterthwaite degrees of freedom; a one-sample t interval for one group). It
    keeps its coverage at 5 runs a group, where a percentile bootstrap of a difference of
    means covers ~87% for 95%."""
    groups = [np.asarray(g, dtype=float) for g in groups]
    n = min(len(g) for g in groups)
    estimate = float(sum(w * g.mean() for w, g in zip(weights, groups)))
    tail = (1 - confidence) / 2
    if n < 2:
        return Interval(estimate, math.nan, math.nan, n, math.nan, tail)
    parts = [w * w * g.var(ddof=1) / len(g) for w, g in zip(weights, groups)]
    se = math.sqrt(sum(parts))
    if se == 0:  # every group constant: the estimate is exact
        return Interval(estimate, estimate, estimate, n, 0.0, tail)
    df = se ** 4 / sum(p * p / (len(g) - 1) for p, g in zip(parts, groups) if p > 0)
    half = stats.t.ppf(1 - tail, df) * se
    return Interval(estimate, estimate - half, estimate + half, n, se, tail)


def mean_interval(values, confidence: float) -> Interval:
    """t interval of the mean of one sample."""
    return contrast_interval([values], [1.0], confidence)


def difference_interval(a, b, confidence: float) -> Interval:
    """Welch interval of mean(a) - mean(b)."""
    return contrast_interval([a, b], [1.0, -1.0], confidence)


def spread_difference(wide, narrow, alpha: float) -> tuple[Interval, float]:
    """The one-sided Brown-Forsythe test that `wide` varies more than `narrow`: Welch's t on
    the absolute deviations from each group's median. Returns the interval of mean |dev|
    (wide) - mean |dev| (narrow) with `alpha` on each side (its low bound above 0 is the
    one-sided test at `alpha`; its high bound below 0, the same test the other way) and the
    one-sided p-value."""
    deviations = [np.abs(g - np.median(g)) for g in map(np.asarray, (wide, narrow))]
    interval = difference_interval(*deviations, 1 - 2 * alpha)
    if not interval.se > 0:
        p = math.nan if math.isnan(interval.se) else float(interval.estimate <= 0)
    else:
        p = float(stats.ttest_ind(*deviations, equal_var=False, alternative="greater").pvalue)
    return interval, p


def above(interval: Interval, threshold: float, min_seeds: int) -> str:
    """The claim "the effect exceeds `threshold`": HOLDS when the interval lies above it, FAILS
    when it lies at or below it, else UNDECIDED (always below `min_seeds` runs a group)."""
    if interval.n < min_seeds or math.isnan(interval.low):
        return UNDECIDED
    if interval.low > threshold:
        return HOLDS
    if interval.high <= threshold:
        return FAILS
    return UNDECIDED


def below(interval: Interval, threshold: float, min_seeds: int) -> str:
    """The claim "the effect is below `threshold`" (mirror of `above`)."""
    flipped = Interval(-interval.estimate, -interval.high, -interval.low, interval.n,
                       interval.se, interval.tail)
    return above(flipped, -threshold, min_seeds)


def detectable(interval: Interval) -> float:
    """The smallest distance from the threshold that this check detects with POWER at the seeds
    it has (normal approximation, the observed spread taken as the true one)."""
    return (stats.norm.ppf(1 - interval.tail) + stats.norm.ppf(POWER)) * interval.se


def seeds_for_power(interval: Interval, threshold: float) -> float:
    """Seeds a group would need for the observed distance from the threshold to be decided
    with POWER (every group grown alike): inf when the estimate sits on the threshold, nan
    when there is no spread to scale."""
    distance = abs(interval.estimate - threshold)
    if not interval.se > 0:
        return math.nan
    if distance == 0:
        return math.inf
    return math.ceil(interval.n * (detectable(interval) / distance) ** 2)


def aggregate(verdicts) -> str:
    """The one rule, for a case (its checks) and a finding (its cases in scope): HOLDS when
    every check holds, FAILS when every check fails, PARTLY when some hold and some fail,
    INCONCLUSIVE otherwise (some undecided, and the decided ones agree; or no check)."""
    verdicts = list(verdicts)
    found = set(verdicts) - {UNDECIDED}
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if verdicts and all(v == FAILS for v in verdicts):
        return FAILS
    if {HOLDS, FAILS} <= found or PARTLY in found:
        return PARTLY
    return INCONCLUSIVE


def spearman_exact(x, y) -> tuple[float, float]:
    """Spearman's rho and its exact two-sided permutation p (every pairing of a few items);
    (nan, nan) when either side is constant."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, math.nan
    rho = stats.spearmanr(x, y).statistic
    perms = [stats.spearmanr(x, np.array(p)).statistic for p in itertools.permutations(y)]
    return float(rho), float(np.mean(np.abs(perms) >= abs(rho) - 1e-12))
