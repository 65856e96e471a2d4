"""Theory beside the measurements: `initlab.theory`'s per-layer predictions for every cell of
the depth sweep, set against its probes at init, and where they part, which assumption broke."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from initlab import theory
from initlab.memo import kept

THEORY = "theory"  # the memo's kind: theory's predictions for the same inputs are kept

SATURATED = 0.2  # a mean fraction of saturated hidden units above this breaks the theory
EXPLODING = 10.0  # sigma_w^2 above this (U[-1, 1], N(0, 1)): heavy tails, huge activations


def hidden_span(depth: int) -> tuple[int, int]:
    """The weight layers of F3's measure: the first and last hidden-to-hidden layers."""
    return 1, depth - 2


@kept(THEORY)
def compare(layers: pd.DataFrame, input_q, features: int, num_classes: int,
            tolerance: float, bias_variance: float = 0.0) -> pd.DataFrame:
    """Per (activation, init, depth) of the depth sweep's probes at init (depth >= 4): the
    predicted and measured log10 gradient-norm ratio of the first over the last hidden layer
    (F3's measure), per layer between them, their gap, and a verdict: `agrees` when the
    ratios differ by at most `tolerance` decades, else the assumption that broke
    (saturation, exploding weights, finite width), `outside the theory` for inits it does not
    describe."""
    at_init = layers[(layers.epoch == 0) & (layers.depth >= 4)]
    rows = []
    # zero init: its measured ratios are 0/0 (nan), and it is outside the theory anyway
    with np.errstate(divide="ignore", invalid="ignore"):
        for (activation, init, depth, width), runs in at_init.groupby(
                ["activation", "init", "depth", "width"]):
            first, last = hidden_span(depth)
            widths = [features] + [int(width)] * (depth - 1) + [num_classes]
            table = theory.propagate(activation, init, widths, input_q, bias_variance)
            by_layer = runs.groupby("layer").grad_norm.apply(lambda g: np.log10(g).mean())
            measured = by_layer[first] - by_layer[last]
            z_std = runs.groupby("layer").z_std.mean()
            hidden = runs[(runs.layer >= first) & (runs.layer <= last)]
            saturated = float(hidden.saturated.mean())
            row = {"activation": activation, "init": init, "depth": depth,
                   "measured": measured, "measured per layer": measured / (last - first),
                   "saturated": saturated,
                   "measured z decades": np.log10(z_std[last] / z_std[first])}
            if table is None:
                rows.append({**row, "verdict": "outside the theory"})
                continue
            predicted = table.log10_grad_norm[first] - table.log10_grad_norm[last]
            row["predicted z decades"] = math.log10(table.z_std[last] / table.z_std[first])
            gap = measured - predicted
            if abs(gap) <= tolerance:
                verdict = "agrees"
            elif saturated > SATURATED:
                verdict = f"breaks: saturation ({100 * saturated:.0f}% of hidden units)"
            elif table.sigma_w2.iloc[1] > EXPLODING:
                verdict = (f"breaks: sigma_w^2 = {table.sigma_w2.iloc[1]:.0f}, exploding "
                           "activations")
            else:
                verdict = "breaks: finite width or correlated examples"
            sigma2 = float(table.sigma_w2.iloc[1])
            rows.append({**row, "predicted": predicted, "predicted per layer":
                         predicted / (last - first), "gap": gap, "sigma_w2": sigma2,
                         "trainable depth (6 xi_c)": 6 * theory.correlation_depth(
                             activation, sigma2, bias_variance, 20), "verdict": verdict})
    columns = ["activation", "init", "depth", "sigma_w2", "predicted", "measured",
               "predicted per layer", "measured per layer", "gap", "saturated",
               "predicted z decades", "measured z decades", "trainable depth (6 xi_c)",
               "verdict"]
    return pd.DataFrame(rows, columns=columns)


def line(comparison: pd.DataFrame, activation: str, init: str, forward: bool = False) -> str:
    """"sigmoid + xavier: -0.63 decades a layer of gradient norm at depth 20, measured -0.63
    (agrees)" at the deepest depth (`forward`: the pre-activation sd from the first to the
    last hidden layer), or "" where the cell is not in the comparison."""
    rows = comparison[(comparison.activation == activation) & (comparison.init == init)]
    if rows.empty or rows["predicted per layer"].isna().all():
        return ""
    row = rows.loc[rows.depth.idxmax()]
    if forward:
        return (f"{activation} + {init}: the pre-activation sd moves "
                f"{row['predicted z decades']:+.2f} decades from the first to the last hidden "
                f"layer at depth {row.depth}, measured {row['measured z decades']:+.2f}")
    return (f"{activation} + {init}: {row['predicted per layer']:+.2f} decades a layer of "
            f"gradient norm at depth {row.depth}, measured {row['measured per layer']:+.2f} "
            f"({row.verdict})")


@kept(THEORY)
def per_layer(layers: pd.DataFrame, input_q, features: int, num_classes: int,
              bias_variance: float = 0.0):
    """The deepest nets of the depth sweep at init, per layer and seed, beside theory's table
    per (activation, init): z_std, and log10 of the weight-gradient norm over the last hidden
    layer's (hidden layers only: the input and output layers' own shapes move theirs)."""
    at_init = layers[(layers.epoch == 0) & (layers.depth == layers.depth.max())]
    if at_init.empty:
        return at_init, {}
    depth, width = int(at_init.depth.iloc[0]), int(at_init.width.iloc[0])
    first, last = hidden_span(depth)
    reference = at_init[at_init.layer == last].set_index(["run_dir", "seed"]).grad_norm
    measured = at_init.join(reference.rename("last_grad"), on=["run_dir", "seed"]).assign(
        log10_grad_norm=lambda r: np.log10(r.grad_norm / r.last_grad))
    measured.loc[(measured.layer < first) | (measured.layer > last), "log10_grad_norm"] = np.nan
    measured = measured[measured.layer < depth - 1]
    widths = [features] + [width] * (depth - 1) + [num_classes]
    tables = {}
    for activation, init in measured[["activation", "init"]].drop_duplicates().itertuples(
            index=False):
        table = theory.propagate(activation, init, widths, input_q, bias_variance)
        if table is not None:
            table = table[table.layer < depth - 1].copy()
            table["log10_grad_norm"] -= table.log10_grad_norm[last]
            table.loc[table.layer < first, "log10_grad_norm"] = np.nan
        tables[(activation, init)] = table
    return measured, tables


@kept(THEORY)
def chaos_plane(activation: str):
    """chi_1 of `activation` on a grid of sigma_w^2 from 0.3 to 100 and sigma_b^2 to 0.5."""
    sigma_w2, sigma_b2 = np.meshgrid(np.logspace(-0.5, 2, 24), np.linspace(0, 0.5, 10))
    return sigma_w2, sigma_b2, theory.order_to_chaos(activation, sigma_w2, sigma_b2)


def phase(activation: str, inits: list[str], width: int):
    """The order-to-chaos plane of `activation` (sigma_w^2 from 0.3 to 100, sigma_b^2 to 0.5):
    chi_1 on a grid, and each init's sigma_w^2 (at bias 0) with its correlation depth."""
    sigma_w2, sigma_b2, chi = chaos_plane(activation)
    points = {}
    for init in inits:
        variance = theory.weight_variance(init, activation, width, width)
        if variance is not None:
            points[init] = (variance, theory.correlation_depth(activation, variance, 0.0, 20))
    return sigma_w2, sigma_b2, chi, points
