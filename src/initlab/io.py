"""Atomic file and folder writes: an output is either complete or absent, never half-written,
also when a stage is stopped (`sigterm_as_exit`)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
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
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
