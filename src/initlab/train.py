"""The `train` stage: one cell (an activation x an init), every seed of the study at once.

    python -m initlab.train activation=tanh init=xavier [model.depth=10 ...]
    python -m initlab.train --cell runs/configs/grid/tanh-xavier.yaml     (the train stages)

composes conf/ + params.yaml + these overrides (`initlab.config.load_config`), or reads the
cell's config that the compose stage composed the same way (`initlab.compose`), trains the
seeds as one seed-batched model (`initlab.models`) on the train split, picks nothing by test
data, and writes its `run_dir` (runs/grid/<activation>-<init>/ by default) atomically, in
the layout of `initlab.layout`.

No MLflow here: importing mlflow and opening its store costs seconds, more than a small
cell's training, so the `evaluate` stage logs every cell's runs from these files in one
process (`initlab.tracking.log_cell`).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from initlab import layout, timings
from initlab.augment import AUGMENTATIONS
from initlab.cells import cell_config, load_cell_config
from initlab.config import load_config
from initlab.data.prepare import load_split, prepared_dir
from initlab.errors import ConfigError, reported_errors
from initlab.inits import INITS
from initlab.inits.data_dependent import DATA_INITS
from initlab.io import atomic_path, sha256, sigterm_as_exit, write_json
from initlab.models import SeedBatchedNet, build_model
from initlab.optim import OPTIMIZERS, StepDecay
from initlab.paths import workspace_root
from initlab.probes import layer_statistics
from initlab.progress import Progress

HISTORY_COLUMNS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
RANDOM_STREAMS = ("init", "data_order")


def seed_generator(seed: int, stream: str) -> torch.Generator:
    """An independent random stream per (seed, purpose), so that a seed's init and data order
    are fixed by the seed alone."""
    state = np.random.SeedSequence([seed, RANDOM_STREAMS.index(stream)]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def use_threads_for(n_seeds: int) -> int:
    """Use at most one CPU thread per seed. Batched matmuls then run each seed's matmul on one
    thread (a single multi-threaded matmul splits its sums differently), so a seed's numbers
    do not depend on which other seeds share the batch, nor on the thread count. At most the
    cores, or INITLAB_CELL_THREADS when set (a cell among others on a node: initlab.distribute).
    Returns the thread count."""
    cores = int(os.environ.get("INITLAB_CELL_THREADS") or len(os.sched_getaffinity(0)))
    threads = max(1, min(cores, n_seeds))
    torch.set_num_threads(threads)
    return threads


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not allowed here: no CUDA device; use cpu or auto")
    return torch.device(name)


def initialize(model: SeedBatchedNet, init_cfg, bias_init: str, seeds: list[int],
               x_train: torch.Tensor) -> dict[str, torch.Tensor]:
    """Draw the weights of every seed with the configured init. A data-dependent init
    (`initlab.inits.data_dependent`) draws its pre-init, then runs on the training inputs.
    Returns the init's log: metric name -> (steps, seeds)."""
    generators = [seed_generator(s, "init") for s in seeds]
    data_init = DATA_INITS.get(init_cfg.name)
    if data_init is None:
        model.initialize(INITS[init_cfg.name], generators, bias_init)
        return {}
    model.initialize(INITS[data_init.pre_init], generators, bias_init)
    return data_init.fn(model, x_train, generators, init_cfg[init_cfg.name])


@torch.no_grad()
def measure(model: SeedBatchedNet, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000):
    """Per-seed (loss, accuracy) on one split: x (N, ...) shared by every seed, `batch_size`
    examples per forward pass, in eval mode (batch norm uses its running statistics)."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros(model.n_models, device=x.device)
    correct = torch.zeros(model.n_models, device=x.device)
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb.expand(model.n_models, *xb.shape))
        loss_sum += F.cross_entropy(logits.transpose(1, 2), yb.expand(len(logits), -1),
                                    reduction="none").sum(1)
        correct += (logits.argmax(-1) == yb).sum(1)
    model.train(was_training)
    return loss_sum / len(y), correct / len(y)


def gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t[idx] for a (seeds, batch) index: one index_select, ~4x faster than indexing."""
    return t.index_select(0, idx.flatten()).view(*idx.shape, *t.shape[1:])


@dataclass
class FitResult:
    history: list[dict[str, torch.Tensor]]  # per epoch: HISTORY_COLUMNS -> (seeds,)
    layer_stats: list[dict[str, torch.Tensor]]  # per epoch: probes.LAYER_STATS -> (seeds, layers)
    diverged_at: list[int | None]  # per seed: the epoch its loss became NaN/inf, or None

    def rows(self) -> list[tuple[list[dict], list[dict]]]:
        """Per seed: its history rows and per-layer rows, up to the epoch it diverged at."""
        def by_epoch(rows, keys):  # key -> [epoch][seed] (or [epoch][seed][layer]) floats
            return {k: torch.stack([row[k] for row in rows]).double().tolist() for k in keys}

        history = by_epoch(self.history, HISTORY_COLUMNS)
        layers = by_epoch(self.layer_stats, self.layer_stats[0])
        n_layers = self.layer_stats[0]["grad_norm"].shape[1]
        per_seed = []
        for s, diverged_at in enumerate(self.diverged_at):
            epochs = range(len(self.history) if diverged_at is None else diverged_at + 1)
            per_seed.append((
                [{"epoch": e, **{k: v[e][s] for k, v in history.items()}} for e in epochs],
                [{"epoch": e, "layer": layer, **{k: v[e][s][layer] for k, v in layers.items()}}
                 for e in epochs for layer in range(n_layers)]))
        return per_seed


def fit(model, optimizer, train, val, probe, train_cfg, order_generators, scheduler=None,
        on_epoch=None) -> FitResult:
    """Minibatch training of every seed at once (`train_cfg`: epochs, batch_size, augment,
    amp, eval_batch_size); each seed draws its own data order and augmentations. The
    `scheduler`, if any, steps after every minibatch. At init (epoch 0) and after every epoch
    it records the train/val loss and accuracy and the layer statistics on the fixed probe
    batch (`initlab.probes`). A seed whose epoch loss is NaN/inf has diverged: its record stops
    there and it is left alone (nothing crosses the seed axis, so the others go on
    unaffected)."""
    (x_train, y_train), (x_val, y_val) = train, val
    n_seeds, n, batch_size = len(order_generators), len(y_train), train_cfg.batch_size
    augment = AUGMENTATIONS[train_cfg.augment]
    # per step, a config value costs ~0.02 ms and an autocast context, even off, ~0.008 ms
    precision = (partial(torch.autocast, x_train.device.type, torch.bfloat16)
                 if train_cfg.amp else nullcontext)
    use_threads_for(n_seeds)
    result = FitResult([], [], [None] * n_seeds)

    def record(epoch, train_loss, train_acc):
        val_loss, val_acc = measure(model, x_val, y_val, train_cfg.eval_batch_size)
        row = dict(zip(HISTORY_COLUMNS, (train_loss, train_acc, val_loss, val_acc)))
        for s in range(n_seeds):
            if result.diverged_at[s] is None and not torch.isfinite(train_loss[s]):
                result.diverged_at[s] = epoch
        result.history.append(row)
        result.layer_stats.append(layer_statistics(model, *probe))
        if on_epoch:
            on_epoch(epoch, result)

    record(0, *measure(model, x_train, y_train, train_cfg.eval_batch_size))
    for epoch in range(1, train_cfg.epochs + 1):
        order = torch.stack([torch.randperm(n, generator=g) for g in order_generators])
        order = order.to(x_train.device)
        loss_sum = torch.zeros(n_seeds, device=x_train.device)
        correct = torch.zeros(n_seeds, device=x_train.device)
        for start in range(0, n, batch_size):
            idx = order[:, start:start + batch_size]
            y = gather(y_train, idx)
            with precision():
                logits = model(augment(gather(x_train, idx), order_generators))
                losses = F.cross_entropy(logits.float().transpose(1, 2), y,
                                         reduction="none").mean(1)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            if scheduler:
                scheduler.step()
            loss_sum += losses.detach() * idx.shape[1]
            correct += (logits.detach().argmax(-1) == y).sum(1)
        record(epoch, loss_sum / n, correct / n)
        if all(d is not None for d in result.diverged_at):
            break
    return result


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rows of numbers as CSV (repr keeps every float's bits)."""
    columns = list(rows[0])
    lines = [",".join(columns)] + [",".join(repr(r[c]) for c in columns) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def train_cell(cfg) -> Path:
    """Train every seed of one cell and write its outputs (what the config and seeds
    determine, nothing of the clock: `initlab.timings` records that); returns its folder."""
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        # On the CPU every op used here is deterministic already, and the call would cost
        # ~3 s of imports (torch._dynamo) per cell. cuBLAS needs a fixed workspace for it.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    train, val = (tuple(t.to(device) for t in load_split(s)) for s in ("train", "val"))
    if cfg.train.batch_size > len(train[1]):
        raise ConfigError(f"train.batch_size={cfg.train.batch_size} is not allowed: at most "
                          f"the {len(train[1])} training examples")
    probe = (train[0][:cfg.train.probe_size], train[1][:cfg.train.probe_size])
    seeds = list(cfg.study.seeds)
    out_dir = workspace_root() / cfg.run_dir
    cell = out_dir.name
    model = build_model(cfg, len(seeds)).to(device)
    started = time.perf_counter()
    init_log = initialize(model, cfg.init, cfg.model.bias_init, seeds, train[0])
    init_seconds = time.perf_counter() - started
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), cfg.optimizer)
    scheduler = StepDecay(optimizer, cfg.optimizer) if cfg.optimizer.milestones else None
    tags = {"activation": cfg.activation.name, "init": cfg.init.name, "model": cfg.model.name,
            "depth": str(cfg.model.depth), "batchnorm": str(cfg.model.batchnorm),
            "parameters": str(model.seed_parameter_count()),
            "dataset": cfg.dataset.name, "sweep": Path(cfg.run_dir).parent.name,
            "dvc_stage": os.environ.get("DVC_STAGE", "by hand"), "device": str(device),
            "dataset_sha256": sha256(prepared_dir() / "manifest.json")}

    signal.signal(signal.SIGTERM, sigterm_as_exit)
    progress = Progress(cell, seeds, cfg.train.epochs)
    started_ms, started = int(time.time() * 1000), time.perf_counter()
    result = fit(model, optimizer, train, val, probe, cfg.train,
                 [seed_generator(s, "data_order") for s in seeds], scheduler,
                 lambda epoch, result: progress.update(epoch, result))
    seconds = time.perf_counter() - started
    rows = result.rows()
    progress.close(rows, result.diverged_at)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        OmegaConf.save(cell_config(cfg), tmp / layout.CONFIG)
        for s, seed in enumerate(seeds):
            seed_dir = layout.seed_dir(tmp, seed)
            seed_dir.mkdir()
            history, layer_rows = rows[s]
            torch.save({k: v.cpu() for k, v in model.seed_state_dict(s).items()},
                       seed_dir / layout.MODEL)
            write_csv(seed_dir / layout.HISTORY, history)
            write_csv(seed_dir / layout.LAYERS, layer_rows)
            write_json(seed_dir / layout.SUMMARY, {
                "seed": seed,
                "best_val_accuracy": max(r["val_accuracy"] for r in history),
                "final_val_accuracy": history[-1]["val_accuracy"],
                "final_train_loss": history[-1]["train_loss"],
                "epochs": history[-1]["epoch"],
                "diverged_at_epoch": result.diverged_at[s],
                "diverged": result.diverged_at[s] is not None,
                "init_log": {k: v[:, s].tolist() for k, v in init_log.items()},
            })
        write_json(tmp / layout.CELL_JSON, {
            "device": str(device), "parameters_per_seed": model.seed_parameter_count(),
            "train_examples": len(train[1]), "mlflow_tags": tags})
    timings.record(out_dir, init_seconds=init_seconds, train_seconds=seconds,
                   started_ms=started_ms, ended_ms=int(time.time() * 1000),
                   torch_threads=torch.get_num_threads())
    return out_dir


def main() -> None:
    with reported_errors():
        args = sys.argv[1:]
        if args[:1] != ["--cell"]:
            train_cell(load_config(args))
        elif len(args) == 2:
            train_cell(load_cell_config(Path(args[1])))
        else:
            raise ConfigError(f"--cell {' '.join(args[1:])!r} is not allowed: one cell "
                              "config file, runs/configs/<sweep>/<cell>.yaml")


if __name__ == "__main__":
    main()
