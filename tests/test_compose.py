"""The compose stage: one config file per cell, holding what the cell's results depend on."""

from __future__ import annotations

import re
import shutil
import sys

import pytest
from conftest import REPO, SMALL_STUDY, project_env, run, servers, update_params
from omegaconf import OmegaConf

from initlab.bench import server_folder
from initlab.compose import training_files
from initlab.digest import cell_digest


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
    codes = {path: OmegaConf.create(text).code for path, text in configs.items()}
    # a digest per activation x init, the same in every sweep
    assert codes["runs/configs/grid/relu-he.yaml"] == codes["runs/configs/depth/relu-he-d4.yaml"] \
        == codes["runs/configs/batchnorm/relu-he-bn.yaml"]
    assert len(set(codes.values())) == 4


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


NEW_INIT = '''

def scaled_normal(fan_in, fan_out, generator, activation, receptive_field=1):
    """W ~ N(0, 1.5 / fan_in): a test's new init."""
    return _normal(fan_in, fan_out, generator, math.sqrt(1.5 / fan_in))
'''


def edited_copy(tmp_path, monkeypatch):
    """A copy of the package that shadows the installed one, and the digest of a cell of it."""
    src = shutil.copytree(REPO / "src", tmp_path / "src")
    monkeypatch.setenv("PYTHONPATH", str(src))
    files = training_files()
    assert all(f.startswith(str(src)) for f in files)

    return src / "initlab", lambda activation, init: cell_digest(files, activation, init)


CELLS = [("relu", "he"), ("tanh", "xavier"), ("sigmoid", "lsuv"), ("relu", "uniform")]


def test_a_cell_depends_on_its_own_init_and_activation_only(tmp_path, monkeypatch):
    package, digest = edited_copy(tmp_path, monkeypatch)
    before = {cell: digest(*cell) for cell in CELLS}
    # edits that belong to no existing cell: the report, a threshold, a new init, a new
    # activation, the cell list
    (package / "report/tables.py").write_text("# the report's code\n")
    edit(package / "schema.py", "accuracy_margin: float = 0.01", "accuracy_margin: float = 0.02")
    edit(package / "inits/__init__.py", "\n\nINITS: dict", NEW_INIT + "\n\nINITS: dict")
    edit(package / "inits/__init__.py", '"orthogonal": orthogonal,',
         '"orthogonal": orthogonal,\n    "scaled_normal": scaled_normal,')
    edit(package / "activations.py", '"maxout": Activation(maxout, 1.0, pieces=2),',
         '"maxout": Activation(maxout, 1.0, pieces=2),\n    "mish": Activation(F.mish, 1.0),')
    edit(package / "cells.py", "Every training cell of the study", "Every cell of the study")
    assert {cell: digest(*cell) for cell in CELLS} == before
    # an edit to one init retrains its cells only (and lsuv's, whose first draw it is)
    edit(package / "inits/__init__.py", "    tall = torch.randn(", "    tall = 1.0 * torch.randn(")
    after = {cell: digest(*cell) for cell in CELLS}
    assert [after[c] != before[c] for c in CELLS] == [False, False, True, False]
    # an edit to the loop retrains every cell
    with open(package / "train.py", "a") as train:
        train.write("# the loop\n")
    assert all(digest(*cell) != after[cell] for cell in CELLS)


def edit(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_adding_a_new_init_in_code_trains_only_its_cells(prepared_project, tmp_path):
    """A new init function and its YAML, listed in the grid: DVC finds exactly its cells
    stale (real `dvc repro compose`, then `dvc status`, in a copy of the small study)."""
    root = shutil.copytree(prepared_project, tmp_path / "copy", symlinks=True)
    run(["dvc", "repro"], root)
    package = root / "src" / "initlab"
    edit(package / "inits/__init__.py", "\n\nINITS: dict", NEW_INIT + "\n\nINITS: dict")
    edit(package / "inits/__init__.py", '"orthogonal": orthogonal,',
         '"orthogonal": orthogonal,\n    "scaled_normal": scaled_normal,')
    (root / "conf/init/scaled_normal.yaml").write_text("name: scaled_normal\n")
    update_params(root, grid={**SMALL_STUDY["grid"], "inits": ["zero", "he", "scaled_normal"]})
    env = {**project_env(root), "PYTHONPATH": str(root / "src")}
    run(["dvc", "repro", "compose"], root, env=env)
    stale = run(["dvc", "status"], root, env=env).stdout
    assert set(re.findall(r"train\w*@[\w-]+", stale)) == {
        "train_grid@tanh-scaled_normal", "train_grid@relu-scaled_normal"}, stale


def test_compose_forked_from_a_fork_server_writes_what_its_own_process_writes(prepared_project):
    """Forked from a fork server, compose takes the training files from the server's own
    import of the trainer; in a process of its own, from a fresh interpreter: the same files,
    so the same cell digests and configs (nothing kept from one to the other)."""
    own = compose(prepared_project)
    with server_folder() as runtime:
        env = {**project_env(prepared_project), "XDG_RUNTIME_DIR": runtime}
        shutil.rmtree(prepared_project / ".cache")
        run([sys.executable, "-m", "initlab.forkserver", "initlab.compose"], prepared_project,
            env=env)
        assert len(servers(env)) == 1  # it started one, which forked the stage
    assert {str(p.relative_to(prepared_project)): p.read_text()
            for p in sorted((prepared_project / "runs/configs").rglob("*.yaml"))} == own


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
