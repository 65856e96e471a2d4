"""One cell trains for real on the prepared data; seeds are independent and reproducible."""

from __future__ import annotations

import json
import math
import multiprocessing

import pandas as pd
import torch
from mlflow.entities import Dataset, DatasetInput
from mlflow.exceptions import MlflowException
from omegaconf import OmegaConf

from initlab import timings
from initlab.config import load_config
from initlab.data.prepare import load_split
from initlab.inits import INITS
from initlab.io import sha256
from initlab.layout import CELL_JSON
from initlab.memo import Memo, key
from initlab.models import build_model
from initlab.optim import OPTIMIZERS
from initlab.tracking import (
    LOGGED,
    RUN_KEY_TAG,
    client,
    experiment_id,
    log_cell,
    log_input,
    run_metrics,
    study_run,
    tracking_uri,
    unlogged_seeds,
)
from initlab.train import FitResult, fit, seed_generator, train_cell

TINY = ["model.depth=2", "model.width=16", "train.epochs=2", "train.batch_size=32"]


def _fit(cfg, seeds):
    (xt, yt), (xv, yv) = load_split("train"), load_split("val")
    model = build_model(cfg, len(seeds))
    model.initialize(INITS[cfg.init.name], [seed_generator(s, "init") for s in seeds], "zero")
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), cfg.optimizer)
    x, y = xt[:600], yt[:600]
    result = fit(model, optimizer, (x, y), (xv, yv), (x[:64], y[:64]), cfg.train,
                 [seed_generator(s, "data_order") for s in seeds])
    return model, result


def test_cell_trains_and_writes_its_outputs(in_project):
    cfg = load_config(["activation=relu", "init=he", *TINY])
    out = train_cell(cfg)
    assert out == in_project / "runs" / "grid" / "relu-he"
    for seed in cfg.study.seeds:
        history = pd.read_csv(out / f"seed_{seed}" / "history.csv")
        assert list(history.epoch) == [0, 1, 2]
        assert history.val_accuracy.iloc[-1] > 0.5  # learned something in 2 epochs
        assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
        summary = json.loads((out / f"seed_{seed}" / "summary.json").read_text())
        assert summary["diverged"] is False
        assert summary["best_val_accuracy"] == history.val_accuracy.max()
        state = torch.load(out / f"seed_{seed}" / "model.pt", weights_only=True)
        assert state["weights.0"].shape == (784, 16)
    ran = json.loads((out / "cell.json").read_text())
    assert ran["device"] == "cpu" and ran["parameters_per_seed"] == 784 * 16 + 16 + 16 * 10 + 10
    assert ran["mlflow_tags"]["activation"] == "relu"
    # what the config determines, nothing of the clock or the checkout
    assert set(ran) == {"device", "parameters_per_seed", "train_examples", "mlflow_tags"}
    assert "git_commit" not in ran["mlflow_tags"]
    ran_for = timings.read(out)  # beside the output, for this very config
    assert ran_for["train_seconds"] > 0 and ran_for["config_sha256"] == sha256(out / "config.yaml")
    assert not list(in_project.glob("runs/**/.*tmp*"))  # no temp folder left behind


def test_seed_alone_equals_seed_in_batch(in_project):
    cfg = load_config(["activation=tanh", "init=xavier", *TINY])
    batched, in_batch = _fit(cfg, [0, 1, 2])
    alone, by_itself = _fit(cfg, [1])
    for w_b, w_a in zip(batched.weights, alone.weights):
        assert torch.equal(w_b[1], w_a[0])
    assert repr(in_batch.rows()[1]) == repr(by_itself.rows()[0])  # every value, NaN too


def test_same_config_and_seed_give_bit_identical_metrics(in_project):
    cfg = load_config(["activation=sigmoid", "init=uniform", *TINY])
    _, first = _fit(cfg, [0, 1])
    _, second = _fit(cfg, [0, 1])
    assert repr(first.rows()) == repr(second.rows())  # bit-identical, both seeds


def test_rows_stop_at_the_epoch_a_seed_diverged_at():
    """Two seeds, three epochs: seed 0 diverged at epoch 1, seed 1 trained on. Every value is a
    float, also of an integer statistic (the CSVs write 0.0, not 0)."""
    t = torch.tensor
    history = [{"train_loss": t([2.0, 2.5]), "train_accuracy": t([0.1, 0.2]),
                "val_loss": t([2.1, 2.4]), "val_accuracy": t([0.1, 0.3])},
               {"train_loss": t([math.inf, 1.5]), "train_accuracy": t([0.1, 0.5]),
                "val_loss": t([math.nan, 1.4]), "val_accuracy": t([0.1, 0.6])},
               {"train_loss": t([math.nan, 0.5]), "train_accuracy": t([0.1, 0.8]),
                "val_loss": t([math.nan, 0.4]), "val_accuracy": t([0.1, 0.9])}]
    layers = [{"grad_norm": t([[e, 10.0 + e], [20.0 + e, 30.0 + e]]),
               "dead": torch.zeros(2, 2, dtype=torch.int64)} for e in range(3)]
    diverged, trained = FitResult(history, layers, [1, None]).rows()
    assert [r["epoch"] for r in diverged[0]] == [0, 1]
    assert diverged[0][1]["train_loss"] == math.inf and math.isnan(diverged[0][1]["val_loss"])
    assert [(r["epoch"], r["layer"], r["grad_norm"]) for r in diverged[1]] == [
        (0, 0, 0.0), (0, 1, 10.0), (1, 0, 1.0), (1, 1, 11.0)]
    assert trained[0][-1] == {"epoch": 2, "train_loss": 0.5, "train_accuracy": 0.800000011920929,
                              "val_loss": 0.4000000059604645, "val_accuracy": 0.8999999761581421}
    assert [(r["layer"], r["grad_norm"], r["dead"]) for r in trained[1][-2:]] == [
        (0, 22.0, 0.0), (1, 32.0, 0.0)]
    assert all(type(v) is float for r in trained[0] + trained[1] for k, v in r.items()
               if k not in ("epoch", "layer"))


def log(out, mlflow_client, study="small"):
    """What the evaluate stage does for a cell (test metrics made up here)."""
    exp_id = experiment_id(mlflow_client, study)
    seeds = list(OmegaConf.load(out / "config.yaml").study.seeds)
    tests = {seed: {"test_accuracy": 0.5, "test_loss": 1.0}
             for seed in unlogged_seeds(mlflow_client, exp_id, out, seeds)}
    ran = json.loads((out / CELL_JSON).read_text())
    log_cell(mlflow_client, exp_id, study_run(mlflow_client, exp_id, study), study, out, ran,
             tests, [])
    return mlflow_client.search_runs([exp_id], f"tags.cell = '{out.name}'")


def test_a_cells_runs_are_logged_once_from_its_files(in_project):
    cfg = load_config(["activation=relu", "init=he", *TINY, "run_dir=runs/grid/logged"])
    out = train_cell(cfg)
    mlflow_client = client()
    runs = log(out, mlflow_client)
    assert sorted(r.info.run_name for r in runs) == ["logged-s0", "logged-s1"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.params["model.depth"] == "2" and run.data.tags["device"] == "cpu"
        assert run.data.metrics["test_accuracy"] == 0.5
        assert [m.step for m in mlflow_client.get_metric_history(run.info.run_id,
                                                                 "val_accuracy")] == [0, 1, 2]
        assert len(mlflow_client.get_metric_history(run.info.run_id, "layer1/grad_norm")) == 3
        assert run.data.metrics["train_seconds"] > 0 and run.data.tags["host"]  # its timings
    assert {r.info.run_id for r in log(out, mlflow_client)} == {r.info.run_id for r in runs}

    # Logging killed half-way left a RUNNING run (and no memo of a logged one, which is
    # written once a run has ended): the next evaluate replaces it.
    stale = runs[0]
    mlflow_client.delete_run(stale.info.run_id)
    (Memo(LOGGED).folder / key(tracking_uri(), stale.data.tags[RUN_KEY_TAG])).unlink()
    half = mlflow_client.create_run(stale.info.experiment_id, tags={
        "cell": "logged", RUN_KEY_TAG: stale.data.tags[RUN_KEY_TAG]})
    again = log(out, mlflow_client)
    assert len(again) == 2 and all(r.info.status == "FINISHED" for r in again)
    assert half.info.run_id not in {r.info.run_id for r in again}


def test_run_metrics_hold_every_value_of_the_seeds_files(tmp_path):
    (tmp_path / "history.csv").write_text("epoch,train_loss,val_accuracy\n0,2.5,0.1\n1,nan,0.2\n")
    (tmp_path / "layers.csv").write_text("epoch,layer,grad_norm,dead\n0,0,3.0,0.0\n0,1,1.5,0.5\n"
                                         "1,0,0.0,1.0\n1,1,0.0,1.0\n")
    (tmp_path / "summary.json").write_text(json.dumps({"init_log": {"lsuv/iterations": [2, 1]}}))
    metrics = run_metrics(tmp_path, {"test_accuracy": 0.75})
    assert repr(metrics) == repr([
        ("train_loss", 2.5, 0), ("val_accuracy", 0.1, 0),
        ("train_loss", math.nan, 1), ("val_accuracy", 0.2, 1),
        ("layer0/grad_norm", 3.0, 0), ("layer0/dead", 0.0, 0),
        ("layer1/grad_norm", 1.5, 0), ("layer1/dead", 0.5, 0),
        ("layer0/grad_norm", 0.0, 1), ("layer0/dead", 1.0, 1),
        ("layer1/grad_norm", 0.0, 1), ("layer1/dead", 1.0, 1),
        ("grad_ratio_first_last", 2.0, 0), ("grad_ratio_first_last", math.nan, 1),  # 0/0
        ("lsuv/iterations", 2, 0), ("lsuv/iterations", 1, 1), ("test_accuracy", 0.75, 0)])


def test_divergent_learning_rate_marks_runs_diverged(in_project):
    cfg = load_config(["activation=tanh", "init=normal", "optimizer.lr=1e38", *TINY])
    out = train_cell(cfg)
    for seed in cfg.study.seeds:
        summary = json.loads((out / f"seed_{seed}" / "summary.json").read_text())
        assert summary["diverged"] is True
        history = pd.read_csv(out / f"seed_{seed}" / "history.csv")
        assert not math.isfinite(history.train_loss.iloc[-1])
    for run in log(out, client()):
        assert run.info.status == "FAILED" and "diverged" in run.data.tags


def test_experiment_opens_in_model_training_view(in_project):
    mlflow_client = client()
    experiment = mlflow_client.get_experiment(experiment_id(mlflow_client, "tagged"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def _log_new_datasets_with(barrier, failures) -> None:
    """Log ten datasets into a run of experiment "race", each new to the experiment, each at
    the moment the other process logs it (a fork target)."""
    mlflow_client = client()
    run_id = mlflow_client.create_run(experiment_id(mlflow_client, "race")).info.run_id
    for k in range(10):
        barrier.wait(timeout=60)  # a process that failed breaks it for the other
        try:
            log_input(mlflow_client, run_id, DatasetInput(Dataset("subset", f"digest{k}",
                                                                  "local", "{}"), []))
        except MlflowException:
            with failures.get_lock():
                failures.value += 1


def test_two_processes_log_a_dataset_new_to_the_experiment_at_once(in_project):
    """MLflow inserts a dataset new to an experiment after finding it absent, so both
    processes insert it; with one try, one of them fails in every round."""
    context = multiprocessing.get_context("fork")  # the store is opened after the fork
    barrier, failures = context.Barrier(2), context.Value("i", 0)
    workers = [context.Process(target=_log_new_datasets_with, args=(barrier, failures))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert failures.value == 0 and [w.exitcode for w in workers] == [0, 0]
    mlflow_client = client()
    runs = mlflow_client.search_runs([experiment_id(mlflow_client, "race")])
    assert [len(run.inputs.dataset_inputs) for run in runs] == [10, 10]


def test_mixed_precision_is_off_by_default_and_changes_the_numbers(in_project):
    cfg = load_config(["activation=relu", "init=he", *TINY])
    assert cfg.train.amp is False
    _, fp32 = _fit(cfg, [0])
    _, bf16 = _fit(load_config(["activation=relu", "init=he", *TINY, "train.amp=true"]), [0])
    rows32, rows16 = fp32.rows()[0][0], bf16.rows()[0][0]
    assert rows32[0] == rows16[0]  # the same init, measured in fp32
    assert rows16[-1]["train_loss"] != rows32[-1]["train_loss"]
    assert abs(rows16[-1]["val_accuracy"] - rows32[-1]["val_accuracy"]) < 0.05
