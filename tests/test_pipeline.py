"""The real `dvc repro` of a small study in a temp copy of the project, with its own MLflow
store at the copy's root."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import SMALL_STUDY, copy_project, run, update_params

CELLS = {f"{a}-{i}" for a in ["tanh", "relu"] for i in ["zero", "he"]}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("study"))
    update_params(root, **SMALL_STUDY)
    first = run(["dvc", "repro"], root)
    return root, first


def trained_cells(repro_output: str) -> set[str]:
    return set(re.findall(r"Running stage 'train@([\w-]+)'", repro_output))


def mlflow_runs(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initlab-small")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def test_repro_trains_every_cell_and_writes_the_report(study):
    root, first = study
    assert trained_cells(first.stdout) == CELLS
    results = pd.read_csv(root / "reports/results.csv")
    assert len(results) == len(CELLS) * 2
    assert set(results.cell) == CELLS
    summary = json.loads((root / "reports/summary.json").read_text())
    assert summary["runs"] == 8 and summary["best_cell"] in {"tanh-he", "relu-he"}
    for figure in ("learning_curves.png", "accuracy_grid.png"):
        assert (root / "reports/figures" / figure).stat().st_size > 10_000
    assert not (root / "outputs").exists()  # Hydra litters nothing


def test_report_table_has_every_cell(study):
    root, _ = study
    report = (root / "reports/report.md").read_text()
    header = re.search(r"^\| init \\ activation \| (.+) \|$", report, re.M).group(1)
    assert header.split(" | ") == ["tanh", "relu"]
    rows = dict(re.findall(r"^\| (zero|he) \| (.+) \|$", report, re.M))
    assert set(rows) == {"zero", "he"}
    # Zero init stays at chance for both activations; he learns.
    assert rows["zero"].split(" | ") == ["n/c (10.0)", "n/c (10.0)"]
    assert all(re.fullmatch(r"\d+\.\d ± \d+\.\d", c) for c in rows["he"].split(" | "))


def test_mlflow_store_at_root_holds_exactly_the_runs(study):
    root, _ = study
    client, runs = mlflow_runs(root)
    expected = {f"{cell}-s{seed}" for cell in CELLS for seed in (0, 1)}
    assert {r.info.run_name for r in runs} == expected and len(runs) == len(expected)
    for r in runs:
        assert r.info.status == "FINISHED"
        assert r.data.params["model.depth"] == "2"
        assert r.data.params["model.width"] == "32"
        assert r.data.params["optimizer.name"] == "sgd"
        assert r.data.tags["study"] == "small"
        assert r.data.tags["dvc_stage"] == f"train@{r.data.tags['cell']}"
        assert 0 <= r.data.metrics["test_accuracy"] <= 1
        assert [a.path for a in client.list_artifacts(r.info.run_id)] == ["history.csv"]


def test_second_repro_runs_nothing(study):
    root, _ = study
    second = run(["dvc", "repro"], root)
    assert "Running stage" not in second.stdout


def test_adding_an_init_trains_only_the_new_cells(study):
    root, _ = study
    update_params(root, study={**SMALL_STUDY["study"], "inits": ["zero", "he", "xavier"]})
    again = run(["dvc", "repro"], root)
    assert trained_cells(again.stdout) == {"tanh-xavier", "relu-xavier"}
    assert len(pd.read_csv(root / "reports/results.csv")) == 12
    assert len(mlflow_runs(root)[1]) == 12


def test_bad_value_stops_repro_with_a_clear_error(study):
    root, _ = study
    update_params(root, optimizer={"lr": -0.5})
    failed = run(["dvc", "repro"], root, check=False)
    assert failed.returncode != 0
    assert "optimizer.lr=-0.5 is not allowed: must be > 0" in failed.stderr + failed.stdout
    _, runs = mlflow_runs(root)
    assert len(runs) == 12 and all(r.info.status != "RUNNING" for r in runs)
