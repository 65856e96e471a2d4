"""The folder a trained cell writes (its `run_dir`, e.g. runs/grid/relu-he/), in one place:

    config.yaml                 the config the results depend on (`initlab.cells.cell_config`)
    cell.json                   what it ran on: device, parameter count, training examples,
                                the tags of its MLflow runs (no seconds: `initlab.timings`)
    seed_<s>/model.pt           final weights (a state_dict, load with weights_only=True)
    seed_<s>/history.csv        per epoch: train/val loss and accuracy (epoch 0 = at init)
    seed_<s>/layers.csv         per epoch and layer: the probe statistics (initlab.probes)
    seed_<s>/summary.json       best val accuracy, diverged or not, the init's log

`initlab.train` writes it; `evaluate`, `tracking`, the report and the bench read it.
"""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.yaml"
CELL_JSON = "cell.json"
MODEL = "model.pt"
HISTORY = "history.csv"
LAYERS = "layers.csv"
SUMMARY = "summary.json"


def seed_dir(cell_dir: Path, seed: int) -> Path:
    """Where seed `seed` of the cell in `cell_dir` keeps its files."""
    return Path(cell_dir) / f"seed_{seed}"
