"""The `evaluate` stage: every run's final weights, measured on the test split.

Reads the cells that params.yaml's study lists, loads each seed's checkpoint with
`torch.load(..., weights_only=True)`, writes reports/results.csv (one row per run) and adds the
test accuracy to that run's MLflow run. The report is built from this file, not from MLflow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from initlab.config import ConfigError, load_config, reported_errors, workspace_root
from initlab.data.prepare import load_split
from initlab.io import atomic_path

RESULTS_CSV = Path("reports") / "results.csv"


def cell_dirs(cfg) -> list[Path]:
    """runs/<activation>-<init> for every cell of the study, in params.yaml's order."""
    runs = workspace_root() / "runs"
    dirs = [runs / f"{a}-{i}" for a in cfg.study.activations for i in cfg.study.inits]
    missing = [str(d) for d in dirs if not (d / "config.yaml").is_file()]
    if missing:
        raise ConfigError(f"training outputs missing: {missing}; run `dvc repro` to train them")
    return dirs


def evaluate_cell(cell_dir: Path, x_test, y_test) -> list[dict]:
    from initlab.train import build_model, evaluate

    cfg = OmegaConf.load(cell_dir / "config.yaml")
    rows = []
    for seed in cfg.study.seeds:
        seed_dir = cell_dir / f"seed_{seed}"
        summary = json.loads((seed_dir / "summary.json").read_text())
        model = build_model(cfg, n_models=1)
        model.load_seed_state_dicts([torch.load(seed_dir / "model.pt", weights_only=True)])
        test_loss, test_accuracy = (float(v[0]) for v in evaluate(model, x_test, y_test))
        rows.append({
            "study": cfg.study.name, "cell": cell_dir.name, "activation": cfg.activation.name,
            "init": cfg.init.name, "depth": cfg.model.depth, "seed": seed,
            "test_accuracy": float("nan") if summary["diverged"] else test_accuracy,
            "test_loss": float("nan") if summary["diverged"] else test_loss,
            **{k: summary[k] for k in ("best_val_accuracy", "final_val_accuracy",
                                       "final_train_loss", "epochs", "diverged")},
        })
    return rows


def log_test_metrics(cell_dir: Path, rows: list[dict], mlflow_client) -> None:
    """Add test accuracy/loss to each run's MLflow run; a run missing from this store (another
    machine's, or a deleted store) is reported and skipped."""
    from mlflow.exceptions import MlflowException

    run_ids = json.loads((cell_dir / "tracking.json").read_text())["mlflow_run_ids"]
    for row in rows:
        run_id = run_ids[str(row["seed"])]
        try:
            mlflow_client.log_metric(run_id, "test_accuracy", row["test_accuracy"])
            mlflow_client.log_metric(run_id, "test_loss", row["test_loss"])
        except MlflowException as e:
            print(f"evaluate: {cell_dir.name} seed {row['seed']}: run {run_id} not logged ({e})")


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        dirs = cell_dirs(cfg)
        x_test, y_test = load_split("test")
        x_test = x_test.flatten(1)
        from initlab import tracking

        mlflow_client = tracking.client()
        rows = []
        for cell_dir in dirs:
            cell_rows = evaluate_cell(cell_dir, x_test, y_test)
            log_test_metrics(cell_dir, cell_rows, mlflow_client)
            rows += cell_rows
        with atomic_path(workspace_root() / RESULTS_CSV) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"evaluate: {len(rows)} runs in {len(dirs)} cells -> {RESULTS_CSV}")


if __name__ == "__main__":
    main()
