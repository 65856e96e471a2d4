"""Report figures (matplotlib, Agg backend, PNG). Each is drawn once for the same data
(`initlab.memo.kept`): a report after an edit redraws only the figures whose data changed."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from initlab.memo import kept  # noqa: E402
from initlab.report.stats import FAILS, HOLDS  # noqa: E402

FIGURES = "figures"  # the memo's kind


@kept(FIGURES, output="path")
def learning_curves(histories: pd.DataFrame, activations: list[str], inits: list[str],
                    path: Path) -> None:
    """Validation accuracy and training loss per epoch, one column per activation, a line per
    init (mean over seeds, band = min..max over seeds)."""
    fig, axes = plt.subplots(2, len(activations), figsize=(4.2 * len(activations), 7),
                             squeeze=False, sharex=True)
    for col, activation in enumerate(activations):
        for init in inits:
            runs = histories[(histories.activation == activation) & (histories.init == init)]
            by_epoch = runs.groupby("epoch")
            for row, metric in enumerate(["val_accuracy", "train_loss"]):
                ax = axes[row, col]
                mean = by_epoch[metric].mean()
                (line,) = ax.plot(mean.index, mean.values, label=init)
                ax.fill_between(mean.index, by_epoch[metric].min(), by_epoch[metric].max(),
                                color=line.get_color(), alpha=0.15)
        axes[0, col].set_title(activation)
        axes[1, col].set_xlabel("epoch")
        axes[1, col].set_yscale("log")
    axes[0, 0].set_ylabel("validation accuracy")
    axes[1, 0].set_ylabel("training loss")
    axes[0, -1].legend(title="init", fontsize="small")
    _save(fig, path, dpi=110)


@kept(FIGURES, output="path")
def accuracy_heatmap(stats: pd.DataFrame, inits: list[str], activations: list[str],
                     path: Path) -> None:
    """Mean test accuracy per (init, activation) over every seed; "n/c" where no run trained."""
    grid = stats.pivot(index="init", columns="activation", values="mean").reindex(
        index=inits, columns=activations)
    untrained = stats.assign(none=stats.n_c == stats.runs).pivot(
        index="init", columns="activation", values="none").reindex(
        index=inits, columns=activations)
    fig, ax = plt.subplots(figsize=(1.6 * len(activations) + 2, 0.6 * len(inits) + 1.5))
    image = ax.imshow(grid.values.astype(float), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(activations)), activations)
    ax.set_yticks(range(len(inits)), inits)
    for (i, j), value in pd.DataFrame(grid.values).stack().items():
        ax.text(j, i, "n/c" if untrained.iat[i, j] else f"{100 * value:.1f}", ha="center",
                va="center", color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="test accuracy (mean over seeds)")
    _save(fig, path, dpi=110)


def _needs_data(draw):
    """A finding's figure: when the study has no runs for it (its sweep is empty), a figure
    that says so instead of an error."""
    @functools.wraps(draw)
    def wrapper(data, *args, **kwargs):
        if len(data) == 0:
            fig, ax = plt.subplots(figsize=(6, 1.5))
            ax.axis("off")
            ax.text(0.5, 0.5, "no runs of this study test this claim\n(its sweep is empty)",
                    ha="center", va="center")
            return _save(fig, args[-1])
        return draw(data, *args, **kwargs)
    return wrapper


def _save(fig, path: Path, dpi: int = 100) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


@kept(FIGURES, output="path")
@_needs_data
def zero_init(results: pd.DataFrame, layers: pd.DataFrame, chance: float, path: Path) -> None:
    """F1: test accuracy of the zero-init runs against chance, and the largest hidden-layer
    weight-gradient norm per epoch (symlog: exact zeros stay visible)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    by_activation = results.groupby("activation").accuracy
    left.bar(by_activation.mean().index, by_activation.mean().values,
             yerr=by_activation.std().fillna(0).values, color="tab:gray")
    left.axhline(chance, color="tab:red", linestyle="--", label=f"majority rate {chance:.2f}")
    left.set_ylabel("test accuracy")
    left.set_ylim(0, 1)
    left.legend()
    hidden = layers[layers.layer < layers.depth - 1]
    for activation, group in hidden.groupby("activation"):
        largest = group.groupby("epoch").grad_norm.max()
        right.plot(largest.index, largest.values, marker="o", label=activation)
    right.set_yscale("symlog", linthresh=1e-8)
    right.set_xlabel("epoch")
    right.set_ylabel("largest hidden weight-gradient norm")
    right.legend()
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def seed_spread(histories: pd.DataFrame, path: Path) -> None:
    """F2: the training loss of every seed, one line each, per activation and init (the
    lecture's "different cost curve every run")."""
    activations, inits = list(histories.activation.unique()), list(histories.init.unique())
    fig, axes = plt.subplots(1, len(activations), figsize=(3.6 * len(activations), 3.6),
                             squeeze=False, sharey=True)
    colors = dict(zip(inits, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, activation in zip(axes[0], activations):
        for (init, _), run in histories[histories.activation == activation].groupby(
                ["init", "seed"]):
            ax.plot(run.epoch, run.train_loss.clip(upper=1e3), color=colors[init], alpha=0.7,
                    label=init)
        ax.set_title(activation)
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    axes[0, 0].legend(unique.values(), unique.keys())
    axes[0, 0].set_ylabel("training loss (clipped at 1e3)")
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def gradients_by_depth(at_init: pd.DataFrame, ratios: pd.DataFrame, path: Path) -> None:
    """F3: weight-gradient norm per layer at init, a line per depth (log scale), a row per
    activation and a column per init; last column: log10 of the first hidden layer's over the
    last hidden layer's against depth (`findings.hidden_gradient_ratios`)."""
    activations, inits = sorted(at_init.activation.unique()), sorted(at_init.init.unique())
    fig, axes = plt.subplots(len(activations), len(inits) + 1, squeeze=False,
                             figsize=(3.2 * (len(inits) + 1), 2.8 * len(activations)))
    for row, activation in enumerate(activations):
        for col, init in enumerate(inits):
            ax = axes[row, col]
            runs = at_init[(at_init.activation == activation) & (at_init.init == init)]
            for depth, group in runs.groupby("depth"):
                norms = group.groupby("layer").grad_norm.mean()
                ax.plot(norms.index + 1, norms.values.clip(min=1e-30), marker=".",
                        label=f"depth {depth}")
            ax.set_yscale("log")
            ax.set_title(f"{activation} + {init}", fontsize="small")
        axes[row, 0].set_ylabel("||dL/dW|| at init")
        ratio_ax = axes[row, -1]
        for init, group in ratios[ratios.activation == activation].groupby("init"):
            mean = group.groupby("depth").log10_ratio.mean()
            ratio_ax.plot(mean.index, mean.values, marker="o", label=init)
        ratio_ax.axhline(0, color="black", linewidth=0.6)
        ratio_ax.set_title(f"{activation}: log10(hidden 2 / hidden L-1)", fontsize="small")
        ratio_ax.legend(fontsize="x-small")
    for ax in axes[-1, :-1]:
        ax.set_xlabel("layer")
    axes[-1, -1].set_xlabel("depth (weight layers)")
    axes[0, 0].legend(fontsize="x-small")
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def differences(checks, label: str, path: Path) -> None:
    """F4, F7, F8: one estimate with its confidence interval per check (faint: outside the
    finding's scope)."""
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(checks) + 1.2))
    for i, check in enumerate(checks):
        c = check.interval
        ax.errorbar(c.estimate, i, xerr=[[c.estimate - c.low], [c.high - c.estimate]], fmt="o",
                    color={HOLDS: "tab:green", FAILS: "tab:red"}.get(check.verdict, "tab:gray"),
                    alpha=1.0 if check.in_scope else 0.35)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(checks)), [f"{c.case}: {c.comparison}" for c in checks],
                  fontsize="small")
    ax.set_xlabel(label)
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def accuracy_by_depth(results: pd.DataFrame, path: Path) -> None:
    """F5: test accuracy against depth, a panel per activation, a line per init."""
    activations = list(results.activation.unique())
    fig, axes = plt.subplots(1, len(activations), figsize=(3.8 * len(activations), 3.5),
                             squeeze=False, sharey=True)
    for ax, activation in zip(axes[0], activations):
        for init, group in results[results.activation == activation].groupby("init"):
            by_depth = group.groupby("depth").accuracy
            ax.plot(by_depth.mean().index, by_depth.mean().values, marker="o", label=init)
            ax.fill_between(by_depth.mean().index, by_depth.min(), by_depth.max(), alpha=0.15)
        ax.set_title(activation)
        ax.set_xlabel("depth (weight layers)")
    axes[0, 0].set_ylabel("test accuracy")
    axes[0, 0].legend()
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def accuracy_vs_cost(results: pd.DataFrame, path: Path) -> None:
    """F6: test accuracy against the init's passes over the training data, a point per run."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for init, group in results.groupby("init"):
        ax.scatter(group.init_passes, group.accuracy, label=init, s=14)
    ax.set_xscale("symlog")
    ax.set_xlabel("passes over the training data before training (symlog)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize="small", ncol=2)
    _save(fig, path)


@kept(FIGURES, output="path")
def activation_histograms(samples: dict[tuple[str, str], list], path: Path) -> None:
    """Per (activation, init): the distribution of each hidden layer's outputs at init on the
    probe batch, in the style of Glorot & Bengio 2010's figures."""
    keys = list(samples)
    fig, axes = plt.subplots(2, len(keys) // 2, figsize=(3.6 * len(keys) // 2, 6),
                             squeeze=False)
    for ax, key in zip(axes.T.flatten(), keys):
        for layer, values in enumerate(samples[key]):
            ax.hist(values, bins=60, histtype="step", density=True, label=f"layer {layer + 1}")
        ax.set_title(f"{key[0]} + {key[1]}", fontsize="small")
        ax.set_yscale("log")
    axes[0, 0].legend(fontsize="x-small")
    _save(fig, path)


@kept(FIGURES, output="path")
@_needs_data
def theory_layers(measured: pd.DataFrame, predictions: dict, column: str, label: str,
                  path: Path, log: bool = False) -> None:
    """Theory beside the probes at init, a panel per (activation, init) of the depth sweep's
    deepest nets: `column` per layer measured (a dot per seed) and predicted (the line)."""
    activations, inits = sorted(measured.activation.unique()), sorted(measured.init.unique())
    fig, axes = plt.subplots(len(activations), len(inits), squeeze=False, sharex=True,
                             figsize=(3.3 * len(inits), 2.7 * len(activations)))
    for row, activation in enumerate(activations):
        for col, init in enumerate(inits):
            ax = axes[row, col]
            runs = measured[(measured.activation == activation) & (measured.init == init)]
            ax.scatter(runs.layer + 1, runs[column], s=8, color="tab:blue", alpha=0.5,
                       label="measured (a seed)")
            table = predictions.get((activation, init))
            if table is not None:
                ax.plot(table.layer + 1, table[column], color="tab:red", label="theory")
            ax.set_title(f"{activation} + {init}", fontsize="small")
            if log:
                ax.set_yscale("log")
        axes[row, 0].set_ylabel(label, fontsize="small")
    for ax in axes[-1]:
        ax.set_xlabel("weight layer")
    axes[0, 0].legend(fontsize="x-small")
    _save(fig, path)


@kept(FIGURES, output="path")
def order_to_chaos(sigma_w2, sigma_b2, chi, inits: dict[str, tuple[float, float]],
                   path: Path) -> None:
    """The (sigma_w^2, sigma_b^2) plane of a tanh net: log10 chi_1 (blue ordered, red chaotic),
    the edge of chaos (chi_1 = 1), and where each init sits with its trainable depth 6 xi_c."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    image = ax.pcolormesh(sigma_w2, sigma_b2, np.log10(chi), cmap="coolwarm", vmin=-1, vmax=1,
                          shading="auto")
    ax.contour(sigma_w2, sigma_b2, chi, levels=[1.0], colors="black")
    for i, (name, (x, xi)) in enumerate(sorted(inits.items(), key=lambda item: item[1][0])):
        ax.plot(x, 0.0, "k^", clip_on=False)
        ax.annotate(f"{name}\n6 xi_c ≈ {6 * xi:.0f} layers", (x, 0.0), fontsize="x-small",
                    textcoords="offset points", xytext=(0, 8 + 22 * (i % 2)), ha="center")
    ax.set_xscale("log")
    ax.set(xlabel="sigma_w² (weight variance × fan_in)", ylabel="sigma_b² (bias variance)",
           title="tanh: order (chi < 1, gradients vanish) to chaos (chi > 1); black: the edge")
    fig.colorbar(image, ax=ax, label="log10 chi_1")
    _save(fig, path)
