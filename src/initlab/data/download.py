"""The `download` stage: fetch the configured dataset's raw arrays into data/raw/<dataset>/."""

from __future__ import annotations

import sys

import numpy as np

from initlab.config import ConfigError, load_config, reported_errors, workspace_root
from initlab.data.sources import SOURCES
from initlab.io import atomic_path, sha256, write_json


def download(cfg) -> None:
    if cfg.dataset.source not in SOURCES:
        raise ConfigError(f"dataset.source={cfg.dataset.source!r} is not allowed: "
                          f"one of {sorted(SOURCES)}")
    arrays = SOURCES[cfg.dataset.source](cfg.dataset)
    target = workspace_root() / "data" / "raw" / cfg.dataset.name
    with atomic_path(target) as tmp:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        write_json(tmp / "manifest.json", {
            "dataset": cfg.dataset.name,
            "source": cfg.dataset.source,
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
