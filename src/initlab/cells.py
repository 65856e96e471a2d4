"""The study's training cells: which there are (`study_cells`), what each one's results
depend on (`cell_config`), and reading a composed cell config back (`load_cell_config`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from initlab.errors import ConfigError
from initlab.paths import CELL_CONFIGS
from initlab.schema import Config, validate


class Cell(NamedTuple):
    """One training cell of a sweep: where it writes, and the overrides that make it."""
    sweep: str
    run_dir: str
    overrides: list[str]

    @property
    def config_path(self) -> str:
        """Its composed config, written by the compose stage: runs/configs/<sweep>/<cell>.yaml."""
        return f"{CELL_CONFIGS}/{self.sweep}/{Path(self.run_dir).name}.yaml"


def study_cells(cfg: DictConfig) -> list[Cell]:
    """Every training cell of the study, named as dvc.yaml's matrices name them:
    runs/grid/<act>-<init> (the configured model; `grid.more_seeds`' cells with more seeds),
    runs/depth/<act>-<init>-d<depth> (the
    mlp at `depth_sweep`'s depth, width and epochs), runs/batchnorm/<act>-<init>-bn (the
    configured model with batch norm)."""
    def cell(sweep, run_dir, activation, init, *overrides):
        return Cell(sweep, run_dir, [f"activation={activation}", f"init={init}", *overrides,
                                     f"run_dir={run_dir}"])

    def grid_seeds(activation, init):
        more = cfg.grid.more_seeds
        if activation not in more.activations or init not in more.inits:
            return []
        seeds = list(cfg.study.seeds)
        seeds += range(max(seeds) + 1, max(seeds) + 1 + more.seeds - len(seeds))
        return [f"study.seeds={json.dumps(seeds)}"]

    sweep = cfg.depth_sweep
    return ([cell("grid", f"runs/grid/{a}-{i}", a, i, *grid_seeds(a, i))
             for a in cfg.grid.activations for i in cfg.grid.inits]
            + [cell("depth", f"runs/depth/{a}-{i}-d{d}", a, i, f"model.depth={d}",
                    f"model.width={sweep.width}", f"train.epochs={sweep.epochs}")
               for d in sweep.depths for a in sweep.activations for i in sweep.inits]
            + [cell("batchnorm", f"runs/batchnorm/{a}-{i}-bn", a, i, "model.batchnorm=true")
               for a in cfg.batchnorm_sweep.activations for i in cfg.batchnorm_sweep.inits])


# What a cell's numbers do not depend on: which other cells the study has, and the report.
STUDY_LEVEL = ("grid", "depth_sweep", "batchnorm_sweep", "report")


def cell_config(cfg: DictConfig) -> DictConfig:
    """The part of a composed config one cell's results depend on, resolved: everything but
    STUDY_LEVEL and the study's name and lists, keeping its seeds. A cell's stage depends on
    this alone, so that adding an init to the study retrains no existing cell."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in STUDY_LEVEL:
        del container[key]
    container["study"] = {"seeds": container["study"]["seeds"]}
    return OmegaConf.create(container)


# The schema as a config, built once: building it costs more than the merge, which copies it.
_SCHEMA = OmegaConf.structured(Config)


def load_cell_config(path: Path) -> DictConfig:
    """A cell config written by the compose stage, on the schema, validated."""
    try:
        cfg = OmegaConf.merge(_SCHEMA, OmegaConf.load(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; `dvc repro compose` writes it") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
    validate(cfg)
    return cfg
