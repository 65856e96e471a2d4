"""The typed schema of a composed config, the checks Hydra cannot express, and project paths.

Hydra composes `conf/config.yaml` on top of `Config` below, so a value of the wrong type or an
unknown key fails at composition with OmegaConf's own message (key, value, expected type).
`validate` adds the value-range and registry checks, each with one message naming the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NamedTuple

import yaml
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""


@dataclass
class ResourceConfig:
    """One file to download: its name on the mirrors and its md5 (torchvision's value)."""
    file: str = MISSING
    md5: str = MISSING


@dataclass
class DatasetConfig:
    name: str = MISSING
    source: str = MISSING
    num_classes: int = 10
    image_shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    # A local copy to read instead of downloading (an IDX folder, or cifar-10-batches-py).
    path: str | None = None
    # Downloads: base URLs tried in order, the files with their md5, and how hard to try.
    mirrors: list[str] = field(default_factory=list)
    resources: dict[str, ResourceConfig] = field(default_factory=dict)
    retries: int = 3
    backoff_seconds: float = 1.0
    timeout_seconds: float = 30.0


@dataclass
class SplitConfig:
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0


@dataclass
class ModelConfig:
    name: str = "mlp"
    depth: int = 3  # mlp: weight layers
    width: int = 256  # mlp: units per hidden layer; cnn, fitnet4: units of the hidden fc layer
    channels: list[int] = field(default_factory=lambda: [32, 64])  # cnn: one conv per entry
    bias_init: str = "zero"
    batchnorm: bool = False  # mlp only


@dataclass
class ActivationConfig:
    name: str = MISSING


@dataclass
class LsuvConfig:
    tol: float = 0.1
    max_iter: int = 10
    batch_size: int = 500


@dataclass
class RbmConfig:
    epochs: int = 5
    k: int = 1
    lr: float = 0.1
    batch_size: int = 100


@dataclass
class InitConfig:
    name: str = MISSING
    lsuv: LsuvConfig | None = None  # options of the data-dependent inits, set by their YAML
    rbm: RbmConfig | None = None


@dataclass
class OptimizerConfig:
    name: str = MISSING
    lr: float = MISSING
    momentum: float = 0.0
    weight_decay: float = 0.0
    # Step decay: lr is multiplied by `gamma` at each of these iterations (minibatch steps).
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    augment: str = "none"  # none | mirror_crop (random horizontal flip, 4-pixel-padded crop)
    probe_size: int = 256  # the first training examples: the fixed batch of the layer probes
    eval_batch_size: int = 1000  # examples per forward pass when measuring loss and accuracy
    # Mixed precision (bfloat16 autocast). Off by default: it changes numerics, and this is a
    # study of numerics.
    amp: bool = False


@dataclass
class ReportConfig:
    """Every threshold a finding's verdict uses, in one place (initlab.report.findings)."""
    # A run "stayed at chance" (n/c) when its test accuracy is at most the majority-class rate
    # plus this margin.
    chance_margin: float = 0.05
    alpha: float = 0.05  # significance level of the one-sided tests (F2's spread)
    confidence: float = 0.95  # of the two-sided Welch t intervals
    min_seeds: int = 3  # fewer runs per group: the check is UNDECIDED
    # "As good as": a difference in accuracy within this margin (non-inferiority).
    accuracy_margin: float = 0.01
    # Vanishing: the first hidden layer's gradient norm at least this many decades below the
    # last hidden layer's.
    vanishing_decades: float = 2.0
    # Stable: the ratio within this many decades of 1.
    stable_decades: float = 1.0
    # Theory and measurement agree when their first/last hidden-layer gradient ratios differ
    # by at most this many decades (width 64: finite-width spread over 17 layers ~0.2).
    theory_decades: float = 0.25


@dataclass
class MoreSeedsConfig:
    """Grid cells that train more seeds than the study's, for the checks that need the power
    (F2's spread across seeds, F7's 1-point margins). Their seeds are the study's, then the
    next integers, `seeds` in all."""
    activations: list[str] = field(default_factory=list)
    inits: list[str] = field(default_factory=list)
    seeds: int = 20


@dataclass
class StudyConfig:
    """The grid sweep: every activation x init at the model's depth, every seed."""
    name: str = "default"
    activations: list[str] = field(default_factory=lambda: ["relu"])
    inits: list[str] = field(default_factory=lambda: ["xavier"])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    more_seeds: MoreSeedsConfig = field(default_factory=MoreSeedsConfig)


@dataclass
class DepthSweepConfig:
    """The vanishing-gradient sweep: depth x activation x init, at its own width and epochs."""
    depths: list[int] = field(default_factory=list)
    activations: list[str] = field(default_factory=list)
    inits: list[str] = field(default_factory=list)
    width: int = 128
    epochs: int = 5


@dataclass
class BatchnormSweepConfig:
    """The grid's model with batch norm: activation x init."""
    activations: list[str] = field(default_factory=list)
    inits: list[str] = field(default_factory=list)


@dataclass
class Config:
    study: StudyConfig = field(default_factory=StudyConfig)
    depth_sweep: DepthSweepConfig = field(default_factory=DepthSweepConfig)
    batchnorm_sweep: BatchnormSweepConfig = field(default_factory=BatchnormSweepConfig)
    run_dir: str = MISSING  # where a cell writes its outputs, relative to the workspace
    code: str | None = None  # digest of the training code, set per cell by initlab.compose
    device: str = "cpu"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    activation: ActivationConfig = field(default_factory=ActivationConfig)
    init: InitConfig = field(default_factory=InitConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    report: ReportConfig = field(default_factory=ReportConfig)


ConfigStore.instance().store(name="schema", node=Config)
_SECTIONS = {cls.__name__: cls for cls in (
    DatasetConfig, SplitConfig, ModelConfig, ActivationConfig, InitConfig, LsuvConfig,
    RbmConfig, OptimizerConfig, TrainConfig, ReportConfig, StudyConfig, MoreSeedsConfig,
    DepthSweepConfig,
    BatchnormSweepConfig)}

DEVICES = ("cpu", "cuda", "auto")
BIAS_INITS = ("zero", "normal")


def _require(ok: bool, key: str, value, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def validate(cfg: DictConfig) -> None:
    """Check ranges and registry names that the schema's types cannot express."""
    from initlab.activations import ACTIVATIONS
    from initlab.augment import AUGMENTATIONS
    from initlab.data.sources import SOURCES
    from initlab.inits import INITS
    from initlab.inits.data_dependent import DATA_INITS
    from initlab.models import MODELS
    from initlab.optim import OPTIMIZERS

    inits = {**INITS, **DATA_INITS}

    for key, names, registry in [
        ("activation", [cfg.activation.name], ACTIVATIONS),
        ("init", [cfg.init.name], inits),
        *[(f"{sweep}.{kind}", OmegaConf.select(cfg, f"{sweep}.{kind}"),
           ACTIVATIONS if kind == "activations" else inits)
          for sweep in ("study", "depth_sweep", "batchnorm_sweep", "study.more_seeds")
          for kind in ("activations", "inits")],
    ]:
        for name in names:
            _require(name in registry, key, name, f"one of {sorted(registry)}")
    for key, value, registry in [("optimizer", cfg.optimizer.name, OPTIMIZERS),
                                 ("model", cfg.model.name, MODELS),
                                 ("dataset.source", cfg.dataset.source, SOURCES),
                                 ("train.augment", cfg.train.augment, AUGMENTATIONS)]:
        _require(value in registry, key, value, f"one of {sorted(registry)}")
    if cfg.model.name != "mlp":
        for key, names in [("init", [cfg.init.name]), ("study.inits", cfg.study.inits)]:
            _require("rbm" not in names, key, "rbm", f"with model={cfg.model.name}: RBM "
                     "pre-training (Hinton et al. 2006) stacks fully connected layers")
        _require(not cfg.model.batchnorm, "model.batchnorm", True, "only with model=mlp")
        for key, values in [("depth_sweep.depths", cfg.depth_sweep.depths),
                            ("batchnorm_sweep.activations", cfg.batchnorm_sweep.activations)]:
            _require(not values, key, list(values),
                     f"[] with model={cfg.model.name}: this sweep varies the mlp")
    _require(all(c >= 1 for c in cfg.model.channels) and len(cfg.model.channels) > 0,
             "model.channels", list(cfg.model.channels), "a non-empty list of counts >= 1")
    milestones = list(cfg.optimizer.milestones)
    _require(milestones == sorted(set(milestones)) and all(m >= 1 for m in milestones),
             "optimizer.milestones", milestones, "increasing iteration counts >= 1")
    _require(cfg.optimizer.gamma > 0, "optimizer.gamma", cfg.optimizer.gamma, "must be > 0")
    for key in ("probe_size", "eval_batch_size"):
        _require(cfg.train[key] >= 1, f"train.{key}", cfg.train[key], "must be >= 1")
    _require(cfg.dataset.retries >= 1, "dataset.retries", cfg.dataset.retries, "must be >= 1")
    _require(cfg.dataset.timeout_seconds > 0, "dataset.timeout_seconds",
             cfg.dataset.timeout_seconds, "must be > 0")
    _require(cfg.dataset.backoff_seconds >= 0, "dataset.backoff_seconds",
             cfg.dataset.backoff_seconds, "must be >= 0")
    _require(cfg.optimizer.lr > 0, "optimizer.lr", cfg.optimizer.lr, "must be > 0")
    _require(cfg.optimizer.momentum >= 0, "optimizer.momentum", cfg.optimizer.momentum,
             "must be >= 0")
    _require(cfg.optimizer.weight_decay >= 0, "optimizer.weight_decay",
             cfg.optimizer.weight_decay, "must be >= 0")
    seeds = list(cfg.study.seeds)
    _require(len(seeds) > 0, "study.seeds", seeds, "a non-empty list of integers")
    _require(len(set(seeds)) == len(seeds), "study.seeds", seeds, "each seed at most once")
    _require(cfg.study.more_seeds.seeds >= len(seeds), "study.more_seeds.seeds",
             cfg.study.more_seeds.seeds, f"at least the study's {len(seeds)} seeds")
    for key, depth in [("model.depth", cfg.model.depth),
                       *[("depth_sweep.depths", d) for d in cfg.depth_sweep.depths]]:
        _require(depth >= 1, key, depth, "the number of weight layers, >= 1")
    _require(cfg.model.width >= 1, "model.width", cfg.model.width, "must be >= 1")
    _require(cfg.depth_sweep.width >= 1, "depth_sweep.width", cfg.depth_sweep.width,
             "must be >= 1")
    _require(cfg.depth_sweep.epochs >= 1, "depth_sweep.epochs", cfg.depth_sweep.epochs,
             "must be >= 1")
    _require(cfg.model.bias_init in BIAS_INITS, "model.bias_init", cfg.model.bias_init,
             f"one of {list(BIAS_INITS)}")
    _require(cfg.train.epochs >= 1, "train.epochs", cfg.train.epochs, "must be >= 1")
    _require(cfg.train.batch_size >= 1, "train.batch_size", cfg.train.batch_size,
             "must be >= 1")
    if cfg.init.lsuv is not None:
        _require(cfg.init.lsuv.tol > 0, "init.lsuv.tol", cfg.init.lsuv.tol, "must be > 0")
        _require(cfg.init.lsuv.max_iter >= 0, "init.lsuv.max_iter", cfg.init.lsuv.max_iter,
                 "must be >= 0")
        _require(cfg.init.lsuv.batch_size >= 2, "init.lsuv.batch_size",
                 cfg.init.lsuv.batch_size, "must be >= 2")
    if cfg.init.rbm is not None:
        for key in ("epochs", "k", "batch_size"):
            _require(cfg.init.rbm[key] >= 1, f"init.rbm.{key}", cfg.init.rbm[key],
                     "must be >= 1")
        _require(cfg.init.rbm.lr > 0, "init.rbm.lr", cfg.init.rbm.lr, "must be > 0")
    _require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    fractions = cfg.split.val_fraction + cfg.split.test_fraction
    _require(0 < cfg.split.val_fraction and 0 < cfg.split.test_fraction and fractions < 1,
             "split", f"val={cfg.split.val_fraction}, test={cfg.split.test_fraction}",
             "two fractions > 0 whose sum is < 1")


def workspace_root() -> Path:
    """The nearest directory at or above the cwd that holds dvc.yaml: where conf/, data/ and
    runs/ live (a `dvc exp run --queue` temp copy is a workspace of its own)."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "dvc.yaml").is_file():
            return directory
    raise ConfigError(f"no dvc.yaml at or above {here}: run initlab from inside the project")


def tracking_root() -> Path:
    """The project that owns the MLflow store. DVC runs queued experiments in a temp copy
    under `<project>/.dvc/tmp/exps/`; their runs belong in the project's store, not the copy's."""
    root = workspace_root()
    parts = root.parts
    if ".dvc" in parts:
        return Path(*parts[: parts.index(".dvc")])
    return root


class Cell(NamedTuple):
    """One training cell of a sweep: where it writes, and the overrides that make it."""
    sweep: str
    run_dir: str
    overrides: list[str]

    @property
    def config_path(self) -> str:
        """Its composed config, written by the compose stage: runs/configs/<sweep>/<cell>.yaml."""
        return f"{CELL_CONFIGS}/{self.sweep}/{Path(self.run_dir).name}.yaml"


CELL_CONFIGS = "runs/configs"
# A row per run (cell x seed): `evaluate` writes it, `report` reads it.
RESULTS_CSV = Path("reports") / "results.csv"


def study_cells(cfg: DictConfig) -> list[Cell]:
    """Every training cell of the study, named as dvc.yaml's matrices name them:
    runs/grid/<act>-<init> (the configured model; `study.more_seeds`' cells with more seeds),
    runs/depth/<act>-<init>-d<depth> (the
    mlp at `depth_sweep`'s depth, width and epochs), runs/batchnorm/<act>-<init>-bn (the
    configured model with batch norm)."""
    def cell(sweep, run_dir, activation, init, *overrides):
        return Cell(sweep, run_dir, [f"activation={activation}", f"init={init}", *overrides,
                                     f"run_dir={run_dir}"])

    def grid_seeds(activation, init):
        more = cfg.study.more_seeds
        if activation not in more.activations or init not in more.inits:
            return []
        seeds = list(cfg.study.seeds)
        seeds += range(max(seeds) + 1, max(seeds) + 1 + more.seeds - len(seeds))
        return [f"study.seeds={json.dumps(seeds)}"]

    sweep = cfg.depth_sweep
    return ([cell("grid", f"runs/grid/{a}-{i}", a, i, *grid_seeds(a, i))
             for a in cfg.study.activations for i in cfg.study.inits]
            + [cell("depth", f"runs/depth/{a}-{i}-d{d}", a, i, f"model.depth={d}",
                    f"model.width={sweep.width}", f"train.epochs={sweep.epochs}")
               for d in sweep.depths for a in sweep.activations for i in sweep.inits]
            + [cell("batchnorm", f"runs/batchnorm/{a}-{i}-bn", a, i, "model.batchnorm=true")
               for a in cfg.batchnorm_sweep.activations for i in cfg.batchnorm_sweep.inits])


# What a cell's numbers do not depend on: which other cells the study has, and the report.
STUDY_LEVEL = ("depth_sweep", "batchnorm_sweep", "report")


def cell_config(cfg: DictConfig) -> DictConfig:
    """The part of a composed config one cell's results depend on, resolved: everything but
    STUDY_LEVEL and the study's name and lists, keeping its seeds. A cell's stage depends on
    this alone, so that adding an init to the study retrains no existing cell."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in STUDY_LEVEL:
        del container[key]
    container["study"] = {"seeds": container["study"]["seeds"]}
    return OmegaConf.create(container)


def load_cell_config(path: Path) -> DictConfig:
    """A cell config written by the compose stage, on the schema, validated."""
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found; `dvc repro compose` writes it") from None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
    validate(cfg)
    return cfg


PARAMS_FILE = "params.yaml"
GROUPS = ("dataset", "model", "activation", "init", "optimizer")  # chosen by `<group>.name`


def params_overrides(params: dict) -> list[str]:
    """Turn params.yaml into Hydra overrides: `<group>.name` selects the group's YAML in conf/,
    every other leaf overrides its key. So the pipeline and a hand-run cell compose the same
    config from the same file."""
    overrides = []
    for section, value in params.items():
        if section in GROUPS and isinstance(value, dict) and "name" in value:
            overrides.append(f"{section}={value['name']}")
            value = {k: v for k, v in value.items() if k != "name"}
        overrides += _leaf_overrides(section, value)
    return overrides


def _leaf_overrides(key: str, value) -> list[str]:
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in _leaf_overrides(f"{key}.{k}", v)]
    return [f"{key}={json.dumps(value)}"]


def read_params(root: Path) -> dict:
    path = root / PARAMS_FILE
    try:
        params = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (it holds the study to run)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: malformed YAML{where}: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(params).__name__}")
    _check_keys(path, params, Config, "")
    return params


def _check_keys(path: Path, values: dict, schema, prefix: str) -> None:
    """Every key of params.yaml must exist in the schema (a misspelt key would be ignored)."""
    allowed = {f.name: f.type for f in fields(schema)}
    for key, value in values.items():
        if key not in allowed:
            where = f"in {prefix.rstrip('.')!r}" if prefix else "sections"
            raise ConfigError(f"{path}: unknown key '{prefix}{key}'; allowed {where}: "
                              f"{sorted(allowed)}")
        nested = _SECTIONS.get(str(allowed[key]).split(" ")[0])  # "LsuvConfig | None"
        if nested and isinstance(value, dict):
            _check_keys(path, value, nested, f"{prefix}{key}.")


def load_config(cli_overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml with params.yaml's values, then the command line's overrides
    (last wins), and validate the result."""
    from hydra import compose, initialize_config_dir

    root = workspace_root()
    overrides = params_overrides(read_params(root)) + list(cli_overrides)
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        reasons = [str(e)] + ([str(e.__cause__)] if e.__cause__ else [])
        message = "; ".join(line.strip() for r in reasons for line in r.splitlines()
                            if line.strip())
        raise ConfigError(f"{root / PARAMS_FILE} or command line: {message}") from None
    validate(cfg)
    return cfg


@contextmanager
def reported_errors():
    """Turn a bad config or input into one clear message on stderr and exit status 2."""
    try:
        yield
    except ConfigError as e:
        print(f"initlab: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
