"""A team's record: the study logs to a real `mlflow server` on a real PostgreSQL (Debian's),
both started by `python -m initlab.server` on 127.0.0.1, exactly what it logs into sqlite."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import copy_project, held_before_logging, project_env, run, update_params
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from initlab.server import as_owner, postgres_bin

pytestmark = pytest.mark.xdist_group("server")  # one worker, one server

try:
    postgres_bin("initdb")
    HAVE_POSTGRES = True
except ValueError:
    HAVE_POSTGRES = False
if not HAVE_POSTGRES and os.environ.get("CI"):
    raise RuntimeError("CI needs PostgreSQL (.ci/run installs Debian's postgresql)")
requires_postgres = pytest.mark.skipif(not HAVE_POSTGRES, reason="no PostgreSQL installed")

STUDY = dict(
    study={"name": "team", "seeds": [0, 1]},
    grid={"activations": ["relu"], "inits": ["zero", "he"], "more_seeds": {"activations": []}},
    depth_sweep={"depths": []}, batchnorm_sweep={"activations": []},
    model={"depth": 2, "width": 16}, train={"epochs": 1, "batch_size": 128},
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """`python -m initlab.server` on a folder and two ports, started and stopped as a user
    does (the command, then SIGTERM)."""

    def __init__(self, data: Path):
        self.data, self.port, self.db_port = data, free_port(), free_port()
        self.uri, self.process = f"http://127.0.0.1:{self.port}", None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "initlab.server", "--data", str(self.data), "--port",
             str(self.port), "--db-port", str(self.db_port)], stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True)
        lines = []
        while True:  # until it prints the URI (it gives up on its own after 120 s)
            ready, _, _ = select.select([self.process.stdout], [], [], 180)
            line = self.process.stdout.readline() if ready else ""
            lines.append(line)
            if "export MLFLOW_TRACKING_URI=" in line:
                assert line.strip().endswith(self.uri)
                return
            if not line:
                self.stop()
                raise AssertionError(f"the server stack did not come up:\n{''.join(lines)}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)
        assert self.process.returncode == 0


@pytest.fixture(scope="module")
def stack():
    # As root, PostgreSQL runs as `postgres`, which must reach the folder: not pytest's
    # tmp_path (0700 under /tmp/pytest-of-root).
    data = Path(tempfile.mkdtemp(prefix="initlab-server-"))
    data.chmod(0o755)
    stack = Stack(data / "server")
    stack.start()
    yield stack
    stack.stop()
    status = subprocess.run(as_owner([postgres_bin("pg_ctl"), "status", "-D",
                                      str(stack.data / "postgres")]), capture_output=True,
                            text=True)
    assert "no server running" in status.stdout, status.stdout  # both stopped
    shutil.rmtree(data)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small study trained and evaluated into the project's sqlite store."""
    root = copy_project(tmp_path_factory.mktemp("team"))
    update_params(root, **STUDY)
    run(["dvc", "repro"], root)
    return root


def server_env(root: Path, uri: str) -> dict[str, str]:
    return {**project_env(root), "MLFLOW_TRACKING_URI": uri}


def study_runs(uri: str, study: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"initlab-{study}")
    return client, experiment, client.search_runs(
        [experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


def record(runs) -> dict:
    """What a store holds of the runs: names, statuses, params, tags (not MLflow's own, not
    which store or machine), metric keys, artifacts and parent."""
    parents = {r.info.run_id: r.info.run_name for r in runs}
    return {r.info.run_name: (
        r.info.status, r.data.params,
        {k: v for k, v in r.data.tags.items() if not k.startswith("mlflow.")},
        sorted(r.data.metrics), parents.get(r.data.tags.get("mlflow.parentRunId")))
        for r in runs}


@requires_postgres
def test_evaluate_and_report_log_to_the_server_what_they_log_into_sqlite(stack, trained):
    env = server_env(trained, stack.uri)
    for stage in ("initlab.evaluate", "initlab.report"):
        run([sys.executable, "-m", stage], trained, env=env)
    client, experiment, runs = study_runs(stack.uri, "team")
    _, _, local = study_runs(f"sqlite:///{trained / 'mlflow.db'}", "team")
    assert len(runs) == len(pd.read_csv(trained / "reports/results.csv")) + 1  # + the parent
    assert record(runs) == record(local)
    assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served by the server
    seed_run = next(r for r in runs if r.info.run_name == "relu-he-s0")
    assert {a.path for a in client.list_artifacts(seed_run.info.run_id)} >= {
        "history.csv", "layers.csv", "learning_curve.png"}
    parent = next(r for r in runs if r.info.run_name == "study-team")
    assert "report.md" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # a second evaluate logs nothing twice
    run([sys.executable, "-m", "initlab.evaluate"], trained, env=env)
    assert sorted(r.info.run_id for r in study_runs(stack.uri, "team")[2]) == \
        sorted(r.info.run_id for r in runs)


@requires_postgres
def test_two_evaluates_at_once_lose_no_run(stack, trained):
    env = server_env(trained, stack.uri)
    evaluates = [subprocess.Popen([sys.executable, "-m", "initlab.evaluate",
                                   f"study.name=team-{n}"], cwd=trained, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for n in (1, 2)]
    for process in evaluates:
        output = process.communicate(timeout=300)[0]
        assert process.returncode == 0, output
    rows = len(pd.read_csv(trained / "reports/results.csv"))
    for n in (1, 2):
        runs = study_runs(stack.uri, f"team-{n}")[2]
        assert len(runs) == rows + 1 and {r.info.status for r in runs} == {"FINISHED"}


@requires_postgres
def test_a_server_stopped_mid_evaluate_is_one_clear_error_and_the_next_completes(stack,
                                                                                 trained):
    env = server_env(trained, stack.uri)
    with held_before_logging(trained) as release:
        process = subprocess.Popen([sys.executable, "-m", "initlab.evaluate",
                                    "study.name=team-stop"], cwd=trained, env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        release(process, held=stack.stop)  # stopped once the stage has started logging
        out, err = process.communicate(timeout=300)  # a hang guard: it gives up in ~30 s
    assert process.returncode == 2, out + err
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"initlab: error: MLFLOW_TRACKING_URI='{stack.uri}' stopped answering while runs were "
        "logged: start the server again and rerun `dvc repro` (or `python -m "
        "initlab.evaluate`), which logs the runs not logged yet"), err
    stack.start()
    run([sys.executable, "-m", "initlab.evaluate", "study.name=team-stop"], trained, env=env)
    runs = [r for r in study_runs(stack.uri, "team-stop")[2] if r.info.lifecycle_stage != "deleted"]
    assert len(runs) == len(pd.read_csv(trained / "reports/results.csv")) + 1
    assert "RUNNING" not in {r.info.status for r in study_runs(stack.uri, "team-stop")[2]}


@requires_postgres
def test_a_password_in_the_tracking_uri_is_never_shown_or_logged(stack, trained):
    secret = "s3cret-pw"
    with_password = stack.uri.replace("http://", f"http://alice:{secret}@")
    done = run([sys.executable, "-m", "initlab.evaluate", "study.name=team-auth"], trained,
               env=server_env(trained, with_password))
    assert secret not in done.stdout + done.stderr
    runs = study_runs(stack.uri, "team-auth")[2]
    assert runs and not any(secret in str(r.data.params) + str(r.data.tags) for r in runs)
    # a server that does not answer: the message names the URI without its password
    dead = f"http://alice:{secret}@127.0.0.1:{free_port()}"
    failed = run([sys.executable, "-m", "initlab.evaluate"], trained, check=False,
                 env=server_env(trained, dead))
    assert failed.returncode == 2 and secret not in failed.stdout + failed.stderr
    assert "alice:***@127.0.0.1" in failed.stderr
