"""The real `dvc repro` of a small study in a temp copy of the project, with its own MLflow
store at the copy's root."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    SMALL_STUDY,
    children,
    copy_project,
    held_before_logging,
    project_env,
    run,
    servers,
    update_params,
)
from mlflow.tracking import MlflowClient

from initlab.bench import server_folder

CELLS = {f"{a}-{i}" for a in ["tanh", "relu"] for i in ["zero", "he"]}
OTHER_SWEEPS = {"relu-he-d4", "relu-he-bn"}  # the small depth and batch-norm sweeps
pytestmark = pytest.mark.xdist_group("small_study")  # one worker builds it, for test_browser too


@pytest.fixture(scope="module")
def study(small_study):
    return small_study


def trained_cells(repro_output: str) -> set[str]:
    stage = r"Running stage 'sweeps/grid/dvc.yaml:train_grid@([\w-]+)'"
    return set(re.findall(stage, repro_output))


def mlflow_runs(root):
    """The client, and the study's training runs (not its parent run)."""
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("initlab-small")
    return client, client.search_runs([experiment.experiment_id], "tags.cell != ''",
                                      max_results=1000)


def test_repro_trains_every_cell_and_writes_the_report(study):
    root, first = study
    assert trained_cells(first.stdout) == CELLS
    results = pd.read_csv(root / "reports/results.csv")
    assert len(results) == (len(CELLS) + len(OTHER_SWEEPS)) * 2
    assert set(results.cell) == CELLS | OTHER_SWEEPS
    assert set(results.sweep) == {"grid", "depth", "batchnorm"}
    summary = json.loads((root / "reports/summary.json").read_text())
    assert summary["runs"] == 12 and summary["grid_runs"] == 8
    assert summary["best_cell"] in {"tanh-he", "relu-he"}
    assert set(summary["findings"]) == {f"F{i}" for i in range(1, 9)}
    for figure in ("learning_curves.png", "accuracy_grid.png", "f1_zero_init.png",
                   "theory_backward.png", "theory_forward.png", "theory_tanh_phase.png"):
        assert (root / "reports/figures" / figure).stat().st_size > 10_000
    report = (root / "reports/report.md").read_text()
    theory = report[report.index("## Theory beside the measurements"):]
    assert re.search(r"\| relu \| he \| 4 \| 2 \|.*\| agrees \|", theory), theory[:3000]
    html = (root / "reports/report.html").read_text()
    assert html.count("data:image/png;base64,") >= 10  # self-contained
    assert not (root / "outputs").exists()  # Hydra litters nothing
    configs = list((root / "runs/configs").rglob("*.yaml"))
    assert len(configs) == len(CELLS | OTHER_SWEEPS)
    for config in configs:  # each cell trained the config the compose stage wrote for it
        cell = config.relative_to(root / "runs/configs").with_suffix("")
        assert (root / "runs" / cell / "config.yaml").read_text() == config.read_text()


def test_report_table_has_every_cell(study):
    root, _ = study
    report = (root / "reports/report.md").read_text()
    report = report[report.index("## Accuracy: inits × activations"):]
    header = re.search(r"^\| init \| (.+) \|$", report, re.M).group(1)
    assert header.split(" | ") == ["tanh", "relu"]
    rows = dict(re.findall(r"^\| (zero|he) \| (.+) \|$", report, re.M))
    assert set(rows) == {"zero", "he"}
    # Zero init stays at chance for both activations; he learns.
    assert rows["zero"].split(" | ") == ["n/c (10.0)", "n/c (10.0)"]
    assert all(re.fullmatch(r"\d+\.\d ± \d+\.\d", c) for c in rows["he"].split(" | "))


def test_report_reads_every_runs_rows_under_its_keys(study, monkeypatch):
    """The report parses the runs' CSVs as one: the same rows as each file read alone."""
    from initlab.report.__main__ import per_run

    root, _ = study
    monkeypatch.chdir(root)
    results = pd.read_csv(root / "reports/results.csv")
    for name in ("history.csv", "layers.csv"):
        alone = pd.concat([pd.read_csv(root / r.run_dir / f"seed_{r.seed}" / name).assign(
            sweep=r.sweep, run_dir=r.run_dir, activation=r.activation, init=r.init,
            depth=r.depth, seed=r.seed) for r in results.itertuples()], ignore_index=True)
        pd.testing.assert_frame_equal(per_run(results, name), alone)


def test_mlflow_store_at_root_holds_exactly_the_runs(study):
    root, _ = study
    client, runs = mlflow_runs(root)
    expected = {f"{cell}-s{seed}" for cell in CELLS | OTHER_SWEEPS for seed in (0, 1)}
    assert {r.info.run_name for r in runs} == expected and len(runs) == len(expected)
    parents = {r.data.tags["mlflow.parentRunId"] for r in runs}
    assert len(parents) == 1
    parent = client.get_run(parents.pop())
    assert parent.info.run_name == "study-small"
    assert {"report.md", "report.html"} <= {a.path for a in client.list_artifacts(
        parent.info.run_id)}
    for r in runs:
        grid = r.data.tags["cell"] in CELLS
        assert r.info.status == "FINISHED"
        assert r.data.params["model.depth"] == ("2" if grid else r.data.tags["depth"])
        assert r.data.params["optimizer.name"] == "sgd"
        assert r.data.tags["study"] == "small"
        if grid:
            stage = f"sweeps/grid/dvc.yaml:train_grid@{r.data.tags['cell']}"
            assert r.data.tags["dvc_stage"] == stage
        assert 0 <= r.data.metrics["test_accuracy"] <= 1
        assert "layer0/grad_norm" in r.data.metrics
        assert [d.dataset.name for d in r.inputs.dataset_inputs] == ["mnist_subset"]
        assert {a.path for a in client.list_artifacts(r.info.run_id)} == {
            "history.csv", "layers.csv", "learning_curve.png"}


def test_second_repro_runs_nothing(study):
    """Also once Python has written bytecode beside the source, as it does unless
    PYTHONDONTWRITEBYTECODE is set: `__pycache__/` is no stage's dependency."""
    root, _ = study
    run([sys.executable, "-m", "compileall", "-q", "src/initlab"], root)
    second = run(["dvc", "repro"], root)
    assert "Running stage" not in second.stdout


def test_adding_an_init_trains_only_the_new_cells(study):
    root, _ = study
    update_params(root, grid={**SMALL_STUDY["grid"], "inits": ["zero", "he", "xavier"]})
    again = run(["dvc", "repro"], root)
    assert trained_cells(again.stdout) == {"tanh-xavier", "relu-xavier"}
    assert "Running stage 'sweeps/depth" not in again.stdout
    assert len(pd.read_csv(root / "reports/results.csv")) == 16
    assert len(mlflow_runs(root)[1]) == 16


# What the study's stages write (MLflow aside), for comparing two ways of making it.
OUTPUTS = ["runs/configs/**/*.yaml", "reports/results.csv", "reports/report.md",
           "reports/summary.json", "reports/figures/*.png", "reports/plots/**/*.csv"]


def outputs(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for pattern in OUTPUTS for p in sorted(root.glob(pattern))}


def test_incremental_stages_write_what_a_run_from_scratch_writes(study):
    """After an edit, compose, evaluate and report reuse what they kept (`initlab.memo`); with
    nothing kept they write the same bytes."""
    root, _ = study
    incremental = outputs(root)
    assert len(incremental) > 20
    shutil.rmtree(root / ".cache")
    for stage in ("compose", "evaluate", "report"):
        run(["dvc", "repro", "--force", "--single-item", stage], root)
    assert outputs(root) == incremental
    assert "Running stage" not in run(["dvc", "repro"], root).stdout


def test_a_stage_forked_from_the_warm_server_writes_what_its_own_process_writes(study, tmp_path):
    """A stage's command, `python -m initlab.forkserver initlab.evaluate`: the stage runs in a
    child of the fork server (held there at its first cell), named after its stage, and
    writes the results.csv a process of its own writes."""
    root, _ = study
    expected = (root / "reports/results.csv").read_bytes()

    def forked():
        [server] = servers(env)
        [child] = children(server)
        assert Path(f"/proc/{child}/comm").read_text() == "evaluate\n"

    with server_folder() as runtime, held_before_logging(root) as release:  # a server of its own
        env = {**project_env(root), "XDG_RUNTIME_DIR": runtime,
               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}  # every run to log
        process = subprocess.Popen([sys.executable, "-m", "initlab.forkserver",
                                    "initlab.evaluate"], cwd=root, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            release(process, held=forked)
        except BaseException:  # the client killed: its child stops too, none left on the pipe
            process.kill()
            raise
        out, err = process.communicate(timeout=300)
    assert process.returncode == 0, out + err
    rows = len(pd.read_csv(root / "reports/results.csv"))
    assert out.startswith(f"evaluate: {rows} runs in ")  # the child writes to the client's stdout
    assert (root / "reports/results.csv").read_bytes() == expected


def test_a_fresh_clone_retrains_the_committed_study_to_the_same_bytes(study, tmp_path):
    """The committed locks and reports are a checkable record: a clone with no DVC cache
    retrains every cell and leaves git clean (no seconds in what DVC hashes: initlab.timings)."""
    root, _ = study
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    run([*git, "add", "-A"], root)
    run([*git, "commit", "-qm", "the study"], root)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp_path)
    again = run(["dvc", "repro"], clone)
    assert trained_cells(again.stdout) >= CELLS
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
    assert (clone / "timings" / "grid" / "relu-he.json").is_file()  # the seconds: not in git


def test_bad_value_stops_repro_with_a_clear_error(study):
    root, _ = study
    _, before = mlflow_runs(root)
    original = (root / "params.yaml").read_text()
    update_params(root, optimizer={"lr": -0.5})
    try:
        failed = run(["dvc", "repro"], root, check=False)
    finally:
        (root / "params.yaml").write_text(original)  # the study is shared by other modules
    assert failed.returncode != 0
    assert "optimizer.lr=-0.5 is not allowed: must be > 0" in failed.stderr + failed.stdout
    _, runs = mlflow_runs(root)
    assert len(runs) == len(before) and all(r.info.status != "RUNNING" for r in runs)


def test_plots_diff_overlays_two_experiments_learning_curves(tmp_path):
    """The learning curves are DVC data plots: `dvc plots diff` between main and an experiment
    shows both revisions' curves of a cell (one epoch against two)."""
    root = copy_project(tmp_path / "plots")
    update_params(root, **{**SMALL_STUDY, "grid": {**SMALL_STUDY["grid"],
                                                   "activations": ["relu"], "inits": ["he"]},
                           "depth_sweep": {"depths": []},
                           "batchnorm_sweep": {"activations": []}, "train": {"epochs": 1}})
    env = {**project_env(root), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    run(["dvc", "repro"], root, env=env)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]
    run([*git, "add", "-A"], root)
    run([*git, "commit", "-qm", "one epoch"], root)
    run(["dvc", "exp", "run", "--temp", "-n", "two-epochs", "-S", "train.epochs=2"], root,
        env=env)
    target = "reports/plots/curves/relu-he.csv"
    shown = json.loads(run(["dvc", "plots", "diff", "HEAD", "two-epochs", "--json",
                            "--targets", target], root, env=env).stdout)
    [plot] = shown["data"][target]
    values = plot["content"]["data"]["values"]
    epochs = {rev: sorted(int(float(v["epoch"])) for v in values if v["rev"] == rev)
              for rev in plot["revisions"]}
    assert sorted(epochs.values()) == [[0, 1], [0, 1, 2]], epochs
