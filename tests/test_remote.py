"""Trained cells shared through a DVC remote: a colleague's clone pulls them and trains none."""

from __future__ import annotations

import shutil

import pytest
from conftest import run

pytestmark = pytest.mark.xdist_group("distribute")  # with the study it copies
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@e"]


def test_a_clone_that_pulls_the_trained_cells_trains_nothing(six_cells, tmp_path):
    first = tmp_path / "first"
    shutil.copytree(six_cells, first, symlinks=True)  # a study `dvc repro` trained
    run(["dvc", "remote", "add", "--default", "team", str(tmp_path / "remote")], first)
    run([*GIT, "add", "-A"], first)
    run([*GIT, "commit", "-qm", "the study, trained"], first)
    run(["dvc", "push", "--run-cache"], first)

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    run(["dvc", "pull"], second)
    again = run(["dvc", "repro"], second)
    assert "Running stage" not in again.stdout, again.stdout
    assert (second / "reports/results.csv").read_bytes() == \
        (first / "reports/results.csv").read_bytes()
    assert (second / "runs/grid/relu-he/seed_1/model.pt").read_bytes() == \
        (first / "runs/grid/relu-he/seed_1/model.pt").read_bytes()
    assert run(["git", "status", "--porcelain"], second).stdout == ""
