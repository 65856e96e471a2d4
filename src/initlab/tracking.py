"""MLflow: where the store is, the study's experiment, and one run per (cell, seed).

The store is `MLFLOW_TRACKING_URI` if set, else `sqlite:///<project>/mlflow.db`, with artifacts
in `<project>/mlartifacts`: resolved from the project root, never the cwd, because
`dvc exp run --queue` runs stages in a temp copy of the repo. mlflow is imported here only,
and only when a stage logs.
"""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from initlab.config import tracking_root

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the study

EXPERIMENT_PREFIX = "initlab-"
# MLflow 3 opens an experiment in its GenAI view unless it is marked as model training.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root() / 'mlflow.db'}"


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer (MLflow's
    own client would retry for minutes). Other stores (sqlite, files) need no check."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    from initlab.config import ConfigError

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except (urllib.error.URLError, OSError) as e:
        raise ConfigError(f"MLFLOW_TRACKING_URI={uri!r} is not reachable ({e}); start the "
                          "server, or unset the variable to use the project's sqlite store") \
            from None


def client():
    """An MlflowClient on the project's store. Opening a sqlite store creates or migrates its
    tables, which two processes must not do at once (parallel `dvc exp run` workers on a new
    store): a file lock beside the store makes them take turns."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    store = Path(uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow_client = MlflowClient(uri)
        mlflow_client.search_experiments(max_results=1)  # the store is ready
    return mlflow_client


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
    """One MLflow run per seed of a training cell, named `<cell>-s<seed>`.

    Every MLflow call runs, in order, on one background thread, so the import of mlflow and
    the store's start-up overlap data loading and training. An error there is raised in the
    training thread at its next call (`check`), not at the end. Metrics are buffered and sent
    in one `log_batch` per run at most every FLUSH_SECONDS (and at the end): a sqlite commit
    costs ~30 ms, more than a small cell's epoch."""

    FLUSH_SECONDS = 10.0

    def __init__(self, cfg: dict, cell: str, seeds: list[int], tags: dict[str, str],
                 dataset: dict[str, str]):
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._pending: list[Future] = []
        self.run_ids: list[str] = []
        self.statuses = ["FINISHED"] * len(seeds)
        self._buffer: list[list[tuple[str, float, int]]] = [[] for _ in seeds]
        self._flushed = time.monotonic()
        self._submit(self._start, cfg, cell, seeds, tags, dataset)

    def _submit(self, fn, *args) -> None:
        self.check()
        self._pending.append(self._worker.submit(fn, *args))

    def check(self) -> None:
        """Raise the error of a finished MLflow call, if any."""
        for future in self._pending:
            if future.done() and future.exception() is not None:
                raise future.exception()
        self._pending = [f for f in self._pending if not f.done()]

    def _start(self, cfg, cell, seeds, tags, dataset) -> None:
        from mlflow.entities import Dataset, DatasetInput, InputTag
        from mlflow.entities.param import Param

        self.client = client()
        exp_id = experiment_id(self.client, cfg["study"]["name"])
        fail_abandoned_runs(self.client, exp_id, cell)
        parent = study_run(self.client, exp_id, cfg["study"]["name"])
        params = flatten(cfg)
        owner = {"host": socket.gethostname(), "pid": str(os.getpid()),
                 "mlflow.parentRunId": parent}
        data_input = DatasetInput(Dataset(**dataset, source_type="local"),
                                  [InputTag("mlflow.data.context", "training")])
        for seed in seeds:
            run = self.client.create_run(exp_id, run_name=f"{cell}-s{seed}", tags={
                **tags, **owner, "cell": cell, "seed": str(seed)})
            self.run_ids.append(run.info.run_id)
            self.client.log_batch(run.info.run_id, params=[
                Param(k, v) for k, v in {**params, "seed": str(seed)}.items()])
            self.client.log_inputs(run.info.run_id, [data_input])

    def _log_metrics(self, s: int, metrics: list[tuple[str, float, int]]) -> None:
        from mlflow.entities.metric import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, value, now, step) for key, value, step in metrics]
        for start in range(0, len(batch), 1000):  # MLflow's limit per call
            self.client.log_batch(self.run_ids[s], metrics=batch[start:start + 1000])

    def log_epoch(self, epoch: int, metrics_by_seed_index: dict[int, dict[str, float]]) -> None:
        """The epoch's metrics per run, `step` = epoch."""
        for s, metrics in metrics_by_seed_index.items():
            self._buffer[s] += [(k, v, epoch) for k, v in metrics.items()]
        if time.monotonic() - self._flushed > self.FLUSH_SECONDS:
            self.flush()

    def log_steps(self, log: dict) -> None:
        """Metric name -> (steps, seeds) tensor, `step` = row."""
        for s in range(len(self._buffer)):
            self._buffer[s] += [(key, float(values[step, s]), step)
                                for key, values in log.items() for step in range(len(values))]

    def flush(self) -> None:
        for s, metrics in enumerate(self._buffer):
            if metrics:
                self._submit(self._log_metrics, s, metrics)
        self._buffer = [[] for _ in self._buffer]
        self._flushed = time.monotonic()

    def log_artifact(self, s: int, path) -> None:
        self._submit(lambda: self.client.log_artifact(self.run_ids[s], str(path)))

    def mark_diverged(self, s: int, epoch: int) -> None:
        """A NaN/inf loss ended this run: it ends FAILED, tagged `diverged`."""
        self.statuses[s] = "FAILED"
        self._submit(lambda: self.client.set_tag(self.run_ids[s], "diverged", f"epoch {epoch}"))

    def wait(self) -> list[str]:
        """Send what is buffered and block until every call is done; returns the run ids."""
        self.flush()
        for future in list(self._pending):
            future.result()
        self.check()
        return self.run_ids

    def close(self, statuses: list[str]) -> None:
        self.flush()
        self._submit(self._end, statuses)
        self._worker.shutdown(wait=True)
        self.check()

    def _end(self, statuses: list[str]) -> None:
        for run_id, status in zip(self.run_ids, statuses):
            self.client.set_terminated(run_id, status)


STUDY_ROLE_TAG = "initlab.role"


def study_run(mlflow_client, exp_id: str, study: str) -> str:
    """The study's parent run (created once, FINISHED at once): every cell's runs nest under
    it in the UI and the report stage attaches the report to it."""
    found = mlflow_client.search_runs([exp_id], f"tags.`{STUDY_ROLE_TAG}` = 'study'",
                                      max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    run = mlflow_client.create_run(exp_id, run_name=f"study-{study}",
                                   tags={STUDY_ROLE_TAG: "study", "study": study})
    mlflow_client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def fail_abandoned_runs(mlflow_client, exp_id: str, cell: str) -> None:
    """Mark FAILED the runs of this cell left RUNNING by a process of this host that is gone
    (killed with SIGKILL, say). A live process's runs are left alone: a parallel experiment
    may be training the same cell."""
    host = socket.gethostname()
    for run in mlflow_client.search_runs(
            [exp_id], f"tags.cell = '{cell}' and attributes.status = 'RUNNING'"):
        if run.data.tags.get("host") == host and not _alive(int(run.data.tags.get("pid", 0))):
            mlflow_client.set_terminated(run.info.run_id, "FAILED")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


@contextmanager
def cell_runs(cfg: dict, cell: str, seeds: list[int], tags: dict[str, str],
              dataset: dict[str, str]):
    """The cell's runs; they end FINISHED (FAILED if diverged) on success, KILLED on an
    interrupt (SIGINT, or SIGTERM turned into SystemExit) and FAILED on any other error.
    `dataset`: name, digest, source and profile of the training data (`mlflow.log_input`)."""
    runs = CellRuns(cfg, cell, seeds, tags, dataset)
    try:
        yield runs
    except BaseException as error:
        status = "KILLED" if isinstance(error, (KeyboardInterrupt, SystemExit)) else "FAILED"
        try:
            runs.close([status] * len(seeds))
        except Exception:  # noqa: BLE001 - the original error is the one to report
            pass
        raise
    runs.close(runs.statuses)
