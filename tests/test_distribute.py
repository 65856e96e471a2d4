"""The stale cells trained on a real Ray cluster of separate processes, DVC still the record:
a local Ray, and a two-node cluster on loopback whose worker node is killed mid-cell."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import SIX_CELLS as STUDY
from conftest import copy_project, project_env, run, update_params

from initlab.bench import descendants, processes

pytestmark = pytest.mark.xdist_group("distribute")

def cell_files(root: Path) -> dict[str, bytes]:
    """Every file DVC hashes for the study's cells."""
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted((root / "runs").rglob("*")) if p.is_file()}


def study(root: Path) -> Path:
    update_params(root, **STUDY)
    return root


@pytest.fixture
def by_dvc(six_cells):
    """The study as `dvc repro` trains it."""
    return six_cells


# The output folders of the train stages DVC calls stale.
STALE_OUTPUTS = """import json
from pathlib import Path
from dvc.repo import Repo
from initlab.distribute import stale_cells
with Repo(".") as repo:
    print(json.dumps([repo.stage.collect(t)[0].outs[0].fs_path
                      for t in stale_cells(Path.cwd())]))"""


def test_a_local_ray_trains_the_study_dvc_repro_would_have_even_when_killed(by_dvc, tmp_path):
    """A local Ray; the driver killed outright (SIGKILL) once it has recorded a cell: what it
    recorded stays recorded (DVC calls it up to date, the next run leaves its folder alone),
    no half-written folder is left, the next run trains the rest, and the study then equals
    `dvc repro`'s bit for bit."""
    root = study(copy_project(tmp_path / "project"))
    driver = subprocess.Popen([sys.executable, "-m", "initlab.distribute", "--record-every=0"],
                              cwd=root, env=project_env(root), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    lines = []
    while not any(line.endswith("cells recorded in the locks\n") for line in lines):
        line = driver.stdout.readline()
        assert line, "".join(lines)
        lines.append(line)
    driver.kill()
    driver.communicate(timeout=60)
    assert not list(root.glob("runs/**/.*tmp*"))
    stale = json.loads(run([sys.executable, "-c", STALE_OUTPUTS], root).stdout)
    kept = {p: p.stat().st_ino for p in (root / "runs").glob("*/*")
            if p.parent.name != "configs" and str(p) not in stale}
    assert len(stale) < 6 and kept
    done = run([sys.executable, "-m", "initlab.distribute"], root)
    assert (f"{len(stale)} cells to train" in done.stdout) == bool(stale), done.stdout
    assert {p: p.stat().st_ino for p in kept} == kept  # recorded cells not trained again
    assert cell_files(root) == cell_files(by_dvc)  # bit for bit
    assert (root / "reports/results.csv").read_bytes() == \
        (by_dvc / "reports/results.csv").read_bytes()
    for lock in ("sweeps/grid/dvc.lock", "sweeps/depth/dvc.lock", "sweeps/batchnorm/dvc.lock",
                 "dvc.lock"):  # the same record of every stage
        assert yaml.safe_load((root / lock).read_text()) == \
            yaml.safe_load((by_dvc / lock).read_text()), lock
    assert "Running stage" not in run(["dvc", "repro"], root).stdout  # all recorded
    # nothing stale: a further run trains nothing
    assert "cells to train" not in run([sys.executable, "-m", "initlab.distribute"], root).stdout


CLUSTER = """
    set -eu
    ip link set lo up
    ray start --head --node-ip-address=127.0.0.1 --port={port} --num-cpus=2 \\
        --resources='{{"slot": 1}}' --include-dashboard=false --disable-usage-stats \\
        --temp-dir={temp} --block > {logs}/head.log 2>&1 &
    echo "head $!"
    for i in $(seq 60); do
        ray status --address=127.0.0.1:{port} >/dev/null 2>&1 && break; sleep 1
    done
    setsid timeout 120 ray start --address=127.0.0.1:{port} --node-ip-address=127.0.0.1 \\
        --num-cpus=2 --resources='{{"slot": 1}}' --disable-usage-stats --block \\
        > {logs}/worker.log 2>&1 &
    echo "worker $!"
    python -m initlab.distribute --address=127.0.0.1:{port} --resources='{{"slot": 1}}'
    echo "exit $?"
"""


def test_a_worker_node_killed_mid_cell_has_its_cell_retried_and_the_study_is_whole(by_dvc,
                                                                                    tmp_path):
    """A head and a worker node as separate processes in a network namespace with only
    loopback (Ray would otherwise take the machine's address), token auth on every process;
    each node takes one cell at a time (a `slot`); the worker node is killed while it trains
    a cell; the cell is trained again on the head and the study equals `dvc repro`'s."""
    root = study(copy_project(tmp_path / "project"))
    temp = Path(f"/tmp/ray-{secrets.token_hex(3)}")  # Ray's socket paths must stay short
    env = {**project_env(root), "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    script = textwrap.dedent(CLUSTER).format(port=6390, temp=temp, logs=tmp_path)
    cluster = subprocess.Popen(["unshare", "-n", "bash", "-c", script], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        nodes, lines = {}, []
        while len(nodes) < 2:
            line = cluster.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            name, _, pid = line.strip().partition(" ")
            if name in ("head", "worker") and pid.isdigit():
                nodes[name] = int(pid)
        deadline = time.monotonic() + 120
        while not any(b"ray::train_on_node" in cmd[0] for pid, cmd in processes()
                      if pid in descendants(nodes["worker"])):
            assert time.monotonic() < deadline and cluster.poll() is None, "".join(lines)
            time.sleep(0.1)
        os.killpg(nodes["worker"], signal.SIGKILL)  # the whole worker node, mid-cell
        output = "".join(lines) + cluster.communicate(timeout=300)[0]
        assert "exit 0" in output, output
        assert "6/6 cells" in output
    finally:  # the cluster stopped by its own processes: `ray start --block` takes its down
        for pid in nodes.values():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGKILL)
    assert cell_files(root) == cell_files(by_dvc)
    assert (root / "reports/results.csv").read_bytes() == \
        (by_dvc / "reports/results.csv").read_bytes()
    deadline = time.monotonic() + 60
    while [pid for pid, cmd in processes() if str(temp).encode() in b" ".join(cmd)]:
        assert time.monotonic() < deadline, "a Ray process outlived the test"
        time.sleep(0.5)


def test_a_cell_that_raises_is_named_and_the_command_fails(by_dvc, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(by_dvc, root, symlinks=True)  # its data prepared, its cells trained
    results = (root / "reports" / "results.csv").stat().st_mtime_ns
    update_params(root, train={"batch_size": 100_000})  # more than the training examples
    failed = run([sys.executable, "-m", "initlab.distribute"], root, check=False)
    assert failed.returncode == 1
    assert ("sweeps/grid/dvc.yaml:train_grid@relu-he not trained: initlab.errors.ConfigError: "
            "train.batch_size=100000 is not allowed") in failed.stderr, failed.stderr
    assert "distribute: 6 cells not trained" in failed.stderr
    assert (root / "reports" / "results.csv").stat().st_mtime_ns == results  # no evaluate
