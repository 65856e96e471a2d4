"""Atomic file and folder writes: an output is either complete or absent, never half-written,
also when a stage is stopped (`sigterm_as_exit`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(target: Path):
    """Yield a temporary sibling of `target` (file or folder) to write into; rename it onto
    `target` only when the block succeeds, so a crash or a kill leaves no partial output."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _remove(target)
        os.replace(tmp, target)
    finally:
        _remove(tmp)


def sigterm_as_exit(signum, frame):
    """A SIGTERM handler: exit as for Ctrl-C, running every `finally` on the way (outputs
    complete or absent, an MLflow run ended KILLED)."""
    raise SystemExit(128 + signum)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_study_output(name: str) -> bool:
    """A tracked file that the study writes (reports/, every dvc.lock): a copy of the project
    starts without them."""
    return name.startswith("reports/") or name.endswith("dvc.lock")


def copy_project(source: Path, target: Path) -> Path:
    """The git-tracked files of `source` minus the study's outputs, as a fresh git repo at
    `target` (DVC needs one): a throwaway project for tests and the benchmark."""
    files = subprocess.run(["git", "ls-files"], cwd=source, capture_output=True, text=True,
                           check=True).stdout.split()
    for name in files:
        if is_study_output(name) or not (source / name).exists():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)
    git = ["git", "-c", "user.name=initlab", "-c", "user.email=initlab@localhost"]
    for command in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-qm", "copy"]):
        subprocess.run(command, cwd=target, check=True)
    return target
