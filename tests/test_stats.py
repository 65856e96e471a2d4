"""The statistics behind the verdicts: interval coverage at 5 seeds, the power they state,
the one aggregation rule, exact Spearman p, and the exact n/c edge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from initlab.report import stats, tables
from initlab.report.stats import FAILS, HOLDS, INCONCLUSIVE, PARTLY, UNDECIDED


@pytest.mark.parametrize("sd_a, sd_b", [(1.0, 1.0), (1.0, 4.0)])
def test_welch_intervals_keep_95_percent_coverage_at_5_seeds(sd_a, sd_b):
    rng = np.random.default_rng(0)
    trials, covered, covered_mean = 4000, 0, 0
    for _ in range(trials):
        a, b = rng.normal(1.0, sd_a, 5), rng.normal(0.0, sd_b, 5)
        diff = stats.difference_interval(a, b, 0.95)
        covered += diff.low <= 1.0 <= diff.high
        mean = stats.mean_interval(a, 0.95)
        covered_mean += mean.low <= 1.0 <= mean.high
    assert covered / trials >= 0.93 and covered_mean / trials >= 0.93


def test_the_stated_seeds_give_the_stated_power():
    """A check undecided at 5 seeds says how many it needs: at that many, data like the
    observed decide it about 80% of the time."""
    rng = np.random.default_rng(1)
    a, b = np.array([0.62, 0.55, 0.70, 0.58, 0.66]), np.array([0.57, 0.60, 0.52, 0.63, 0.55])
    observed = stats.difference_interval(a, b, 0.95)
    assert stats.above(observed, 0.0, 3) == UNDECIDED
    needed = stats.seeds_for_power(observed, 0.0)
    assert 6 <= needed <= 60
    decided = sum(
        stats.above(stats.difference_interval(rng.normal(a.mean(), a.std(ddof=1), needed),
                                              rng.normal(b.mean(), b.std(ddof=1), needed),
                                              0.95), 0.0, 3) == HOLDS
        for _ in range(2000))
    assert 0.7 <= decided / 2000 <= 0.9


def test_spread_test_is_one_sided_and_its_interval_agrees_with_its_p():
    rng = np.random.default_rng(2)
    wide, narrow = rng.normal(0, 1.0, 20), rng.normal(0, 0.1, 20)
    interval, p = stats.spread_difference(wide, narrow, 0.05)
    assert p < 0.05 and interval.low > 0
    interval, p = stats.spread_difference(narrow, wide, 0.05)
    assert p > 0.95 and interval.high < 0 and stats.above(interval, 0.0, 3) == FAILS
    # every run the same (all at chance) against a spread: the same result every run
    interval, _ = stats.spread_difference(np.full(20, 0.1), narrow, 0.05)
    assert stats.above(interval, 0.0, 3) == FAILS


@pytest.mark.parametrize("verdicts, expected", [
    ([HOLDS, HOLDS], HOLDS), ([FAILS], FAILS), ([HOLDS, FAILS], PARTLY),
    ([HOLDS, FAILS, UNDECIDED], PARTLY), ([HOLDS, UNDECIDED], INCONCLUSIVE),
    ([FAILS, UNDECIDED], INCONCLUSIVE), ([UNDECIDED], INCONCLUSIVE), ([], INCONCLUSIVE),
    ([PARTLY, HOLDS], PARTLY)])
def test_one_aggregation_rule(verdicts, expected):
    assert stats.aggregate(verdicts) == expected


def test_spearman_p_is_exact_over_every_pairing():
    rho, p = stats.spearman_exact([1, 2, 3, 4], [10, 20, 30, 40])
    assert rho == pytest.approx(1.0) and p == pytest.approx(2 / 24)
    assert all(np.isnan(stats.spearman_exact([1, 1, 1, 1], [1, 2, 3, 4])))


def test_the_not_converged_edge_is_exact():
    """150 of 1000 correct is at chance (100) + margin (0.05): n/c, although float32 stores
    it as 0.15000000596; 151 is not."""
    accuracy = [torch.tensor(k / 1000, dtype=torch.float32).item() for k in (150, 151)]
    assert accuracy[0] > 0.15
    results = pd.DataFrame({"test_accuracy": accuracy, "diverged": [False, False]})
    marked = tables.mark_not_converged(results, majority=100, n_test=1000, margin=0.05)
    assert marked.n_c.tolist() == [True, False]
