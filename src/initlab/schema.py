"""The typed schema of a composed config, and the checks Hydra cannot express.

Hydra composes `conf/config.yaml` on top of `Config` below, so a value of the wrong type or an
unknown key fails at composition with OmegaConf's own message (key, value, expected type).
`validate` adds the value-range and registry checks, each with one message naming the key,
the bad value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from initlab.errors import ConfigError
from initlab.inits.data_dependent import LsuvConfig, RbmConfig


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
class InitConfig:
    name: str = MISSING
    # options of the data-dependent inits (their dataclasses, beside their code), present when
    # their YAML names them
    lsuv: LsuvConfig | None = None
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
    """The study as a whole: its name (its MLflow experiment) and the seeds every cell trains."""
    name: str = "default"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class GridConfig:
    """The grid sweep: every activation x init at the model's depth."""
    activations: list[str] = field(default_factory=lambda: ["relu"])
    inits: list[str] = field(default_factory=lambda: ["xavier"])
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
    grid: GridConfig = field(default_factory=GridConfig)
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
SECTIONS = {cls.__name__: cls for cls in (
    DatasetConfig, SplitConfig, ModelConfig, ActivationConfig, InitConfig, LsuvConfig,
    RbmConfig, OptimizerConfig, TrainConfig, ReportConfig, StudyConfig, GridConfig,
    MoreSeedsConfig, DepthSweepConfig, BatchnormSweepConfig)}

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
          for sweep in ("grid", "depth_sweep", "batchnorm_sweep", "grid.more_seeds")
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
        for key, names in [("init", [cfg.init.name]), ("grid.inits", cfg.grid.inits)]:
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
    _require(cfg.grid.more_seeds.seeds >= len(seeds), "grid.more_seeds.seeds",
             cfg.grid.more_seeds.seeds, f"at least the study's {len(seeds)} seeds")
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
    for name in DATA_INITS:
        if cfg.init[name] is not None:
            for key, value, allowed in OmegaConf.to_object(cfg.init[name]).problems():
                _require(False, f"init.{name}.{key}", value, allowed)
    _require(cfg.device in DEVICES, "device", cfg.device, f"one of {list(DEVICES)}")
    fractions = cfg.split.val_fraction + cfg.split.test_fraction
    _require(0 < cfg.split.val_fraction and 0 < cfg.split.test_fraction and fractions < 1,
             "split", f"val={cfg.split.val_fraction}, test={cfg.split.test_fraction}",
             "two fractions > 0 whose sum is < 1")
