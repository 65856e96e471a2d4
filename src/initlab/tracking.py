"""MLflow: where the store is, the study's experiment, and one run per (cell, seed), logged
by the `evaluate` stage from each cell's files (`log_cell`).

The store is `MLFLOW_TRACKING_URI` if set, else `sqlite:///<project>/mlflow.db`, with artifacts
in `<project>/mlartifacts`: resolved from the project root, never the cwd, because
`dvc exp run --queue` runs stages in a temp copy of the repo. mlflow is imported here only,
and only when a stage logs.
"""

from __future__ import annotations

import base64
import csv
import fcntl
import hashlib
import json
import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import closing, contextmanager
from pathlib import Path

from initlab import layout, memo, timings
from initlab.paths import tracking_root

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from the study
# Against a server MLflow prints each run's URL as it ends: 645 lines, a `get_run` each, and
# the URI with any password it holds.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
# A tracking server that stops answering: MLflow's defaults retry for minutes (258 s in a
# trial); these give up within ~30 s, and `reported_server_loss` names the URI.
for variable, value in [("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
                        ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")]:
    os.environ.setdefault(variable, value)

EXPERIMENT_PREFIX = "initlab-"
# MLflow 3 opens an experiment in its GenAI view unless it is marked as model training.
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{tracking_root() / 'mlflow.db'}"


def redacted(uri: str) -> str:
    """The URI as messages show it: without a password it may hold."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    port = f":{parts.port}" if parts.port else ""
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}{port}").geturl()


def answers(uri: str, timeout: float = 5.0) -> bool:
    """Whether an http(s) tracking server answers its /health (credentials in the URI are sent
    as basic auth, as MLflow's client sends them)."""
    parts = urllib.parse.urlsplit(uri)
    port = f":{parts.port}" if parts.port else ""
    request = urllib.request.Request(
        parts._replace(netloc=f"{parts.hostname}{port}").geturl().rstrip("/") + "/health")
    if parts.username is not None:
        token = f"{parts.username}:{parts.password or ''}".encode()
        request.add_header("Authorization", f"Basic {base64.b64encode(token).decode()}")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def lost(uri: str) -> bool:
    """Whether `uri` is a tracking server that does not answer."""
    return is_server(uri) and not answers(uri)


def check_reachable(uri: str) -> None:
    """Fail fast, naming the URI, when an http(s) tracking server does not answer (MLflow's
    own client would retry). Other stores (sqlite, files) need no check."""
    from initlab.errors import ConfigError

    if lost(uri):
        raise ConfigError(f"MLFLOW_TRACKING_URI={redacted(uri)!r} is not reachable; start the "
                          "server (`make server`), or unset the variable to use the project's "
                          "sqlite store")


@contextmanager
def reported_server_loss():
    """Turn a failure to log, when the tracking server has stopped answering, into one error
    that names its URI (MLflow's own would be a traceback per retry)."""
    from initlab.errors import ConfigError

    try:
        yield
    except Exception:
        uri = tracking_uri()
        if not lost(uri):
            raise
        raise ConfigError(f"MLFLOW_TRACKING_URI={redacted(uri)!r} stopped answering while runs "
                          "were logged: start the server again and rerun `dvc repro` (or "
                          "`python -m initlab.evaluate`), which logs the runs not logged "
                          "yet") from None


def client():
    """An MlflowClient on the project's store. Opening a new sqlite store creates its tables,
    which two processes must not do at once (parallel `dvc exp run` workers, evaluate's
    logging workers): a file lock beside the store lets one create it while the others wait,
    then open it side by side. A new store is made in WAL mode (sqlite's write-ahead log), in
    which readers do not block the one writer (evaluate's logging workers, `make ui`)."""
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:///"):
        return MlflowClient(uri)
    store = Path(uri.removeprefix("sqlite:///"))
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH if store.exists() else fcntl.LOCK_EX)
        if not store.exists():
            with closing(sqlite3.connect(store)) as connection:
                connection.execute("PRAGMA journal_mode=WAL")  # kept in the file
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
            # a server keeps the artifacts where it was told to (--artifacts-destination)
            local = None if is_server(tracking_uri()) else \
                (tracking_root() / "mlartifacts" / name).as_uri()
            return mlflow_client.create_experiment(name, artifact_location=local,
                                                   tags=dict([EXPERIMENT_KIND_TAG]))
        except MlflowException:
            time.sleep(0.5)
    raise RuntimeError(f"could not create or find the MLflow experiment {name!r}")


def flatten(cfg: dict, prefix: str = "") -> dict[str, str]:
    """{"model": {"depth": 4}} -> {"model.depth": "4"}: every resolved value, as an MLflow param."""
    flat = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


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


RUN_KEY_TAG = "initlab.run_key"
FINAL_STATUSES = ("FINISHED", "FAILED")


def run_key(cell_dir: Path, seed: int) -> str:
    """What identifies a run's results: its cell's config and its history, to the bit. A run
    logged with this key is not logged again by a later `evaluate`."""
    digest = hashlib.sha256((cell_dir / layout.CONFIG).read_bytes())
    digest.update((layout.seed_dir(cell_dir, seed) / layout.HISTORY).read_bytes())
    return digest.hexdigest()[:32]


def read_numbers(path: Path) -> list[dict[str, float]]:
    """The rows of a CSV of numbers (`initlab.train.write_csv`), as floats."""
    with path.open(newline="") as f:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(f)]


def run_metrics(seed_dir: Path, test: dict[str, float]) -> list[tuple[str, float, int]]:
    """(key, value, step) of one run: per epoch (step) the history and, per layer l,
    `layer<l>/<stat>` and `grad_ratio_first_last` (NaN for 0/0, as in numpy); the init's log
    (step = its row); the test metrics at step 0."""
    import numpy as np

    metrics = [(key, value, int(row["epoch"]))
               for row in read_numbers(seed_dir / layout.HISTORY)
               for key, value in row.items() if key != "epoch"]
    grad_norms: dict[int, list[float]] = {}  # epoch -> per layer, first to last
    for row in read_numbers(seed_dir / layout.LAYERS):
        epoch, layer = int(row.pop("epoch")), int(row.pop("layer"))
        metrics += [(f"layer{layer}/{stat}", value, epoch) for stat, value in row.items()]
        grad_norms.setdefault(epoch, []).append(row["grad_norm"])
    with np.errstate(divide="ignore", invalid="ignore"):
        metrics += [("grad_ratio_first_last", float(np.float64(norms[0]) / norms[-1]), epoch)
                    for epoch, norms in grad_norms.items()]
    init_log = json.loads((seed_dir / layout.SUMMARY).read_text())["init_log"]
    metrics += [(key, value, step) for key, values in init_log.items()
                for step, value in enumerate(values)]
    return metrics + [(key, value, 0) for key, value in test.items()]


def unlogged_seeds(mlflow_client, exp_id: str, cell_dir: Path, seeds: list[int]) -> list[int]:
    """The seeds of a trained cell whose run is not in the store yet: a run already logged
    with the same results (RUN_KEY_TAG) counts; an incomplete one (its logging was killed) is
    deleted, so that its seed is logged again. A query per seed, by its key (one by cell would
    load every run the cell ever had, which grows with each retraining), unless the memo of
    logged runs (`initlab.memo`) has the key in this very experiment: then no query."""
    logged, stamp, todo = memo.Memo(LOGGED), _experiment_stamp(mlflow_client, exp_id), []
    for seed in seeds:
        key = run_key(cell_dir, seed)
        if logged.get(memo.key(tracking_uri(), key)) == stamp:
            continue
        previous = mlflow_client.search_runs(
            [exp_id], f"tags.`{RUN_KEY_TAG}` = '{key}'", max_results=1000)
        if any(r.info.status in FINAL_STATUSES for r in previous):
            logged.put(memo.key(tracking_uri(), key), stamp)
            continue
        for stale in previous:  # ended KILLED first, so that none is left RUNNING
            mlflow_client.set_terminated(stale.info.run_id, "KILLED")
            mlflow_client.delete_run(stale.info.run_id)
        todo.append(seed)
    return todo


def maybe_logged(cell_dir: Path, seeds: list[int]) -> bool:
    """Whether the memo of logged runs has every seed of the cell, in some experiment of this
    store: a hint, before the store is open, of how much `evaluate` will log."""
    logged = memo.Memo(LOGGED)
    return all(memo.key(tracking_uri(), run_key(cell_dir, seed)) in logged for seed in seeds)


LOGGED = "logged"  # the memo's kind: tracking URI + run key -> the experiment it is logged in
_stamps: dict[tuple[str, str], bytes] = {}


def _experiment_stamp(mlflow_client, exp_id: str) -> bytes:
    """What tells the experiment from one of the same id in a store made anew."""
    where = (tracking_uri(), exp_id)
    if where not in _stamps:
        created = mlflow_client.get_experiment(exp_id).creation_time
        _stamps[where] = f"{exp_id}:{created}".encode()
    return _stamps[where]


def log_input(mlflow_client, run_id: str, data_input) -> None:
    """`log_inputs` of one dataset, tried once more when it lost a race: MLflow inserts a
    dataset on its first use in an experiment after finding it absent, so of two processes
    that log its first runs at once one fails on the table's unique key (the insert rolled
    back); the second try finds the other's row."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.log_inputs(run_id, [data_input])
    except MlflowException as error:
        if not isinstance(error.__cause__, sqlalchemy.exc.IntegrityError):
            raise
        mlflow_client.log_inputs(run_id, [data_input])


def cell_params(cell_dir: Path) -> dict[str, str]:
    """Every resolved value of a trained cell's config, flattened: its runs' MLflow params."""
    from omegaconf import OmegaConf

    return flatten(OmegaConf.to_container(OmegaConf.load(cell_dir / layout.CONFIG)))


def run_batch(cell_dir: Path, seed: int, timestamp_ms: int, params_of_cell: dict[str, str],
              test: dict[str, float]) -> tuple[list, list]:
    """(metrics, params) of one run, as `log_batch` takes them: `run_metrics` stamped with
    `timestamp_ms`, and the cell's params with the seed's."""
    from mlflow.entities import Metric, Param

    metrics = [Metric(k, float(v), timestamp_ms, int(step))
               for k, v, step in run_metrics(layout.seed_dir(cell_dir, seed), test)]
    return metrics, [Param(k, v) for k, v in {**params_of_cell, "seed": str(seed)}.items()]


# What of a cell's timings (`initlab.timings`) its runs carry as tags, and as metrics.
TIMING_TAGS = ("host", "node", "cpu_model", "git_commit", "torch_threads")
TIMING_METRICS = ("init_seconds", "train_seconds")


def log_cell(mlflow_client, exp_id: str, parent_id: str, study: str, cell_dir: Path, ran: dict,
             tests: dict, artifacts: list[Path]) -> None:
    """One MLflow run per seed of a trained cell, named `<cell>-s<seed>` under the `study`'s
    parent run, from the cell's files: every resolved config value as a param, the metrics
    of `run_metrics`, the tags the train stage recorded (`ran`, its cell.json), the prepared
    data as its dataset, the seed's history and layer CSVs plus `artifacts`; and, when the
    cell has timings (`initlab.timings`), its start and end, where it ran, and its seconds
    shared out per seed. `tests`: seed -> its test metrics, for the seeds `unlogged_seeds`
    names. A run ends FINISHED, or FAILED when it diverged; KILLED or FAILED if the logging
    itself is interrupted or fails."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, Metric
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from initlab.data.prepare import prepared_dir

    cell = cell_dir.name
    tags = ran["mlflow_tags"]
    timing = timings.read(cell_dir) or {}
    now_ms = int(time.time() * 1000)
    started_ms, ended_ms = timing.get("started_ms", now_ms), timing.get("ended_ms", now_ms)
    timing_tags = {k: str(timing[k]) for k in TIMING_TAGS if k in timing}
    params_of_cell = cell_params(cell_dir)
    seeds = len(json.loads(params_of_cell["study.seeds"]))
    seconds = [Metric(k, timing[k] / seeds, ended_ms, 0) for k in TIMING_METRICS if k in timing]
    data_input = DatasetInput(
        Dataset(tags["dataset"], tags["dataset_sha256"][:36], "local",
                json.dumps({"uri": prepared_dir().as_uri()}),
                profile=json.dumps({"train_examples": ran["train_examples"]})),
        [InputTag("mlflow.data.context", "training")])
    for seed, test in tests.items():
        seed_dir = layout.seed_dir(cell_dir, seed)
        summary = json.loads((seed_dir / layout.SUMMARY).read_text())
        run = mlflow_client.create_run(
            exp_id, start_time=started_ms, run_name=f"{cell}-s{seed}",
            tags={**tags, **timing_tags, "study": study, "cell": cell, "seed": str(seed),
                  RUN_KEY_TAG: run_key(cell_dir, seed), "mlflow.parentRunId": parent_id,
                  **({"diverged": f"epoch {summary['diverged_at_epoch']}"}
                     if summary["diverged"] else {})})
        run_id = run.info.run_id
        try:
            # Into the run's artifact store as create_run named it (`log_artifact` would load
            # the run from the store again to find it: a query per run)
            store = get_artifact_repository(run.info.artifact_uri, mlflow_client.tracking_uri)
            for path in (seed_dir / layout.HISTORY, seed_dir / layout.LAYERS, *artifacts):
                store.log_artifact(str(path))
            # MLflow splits the batch by its limits
            metrics, params = run_batch(cell_dir, seed, ended_ms, params_of_cell, test)
            mlflow_client.log_batch(run_id, metrics + seconds, params)
            log_input(mlflow_client, run_id, data_input)
        except BaseException as error:
            interrupted = isinstance(error, (KeyboardInterrupt, SystemExit))
            mlflow_client.set_terminated(run_id, "KILLED" if interrupted else "FAILED")
            raise
        mlflow_client.set_terminated(run_id, "FAILED" if summary["diverged"] else "FINISHED",
                                     end_time=ended_ms)
        memo.Memo(LOGGED).put(memo.key(tracking_uri(), run_key(cell_dir, seed)),
                              _experiment_stamp(mlflow_client, exp_id))
