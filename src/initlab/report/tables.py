"""Accuracy tables from reports/results.csv (one row per run)."""

from __future__ import annotations

import math

import pandas as pd


def mark_not_converged(results: pd.DataFrame, chance: float, margin: float) -> pd.DataFrame:
    """Add `n_c`: the run diverged, or its test accuracy stayed within `margin` of `chance`
    (the majority-class rate)."""
    return results.assign(n_c=results["diverged"].astype(bool)
                          | (results["test_accuracy"] <= chance + margin))


def cell_stats(results: pd.DataFrame) -> pd.DataFrame:
    """Per (init, activation): runs, n/c runs, mean and sd of test accuracy over the runs that
    converged, and the mean over every run that did not diverge (the raw level of a n/c cell)."""
    def stats(group: pd.DataFrame) -> pd.Series:
        converged = group.loc[~group["n_c"], "test_accuracy"]
        return pd.Series({
            "runs": len(group),
            "n_c": int(group["n_c"].sum()),
            "mean": converged.mean(),
            "converged": len(converged),
            "sd": converged.std(ddof=1),
            "raw_mean": group["test_accuracy"].mean(),
        })

    return results.groupby(["init", "activation"], sort=False)[
        ["test_accuracy", "n_c"]].apply(stats).reset_index()


def format_cell(row) -> str:
    """Percent, `mean ± sd`, or `n/c` (with the raw accuracy where there is one)."""
    if row["n_c"] == row["runs"]:
        return "n/c" if math.isnan(row["raw_mean"]) else f"n/c ({100 * row['raw_mean']:.1f})"
    text = f"{100 * row['mean']:.1f}"
    if row["converged"] > 1:
        text += f" ± {100 * row['sd']:.1f}"
    return text + (f" ({row['n_c']:.0f}/{row['runs']:.0f} n/c)" if row["n_c"] else "")


def accuracy_grid(stats: pd.DataFrame, inits: list[str], activations: list[str]) -> pd.DataFrame:
    """Inits as rows, activations as columns, each cell formatted by `format_cell`."""
    grid = stats.assign(text=stats.apply(format_cell, axis=1)).pivot(
        index="init", columns="activation", values="text")
    return grid.reindex(index=inits, columns=activations)

