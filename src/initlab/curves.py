"""Each run's learning-curve PNG, the figure `evaluate` logs to MLflow with every run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import LogFormatter  # noqa: E402

from initlab import layout  # noqa: E402


class RunCurves:
    """Each cell's learning curves, a line per seed: training loss and validation accuracy.
    Drawn for every cell of the study, so cheaply (docs/performance.md): a figure per list of
    seeds (a study's cells have one or two), kept from cell to cell with only its lines' data
    replaced, with fixed margins (no `tight_layout` pass) and a fixed title position (no
    search for what lies above the axes)."""

    def __init__(self):
        self.figures = {}  # seeds -> (figure, loss axes, accuracy axes, a line pair per seed)

    def _new_figure(self, seeds: tuple[int, ...]) -> tuple:
        figure = Figure(figsize=(9, 3.5))
        loss, accuracy = figure.subplots(1, 2)
        figure.subplots_adjust(left=0.09, right=0.98, bottom=0.14, top=0.91, wspace=0.25)
        lines = [(loss.plot([], [], marker=".", label=f"seed {seed}")[0],
                  accuracy.plot([], [], marker=".", label=f"seed {seed}")[0])
                 for seed in seeds]
        loss.set(yscale="log", xlabel="epoch", ylabel="training loss")
        # plain numbers (2.315, not 2.315 x 10^0): they fit the fixed margin
        loss.yaxis.set_major_formatter(LogFormatter())
        loss.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
        accuracy.set(xlabel="epoch", ylabel="validation accuracy")
        accuracy.legend(fontsize="small")
        return figure, loss, accuracy, lines

    def draw(self, cell_dir: Path, seeds: list[int], path: Path) -> None:
        if (key := tuple(seeds)) not in self.figures:
            self.figures[key] = self._new_figure(key)
        figure, loss, accuracy, lines = self.figures[key]
        for seed, (loss_line, accuracy_line) in zip(seeds, lines):
            history = pd.read_csv(layout.seed_dir(cell_dir, seed) / layout.HISTORY)
            loss_line.set_data(history.epoch, history.train_loss)
            accuracy_line.set_data(history.epoch, history.val_accuracy)
        for ax in (loss, accuracy):
            ax.relim()
            ax.autoscale_view()
        accuracy.set_ylim(0, 1)
        loss.set_title(cell_dir.name, y=1.0)
        figure.savefig(path, dpi=100)
