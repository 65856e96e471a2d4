"""Statistics behind the verdicts: bootstrap intervals, variance tests, two-way ANOVA, and the
rules that turn them into REPRODUCED / NOT REPRODUCED / INCONCLUSIVE."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "REPRODUCED", "NOT REPRODUCED", "INCONCLUSIVE"


@dataclass
class Interval:
    estimate: float
    low: float
    high: float
    n: int  # the smallest group size behind it


def bootstrap_mean(values, thresholds) -> Interval:
    """Percentile bootstrap CI of the mean of one sample (scipy.stats.bootstrap)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2 or np.ptp(values) == 0:
        return Interval(values.mean(), values.mean(), values.mean(), len(values))
    ci = stats.bootstrap((values,), np.mean, confidence_level=thresholds.confidence,
                         n_resamples=thresholds.bootstrap_resamples, method="percentile",
                         random_state=thresholds.bootstrap_seed).confidence_interval
    return Interval(values.mean(), ci.low, ci.high, len(values))


def bootstrap_difference(a, b, thresholds) -> Interval:
    """Percentile bootstrap CI of mean(a) - mean(b), a and b independent samples."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    estimate = a.mean() - b.mean()
    if min(len(a), len(b)) < 2 or (np.ptp(a) == 0 and np.ptp(b) == 0):
        return Interval(estimate, estimate, estimate, min(len(a), len(b)))
    ci = stats.bootstrap((a, b), lambda x, y: np.mean(x) - np.mean(y),
                         confidence_level=thresholds.confidence,
                         n_resamples=thresholds.bootstrap_resamples, method="percentile",
                         random_state=thresholds.bootstrap_seed).confidence_interval
    return Interval(estimate, ci.low, ci.high, min(len(a), len(b)))


def above(interval: Interval, threshold: float, thresholds) -> str:
    """The claim "the effect exceeds `threshold`": REPRODUCED when the whole interval is above
    it, NOT REPRODUCED when the whole interval is at or below it, else INCONCLUSIVE (and always
    INCONCLUSIVE below `min_seeds` runs)."""
    if interval.n < thresholds.min_seeds:
        return INCONCLUSIVE
    if interval.low > threshold:
        return REPRODUCED
    if interval.high <= threshold:
        return NOT_REPRODUCED
    return INCONCLUSIVE


def below(interval: Interval, threshold: float, thresholds) -> str:
    """The claim "the effect is below `threshold`" (mirror of `above`)."""
    flipped = Interval(-interval.estimate, -interval.high, -interval.low, interval.n)
    return above(flipped, -threshold, thresholds)


def combine(verdicts: list[str]) -> str:
    """A claim made for every case: REPRODUCED only if every case is; NOT REPRODUCED if any
    case is not; otherwise INCONCLUSIVE."""
    if not verdicts:
        return INCONCLUSIVE
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    if any(v == NOT_REPRODUCED for v in verdicts):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def spread_test(wide, narrow, thresholds) -> tuple[float, str]:
    """Brown-Forsythe test (Levene, median-centred) that `wide` varies more than `narrow`:
    (p, verdict). Significant and wider: REPRODUCED; significant and narrower: NOT
    REPRODUCED; not significant or too few runs: INCONCLUSIVE."""
    wide, narrow = np.asarray(wide, dtype=float), np.asarray(narrow, dtype=float)
    if min(len(wide), len(narrow)) < thresholds.min_seeds:
        return float("nan"), INCONCLUSIVE
    if np.ptp(wide) == 0 and np.ptp(narrow) == 0:
        return 1.0, INCONCLUSIVE
    p = stats.levene(wide, narrow, center="median").pvalue
    if p >= thresholds.alpha:
        return p, INCONCLUSIVE
    return p, REPRODUCED if wide.std() > narrow.std() else NOT_REPRODUCED


def two_way_anova(frame: pd.DataFrame, value: str, a: str, b: str) -> pd.DataFrame:
    """Two-way ANOVA with interaction for a balanced design (every (a, b) cell the same number
    of runs): sums of squares, F, p and eta^2 = SS / SS_total per source."""
    cells = frame.groupby([a, b])[value]
    n = cells.size()
    if n.nunique() != 1 or n.iloc[0] < 2:
        raise ValueError("two-way ANOVA needs a balanced design with >= 2 runs per cell")
    reps = int(n.iloc[0])
    grand = frame[value].mean()
    mean_a, mean_b = frame.groupby(a)[value].mean(), frame.groupby(b)[value].mean()
    cell_mean = cells.mean()
    levels_a, levels_b = len(mean_a), len(mean_b)
    ss_a = reps * levels_b * ((mean_a - grand) ** 2).sum()
    ss_b = reps * levels_a * ((mean_b - grand) ** 2).sum()
    interaction = cell_mean - mean_a.reindex(cell_mean.index, level=0).values \
        - mean_b.reindex(cell_mean.index, level=1).values + grand
    ss_ab = reps * (interaction ** 2).sum()
    ss_error = ((frame[value] - frame.set_index([a, b]).index.map(cell_mean)) ** 2).sum()
    df = {a: levels_a - 1, b: levels_b - 1, f"{a} x {b}": (levels_a - 1) * (levels_b - 1),
          "residual": levels_a * levels_b * (reps - 1)}
    ss = {a: ss_a, b: ss_b, f"{a} x {b}": ss_ab, "residual": ss_error}
    total = sum(ss.values())
    rows = []
    for source in ss:
        row = {"source": source, "df": df[source], "sum_sq": ss[source],
               "eta_sq": ss[source] / total if total else float("nan")}
        if source != "residual":
            f = (ss[source] / df[source]) / (ss_error / df["residual"]) if ss_error else np.inf
            row.update(F=f, p=stats.f.sf(f, df[source], df["residual"]))
        rows.append(row)
    return pd.DataFrame(rows).set_index("source")
