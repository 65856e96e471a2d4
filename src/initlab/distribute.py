"""Train the study's stale cells on a Ray cluster; DVC stays the record.

    python -m initlab.distribute [--address HOST:PORT] [--threads 2] [--gpus 0]
                                 [--resources JSON] [--record-every 10]

1. `dvc repro prepare compose` (the data, the cells' configs); the train stages that `dvc
   status` calls changed are the stale cells, and those DVC's run-cache holds are restored;
2. each other stale cell is one Ray task (`train_on_node`): `--threads` CPUs (its torch
   threads, at most one per seed), `--gpus` of a GPU (a fraction packs small cells onto one
   GPU), the custom `--resources` it needs; the prepared data go to the object store once;
3. each result comes back as bytes and is verified (the config and data it was trained on,
   the digest of the training code the worker ran: a worker with other code is refused),
   written into runs/ atomically with its timings (node, CPU model), and recorded in the
   sweeps' dvc.lock in batches, every `--record-every` seconds (10) and on Ctrl-C or SIGTERM
   (`dvc commit --force`,
   which also fills the run-cache): an interrupted run keeps what it recorded, and the next
   trains only what is missing;
4. `dvc repro` then runs what is left (evaluate, report): MLflow and the report are what a
   plain `dvc repro` gives.

With no address, Ray starts on this machine's cores; with one, the driver joins that cluster
(`ray start --head` / `ray start --address=...`: README, "Beyond one machine"). A node or a
worker that dies mid-cell has its cell retried elsewhere; a cell that raises is reported by
name, the others go on, and the command exits non-zero naming the cells not trained. Ray's
usage statistics are off and its dashboard is not started.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path

from initlab import timings
from initlab.errors import ConfigError, reported_errors
from initlab.io import atomic_path, sha256
from initlab.paths import CELL_CONFIGS, workspace_root

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
TRAIN_STAGE = "train_"  # the sweeps' stages: sweeps/<sweep>/dvc.yaml:train_<sweep>@<cell>
BATCH = 50  # train stages per `dvc commit` (it rewrites the lock once per target)
RETRIES = 3  # a cell's task is retried this often when its worker or node dies


def stale_cells(root: Path) -> list[str]:
    """The train stages that `dvc status` calls changed, as `dvc commit` targets, in the
    pipeline's order."""
    listed = subprocess.run(["dvc", "status", "--json"], cwd=root, check=True,
                            capture_output=True, text=True).stdout
    return [name for name in json.loads(listed or "{}")
            if name.split(":")[-1].startswith(TRAIN_STAGE)]


def restore_from_run_cache(root: Path, targets: list[str]) -> dict[str, tuple[Path, Path]]:
    """Check out the cells DVC's run-cache holds (as `dvc repro` would); the rest, each with
    its cell's config file and output folder (the stage's dep under runs/configs/, its out)."""
    from dvc.repo import Repo
    from dvc.stage.cache import RunCacheNotFoundError

    left = {}
    with Repo(str(root)) as repo:
        for target in targets:
            (stage,) = repo.stage.collect(target)
            try:
                repo.stage_cache.restore(stage)
            except RunCacheNotFoundError:
                config = next(dep.fs_path for dep in stage.deps
                              if Path(dep.fs_path).is_relative_to(root / CELL_CONFIGS))
                left[target] = (Path(config), Path(stage.outs[0].fs_path))
    return left


def prepared_data(root: Path) -> dict[str, bytes]:
    folder = root / "data" / "prepared"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@functools.cache
def _training_files() -> list[str]:
    from initlab.compose import training_files

    return training_files()


def train_on_node(stage: str, config_name: str, config: bytes, data: dict[str, bytes],
                  threads: int) -> dict:
    """A Ray task: train one cell (DVC's `stage`) in a scratch workspace of this node, with its
    config and the prepared data as sent; return its folder (a tar), its timings and what it
    trained on."""
    import ray

    from initlab.cells import load_cell_config
    from initlab.digest import cell_digest
    from initlab.train import train_cell

    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="initlab-cell-") as scratch:
        root = Path(scratch)
        (root / "dvc.yaml").write_text("stages: {}\n")
        for name, blob in data.items():
            (root / "data" / "prepared").mkdir(parents=True, exist_ok=True)
            (root / "data" / "prepared" / name).write_bytes(blob)
        path = root / CELL_CONFIGS / config_name
        path.parent.mkdir(parents=True)
        path.write_bytes(config)
        os.environ.update(INITLAB_CELL_THREADS=str(threads), DVC_STAGE=stage)
        os.chdir(root)
        try:
            cfg = load_cell_config(path)
            code = cell_digest(_training_files(), cfg.activation.name, cfg.init.name)
            if code != cfg.code:
                return {"refused": code}
            out = train_cell(cfg)
            packed = io.BytesIO()
            with tarfile.open(fileobj=packed, mode="w") as tar:
                tar.add(out, arcname=".")
            ran = {k: v for k, v in timings.read(out).items()
                   if k not in ("config_sha256", "git_commit")}
            return {"tar": packed.getvalue(),
                    "timings": {**ran, "node": ray.get_runtime_context().get_node_id()[:12]},
                    "config_sha256": sha256(path),
                    "data_sha256": sha256(root / "data" / "prepared" / "manifest.json"),
                    "code": code}
        finally:
            os.chdir(here)


def verify(result: dict, root: Path, config: Path, data_sha: str) -> str | None:
    """Why a result may not be recorded, or None."""
    if "refused" in result:
        return (f"the worker runs other training code (digest {result['refused'][:12]}, the "
                "cell's is another): install the same initlab on every node")
    if result["config_sha256"] != sha256(config):
        return f"trained on another config than {config.relative_to(root)}"
    if result["data_sha256"] != data_sha:
        return "trained on other data than data/prepared"
    return None


def record(cell_dir: Path, result: dict) -> None:
    """The cell's folder into runs/ (complete or absent), its timings beside it (where it ran:
    the node's host, Ray node id and CPU model)."""
    with atomic_path(cell_dir) as tmp:
        with tarfile.open(fileobj=io.BytesIO(result["tar"])) as tar:
            tar.extractall(tmp, filter="data")
    timings.record(cell_dir, **result["timings"])


def commit(root: Path, targets: list[str], order: list[str]) -> None:
    """Record the cells in their sweeps' dvc.lock (and DVC's run-cache), in batches, each in
    the pipeline's `order` (a lock lists its stages as they were first recorded: a study
    recorded in one batch has the lock `dvc repro` writes)."""
    targets = sorted(targets, key=order.index)
    for start in range(0, len(targets), BATCH):
        subprocess.run(["dvc", "commit", "--force", "--quiet", *targets[start:start + BATCH]],
                       cwd=root, check=True)


def collect(root: Path, pending: dict, todo: dict, order: list[str], data_sha: str,
            failed: dict, every: float) -> None:
    """Take each cell's result as it comes, verify it, write it into runs/ and record it in
    the locks: once `every` seconds have passed since the last record (or BATCH cells came),
    at the end, and on an interrupt (Ctrl-C, SIGTERM); a driver killed outright loses the
    record of at most `every` seconds of results, which the next run trains again. `failed`
    gets each cell not trained, with why."""
    import ray

    done, per_node, recorded, committed = 0, Counter(), [], time.monotonic()
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            target = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as error:  # the cell raised (a bad config), or exhausted retries
                failed[target] = str(error).strip().splitlines()[-1]
                continue
            config, cell_dir = todo[target]
            problem = verify(result, root, config, data_sha)
            if problem:
                failed[target] = problem
                continue
            node = f"{result['timings']['host']} ({result['timings']['node']})"
            record(cell_dir, result)
            recorded.append(target)
            done, per_node[node] = done + 1, per_node[node] + 1
            print(f"distribute: {done}/{len(todo)} cells ({target.split('@')[1]}); per node: "
                  + ", ".join(f"{n} {c}" for n, c in sorted(per_node.items())), flush=True)
            if len(recorded) >= BATCH or time.monotonic() - committed >= every:
                commit(root, recorded, order)
                recorded, committed = [], time.monotonic()
                print(f"distribute: {done} cells recorded in the locks", flush=True)
    finally:
        commit(root, recorded, order)


def distribute(args) -> int:
    import ray

    root = workspace_root()
    for stage in ("prepare", "compose"):  # one at a time: the lock lists them as `dvc repro`
        subprocess.run(["dvc", "repro", stage], cwd=root, check=True)
    stale = stale_cells(root)
    todo = restore_from_run_cache(root, stale)
    if len(todo) < len(stale):
        commit(root, [t for t in stale if t not in todo], stale)
        print(f"distribute: {len(stale) - len(todo)} cells from DVC's run-cache")
    failed = {}
    if todo:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False,
                 logging_level="WARNING")
        data_sha = sha256(root / "data" / "prepared" / "manifest.json")
        data = ray.put(prepared_data(root))
        # by its module's name, not `__main__`'s: the workers import it
        from initlab.distribute import train_on_node

        task = ray.remote(train_on_node).options(
            num_cpus=args.threads, num_gpus=args.gpus, resources=json.loads(args.resources),
            max_retries=RETRIES, retry_exceptions=False)
        pending = {task.remote(t, str(config.relative_to(root / CELL_CONFIGS)),
                               config.read_bytes(), data, args.threads): t
                   for t, (config, _) in todo.items()}
        print(f"distribute: {len(todo)} cells to train on {len(ray.nodes())} nodes", flush=True)
        try:
            collect(root, pending, todo, stale, data_sha, failed, args.record_every)
        finally:
            ray.shutdown()
    if failed:
        for target, why in failed.items():
            print(f"distribute: {target} not trained: {why}", file=sys.stderr)
        print(f"distribute: {len(failed)} cells not trained; nothing else was run",
              file=sys.stderr)
        return 1
    return subprocess.run(["dvc", "repro"], cwd=root).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=None,
                        help="a Ray cluster's head, host:port (default: a local Ray)")
    parser.add_argument("--threads", type=int, default=2, help="CPUs (torch threads) a cell")
    parser.add_argument("--gpus", type=float, default=0.0,
                        help="GPUs a cell (0.25: four cells share a GPU)")
    parser.add_argument("--resources", default="{}",
                        help="custom Ray resources a cell needs, as JSON")
    parser.add_argument("--record-every", type=float, default=10.0,
                        help="seconds between records of the cells done in the locks")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stops as Ctrl-C does
    with reported_errors():
        if args.threads < 1:
            raise ConfigError(f"--threads={args.threads} is not allowed: at least 1")
        started = time.perf_counter()
        try:
            status = distribute(args)
        except KeyboardInterrupt:
            print("distribute: interrupted; the cells recorded stay recorded, the next run "
                  "trains the rest", file=sys.stderr)
            raise SystemExit(130) from None
    print(f"distribute: {time.perf_counter() - started:.0f} s")
    raise SystemExit(status)


if __name__ == "__main__":
    main()
