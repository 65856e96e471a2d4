"""How long each cell took, and where: the one record of wall-clock time.

    timings/<sweep>/<cell>.json     seconds initializing and training, start and end, the
                                    host (and Ray node), its CPU model, torch's threads, the
                                    git commit

A train stage writes it beside its output, never inside: what DVC hashes for a cell (its
run folder) holds only what the config and seed determine, so a rerun on the same kind of
CPU gives the same bytes and a committed dvc.lock stays true. The record is not versioned
(.gitignore); `evaluate` logs it to MLflow (tags, the runs' start and end, metrics
`init_seconds` and `train_seconds`) and `make bench` sums it. A cell restored from DVC's cache
or a remote has none: its MLflow runs carry no seconds.
"""

from __future__ import annotations

import json
import platform
import socket
import subprocess
from pathlib import Path

from initlab import layout
from initlab.io import sha256, write_json
from initlab.paths import workspace_root

TIMINGS = "timings"


def path(cell_dir: Path) -> Path:
    """<workspace>/runs/grid/relu-he -> <workspace>/timings/grid/relu-he.json"""
    root = workspace_root()
    return root / TIMINGS / Path(cell_dir).relative_to(root / "runs").with_suffix(".json")


def record(cell_dir: Path, **values) -> None:
    """Write the timings of the cell just written to `cell_dir`, with which config it trained
    (its config.yaml's hash) and where it ran: this machine unless `values` say (a cell
    trained on another node, `initlab.distribute`)."""
    write_json(path(cell_dir), {"host": socket.gethostname(), "cpu_model": cpu_model(),
                                "git_commit": git_commit(), **values,
                                "config_sha256": sha256(cell_dir / layout.CONFIG)})


def read(cell_dir: Path) -> dict | None:
    """The timings of the cell now in `cell_dir`, or None when there are none for it: trained
    elsewhere, restored from a cache, or the record is of another config's training."""
    try:
        values = json.loads(path(cell_dir).read_text())
    except FileNotFoundError:
        return None
    return values if values.get("config_sha256") == sha256(cell_dir / layout.CONFIG) else None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
