"""The `evaluate` stage: every run's final weights, measured on the test split.

Reads the cells that params.yaml's study lists, loads each seed's checkpoint with
`torch.load(..., weights_only=True)`, writes reports/results.csv (one row per run) and logs
every run to MLflow (`initlab.tracking.log_cell`: its config, curves, layer statistics, test
metrics and learning-curve PNG). The report is built from this file, not from MLflow.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from initlab.config import ConfigError, load_config, reported_errors, study_cells, workspace_root
from initlab.data.prepare import load_split
from initlab.io import atomic_path
from initlab.models import build_model
from initlab.train import CELL_JSON, evaluate

RESULTS_CSV = Path("reports") / "results.csv"


def cell_dirs(cfg) -> list[tuple[str, Path]]:
    """(sweep, folder) of every cell of the study (`initlab.config.study_cells`)."""
    cells = [(cell.sweep, workspace_root() / cell.run_dir) for cell in study_cells(cfg)]
    missing = [str(d) for _, d in cells if not (d / "config.yaml").is_file()]
    if missing:
        raise ConfigError(f"training outputs missing: {missing}; run `dvc repro` to train them")
    return cells


def evaluate_cell(study: str, sweep: str, cell_dir: Path, ran: dict, x_test, y_test) -> list[dict]:
    """One row per seed of a trained cell of `study`; `ran` is its cell.json. The seeds'
    checkpoints load into one seed-batched model, measured in one pass."""
    cfg = OmegaConf.load(cell_dir / "config.yaml")
    seeds = list(cfg.study.seeds)
    model = build_model(cfg, n_models=len(seeds))
    model.load_seed_state_dicts([torch.load(cell_dir / f"seed_{seed}" / "model.pt",
                                            weights_only=True) for seed in seeds])
    test_losses, test_accuracies = evaluate(model, x_test, y_test, cfg.train.eval_batch_size)
    rows = []
    for s, seed in enumerate(seeds):
        summary = json.loads((cell_dir / f"seed_{seed}" / "summary.json").read_text())
        rows.append({
            "study": study, "sweep": sweep, "cell": cell_dir.name,
            "run_dir": cfg.run_dir, "activation": cfg.activation.name, "init": cfg.init.name,
            "depth": cfg.model.depth, "width": cfg.model.width,
            "batchnorm": cfg.model.batchnorm, "seed": seed,
            # wall-clock of the cell (all seeds at once), shared out per seed
            "init_seconds": ran["init_seconds"] / len(seeds),
            "train_seconds": ran["train_seconds"] / len(seeds),
            "test_accuracy": float("nan") if summary["diverged"] else float(test_accuracies[s]),
            "test_loss": float("nan") if summary["diverged"] else float(test_losses[s]),
            **{k: summary[k] for k in ("best_val_accuracy", "final_val_accuracy",
                                       "final_train_loss", "epochs", "diverged")},
        })
    return rows


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        from initlab import tracking
        from initlab.report.figures import run_curves

        tracking.check_reachable(tracking.tracking_uri())
        cells = cell_dirs(cfg)
        x_test, y_test = load_split("test")
        mlflow_client = tracking.client()
        exp_id = tracking.experiment_id(mlflow_client, cfg.study.name)
        parent_id = tracking.study_run(mlflow_client, exp_id, cfg.study.name)
        rows = []
        with tempfile.TemporaryDirectory() as scratch:
            curve = Path(scratch) / "learning_curve.png"
            for sweep, cell_dir in cells:
                ran = json.loads((cell_dir / CELL_JSON).read_text())
                cell_rows = evaluate_cell(cfg.study.name, sweep, cell_dir, ran, x_test, y_test)
                rows += cell_rows
                seeds = [row["seed"] for row in cell_rows]
                todo = tracking.unlogged_seeds(mlflow_client, exp_id, cell_dir, seeds)
                if not todo:
                    continue
                run_curves(cell_dir, seeds, curve)
                tracking.log_cell(mlflow_client, exp_id, parent_id, cfg.study.name, cell_dir, ran, {
                    row["seed"]: {k: row[k] for k in ("test_accuracy", "test_loss")}
                    for row in cell_rows if row["seed"] in todo}, [curve])
        with atomic_path(workspace_root() / RESULTS_CSV) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"evaluate: {len(rows)} runs in {len(cells)} cells -> {RESULTS_CSV}")


if __name__ == "__main__":
    main()
