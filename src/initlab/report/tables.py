"""Accuracy tables from reports/results.csv (one row per run)."""

from __future__ import annotations

import math
from fractions import Fraction

import pandas as pd


def mark_not_converged(results: pd.DataFrame, majority: int, n_test: int,
                       margin: float) -> pd.DataFrame:
    """Add `n_c`: the run diverged, or its test accuracy stayed within `margin` of the
    majority-class rate (`majority` of `n_test` examples), counted in correct answers so that
    the edge is exact: test accuracies are float32 (150/1000 is stored as 0.15000000596)."""
    correct = (results["test_accuracy"] * n_test).round()
    bound = math.floor(majority + Fraction(str(margin)) * n_test)
    return results.assign(n_c=results["diverged"].astype(bool) | (correct <= bound))


def cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Per (init, activation): runs, n/c runs, and the mean and sd of `accuracy` over every
    run (a diverged run at the chance level): the spread of a cell includes its runs that did
    not train."""
    def stats(group: pd.DataFrame) -> pd.Series:
        return pd.Series({"runs": len(group), "n_c": int(group["n_c"].sum()),
                          "mean": group["accuracy"].mean(), "sd": group["accuracy"].std(ddof=1)})

    return results.groupby(["init", "activation"], sort=False)[
        ["accuracy", "n_c"]].apply(stats).reset_index()


def format_cell(row, seeds: int) -> str:
    """Percent: `mean ± sd` over every seed, `(k/n n/c)` when k runs did not train, `n/c (mean)`
    when none did, and `n=<runs>` where a cell has other than the study's `seeds`."""
    if row["n_c"] == row["runs"]:
        text = f"n/c ({100 * row['mean']:.1f})"
    else:
        text = f"{100 * row['mean']:.1f}"
        if row["runs"] > 1:
            text += f" ± {100 * row['sd']:.1f}"
        if row["n_c"]:
            text += f" ({row['n_c']:.0f}/{row['runs']:.0f} n/c)"
    return text + (f" n={row['runs']:.0f}" if row["runs"] != seeds else "")


def accuracy_grid(stats: pd.DataFrame, inits: list[str], activations: list[str],
                  seeds: int) -> pd.DataFrame:
    """Inits as rows, activations as columns, each cell formatted by `format_cell`."""
    grid = stats.assign(text=stats.apply(format_cell, axis=1, seeds=seeds)).pivot(
        index="init", columns="activation", values="text")
    return grid.reindex(index=inits, columns=activations)
