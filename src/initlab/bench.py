"""`make bench`: how close the study trains to this machine's limit, measured in one run.

    python -m initlab.bench [--quick]

Writes reports/bench.json and reports/bench.md:
  (a) gemm_flops: fp32 matmul throughput on exactly the matmuls of one training step of the
      default cell (forward x W, backward dZ W^T and x^T dZ, every seed at once)
  (b) trainer_flops: the trainer's achieved FLOP/s on the default cell (the matmul FLOPs of
      `initlab.train.fit`, training steps and recorded evaluations, / its wall time), and
      trainer_vs_gemm = b / a. (a) and (b) are measured in turn, ROUNDS times: each is the
      median of its rounds, the ratio the median of the rounds' ratios (on a shared machine
      (a) alone has varied by 1.5x within a day); and what bounds b/a from above,
      trainer_vs_gemm_ceiling: the matmuls' time at (a)'s speed over that time plus
      narrow_trainer_seconds, `fit` of the same cell with FLOOR_WIDTH-unit hidden layers (the
      same ops, each with almost nothing to compute: their dispatch, the minibatch gather,
      the evaluations' input reads)
  (c) speedup_vs_plain_loop: the same cell trained by a lab-style loop (a DataLoader, one
      seed after another, nn.Sequential), its time / the trainer's, in each of the rounds
      of (b): the median of the rounds' ratios
  (d) pipeline_overhead: `dvc repro` of the study end to end, against the summed pure
      training time inside it (init + fit of every cell): wall / training - 1
  (e) noop_repro_seconds: `dvc repro` again, nothing changed
  (f) cell_peak_rss_mb: the peak resident memory of one `python -m initlab.train` process
  (g) added_init_fixed_seconds: an init the code has listed in params.yaml's grid, `dvc repro`
      less its new cells' own training (added_init_training_seconds): what the edit costs
      beyond what it adds, with no fork server up (a repro once the last one's has gone);
      (g') warm_added_init_fixed_seconds: another such init listed right after, a repro that
      finds (g)'s fork server warm (an edit loop's next repro, `initlab.forkserver`)
  (h) threshold_edit_seconds: `dvc repro` after a threshold of the report changed
  (i) distributed_vs_repro: the same study from scratch by `initlab.distribute` on a local
      Ray (cores / 2 cells at once, 2 threads each: ray_workers), its wall time over (d)'s;
      ray_start_seconds (a local Ray started and stopped) and ray_memory_mb (the resident
      memory of its processes once up)
and where the rest of (d) goes: dvc_alone_seconds (`dvc repro` of every train stage again
with the same deps, params and outs but a command that only makes the output folder: DVC's
own cost per stage), cell_import_seconds (a fresh process importing the trainer, paid once by
the fork server that the stages share, `initlab.forkserver`), mlflow_alone_seconds
(MLflow storing the runs' params and metrics that evaluate logs, by bare client calls:
`mlflow_floor`; mlflow_alone_runs, as many as evaluate's runs), overhead_floor =
(dvc_alone + cell_import + mlflow_alone) / training, and evaluate_seconds, report_seconds
(those stages again, on a fresh MLflow store and with no memo, `initlab.memo`, as in the
first repro).

`--quick` runs a 2-epoch cell and a 2-cell study instead of the default ones (a smoke test;
its ratios are not the study's).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from initlab import layout, memo, timings
from initlab.config import load_config
from initlab.data.prepare import load_split
from initlab.inits import INITS
from initlab.io import atomic_path, write_json
from initlab.models import build_model
from initlab.optim import OPTIMIZERS
from initlab.paths import RESULTS_CSV, workspace_root
from initlab.train import fit, initialize, seed_generator

ROUNDS = 3
FLOOR_WIDTH = 8  # (b'): the default cell with 8-unit hidden layers, the same ops on ~no FLOPs
QUICK_STUDY = {"study": {"seeds": [0, 1]},  # relu-he with a third seed, as `more_seeds` gives
               "grid": {"activations": ["relu"], "inits": ["zero", "he"],
                        "more_seeds": {"activations": ["relu"], "inits": ["he"], "seeds": 3}},
               "depth_sweep": {"depths": []}, "batchnorm_sweep": {"activations": []},
               "train": {"epochs": 2}}


def copy_project(source: Path, target: Path) -> Path:
    """The git-tracked files of `source` minus the study's outputs, as a fresh git repo at
    `target` (DVC needs one): a throwaway project for tests and the benchmark. Here, not in
    initlab.io: io is training code, in every cell's digest, so an edit there retrains all."""
    files = subprocess.run(["git", "ls-files"], cwd=source, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        study_output = name.startswith("reports/") or name.endswith("dvc.lock")
        if study_output or not (source / name).exists():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    git = ["git", "-c", "user.name=initlab", "-c", "user.email=initlab@localhost"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, check=True)
    return target


def layer_shapes(cfg) -> list[tuple[int, int]]:
    model = build_model(cfg, 1)
    return [tuple(w.shape[1:]) for w in model.weights]


def step_flops(cfg, n_seeds: int, batch: int) -> float:
    """Matmul FLOPs of one training step: per layer 2*S*B*K*N for the forward, the same for
    dL/dW, and again for dL/dx except at the first layer (the input needs no gradient)."""
    shapes = layer_shapes(cfg)
    return sum(2 * n_seeds * batch * k * n * (2 if i == 0 else 3)
               for i, (k, n) in enumerate(shapes))


def fit_flops(cfg, n_seeds: int, n_train: int, n_val: int) -> float:
    """Every matmul FLOP `fit` does: the training steps, plus the forward passes that record
    the history (the train set at init, the validation set at init and after each epoch) and
    the probe batch's forward and backward at init and after each epoch."""
    epochs = cfg.train.epochs
    full, last = divmod(n_train, cfg.train.batch_size)
    steps = epochs * (step_flops(cfg, n_seeds, cfg.train.batch_size) * full
                      + (step_flops(cfg, n_seeds, last) if last else 0))
    forward = sum(2 * n_seeds * k * n for k, n in layer_shapes(cfg))  # per example
    records = forward * (n_train + n_val * (epochs + 1))
    probes = step_flops(cfg, n_seeds, cfg.train.probe_size) * (epochs + 1)
    return steps + records + probes


def gemm_limit(cfg, n_seeds: int, batch: int, seconds: float = 3.0) -> float:
    """FLOP/s of the step's matmuls alone, back to back (torch.bmm, fp32)."""
    mats = []
    for i, (k, n) in enumerate(layer_shapes(cfg)):
        x, w, dz = (torch.randn(n_seeds, batch, k), torch.randn(n_seeds, k, n),
                    torch.randn(n_seeds, batch, n))
        mats.append((x, w, dz, i == 0))

    def step():
        for x, w, dz, first in mats:
            torch.bmm(x, w)
            torch.bmm(x.transpose(1, 2), dz)
            if not first:
                torch.bmm(dz, w.transpose(1, 2))

    for _ in range(20):
        step()
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return step_flops(cfg, n_seeds, batch) * steps / (time.perf_counter() - started)


def trainer_run(cfg, data) -> tuple[float, list[float]]:
    """Seconds of `fit` on the cell, and each seed's final validation accuracy."""
    seeds = list(cfg.study.seeds)
    (x, y), val = data
    model = build_model(cfg, len(seeds))
    initialize(model, cfg.init, cfg.model.bias_init, seeds, x)
    optimizer = OPTIMIZERS[cfg.optimizer.name](model.parameters(), cfg.optimizer)
    started = time.perf_counter()
    probe = cfg.train.probe_size
    result = fit(model, optimizer, (x, y), val, (x[:probe], y[:probe]), cfg.train,
                 [seed_generator(s, "data_order") for s in seeds])
    return time.perf_counter() - started, result.history[-1]["val_accuracy"].tolist()


def plain_loop_run(cfg, data) -> tuple[float, list[float]]:
    """The lab code's way: a DataLoader, an nn.Sequential, torch.optim.SGD (the default
    cell's optimizer), one seed after another."""
    from torch.utils.data import DataLoader, TensorDataset

    from initlab.activations import ACTIVATIONS

    (x, y), (x_val, y_val) = data
    act = ACTIVATIONS[cfg.activation.name].fn
    # torch.optim's first call imports torch._dynamo (~2 s): paid here, not in the loop's time
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1).zero_grad()
    started, accuracies = time.perf_counter(), []
    for seed in cfg.study.seeds:
        generator = seed_generator(seed, "init")
        layers = []
        for i, (k, n) in enumerate(layer_shapes(cfg)):
            linear = torch.nn.Linear(k, n)
            with torch.no_grad():
                linear.weight.copy_(INITS[cfg.init.name](k, n, generator,
                                                         ACTIVATIONS[cfg.activation.name]).T)
                linear.bias.zero_()
            layers.append(linear)
            if i < len(layer_shapes(cfg)) - 1:
                layers.append(Lambda(act))
        model = torch.nn.Sequential(*layers)
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optimizer.lr,
                                    momentum=cfg.optimizer.momentum,
                                    weight_decay=cfg.optimizer.weight_decay)
        loader = DataLoader(TensorDataset(x, y), batch_size=cfg.train.batch_size, shuffle=True,
                            generator=seed_generator(seed, "data_order"))
        for _ in range(cfg.train.epochs):
            for xb, yb in loader:
                optimizer.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                optimizer.step()
        with torch.no_grad():
            accuracies.append((model(x_val).argmax(1) == y_val).float().mean().item())
    return time.perf_counter() - started, accuracies


class Lambda(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def edit_params(root: Path, **sections) -> None:
    """Merge `sections` into root/params.yaml, one level deep."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in sections.items():
        params.setdefault(section, {}).update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def training_seconds(root: Path, pattern: str = "*/*") -> float:
    """Init + fit seconds of the cells whose timings match timings/<pattern>.json."""
    return sum(cell["init_seconds"] + cell["train_seconds"]
               for cell in map(lambda p: json.loads(p.read_text()),
                               root.glob(f"{timings.TIMINGS}/{pattern}.json")))


def repro_study(quick: bool) -> dict:
    """(d) to (h) on a throwaway copy of the project (its own store, DVC cache and memo)."""
    root = workspace_root()
    # In --quick, one fork server for every command (a smoke run's seconds measure nothing)
    with tempfile.TemporaryDirectory() as tmp, \
            (server_folder() if quick else nullcontext()) as quick_runtime:
        copy = copy_project(root, Path(tmp) / "project")
        if quick:
            edit_params(copy, **QUICK_STUDY)
        env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}

        def timed(cmd, run_env=env, runtime=None) -> float:
            """`cmd`'s seconds with no warm fork server: one of its own, stopped after (what
            an edit costs once the last one's server has gone), or the servers of `runtime`,
            left running (the next command of an edit loop finds them warm)."""
            with ExitStack() as own:
                runtime = quick_runtime or runtime or own.enter_context(server_folder())
                started = time.perf_counter()
                done = subprocess.run(cmd, cwd=copy, env={**run_env, "XDG_RUNTIME_DIR": runtime},
                                      capture_output=True, text=True)
                seconds = time.perf_counter() - started
            if done.returncode:
                raise RuntimeError(f"{cmd} failed in {copy}:\n{done.stdout}\n{done.stderr}")
            return seconds

        wall = timed(["dvc", "repro"])
        noop = timed(["dvc", "repro"])
        training, cells = training_seconds(copy), len(list(copy.glob("runs/*/*/config.yaml")))
        # (g) an init the code has, listed in the grid: what the edit costs beyond its cells'
        # training, with no fork server up, then (g') another such edit right after, whose
        # repro finds the first one's server warm; (h) a threshold changed: the report alone
        study = yaml.safe_load((copy / "params.yaml").read_text())
        listed = study["grid"]["inits"]
        added, warm_added = [name for name in INITS if name not in listed][:2]
        with server_folder() as loop:
            edit_params(copy, grid={"inits": [*listed, added]})
            added_wall = timed(["dvc", "repro"], runtime=loop)
            added_training = training_seconds(copy, f"grid/*-{added}")
            edit_params(copy, grid={"inits": [*listed, added, warm_added]})
            warm_wall = timed(["dvc", "repro"], runtime=loop)
            warm_training = training_seconds(copy, f"grid/*-{warm_added}")
        edit_params(copy, report={"alpha": 0.01})
        threshold_wall = timed(["dvc", "repro"])
        (copy / "params.yaml").write_text(yaml.safe_dump(study, sort_keys=False))
        # (f) the bench's cell, by hand, beside the study's cells (it trains the study's seeds,
        # and the study's relu-he has more_seeds' 20)
        rss_kb = subprocess.run(
            [sys.executable, "-c", CELL_RSS, "activation=relu", "init=he", "run_dir=runs/rss"],
            cwd=copy, env=env, check=True, capture_output=True, text=True).stdout.split()[-1]
        imports = timed([sys.executable, "-c", "import initlab.train"])
        shutil.rmtree(copy / memo.CACHE)  # evaluate and report as in the first repro
        fresh_store = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'fresh.db'}"}
        evaluate = timed([sys.executable, "-m", "initlab.evaluate"], fresh_store)
        report = timed([sys.executable, "-m", "initlab.report"], fresh_store)
        floor_store = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{Path(tmp) / 'floor.db'}"}
        runs = len((copy / RESULTS_CSV).read_text().splitlines()) - 1  # evaluate's rows
        mlflow_alone, floor_runs = json.loads(subprocess.run(
            [sys.executable, "-c", FLOOR], cwd=copy, env=floor_store, check=True,
            capture_output=True, text=True).stdout)
        stages = yaml.safe_load((copy / "dvc.yaml").read_text())["stages"]
        del stages["evaluate"], stages["report"]
        (copy / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
        for sweep in copy.glob("sweeps/*/dvc.yaml"):  # same deps and outs; no training
            pipeline = yaml.safe_load(sweep.read_text())
            for stage in pipeline["stages"].values():
                stage["cmd"] = f"mkdir {stage['outs'][0]} && touch {stage['outs'][0]}/empty"
            sweep.write_text(yaml.safe_dump(pipeline, sort_keys=False))
        dvc_alone = timed(["dvc", "repro", "--all-pipelines"])
        # (i) the same study trained by `initlab.distribute` on a local Ray, from scratch (not
        # in --quick: a local Ray's start is most of a 2-cell study's time)
        distributed = {} if quick else distributed_study(root, copy, Path(tmp), wall, env)
    return {**distributed, "repro_seconds": wall, "training_seconds": training, "cells": cells,
            "runs": runs, "mlflow_alone_runs": floor_runs,
            "pipeline_overhead": wall / training - 1, "noop_repro_seconds": noop,
            "added_init": added, "added_init_training_seconds": added_training,
            "added_init_fixed_seconds": added_wall - added_training,
            "warm_added_init": warm_added, "warm_added_init_training_seconds": warm_training,
            "warm_added_init_fixed_seconds": warm_wall - warm_training,
            "threshold_edit_seconds": threshold_wall,
            "cell_peak_rss_mb": int(rss_kb) / 1024, "cell_import_seconds": imports,
            "dvc_alone_seconds": dvc_alone, "mlflow_alone_seconds": mlflow_alone,
            "overhead_floor": (dvc_alone + imports + mlflow_alone) / training,
            "evaluate_seconds": evaluate, "report_seconds": report}


def distributed_study(root: Path, study: Path, tmp: Path, repro_wall: float, env) -> dict:
    """(i): `study`'s params trained from scratch in a new copy by `initlab.distribute`."""
    spread = copy_project(root, tmp / "distributed")
    shutil.copy2(study / "params.yaml", spread / "params.yaml")
    with server_folder() as runtime:  # its repro's server stopped after, as in timed()
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "initlab.distribute"], cwd=spread,
                       env={**env, "XDG_RUNTIME_DIR": runtime}, check=True,
                       stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
    ray_start, ray_memory = json.loads(subprocess.run(
        [sys.executable, "-c", RAY_COSTS], env=env, check=True, capture_output=True,
        text=True).stdout.splitlines()[-1])
    return {"distributed_seconds": seconds, "distributed_vs_repro": seconds / repro_wall,
            "ray_workers": len(os.sched_getaffinity(0)) // 2, "ray_start_seconds": ray_start,
            "ray_memory_mb": ray_memory}


def processes():
    """(pid, command line as a list of bytes) of every process that can be read."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                yield int(proc.name), (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


def stat_fields(pid: int) -> list[str]:
    """Process `pid`'s /proc/<pid>/stat from its 3rd field on (state, ppid, ...: proc(5)),
    past the command name, which may hold spaces and parentheses."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent(pid: int) -> int | None:
    """The parent of process `pid`, from /proc (None if it has gone)."""
    try:
        return int(stat_fields(pid)[1])
    except (OSError, IndexError):
        return None


def fork_servers(runtime: str) -> list[int]:
    """The pids of the fork servers whose socket is in `runtime` (not their children, which
    carry the same command line)."""
    found = [pid for pid, cmdline in processes() if b"--serve" in cmdline and
             cmdline[cmdline.index(b"--serve") + 1].startswith(runtime.encode())]
    return [pid for pid in found if parent(pid) not in found]


@contextmanager
def server_folder():
    """A new runtime folder (XDG_RUNTIME_DIR) for the fork servers of the commands given it,
    short (a socket's path has at most 107 bytes); its servers stopped and it removed after."""
    runtime = tempfile.mkdtemp(prefix="fs", dir="/tmp")
    try:
        yield runtime
    finally:
        stop_fork_servers(runtime)
        shutil.rmtree(runtime, ignore_errors=True)


def stop_fork_servers(runtime: str) -> None:
    """SIGTERM the fork servers whose socket is in `runtime`, so that none goes on importing
    beside the next measure."""
    for pid in fork_servers(runtime):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and (ppid := parent(int(proc.name))) is not None:
            children.setdefault(ppid, []).append(int(proc.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


# (i'): a local Ray started and stopped, and the resident memory of its processes (every
# descendant of the driver, which starts them) once it is up, in MB.
RAY_COSTS = """import json, os, time
from pathlib import Path
from initlab.bench import descendants
started = time.perf_counter()
import ray
ray.init(include_dashboard=False, logging_level="ERROR")
up = time.perf_counter() - started
rss = 0
for pid in descendants(os.getpid()):
    try:
        rss += int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS")).split()[1])
    except (OSError, StopIteration):
        pass
started = time.perf_counter()
ray.shutdown()
print(json.dumps([up + time.perf_counter() - started, rss / 1024]))"""


def mlflow_floor() -> tuple[float, int]:
    """Seconds MLflow itself takes to store what `evaluate` logs of the study, and the runs it
    logged (in this workspace, on the store of MLFLOW_TRACKING_URI): each run's params and
    metrics (`initlab.tracking.run_batch`), every seed of every cell (`grid.more_seeds`' cells
    have more), by bare client calls, create_run, log_batch and set_terminated, in as many
    processes as evaluate has logging workers, from opening the store (the bench's is new:
    its tables are created, as by the first evaluate) with MLflow imported (as the fork server
    has it); no artifacts, figures or measuring. Part of (d) that no code of ours can remove."""
    import importlib
    import multiprocessing

    from initlab import tracking
    from initlab.evaluate import cell_dirs
    from initlab.logging_workers import worker_count

    cfg = load_config([])
    cells, runs, now_ms = cell_dirs(cfg), [], int(time.time() * 1000)
    for _, cell_dir in cells:
        ran = json.loads((cell_dir / layout.CELL_JSON).read_text())
        params = tracking.cell_params(cell_dir)
        for seed in json.loads(params["study.seeds"]):  # the cell's own seeds
            runs.append((ran["mlflow_tags"], *tracking.run_batch(
                cell_dir, seed, now_ms, params, {"test_accuracy": 0.0, "test_loss": 0.0})))
    # The store is opened after the forks only: MLflow keeps one engine per store in a
    # process, and a sqlite connection must not cross a fork.
    fork = multiprocessing.get_context("fork")
    importlib.import_module("mlflow.tracking")  # before the forks, as in the fork server
    started = time.perf_counter()
    with fork.Pool(1) as pool:
        exp_id = pool.apply(_floor_experiment)  # a new store: MLflow creates its tables

    def log(share):
        mlflow_client = tracking.client()
        for tags, metrics, params in share:
            run_id = mlflow_client.create_run(exp_id, tags=tags).info.run_id
            mlflow_client.log_batch(run_id, metrics, params)
            mlflow_client.set_terminated(run_id, "FINISHED")

    processes = worker_count(len(cells))
    if not processes:
        log(runs)
    else:
        workers = [fork.Process(target=log, args=(runs[i::processes],)) for i in range(processes)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
            if worker.exitcode:
                raise RuntimeError(f"a floor logging process exited with {worker.exitcode}")
    return time.perf_counter() - started, len(runs)


FLOOR = "import json; from initlab.bench import mlflow_floor; print(json.dumps(mlflow_floor()))"


def _floor_experiment() -> str:
    from initlab import tracking

    return tracking.experiment_id(tracking.client(), "mlflow-floor")


# One training cell in a fresh process, then its own peak RSS (KiB on Linux).
CELL_RSS = """import resource, runpy, sys
sys.argv = ["initlab.train", *sys.argv[1:]]
runpy.run_module("initlab.train", run_name="__main__")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, not the study's")
    args = parser.parse_args()
    overrides = ["activation=relu", "init=he"] + (["train.epochs=2"] if args.quick else [])
    cfg = load_config(overrides)
    n_seeds = len(cfg.study.seeds)
    (x, y), (xv, yv) = load_split("train"), load_split("val")
    data = ((x.flatten(1), y), (xv.flatten(1), yv))
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    narrow = load_config([*overrides, f"model.width={FLOOR_WIDTH}"])
    rounds = []
    for _ in range(1 if args.quick else ROUNDS):
        gemm = gemm_limit(cfg, n_seeds, cfg.train.batch_size, 1.0 if args.quick else 2.0)
        trainer_seconds, trainer_acc = trainer_run(cfg, data)
        plain_seconds, plain_acc = plain_loop_run(cfg, data)
        rounds.append((gemm, trainer_seconds, trainer_run(narrow, data)[0], plain_seconds))
    gemm, trainer_seconds, narrow_seconds, plain_seconds = (
        statistics.median(r[i] for r in rounds) for i in range(4))
    threads = torch.get_num_threads()
    flops = fit_flops(cfg, n_seeds, len(y), len(yv))
    trainer = flops / trainer_seconds
    trainer_vs_gemm = statistics.median(flops / seconds / limit
                                        for limit, seconds, _, _ in rounds)
    # (b'): matmuls at (a)'s speed plus what does not shrink with the width
    trainer_vs_gemm_ceiling = statistics.median(flops / limit / (flops / limit + narrow)
                                                for limit, _, narrow, _ in rounds)
    pipeline = repro_study(args.quick)
    bench = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick, "cpu_model": timings.cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "torch_threads": threads, "torch_version": torch.__version__,
        "cell": f"relu-he, {n_seeds} seeds x {cfg.train.epochs} epochs, "
                f"depth {cfg.model.depth}, width {cfg.model.width}, batch {cfg.train.batch_size}",
        "gemm_flops": gemm, "trainer_flops": trainer, "trainer_vs_gemm": trainer_vs_gemm,
        "trainer_seconds": trainer_seconds, "narrow_trainer_seconds": narrow_seconds,
        "trainer_vs_gemm_ceiling": trainer_vs_gemm_ceiling, "plain_loop_seconds": plain_seconds,
        "speedup_vs_plain_loop": statistics.median(plain / seconds
                                                   for _, seconds, _, plain in rounds),
        "trainer_val_accuracy": trainer_acc, "plain_loop_val_accuracy": plain_acc,
        **pipeline,
    }
    reports = workspace_root() / "reports"
    write_json(reports / "bench.json", bench)
    with atomic_path(reports / "bench.md") as tmp:
        tmp.write_text(render(bench))
    print(render(bench))


TARGETS = {"trainer_vs_gemm": ">= 0.6", "speedup_vs_plain_loop": ">= 1.5",
           "pipeline_overhead": "<= 0.2", "noop_repro_seconds": "<= 3",
           "added_init_fixed_seconds": "<= 15", "warm_added_init_fixed_seconds": "<= 15"}


def render(bench: dict) -> str:
    rows = "\n".join(f"| {key} | {bench[key]:.4g} | {TARGETS.get(key, '')} |" for key in [
        "gemm_flops", "trainer_flops", "trainer_vs_gemm", "trainer_vs_gemm_ceiling",
        "speedup_vs_plain_loop", "pipeline_overhead", "overhead_floor", "dvc_alone_seconds",
        "cell_import_seconds", "mlflow_alone_seconds", "evaluate_seconds", "report_seconds",
        "noop_repro_seconds", "added_init_training_seconds", "added_init_fixed_seconds",
        "warm_added_init_training_seconds", "warm_added_init_fixed_seconds",
        "threshold_edit_seconds", "distributed_seconds", "distributed_vs_repro",
        "ray_workers", "ray_start_seconds", "ray_memory_mb", "cell_peak_rss_mb"] if key in bench)
    return (f"# initlab benchmark\n\n`make bench{'-quick' if bench['quick'] else ''}` on "
            f"{bench['date']}: {bench['cpu_model']}, {bench['cores']} cores, torch "
            f"{bench['torch_version']} with {bench['torch_threads']} threads. Cell: "
            f"{bench['cell']}; study: {bench['cells']} cells, {bench['runs']} runs (the floor "
            f"logged {bench['mlflow_alone_runs']}); the inits added in (g) and (g'): "
            f"{bench['added_init']}, {bench['warm_added_init']}.\n\n| measure | value | target |\n"
            f"|---|---|---|\n{rows}\n\nPer-seed validation accuracy, trainer "
            f"{[round(a, 4) for a in bench['trainer_val_accuracy']]} vs plain loop "
            f"{[round(a, 4) for a in bench['plain_loop_val_accuracy']]}.\n")


if __name__ == "__main__":
    main()
