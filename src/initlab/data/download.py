"""The `download` stage: the configured dataset's raw arrays -> data/raw/<dataset>/.

The source (`initlab.data.sources`) downloads or reads into a scratch folder inside the
stage's temporary output; data/raw/<dataset>/ appears only once every file is downloaded,
verified and converted, and the downloaded files themselves are not kept.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

from initlab.config import load_config
from initlab.data.sources import SOURCES
from initlab.errors import reported_errors
from initlab.io import atomic_path, sha256, write_json
from initlab.paths import workspace_root


def origin(dataset_cfg) -> str | dict:
    """Where the arrays came from: the local copy's folder, or each downloaded file's md5."""
    if dataset_cfg.path:
        return str(Path(dataset_cfg.path).expanduser().resolve())
    return {r.file: {"md5": r.md5} for r in dataset_cfg.resources.values()}


def download(cfg) -> None:
    target = workspace_root() / "data" / "raw" / cfg.dataset.name
    with atomic_path(target) as tmp:
        tmp.mkdir()
        scratch = tmp / "downloads"
        scratch.mkdir()
        arrays = SOURCES[cfg.dataset.source](cfg.dataset, scratch)
        shutil.rmtree(scratch)
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        write_json(tmp / "manifest.json", {
            "dataset": cfg.dataset.name,
            "source": cfg.dataset.source,
            "origin": origin(cfg.dataset),
            "files": {f"{name}.npy": {"shape": list(a.shape), "dtype": str(a.dtype),
                                      "sha256": sha256(tmp / f"{name}.npy")}
                      for name, a in arrays.items()},
        })
    print(f"download: {cfg.dataset.name} -> {target.relative_to(workspace_root())}")


def main() -> None:
    with reported_errors():
        download(load_config(sys.argv[1:]))


if __name__ == "__main__":
    main()
