"""The `evaluate` stage: every run's final weights, measured on the test split.

Reads the cells that params.yaml's study lists, loads each seed's checkpoint with
`torch.load(..., weights_only=True)`, writes reports/results.csv (one row per run) and logs
every run to MLflow (`initlab.tracking.log_cell`: its config, curves, layer statistics, test
metrics and learning-curve PNG). The report is built from this file, not from MLflow.

MLflow's SQLAlchemy store and matplotlib cost several times what the measuring does, in pure
Python, so worker processes log while this one measures (`logging_workers`).
"""

from __future__ import annotations

import ctypes
import itertools
import json
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from initlab import tracking
from initlab.config import (
    RESULTS_CSV,
    ConfigError,
    load_config,
    reported_errors,
    study_cells,
    workspace_root,
)
from initlab.data.prepare import load_split
from initlab.io import atomic_path, sigterm_as_exit
from initlab.models import build_model
from initlab.report.figures import RunCurves
from initlab.train import CELL_JSON, evaluate

PR_SET_PDEATHSIG = 1  # prctl(2)


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


def log_cells(mlflow_client, study: str, exp_id: str, parent_id: str,
              cells: Iterable[tuple]) -> None:
    """Log each (cell folder, its cell.json, its seeds, unlogged seed -> test metrics) of
    `cells`: its unlogged seeds (`tracking.log_cell`) with its learning-curve PNG."""
    curves = RunCurves()
    with tempfile.TemporaryDirectory() as scratch:
        curve = Path(scratch) / "learning_curve.png"
        for cell_dir, ran, seeds, tests in cells:
            curves.draw(cell_dir, seeds, curve)
            tracking.log_cell(mlflow_client, exp_id, parent_id, study, cell_dir, ran, tests,
                              [curve])


def _logging_worker(parent_pid: int, study: str, tasks) -> None:
    """`log_cells` of what `tasks` (a queue) hands out until it hands out None, in a worker
    that ends with the evaluate that started it (SIGTERM when its parent dies: Linux
    PR_SET_PDEATHSIG); SIGINT is left to the parent; a SIGTERM ends the run being logged
    KILLED. It imports MLflow and opens the store while the parent measures (matplotlib it
    has from the parent); the parent creates the study's experiment and parent run before it
    hands out a cell."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, sigterm_as_exit)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl
        raise SystemExit(128 + signal.SIGTERM)
    mlflow_client = tracking.client()
    cells = iter(tasks.get, None)
    first = next(cells, None)
    if first is not None:
        exp_id = tracking.experiment_id(mlflow_client, study)
        log_cells(mlflow_client, study, exp_id, tracking.study_run(mlflow_client, exp_id, study),
                  itertools.chain([first], cells))


def worker_count(cells: int) -> int:
    """INITLAB_LOGGING_WORKERS=N: N logging workers (0: log in the evaluate process); unset,
    one per core (at most 4: the sqlite store takes one writer at a time) for a study of 20
    cells or more, about where starting them (each imports MLflow and opens the store,
    ~2.5 s) pays off, else none."""
    workers = os.environ.get("INITLAB_LOGGING_WORKERS", "")
    if not workers:
        return min(4, len(os.sched_getaffinity(0))) if cells >= 20 else 0
    if not workers.isdigit():
        raise ConfigError(f"INITLAB_LOGGING_WORKERS={workers!r} is not allowed: a number of "
                          "worker processes, 0 to log in the evaluate process itself")
    return int(workers)


@contextmanager
def logging_workers(study: str, count: int):
    """Yield `log_runs(mlflow_client, exp_id, parent_id, cells)`: `log_cells` of what the
    iterator `cells` yields, by `count` worker processes (here, with `mlflow_client`, if 0)
    while `cells` goes on measuring. The
    workers are forked at once, so that their start overlaps this process's: torch is
    imported but has run no op, and no MLflow store is open yet. A
    failed or killed worker, or an interrupt, terminates the others (their current run ends
    KILLED) and raises."""
    context = multiprocessing.get_context("fork")
    tasks = context.Queue()
    workers = [context.Process(target=_logging_worker, name=f"initlab-logging-{i}",
                               args=(os.getpid(), study, tasks)) for i in range(count)]
    for worker in workers:
        worker.start()

    def log_runs(mlflow_client, exp_id: str, parent_id: str, cells: Iterator[tuple]) -> None:
        if not workers:
            return log_cells(mlflow_client, study, exp_id, parent_id, cells)
        for cell in cells:
            tasks.put(cell)
        for _ in workers:
            tasks.put(None)
        running = {worker.sentinel: worker for worker in workers}
        while running:  # in the order they end, so that a failure stops the others at once
            for ended in multiprocessing.connection.wait(list(running)):
                worker = running.pop(ended)
                worker.join()
                if worker.exitcode:
                    raise RuntimeError(f"{worker.name} exited with status {worker.exitcode}")

    try:
        yield log_runs
    finally:
        tasks.cancel_join_thread()  # never wait on a queue that nobody reads
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
                worker.join()


def main() -> None:
    with reported_errors():
        cfg = load_config(sys.argv[1:])
        tracking.check_reachable(tracking.tracking_uri())
        cells = cell_dirs(cfg)
        rows = []
        with logging_workers(cfg.study.name, worker_count(len(cells))) as log_runs:
            # One thread measures: the logging workers take the cores, and OpenMP threads
            # that wait for a core spin on it (docs/reproducibility.md, "Parallel experiments").
            torch.set_num_threads(1)
            x_test, y_test = load_split("test")
            mlflow_client = tracking.client()
            exp_id = tracking.experiment_id(mlflow_client, cfg.study.name)
            parent_id = tracking.study_run(mlflow_client, exp_id, cfg.study.name)

            def unlogged_cells():
                for sweep, cell_dir in cells:
                    ran = json.loads((cell_dir / CELL_JSON).read_text())
                    cell_rows = evaluate_cell(cfg.study.name, sweep, cell_dir, ran, x_test,
                                              y_test)
                    rows.extend(cell_rows)
                    seeds = [row["seed"] for row in cell_rows]
                    todo = tracking.unlogged_seeds(mlflow_client, exp_id, cell_dir, seeds)
                    if todo:
                        yield cell_dir, ran, seeds, {
                            row["seed"]: {k: row[k] for k in ("test_accuracy", "test_loss")}
                            for row in cell_rows if row["seed"] in todo}

            log_runs(mlflow_client, exp_id, parent_id, unlogged_cells())
        with atomic_path(workspace_root() / RESULTS_CSV) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False)
        print(f"evaluate: {len(rows)} runs in {len(cells)} cells -> {RESULTS_CSV}")


if __name__ == "__main__":
    main()
