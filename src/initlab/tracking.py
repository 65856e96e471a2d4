"""MLflow: where the store is, the study's experiment, and one run per (cell, seed).

The store is `MLFLOW_TRACKING_URI` if set, else `sqlite:///<project>/mlflow.db`, with artifacts
in `<project>/mlartifacts`: resolved from the project root, never the cwd, because
`dvc exp run --queue` runs stages in a temp copy of the repo. mlflow is imported here only,
and only when a stage logs.
"""

from __future__ import annotations

import os
import subprocess
import time
from contextlib import contextmanager

from initlab.config import tracking_root

EXPERIMENT_PREFIX = "initlab-"
# MLflow 3 opens an experiment in its GenAI view unless it is marked as model training.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root() / 'mlflow.db'}"


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri())


def experiment_id(mlflow_client, study: str) -> str:
    """The study's experiment, created on first use (a parallel creator may win the race)."""
    from mlflow.exceptions import MlflowException

    name = EXPERIMENT_PREFIX + study
    for _ in range(2):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return mlflow_client.create_experiment(
                name, artifact_location=(tracking_root() / "mlartifacts" / name).as_uri(),
                tags=dict([EXPERIMENT_KIND_TAG]))
        except MlflowException:
            time.sleep(0.5)
    raise RuntimeError(f"could not create or find the MLflow experiment {name!r}")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"model": {"depth": 4}} -> {"model.depth": "4"}: every resolved value, as an MLflow param."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


class CellRuns:
    """One MLflow run per seed of a training cell, logged in one `log_batch` per run and epoch."""

    def __init__(self, mlflow_client, run_ids: list[str]):
        self.client = mlflow_client
        self.run_ids = run_ids
        self.statuses = ["FINISHED"] * len(run_ids)

    def mark_diverged(self, seed_index: int, epoch: int) -> None:
        """A NaN/inf loss ended this run: it ends FAILED, tagged `diverged`."""
        self.statuses[seed_index] = "FAILED"
        self.client.set_tag(self.run_ids[seed_index], "diverged", f"epoch {epoch}")

    def log_epoch(self, epoch: int, metrics_by_seed_index: dict[int, dict[str, float]]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for s, metrics in metrics_by_seed_index.items():
            self.client.log_batch(self.run_ids[s], metrics=[
                Metric(key, value, now, epoch) for key, value in metrics.items()])

    def log_steps(self, log: dict[str, "torch.Tensor"]) -> None:
        """Log metric -> (steps, seeds) tensors, `step` = row: one `log_batch` per run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for s, run_id in enumerate(self.run_ids):
            metrics = [Metric(key, float(values[step, s]), now, step)
                       for key, values in log.items() for step in range(len(values))]
            for start in range(0, len(metrics), 1000):  # MLflow's batch limit
                self.client.log_batch(run_id, metrics=metrics[start:start + 1000])

    def log_artifact(self, seed_index: int, path) -> None:
        self.client.log_artifact(self.run_ids[seed_index], str(path))



@contextmanager
def cell_runs(cfg: dict, cell: str, seeds: list[int], tags: dict[str, str]):
    """Start a run per seed, named `<cell>-s<seed>`; end them FINISHED on success, KILLED on an
    interrupt (SIGINT, or SIGTERM turned into SystemExit) and FAILED on any other error."""
    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, cfg["study"]["name"])
    from mlflow.entities import Param

    mlflow_client = client()
    exp_id = experiment_id(mlflow_client, cfg["study"]["name"])
    params = flatten(cfg)
    run_ids = []
    try:
        for seed in seeds:
            run = mlflow_client.create_run(exp_id, run_name=f"{cell}-s{seed}",
                                           tags={**tags, "cell": cell, "seed": str(seed)})
            run_ids.append(run.info.run_id)
            mlflow_client.log_batch(run.info.run_id, params=[
                Param(k, v) for k, v in {**params, "seed": str(seed)}.items()])
        runs = CellRuns(mlflow_client, run_ids)
        yield runs
    except (KeyboardInterrupt, SystemExit):
        _end(mlflow_client, run_ids, ["KILLED"] * len(run_ids))
        raise
    except BaseException:
        _end(mlflow_client, run_ids, ["FAILED"] * len(run_ids))
        raise
    _end(mlflow_client, run_ids, runs.statuses)


def _end(mlflow_client, run_ids: list[str], statuses: list[str]) -> None:
    for run_id, status in zip(run_ids, statuses):
        mlflow_client.set_terminated(run_id, status)
