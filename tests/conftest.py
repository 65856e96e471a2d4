"""Shared fixtures: throwaway copies of the project, real data, real MLflow stores."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

# Under pytest-xdist (`make test`: 2 workers) two trainers can run at once, each with a thread
# per core (`use_threads_for`); OpenMP threads that spin-wait at barriers then wait on each
# other (a 1.7-s cell took 62 s). Set before torch is loaded; it changes no number.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Each test's environment (its own store, its own folders) gets a fork server of its own: at
# the default five idle minutes each would stay up that long, holding its memory, after its test.
os.environ["INITLAB_FORKSERVER_IDLE"] = "30"

import pytest
import yaml

import initlab.bench
from initlab.bench import fork_servers
from initlab.layout import CELL_JSON

# The tests send Ctrl-C's SIGINT to the processes they start, which inherit its disposition:
# when the suite itself starts with SIGINT ignored (a shell's background job, `make test &`),
# they would ignore it too.
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def servers(env) -> list[int]:
    """The pids of the fork servers whose socket is in env's runtime folder."""
    return fork_servers(env["XDG_RUNTIME_DIR"])


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def copy_project(target: Path) -> Path:
    """The project's tracked files (not the study's outputs), as a fresh git repo."""
    return initlab.bench.copy_project(REPO, target)


def update_params(root: Path, **sections) -> None:
    """Merge `sections` into root/params.yaml, one level deep."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        if isinstance(values, dict):
            params.setdefault(section, {}).update(values)
        else:
            params[section] = values
    path.write_text(yaml.safe_dump(params, sort_keys=False))


SMALL_STUDY = dict(
    study={"name": "small", "seeds": [0, 1]},
    grid={"activations": ["tanh", "relu"], "inits": ["zero", "he"],
          "more_seeds": {"activations": []}},
    depth_sweep={"depths": [4], "activations": ["relu"], "inits": ["he"], "width": 16,
                 "epochs": 1},
    batchnorm_sweep={"activations": ["relu"], "inits": ["he"]},
    model={"depth": 2, "width": 32},
    train={"epochs": 2, "batch_size": 128},
)


# The small study, narrower and with a 3-layer depth cell: test_distribute trains it on Ray.
SIX_CELLS = {**SMALL_STUDY, "study": {"name": "six", "seeds": [0, 1]},
             "depth_sweep": {**SMALL_STUDY["depth_sweep"], "depths": [3]},
             "model": {"depth": 2, "width": 16}}


def project_env(root: Path) -> dict[str, str]:
    """The environment a user's shell has: the venv on PATH, no tracking URI override."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    return env


def run(cmd: list[str], root: Path, check: bool = True, **kwargs):
    result = subprocess.run(cmd, cwd=root, env=kwargs.pop("env", project_env(root)),
                            capture_output=True, text=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


@contextmanager
def held_before_logging(root: Path):
    """Hold `evaluate` at a known point: the first cell's record (relu-zero's cell.json)
    becomes a named pipe, so the stage blocks reading it, before it has handed any cell to a
    logging worker, until `release(process)` writes the record into the pipe (calling `held`,
    if given, once the stage is there). The file is restored after."""
    record = root / "runs" / "grid" / "relu-zero" / CELL_JSON
    saved = record.read_bytes()
    record.unlink()
    os.mkfifo(record)

    def release(process: subprocess.Popen, held=None):
        while True:  # until the stage has the pipe open to read (its first cell)
            try:
                pipe = os.open(record, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as e:
                if e.errno != errno.ENXIO or process.poll() is not None:
                    raise
                time.sleep(0.05)
        if held is not None:
            held()
        os.set_blocking(pipe, True)
        with os.fdopen(pipe, "wb") as writer:
            writer.write(saved)

    try:
        yield release
    finally:
        record.unlink()
        record.write_bytes(saved)


@pytest.fixture(scope="session")
def prepared_project(tmp_path_factory) -> Path:
    """A small-study copy of the project with its data downloaded and prepared (real stages)."""
    root = copy_project(tmp_path_factory.mktemp("project"))
    update_params(root, **SMALL_STUDY)
    for module in ("initlab.data.download", "initlab.data.prepare"):
        run([sys.executable, "-m", module], root)
    return root


@pytest.fixture
def in_project(prepared_project, tmp_path, monkeypatch) -> Path:
    """Run in-process inside the prepared project, with a throwaway MLflow store."""
    monkeypatch.chdir(prepared_project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return prepared_project


@pytest.fixture(scope="session")
def small_study(tmp_path_factory):
    """A copy of the project that ran the real `dvc repro` of SMALL_STUDY, with its own MLflow
    store at its root: (root, the repro's output). test_pipeline.py changes it as it goes."""
    root = copy_project(tmp_path_factory.mktemp("study"))
    update_params(root, **SMALL_STUDY)
    return root, run(["dvc", "repro"], root)


@pytest.fixture(scope="session")
def six_cells(tmp_path_factory):
    """A copy of the project that ran the real `dvc repro` of SIX_CELLS: test_distribute
    compares with it, test_remote copies it (xdist_group "distribute": one worker builds it).
    Read only."""
    root = copy_project(tmp_path_factory.mktemp("six-cells"))
    update_params(root, **SIX_CELLS)
    run(["dvc", "repro"], root)
    return root
