"""Report figures (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402


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
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def accuracy_heatmap(stats: pd.DataFrame, inits: list[str], activations: list[str],
                     path: Path) -> None:
    """Mean test accuracy per (init, activation) over converged runs; n/c cells left blank."""
    grid = stats.pivot(index="init", columns="activation", values="mean").reindex(
        index=inits, columns=activations)
    fig, ax = plt.subplots(figsize=(1.6 * len(activations) + 2, 0.6 * len(inits) + 1.5))
    image = ax.imshow(grid.values, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(activations)), activations)
    ax.set_yticks(range(len(inits)), inits)
    for (i, j), value in pd.DataFrame(grid.values).stack().items():
        ax.text(j, i, f"{100 * value:.1f}", ha="center", va="center",
                color="white" if value < 0.6 else "black")
    fig.colorbar(image, ax=ax, label="test accuracy (n/c blank)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
