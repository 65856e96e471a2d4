"""What a training cell shows at the terminal: a progress bar (seeds x epochs) with the current
loss and accuracy on a terminal; in a log (CI, redirected output) one line per finished run."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, cell: str, seeds: list[int], epochs: int):
        from tqdm import tqdm

        self.cell, self.seeds = cell, seeds
        self.bar = tqdm(total=len(seeds) * epochs, desc=cell, unit="seed-epoch",
                        disable=not sys.stderr.isatty(), leave=False, dynamic_ncols=True)

    def update(self, epoch: int, result) -> None:
        if epoch == 0:
            return
        row = result.history[epoch]
        self.bar.set_postfix(loss=f"{row['train_loss'].nanmean():.4f}",
                             val_acc=f"{row['val_accuracy'].mean():.4f}")
        self.bar.update(len(self.seeds))

    def close(self, rows: list[tuple[list[dict], list[dict]]], diverged_at: list) -> None:
        """Print each seed's last epoch: `rows` and `diverged_at` as `FitResult` gives them."""
        self.bar.close()
        for seed, (history, _), diverged in zip(self.seeds, rows, diverged_at):
            end = (f"diverged (NaN/inf loss) at epoch {diverged}" if diverged is not None else
                   f"val acc {history[-1]['val_accuracy']:.4f}, "
                   f"train loss {history[-1]['train_loss']:.4f}")
            print(f"{self.cell}-s{seed}: {len(history) - 1} epochs, {end}", flush=True)
