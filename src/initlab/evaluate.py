"""The `evaluate` stage: every run's final weights, measured on the test split.

Reads the cells that params.yaml's study lists, loads each seed's checkpoint with
`torch.load(..., weights_only=True)`, writes reports/results.csv (one row per run) and logs
every run to MLflow (`initlab.tracking.log_cell`: its config, curves, layer statistics, test
metrics and learning-curve PNG). The report is built from this file, not from MLflow.

A cell is measured once (its rows are kept in `initlab.memo` by the hash of its files, the
test split and this module) and each run logged once (`tracking.unlogged_seeds`), so adding
cells to a study costs their own evaluation. MLflow's SQLAlchemy store and matplotlib cost
several times what the measuring does, in pure Python, so worker processes log while this
one measures (`initlab.logging_workers`, speed only: INITLAB_LOGGING_WORKERS=0 logs here).
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from initlab import layout, memo, tracking
from initlab.cells import study_cells
from initlab.config import load_config
from initlab.data.prepare import load_split, prepared_dir
from initlab.errors import ConfigError, reported_errors
from initlab.io import atomic_path, sha256
from initlab.logging_workers import logging_workers, worker_count
from initlab.models import build_model
from initlab.paths import RESULTS_CSV, workspace_root
from initlab.train import measure

MEASURED = "measured"  # the memo's kind: a cell's files -> its rows


def cell_dirs(cfg) -> list[tuple[str, Path]]:
    """(sweep, folder) of every cell of the study (`initlab.cells.study_cells`)."""
    cells = [(cell.sweep, workspace_root() / cell.run_dir) for cell in study_cells(cfg)]
    missing = [str(d) for _, d in cells if not (d / layout.CONFIG).is_file()]
    if missing:
        raise ConfigError(f"training outputs missing: {missing}; run `dvc repro` to train them")
    return cells


def evaluate_cell(cell_dir: Path, x_test, y_test) -> list[dict]:
    """One row per seed of a trained cell (all but the study's name). The seeds' checkpoints
    load into one seed-batched model, measured in one pass."""
    cfg = OmegaConf.load(cell_dir / layout.CONFIG)
    seeds = list(cfg.study.seeds)
    model = build_model(cfg, n_models=len(seeds))
    model.load_seed_state_dicts([torch.load(layout.seed_dir(cell_dir, seed) / layout.MODEL,
                                            weights_only=True) for seed in seeds])
    test_losses, test_accuracies = measure(model, x_test, y_test, cfg.train.eval_batch_size)
    rows = []
    for s, seed in enumerate(seeds):
        summary = json.loads((layout.seed_dir(cell_dir, seed) / layout.SUMMARY).read_text())
        rows.append({
            "sweep": cell_dir.parent.name, "cell": cell_dir.name,
            "run_dir": cfg.run_dir, "activation": cfg.activation.name, "init": cfg.init.name,
            "depth": cfg.model.depth, "width": cfg.model.width,
            "batchnorm": cfg.model.batchnorm, "seed": seed,
            "test_accuracy": float("nan") if summary["diverged"] else float(test_accuracies[s]),
            "test_loss": float("nan") if summary["diverged"] else float(test_losses[s]),
            **{k: summary[k] for k in ("best_val_accuracy", "final_val_accuracy",
                                       "final_train_loss", "epochs", "diverged")},
        })
    return rows


def measured_key(cell_dir: Path) -> str:
    """What a cell's rows depend on: its config, each seed's checkpoint and summary, the test
    split and this module."""
    seed_files = sorted(p for p in cell_dir.glob("seed_*/*")
                        if p.name in (layout.MODEL, layout.SUMMARY))
    return memo.key(sha256(Path(__file__)), sha256(prepared_dir() / "manifest.json"),
                    str(cell_dir.relative_to(workspace_root())),
                    (cell_dir / layout.CONFIG).read_bytes(),
                    *[f"{p.relative_to(cell_dir)}:{sha256(p)}" for p in seed_files])


def log_cells(mlflow_client, study: str, exp_id: str, parent_id: str,
              cells: Iterable[tuple]) -> None:
    """Log each (cell folder, its cell.json, its seeds, unlogged seed -> test metrics) of
    `cells`: its unlogged seeds (`tracking.log_cell`) with its learning-curve PNG (matplotlib
    imported only when there is one to draw)."""
    curves = None
    with tempfile.TemporaryDirectory() as scratch:
        curve = Path(scratch) / "learning_curve.png"
        for cell_dir, ran, seeds, tests in cells:
            if curves is None:
                from initlab.curves import RunCurves

                curves = RunCurves()
            curves.draw(cell_dir, seeds, curve)
            tracking.log_cell(mlflow_client, exp_id, parent_id, study, cell_dir, ran, tests,
                              [curve])


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        tracking.check_reachable(tracking.tracking_uri())
        cells = cell_dirs(cfg)
        measured = memo.Memo(MEASURED)
        keys = {cell_dir: measured_key(cell_dir) for _, cell_dir in cells}
        kept = {cell_dir: json.loads(data) for cell_dir, key in keys.items()
                if (data := measured.get(key)) is not None}
        to_log = [d for _, d in cells
                  if d not in kept or not tracking.maybe_logged(d, [r["seed"] for r in kept[d]])]
        rows = []
        with tracking.reported_server_loss(), \
                logging_workers(cfg.study.name, worker_count(len(to_log)), log_cells) as log_runs:
            # One thread measures: the logging workers take the cores, and OpenMP threads
            # that wait for a core spin on it (docs/reproducibility.md, "Parallel experiments").
            torch.set_num_threads(1)
            x_test, y_test = load_split("test")
            mlflow_client = tracking.client()
            exp_id = tracking.experiment_id(mlflow_client, cfg.study.name)
            parent_id = tracking.study_run(mlflow_client, exp_id, cfg.study.name)

            def unlogged_cells():
                for _, cell_dir in cells:
                    cell_rows = kept.get(cell_dir)
                    if cell_rows is None:
                        cell_rows = evaluate_cell(cell_dir, x_test, y_test)
                        measured.put(keys[cell_dir], json.dumps(cell_rows).encode())
                    rows.extend({"study": cfg.study.name, **row} for row in cell_rows)
                    seeds = [row["seed"] for row in cell_rows]
                    todo = tracking.unlogged_seeds(mlflow_client, exp_id, cell_dir, seeds)
                    if todo:
                        ran = json.loads((cell_dir / layout.CELL_JSON).read_text())
                        yield cell_dir, ran, seeds, {
                            row["seed"]: {k: row[k] for k in ("test_accuracy", "test_loss")}
                            for row in cell_rows if row["seed"] in todo}

            log_runs(mlflow_client, exp_id, parent_id, unlogged_cells())
        with atomic_path(workspace_root() / RESULTS_CSV) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"evaluate: {len(rows)} runs in {len(cells)} cells -> {RESULTS_CSV} "
              f"({len(cells) - len(kept)} cells measured, the rest as before)")


if __name__ == "__main__":
    main()
