"""Bad config: one clear error naming the key, the bad value and what is allowed; exit status
2; nothing written. Each case runs the train stage's real entry point
(`initlab.train.main`, what `python -m initlab.train` calls) in-process."""

from __future__ import annotations

import shutil
import sys

import pytest
from conftest import REPO

from initlab.cells import study_cells
from initlab.config import load_config

CASES = [
    # (command-line overrides, params.yaml text replacements, expected message parts)
    (["activation=swish"], {}, ["activation/swish", "Available options", "relu"]),
    (["init=glorot"], {}, ["init/glorot", "Available options", "xavier"]),
    (["dataset=imagenet"], {}, ["dataset/imagenet", "Available options", "mnist_subset"]),
    (["optimizer=rmsprop"], {}, ["optimizer/rmsprop", "Available options", "adam"]),
    (["model=resnet"], {}, ["model/resnet", "Available options", "mlp"]),
    (["optimizer.lr=0"], {}, ["optimizer.lr=0.0", "must be > 0"]),
    (["study.seeds=[]"], {}, ["study.seeds=[]", "non-empty list"]),
    (["train.epochs=ten"], {}, ["train.epochs", "'ten'", "Integer"]),
    (["model.depth=[2,3]"], {}, ["model.depth", "[2, 3]", "Integer"]),
    (["model.depth=0"], {}, ["model.depth=0", ">= 1"]),
    (["train.batch_size=100000"], {}, ["train.batch_size=100000", "3500 training examples"]),
    (["train.augment=flip"], {}, ["train.augment='flip'", "mirror_crop"]),
    (["model=cnn"], {}, ["depth_sweep.depths=[4] is not allowed: [] with model=cnn"]),
    (["optimizer.milestones=[500,300]"], {}, ["optimizer.milestones=[500, 300]", "increasing"]),
    (["model=cnn", "init=rbm", "depth_sweep.depths=[]", "batchnorm_sweep.activations=[]"], {},
     ["init='rbm' is not allowed: with model=cnn"]),
    ([], {"  inits:\n": "  inits:\n  - lsuv2\n"}, ["grid.inits", "'lsuv2'", "one of"]),
    (["init=lsuv", "init.lsuv.tol=0"], {}, ["init.lsuv.tol=0", "must be > 0"]),
    (["init=rbm", "init.rbm.k=0"], {}, ["init.rbm.k=0", "must be >= 1"]),
    ([], {"model:": "modle:"},
     ["params.yaml", "unknown key 'modle'", "allowed sections", "'model'"]),
    ([], {"  depth:": "  dpeth:"}, ["params.yaml", "unknown key 'model.dpeth'", "'depth'"]),
    ([], {"study:\n": "study: [\n"}, ["params.yaml", "malformed YAML"]),
]


@pytest.fixture
def params_restored(prepared_project):
    path = prepared_project / "params.yaml"
    original = path.read_text()
    yield path
    path.write_text(original)


CELL = "runs/grid/bad-input"  # where the refused cell would have written


def train_main(argv, project, monkeypatch, capsys) -> tuple[int, str]:
    """Run the train stage's entry point like the command line does: (exit status, stderr)."""
    from initlab.train import main

    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "argv", ["initlab.train", f"run_dir={CELL}", *argv])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("overrides,edits,expected", CASES,
                         ids=[" ".join(c[0]) or next(iter(c[1].values())).split()[-1]
                              for c in CASES])
def test_bad_config_fails_clearly(prepared_project, params_restored, overrides,
                                  edits, expected, monkeypatch, capsys):
    text = params_restored.read_text()
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new, 1)
    params_restored.write_text(text)
    status, stderr = train_main(["activation=relu", "init=he", *overrides], prepared_project,
                                monkeypatch, capsys)
    assert status == 2, stderr
    assert stderr.startswith("initlab: error:") and stderr.count("\n") == 1
    for part in expected:
        assert part in stderr, stderr
    assert not (prepared_project / CELL).exists()


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_bad_data_file_fails_clearly(prepared_project, damage, monkeypatch, capsys):
    data = prepared_project / "data" / "prepared" / "train.pt"
    original = data.read_bytes()
    try:
        if damage == "missing":
            data.unlink()
        else:
            data.write_bytes(original[: len(original) // 3])
        status, stderr = train_main(["activation=relu", "init=he"], prepared_project,
                                    monkeypatch, capsys)
    finally:
        data.write_bytes(original)
    assert status == 2
    assert str(data) in stderr
    assert ("missing" if damage == "missing" else "corrupt") in stderr
    assert stderr.count("\n") == 1 and not (prepared_project / CELL).exists()


@pytest.mark.parametrize("preset", sorted(p.name for p in (REPO / "presets").glob("*.yaml")))
def test_every_preset_composes_every_cell(preset, tmp_path, monkeypatch):
    for item in ("conf", "dvc.yaml"):
        (tmp_path / item).symlink_to(REPO / item)
    shutil.copy(REPO / "presets" / preset, tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config([])
    for cell in study_cells(cfg):
        composed = load_config(cell.overrides)
        assert composed.run_dir == cell.run_dir
        assert composed.dataset.name == cfg.dataset.name and composed.model.name == cfg.model.name


@pytest.mark.parametrize("group", ["model", "optimizer", "init"])
def test_no_yaml_repeats_a_default_of_the_schema(group):
    """Defaults live in one layer: a choice's YAML sets only what differs from the schema's
    dataclass (an init's options sit beside its code, with their defaults)."""
    from omegaconf import OmegaConf

    from initlab.schema import Config

    schema = OmegaConf.structured(Config)[group]
    for path in sorted((REPO / "conf" / group).glob("*.yaml")):
        values = OmegaConf.to_container(OmegaConf.load(path))
        for key, value in values.items():
            if key == "name":
                continue
            default = OmegaConf.select(schema, key, throw_on_missing=False)  # None if MISSING
            if isinstance(value, dict):  # an init's options: {} takes its dataclass's defaults
                assert value == {}, (path.name, key, value)
            else:
                assert value != default, f"{path.name}: {key}: {value} is the schema's default"
