"""The `evaluate` stage: every run's final weights, measured on the test split.

Reads the cells that params.yaml's study lists, loads each seed's checkpoint with
`torch.load(..., weights_only=True)`, writes reports/results.csv (one row per run) and adds the
test accuracy to that run's MLflow run. The report is built from this file, not from MLflow.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from initlab.config import (ConfigError, load_config, reported_errors, study_cells,
                            workspace_root)
from initlab.data.prepare import load_split
from initlab.io import atomic_path

RESULTS_CSV = Path("reports") / "results.csv"


def cell_dirs(cfg) -> list[tuple[str, Path]]:
    """(sweep, folder) of every cell of the study (`initlab.config.study_cells`)."""
    cells = [(sweep, workspace_root() / run_dir) for sweep, run_dir in study_cells(cfg)]
    missing = [str(d) for _, d in cells if not (d / "config.yaml").is_file()]
    if missing:
        raise ConfigError(f"training outputs missing: {missing}; run `dvc repro` to train them")
    return cells


def evaluate_cell(sweep: str, cell_dir: Path, x_test, y_test) -> list[dict]:
    from initlab.models import build_model
    from initlab.train import evaluate

    cfg = OmegaConf.load(cell_dir / "config.yaml")
    cost = json.loads((cell_dir / "tracking.json").read_text())
    rows = []
    for seed in cfg.study.seeds:
        seed_dir = cell_dir / f"seed_{seed}"
        summary = json.loads((seed_dir / "summary.json").read_text())
        model = build_model(cfg, n_models=1)
        model.load_seed_state_dicts([torch.load(seed_dir / "model.pt", weights_only=True)])
        test_loss, test_accuracy = (float(v[0]) for v in evaluate(model, x_test, y_test,
                                                                  cfg.train.eval_batch_size))
        rows.append({
            "study": cfg.study.name, "sweep": sweep, "cell": cell_dir.name,
            "run_dir": cfg.run_dir, "activation": cfg.activation.name, "init": cfg.init.name,
            "depth": cfg.model.depth, "width": cfg.model.width,
            "batchnorm": cfg.model.batchnorm, "seed": seed,
            # wall-clock of the cell (all seeds at once), shared out per seed
            "init_seconds": cost["init_seconds"] / len(cfg.study.seeds),
            "train_seconds": cost["train_seconds"] / len(cfg.study.seeds),
            "test_accuracy": float("nan") if summary["diverged"] else test_accuracy,
            "test_loss": float("nan") if summary["diverged"] else test_loss,
            **{k: summary[k] for k in ("best_val_accuracy", "final_val_accuracy",
                                       "final_train_loss", "epochs", "diverged")},
        })
    return rows


def log_to_runs(cell_dir: Path, rows: list[dict], mlflow_client, scratch: Path) -> None:
    """Add the test accuracy/loss and the cell's learning-curve PNG to each run's MLflow run.
    A run missing from this store (another machine's, or a deleted store) is reported and
    skipped."""
    from mlflow.entities.metric import Metric
    from mlflow.exceptions import MlflowException

    from initlab.report.figures import run_curves

    curve = scratch / "learning_curve.png"
    run_curves(cell_dir, [row["seed"] for row in rows], curve)
    run_ids = json.loads((cell_dir / "tracking.json").read_text())["mlflow_run_ids"]
    now = int(time.time() * 1000)
    for row in rows:
        run_id = run_ids[str(row["seed"])]
        try:
            mlflow_client.log_batch(run_id, metrics=[
                Metric(key, row[key], now, 0) for key in ("test_accuracy", "test_loss")])
            mlflow_client.log_artifact(run_id, str(curve))
        except MlflowException as e:
            print(f"evaluate: {cell_dir.name} seed {row['seed']}: run {run_id} not logged ({e})")


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        cells = cell_dirs(cfg)
        x_test, y_test = load_split("test")
        from initlab import tracking

        mlflow_client = tracking.client()
        rows = []
        with tempfile.TemporaryDirectory() as scratch:
            for sweep, cell_dir in cells:
                cell_rows = evaluate_cell(sweep, cell_dir, x_test, y_test)
                log_to_runs(cell_dir, cell_rows, mlflow_client, Path(scratch))
                rows += cell_rows
        with atomic_path(workspace_root() / RESULTS_CSV) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"evaluate: {len(rows)} runs in {len(cells)} cells -> {RESULTS_CSV}")


if __name__ == "__main__":
    main()
