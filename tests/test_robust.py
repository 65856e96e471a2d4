"""Nothing lost: a real `dvc repro` interrupted by a signal, or killed, completes on the next
run with a correct report and no MLflow run left RUNNING; queued experiments run in parallel
all land in the project's one store, which processes opening it at once share; an unreachable
tracking server fails fast; a killed `evaluate` leaves no logging worker behind. (A logging
interrupted inside `evaluate` is covered in test_train: the next evaluate replaces it.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pandas as pd
import pytest
from conftest import (
    copy_project,
    held_before_logging,
    project_env,
    run,
    update_params,
)
from mlflow.tracking import MlflowClient

from initlab.bench import parent, processes

pytestmark = pytest.mark.xdist_group("robust")  # one worker, one `project`

STUDY = dict(
    study={"name": "robust", "seeds": [0, 1]},
    grid={"activations": ["relu"], "inits": ["zero", "he"], "more_seeds": {"activations": []}},
    depth_sweep={"depths": [], "activations": [], "inits": []},
    batchnorm_sweep={"activations": [], "inits": []},
    model={"depth": 2, "width": 32},
    train={"epochs": 160, "batch_size": 256},  # ~4 s of training a cell: time to interrupt
)


def runs_by_status(root, experiment="initlab-robust") -> dict[str, list]:
    store = root / "mlflow.db"
    if not store.exists():
        return {}
    client = MlflowClient(f"sqlite:///{store}")
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], "tags.cell != ''", max_results=1000) \
        if found else []
    by_status: dict[str, list] = {}
    for r in runs:
        by_status.setdefault(r.info.status, []).append(r)
    return by_status


def works_in(pid: int, root: Path, library: str) -> bool:
    """Whether process `pid` works in `root` (its cwd) and has loaded `library`."""
    proc = Path(f"/proc/{pid}")
    return (proc / "cwd").resolve() == root.resolve() and library in (proc / "maps").read_text()


def training_pid(root) -> int | None:
    """The pid of a trainer working in `root` that has loaded torch (so it is in, or about to
    be in, its epochs), or None: an `initlab.train` process or a child of the fork server
    (`initlab.forkserver --serve`, whose children carry its command line) named `train`."""
    commands = dict(processes())
    for pid, args in commands.items():
        try:
            forked = (b"--serve" in args and b"--serve" in commands.get(parent(pid), []) and
                      Path(f"/proc/{pid}/comm").read_text() == "train\n")
            if (b"initlab.train" in args or forked) and works_in(pid, root, "libtorch"):
                return pid
        except (OSError, ValueError, IndexError):
            continue
    return None


def start_repro(root) -> subprocess.Popen:
    return subprocess.Popen(["dvc", "repro"], cwd=root, env=project_env(root),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_training(root, process, timeout=120) -> int:
    """Until a train stage is well into its epochs; returns its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stdout.read() if process.stdout else ""
        pid = training_pid(root)
        if pid:
            time.sleep(1.0)  # into the epochs
            assert training_pid(root) == pid, "the cell ended before it could be interrupted"
            return pid
        time.sleep(0.3)
    raise AssertionError("training never started")


def assert_complete(root) -> None:
    results = pd.read_csv(root / "reports/results.csv")
    assert len(results) == 4 and set(results.cell) == {"relu-zero", "relu-he"}
    assert results[results.init == "he"].test_accuracy.min() > 0.8
    assert "relu" in (root / "reports/report.md").read_text()
    assert not list(root.glob("runs/**/.*tmp*")), "a temp output was left behind"
    assert not runs_by_status(root).get("RUNNING")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("robust"))
    update_params(root, **STUDY)
    return root


def test_interrupted_repro_is_resumed_and_correct(project):
    process = start_repro(project)
    wait_for_training(project, process)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    output = process.communicate(timeout=120)[0]
    assert process.returncode != 0, output
    assert not runs_by_status(project).get("RUNNING")
    # The interrupted cell left nothing DVC could take for finished.
    assert run(["dvc", "status"], project).stdout.count("train_grid@") >= 1
    run(["dvc", "repro"], project)
    assert_complete(project)


def test_sigterm_ends_the_cell_and_writes_nothing(prepared_project):
    cell = prepared_project / "runs" / "grid" / "relu-zero"
    process = subprocess.Popen(
        [sys.executable, "-m", "initlab.train", "activation=relu", "init=zero",
         "train.epochs=160", "train.batch_size=256", "model.width=32"],
        cwd=prepared_project, env=project_env(prepared_project), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    wait_for_training(prepared_project, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert not cell.exists() and not list(cell.parent.glob(".*tmp*"))


def test_killed_training_leaves_nothing_and_repro_completes(project):
    update_params(project, train={**STUDY["train"], "epochs": 161})
    process = start_repro(project)
    os.kill(wait_for_training(project, process), signal.SIGKILL)
    process.communicate(timeout=120)
    assert process.returncode != 0
    run(["dvc", "repro"], project)
    assert_complete(project)


def logging_workers(root, evaluate: int | None = None) -> list[int]:
    """The pids of `evaluate`'s logging workers working in `root` that have opened the store
    (sqlite loaded): the processes that carry an evaluate's command line (forked from it),
    other than the `evaluate` process itself, while it runs or after it."""
    found = []
    for pid, args in processes():
        try:
            if (b"initlab.evaluate" in args and pid != evaluate
                    and works_in(pid, root, "_sqlite3")):
                found.append(pid)
        except OSError:
            continue
    return found


def evaluate_until_it_logs(root, env) -> tuple[subprocess.Popen, list[int]]:
    """A started `evaluate` in `root`, once its logging workers have opened the store; and
    their pids."""
    process = subprocess.Popen([sys.executable, "-m", "initlab.evaluate"], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (workers := logging_workers(root, process.pid)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()  # so that its output ends
            pytest.fail(f"evaluate started no logging worker: {process.communicate()[0]}")
        time.sleep(0.05)
    return process, workers


def logging_env(root, store: Path, workers: str = "2") -> dict[str, str]:
    """A fresh store, and `workers` logging workers (by default, none for under 20 cells)."""
    return {**project_env(root), "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
            "INITLAB_LOGGING_WORKERS": workers}


def run_ids(store: Path) -> dict[str, str]:
    return {r.info.run_id: status for status, runs in runs_by_status(store).items()
            for r in runs}


def test_a_killed_evaluate_or_logging_worker_leaves_no_worker_and_nothing_lost(project,
                                                                               tmp_path):
    run(["dvc", "repro"], project)  # trained here, whichever test ran before (or none)
    env = logging_env(project, tmp_path)
    # A worker killed: the stage fails, naming it; the other worker ends with it.
    with held_before_logging(project) as release:
        process, workers = evaluate_until_it_logs(project, env)
        os.kill(workers[0], signal.SIGKILL)
        release(process)
    output = process.communicate(timeout=60)[0]
    assert process.returncode != 0 and "exited with status -9" in output, output
    assert not logging_workers(project)
    assert not list((project / "reports").glob(".*tmp*"))
    # The stage killed while it holds every cell: its workers end with it and log nothing (a
    # worker left alone would log every cell queued to it).
    before = run_ids(tmp_path)
    with held_before_logging(project):
        process, _ = evaluate_until_it_logs(project, env)
        process.kill()
        process.communicate(timeout=30)
        deadline = time.monotonic() + 30
        while logging_workers(project):
            assert time.monotonic() < deadline, "a logging worker outlived its evaluate"
            time.sleep(0.2)
    assert run_ids(tmp_path) == before
    # The next evaluate deletes every incomplete run and logs its seed again.
    run([sys.executable, "-m", "initlab.evaluate"], project, env=env)
    statuses = runs_by_status(tmp_path)
    assert sum(len(v) for v in statuses.values()) == 4  # 2 cells x 2 seeds
    assert set(statuses) <= {"FINISHED", "FAILED"}


def test_a_bad_logging_workers_value_fails_with_one_message(project, tmp_path):
    run(["dvc", "repro"], project)
    result = run([sys.executable, "-m", "initlab.evaluate"], project, check=False,
                 env=logging_env(project, tmp_path, workers="two"))
    assert result.returncode == 2
    assert "INITLAB_LOGGING_WORKERS='two' is not allowed" in result.stderr, result.stderr


def test_queued_experiments_run_in_parallel_into_one_store(project):
    update_params(project, train={**STUDY["train"], "epochs": 3})
    run(["git", "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "small"],
        project)
    before = sum(len(v) for v in runs_by_status(project).values())
    for seeds in ("[3]", "[4]"):
        run(["dvc", "exp", "run", "--queue", "-S", f"study.seeds={seeds}"], project)
    # `dvc queue start -j 2` and poll, not `dvc exp run --run-all -j 2`: that command waits for
    # the workers to exit, and a worker can hang on exit after its last task (DVC issue
    # treeverse/dvc#10398), which made this test hang in CI although both experiments were done.
    run(["dvc", "queue", "start", "-j", "2"], project)
    deadline = time.monotonic() + 400
    while (status := run(["dvc", "queue", "status"], project).stdout).count("Success") < 2:
        assert "Failed" not in status and time.monotonic() < deadline, status
        time.sleep(2)
    run(["dvc", "queue", "stop", "--kill"], project, check=False)
    statuses = runs_by_status(project)
    assert sum(len(v) for v in statuses.values()) == before + 2 * 2  # 2 exps x 2 cells
    new_seeds = {r.data.tags["seed"] for r in statuses["FINISHED"]}
    assert {"3", "4"} <= new_seeds
    assert not statuses.get("RUNNING")
    assert not (project / ".dvc" / "tmp" / "exps" / "mlflow.db").exists()


# Opens the store of MLFLOW_TRACKING_URI, then prints the experiment it finds or creates.
OPEN_STORE = """from initlab import tracking
print(tracking.experiment_id(tracking.client(), "parallel"))"""


def test_processes_opening_a_new_store_at_once_share_it(tmp_path):
    """Four processes open a store that does not exist yet at once (as parallel experiments'
    evaluates can): one creates its tables, in WAL mode, while the others wait, then every one
    finds the same experiment."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")  # a workspace of its own
    store = tmp_path / "mlflow.db"
    env = {**project_env(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    opening = [subprocess.Popen([sys.executable, "-c", OPEN_STORE], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(4)]
    outputs = [process.communicate() for process in opening]
    assert [process.returncode for process in opening] == [0] * 4, outputs
    assert len({out.strip() for out, _ in outputs}) == 1, outputs
    with closing(sqlite3.connect(store)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_unreachable_tracking_server_fails_fast(prepared_project):
    env = {**project_env(prepared_project), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    started = time.monotonic()
    result = run([sys.executable, "-m", "initlab.evaluate"], prepared_project, check=False,
                 env=env)
    assert result.returncode == 2
    assert "http://127.0.0.1:9" in result.stderr and "not reachable" in result.stderr
    assert time.monotonic() - started < 30
