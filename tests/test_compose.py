"""The compose stage: one config file per cell, holding what the cell's results depend on."""

from __future__ import annotations

import shutil
import sys

import pytest
from conftest import REPO, SMALL_STUDY, run, update_params
from omegaconf import OmegaConf

from initlab.compose import training_code_digest


def compose(project) -> dict[str, str]:
    """Run the stage in `project`: cell config path -> its text."""
    run([sys.executable, "-m", "initlab.compose"], project)
    return {str(p.relative_to(project)): p.read_text()
            for p in sorted((project / "runs/configs").rglob("*.yaml"))}


def test_a_file_per_cell_with_its_sweeps_overrides(prepared_project):
    configs = compose(prepared_project)
    assert set(configs) == {"runs/configs/grid/tanh-zero.yaml", "runs/configs/grid/tanh-he.yaml",
                            "runs/configs/grid/relu-zero.yaml", "runs/configs/grid/relu-he.yaml",
                            "runs/configs/depth/relu-he-d4.yaml",
                            "runs/configs/batchnorm/relu-he-bn.yaml"}
    depth = OmegaConf.create(configs["runs/configs/depth/relu-he-d4.yaml"])
    assert (depth.model.depth, depth.model.width, depth.train.epochs) == (4, 16, 1)
    assert depth.run_dir == "runs/depth/relu-he-d4" and not depth.model.batchnorm
    assert OmegaConf.create(configs["runs/configs/batchnorm/relu-he-bn.yaml"]).model.batchnorm
    grid = OmegaConf.create(configs["runs/configs/grid/tanh-he.yaml"])
    assert (grid.activation.name, grid.init.name, grid.model.depth) == ("tanh", "he", 2)
    assert list(grid.study) == ["seeds"] and "report" not in grid  # nothing study-level
    assert len({OmegaConf.create(text).code for text in configs.values()}) == 1


def test_adding_an_init_or_a_report_setting_changes_no_existing_cell(prepared_project):
    params = prepared_project / "params.yaml"
    original = params.read_text()
    before = compose(prepared_project)
    try:
        update_params(prepared_project, report={"chance_margin": 0.1},
                      grid={**SMALL_STUDY["grid"], "inits": ["zero", "he", "xavier"]})
        after = compose(prepared_project)
    finally:
        params.write_text(original)
    assert set(after) - set(before) == {"runs/configs/grid/tanh-xavier.yaml",
                                        "runs/configs/grid/relu-xavier.yaml"}
    assert all(after[path] == text for path, text in before.items())


def test_the_code_digest_follows_the_training_code_only(tmp_path, monkeypatch):
    src = shutil.copytree(REPO / "src", tmp_path / "src")
    monkeypatch.setenv("PYTHONPATH", str(src))  # the copy shadows the installed package
    original = training_code_digest()
    (src / "initlab/report/tables.py").write_text("# the report's code\n")
    assert training_code_digest() == original
    with open(src / "initlab/probes.py", "a") as probes:
        probes.write("# a training module\n")
    assert training_code_digest() != original


@pytest.mark.parametrize("argv, message", [
    (["--cell", "runs/configs/grid/nope.yaml"], "runs/configs/grid/nope.yaml: file not found"),
    (["--cell"], "--cell '' is not allowed: one cell config file"),
])
def test_a_bad_cell_argument_is_one_clear_error(argv, message, prepared_project, monkeypatch,
                                                capsys):
    from initlab.train import main

    monkeypatch.chdir(prepared_project)
    monkeypatch.setattr(sys, "argv", ["initlab.train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in stderr and stderr.count("\n") == 1
