"""The stages' command, `python -m initlab.forkserver --cell ...` (or `... <stage module>`):
a cell trained in a child of the warm server is the cell a fresh `python -m initlab.train
--cell ...` trains; stopping the client stops the child and leaves no output; without a server
that can serve, the client trains the cell itself; an idle server goes away. (A served
evaluate: tests/test_pipeline.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, children, project_env, run, servers
from omegaconf import OmegaConf

from initlab.bench import server_folder, stat_fields
from initlab.digest import package_digest

CELL = "runs/configs/grid/relu-he.yaml"
OUTPUTS = ("history.csv", "layers.csv", "summary.json")


@pytest.fixture(scope="module")
def project(prepared_project) -> Path:
    """The prepared project with its cells composed."""
    run([sys.executable, "-m", "initlab.compose"], prepared_project)
    return prepared_project


@pytest.fixture(scope="module")
def env(project):
    """The project's environment with a runtime folder of its own, so that these tests' fork
    servers are theirs (and stopped after them)."""
    with server_folder() as runtime:
        yield {**project_env(project), "XDG_RUNTIME_DIR": runtime}


def outputs(cell_dir: Path) -> dict:
    """A trained cell's results: its files' text and its weights."""
    found = {}
    for seed_dir in sorted(cell_dir.glob("seed_*")):
        for name in OUTPUTS:
            found[f"{seed_dir.name}/{name}"] = (seed_dir / name).read_text()
        weights = torch.load(seed_dir / "model.pt", weights_only=True)
        found[f"{seed_dir.name}/model.pt"] = {k: v.tolist() for k, v in weights.items()}
    return found


def cell_config(project, tmp_path, **changes) -> Path:
    """The composed relu-he cell with `changes` (dotted keys), as a file of its own."""
    cfg = OmegaConf.load(project / CELL)
    for key, value in changes.items():
        OmegaConf.update(cfg, key, value)
    path = tmp_path / "cell.yaml"
    OmegaConf.save(cfg, path)
    return path


def test_a_cell_from_the_server_is_the_cell_of_a_fresh_process(project, env):
    cell_dir = project / "runs/grid/relu-he"
    trained, serving = [], []
    for command in ("initlab.forkserver", "initlab.forkserver", "initlab.train"):
        done = run([sys.executable, "-m", command, "--cell", CELL], project,
                   env={**env, "DVC_STAGE": f"train@{command}"})
        assert "relu-he-s1: 2 epochs" in done.stdout  # the child writes to the client's stdout
        ran = json.loads((cell_dir / "cell.json").read_text())
        assert ran["mlflow_tags"]["dvc_stage"] == f"train@{command}"  # its environment
        trained.append(outputs(cell_dir))
        serving.append(servers(env))
    assert trained[0] == trained[1] == trained[2]
    assert len(serving[0]) == 1 and serving[1] == serving[0]  # the second cell reused it
    idle = Path(f"/proc/{serving[0][0]}/cmdline").read_bytes().split(b"\0")[-2]
    assert float(idle) == float(env["INITLAB_FORKSERVER_IDLE"])  # the client's setting


def test_the_client_imports_only_what_talking_to_the_server_needs(project, env):
    """A client starts per stage (84 in the study's repro): it imports neither what the
    stage's module imports (the child has it from the server) nor pathlib, json and the
    regular expressions they load, nor the source parsing of `initlab.pruning`."""
    run([sys.executable, "-m", "initlab.forkserver", "--cell", CELL], project, env=env)
    done = run([sys.executable, "-X", "importtime", "-m", "initlab.forkserver", "--cell", CELL],
               project, env=env)
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"socket", "initlab.digest"} <= imported  # the server's socket, named by the source
    assert not imported & {"pathlib", "json", "re", "ast", "shutil", "initlab.pruning",
                           "initlab.io", "initlab.train", "torch", "yaml"}
    assert len(servers(env)) == 1  # and a server trained the cell


def test_the_switch_trains_in_the_clients_own_process(project, env):
    """INITLAB_FORKSERVER=0: no server, the same cell; a bad value of it or of
    INITLAB_FORKSERVER_IDLE is one clear error."""
    fresh = {**env, "XDG_RUNTIME_DIR": env["XDG_RUNTIME_DIR"] + "/off"}
    Path(fresh["XDG_RUNTIME_DIR"]).mkdir(exist_ok=True)
    run([sys.executable, "-m", "initlab.train", "--cell", CELL], project, env=env)
    expected = outputs(project / "runs/grid/relu-he")
    done = run([sys.executable, "-m", "initlab.forkserver", "--cell", CELL], project,
               env={**fresh, "INITLAB_FORKSERVER": "0"})
    assert "relu-he-s1: 2 epochs" in done.stdout
    assert outputs(project / "runs/grid/relu-he") == expected
    assert not servers(fresh) and not list(Path(fresh["XDG_RUNTIME_DIR"]).rglob("*.sock*"))
    bad = run([sys.executable, "-m", "initlab.forkserver", "--cell", CELL], project,
              check=False, env={**fresh, "INITLAB_FORKSERVER": "yes"})
    assert bad.returncode == 2 and "INITLAB_FORKSERVER='yes' is not allowed" in bad.stderr
    bad = run([sys.executable, "-m", "initlab.forkserver", "--cell", CELL], project,
              check=False, env={**fresh, "INITLAB_FORKSERVER_IDLE": "soon"})
    assert bad.returncode == 2 and bad.stderr.splitlines() == [
        "initlab: error: INITLAB_FORKSERVER_IDLE='soon' is not allowed: the seconds a fork "
        "server waits for work before it exits, a number > 0 (default 300)"]
    assert not servers(fresh)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_client_stops_the_cell_and_leaves_nothing(project, env, tmp_path, signum):
    long_cell = cell_config(project, tmp_path, run_dir="runs/grid/long",
                            **{"train.epochs": 2000})
    run([sys.executable, "-m", "initlab.forkserver", "--cell", CELL], project, env=env)
    [server] = servers(env)
    deadline = time.monotonic() + 30
    while children(server):  # the warm-up cell's child is on its way out
        assert time.monotonic() < deadline, "the warm-up cell's child did not end"
        time.sleep(0.05)
    client = subprocess.Popen([sys.executable, "-m", "initlab.forkserver", "--cell",
                               str(long_cell)], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not children(server):
        assert time.monotonic() < deadline, "the server started no child"
        time.sleep(0.05)
    [child] = children(server)
    time.sleep(1.0)  # into its epochs
    client.send_signal(signum)
    assert client.wait(timeout=60) == (-signum if signum == signal.SIGKILL else 128 + signum)
    deadline = time.monotonic() + 30
    while child in children(server):
        assert time.monotonic() < deadline, "the child went on training"
        time.sleep(0.05)
    cells = project / "runs/grid"
    assert not (cells / "long").exists() and not list(cells.glob(".long.tmp*"))


def test_without_a_server_for_the_code_the_client_trains_the_cell_itself(project, env, tmp_path):
    cell_dir = project / "runs/grid/other"
    stale = cell_config(project, tmp_path, run_dir="runs/grid/other", code="0" * 64)
    run([sys.executable, "-m", "initlab.forkserver", "--cell", str(stale)], project, env=env)
    assert json.loads((cell_dir / "seed_0/summary.json").read_text())["epochs"] == 2
    logs = [log.read_text() for log in Path(env["XDG_RUNTIME_DIR"]).glob("initlab-*/*.log")]
    assert any("not serving" in log for log in logs)  # the server it started refused


def test_a_server_whose_source_is_edited_serves_no_more(project, env, tmp_path):
    """The package's source edited while a DVC stage's cell trains, before the server's next
    import (after that cell, it imports the other stages' modules): that import finds it
    changed and the server stops serving (its log says so); a client of the same source
    trains its cell in its own process."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    # Its own idle time, far above the steps between its two clients however slow they run
    copied = {**env, "PYTHONPATH": str(src), "INITLAB_FORKSERVER_IDLE": "600"}
    long_cell = cell_config(project, tmp_path, run_dir="runs/grid/long", **{"train.epochs": 2000})
    client = subprocess.Popen([sys.executable, "-m", "initlab.forkserver", "--cell",
                               str(long_cell)], cwd=project, env={**copied, "DVC_STAGE": "long"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not (serving := servers(copied)) or not children(serving[0]):  # then no import runs
        assert client.poll() is None and time.monotonic() < deadline, "no child trains"
        time.sleep(0.05)
    [server] = serving
    edited = src / "initlab/report/figures.py"
    original = edited.read_text()
    edited.write_text(original + "\n# edited\n")
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=60) == 128 + signal.SIGTERM
    cmdline = Path(f"/proc/{server}/cmdline").read_bytes().split(b"\0")
    log = Path(cmdline[cmdline.index(b"--serve") + 1].decode()).with_suffix(".log")
    deadline = time.monotonic() + 60
    while "not serving" not in log.read_text():
        assert time.monotonic() < deadline, "the server did not notice the edit"
        time.sleep(0.05)
    edited.write_text(original)  # the server's source again: its clients find its socket
    before = children_cpu(server)
    short_cell = cell_config(project, tmp_path, run_dir="runs/grid/after-edit")
    done = run([sys.executable, "-m", "initlab.forkserver", "--cell", str(short_cell)], project,
               env=copied)
    assert "after-edit-s1: 2 epochs" in done.stdout
    assert children_cpu(server) == before  # it forked no child that trained
    assert servers(copied) == [server]  # nor did the client start another: it ran the cell
    os.kill(server, signal.SIGTERM)


def children_cpu(pid: int) -> int:
    """The CPU time (clock ticks) of the children that process `pid` has waited for."""
    fields = stat_fields(pid)
    return int(fields[13]) + int(fields[14])  # cutime, cstime: proc(5)'s fields 16 and 17


def test_a_bad_cell_argument_is_the_trainers_one_clear_error(project, env):
    done = run([sys.executable, "-m", "initlab.forkserver", "--cell", "runs/configs/nope.yaml"],
               project, check=False, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "initlab: error: runs/configs/nope.yaml: file not found; `dvc repro compose` writes it"]


def test_an_idle_server_exits_and_removes_its_socket_and_log(project, env):
    socket = Path(env["XDG_RUNTIME_DIR"]) / "idle.sock"
    socket.with_suffix(".log").write_text("")  # as its client makes it
    server = subprocess.Popen([sys.executable, "-m", "initlab.forkserver", "--serve",
                               str(socket), package_digest(), "0.5"],
                              cwd=project, env=env)
    deadline = time.monotonic() + 60
    while not socket.exists():
        assert server.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    assert server.wait(timeout=30) == 0
    assert not socket.exists() and not socket.with_suffix(".log").exists()


def test_a_module_that_is_no_stage_is_one_clear_error(project, env):
    done = run([sys.executable, "-m", "initlab.forkserver", "initlab.bench"], project,
               check=False, env=env)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "initlab: error: initlab.forkserver 'initlab.bench' is not allowed: a stage's module, "
        "one of initlab.train, initlab.data.download, initlab.data.prepare, initlab.compose, "
        "initlab.evaluate, initlab.report, or --cell FILE (for initlab.train)"]
