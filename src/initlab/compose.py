"""The `compose` stage: every training cell's config, composed once, one file per cell.

    python -m initlab.compose

writes runs/configs/<sweep>/<cell>.yaml for every cell of `initlab.cells.study_cells`: the
cell's resolved config (`initlab.cells.cell_config`: conf/ + params.yaml + the sweep's
overrides, without what only the study as a whole uses) and, as `code`, the digest of the
code that trains it (`initlab.digest.cell_digest`: its own init and activation, not the
others). A train stage depends on its cell's file and the prepared data alone: DVC retrains
exactly the cells whose config or training code changed, and checks 2 deps per cell instead
of every conf and source file (the no-op `dvc repro`, and the lock file DVC rewrites after
every stage, shrink with it).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

from omegaconf import OmegaConf

from initlab.cells import cell_config, study_cells
from initlab.config import load_config
from initlab.digest import cell_digest
from initlab.errors import reported_errors
from initlab.io import atomic_path
from initlab.paths import CELL_CONFIGS, workspace_root

# Run in a fresh interpreter: the initlab source files that training a cell loads.
_TRAINING_MODULES = """import json, sys, initlab.train
print(json.dumps(sorted(m.__file__ for name, m in sys.modules.items()
                        if name.split(".")[0] == "initlab")))"""


def training_files() -> list[str]:
    """The initlab source files that `import initlab.train` loads in a fresh interpreter: the
    code a cell can run (the evaluation and the report are not among them)."""
    return json.loads(subprocess.run([sys.executable, "-c", _TRAINING_MODULES], check=True,
                                     capture_output=True, text=True).stdout)


def compose_cell(overrides: list[str]):
    """A cell's config: the study's config composed with the cell's overrides, cut to what the
    cell depends on (`initlab.cells.cell_config`)."""
    return cell_config(load_config(overrides))


def main() -> None:
    with reported_errors():
        overrides = sys.argv[1:]
        cells = study_cells(load_config(overrides))
        # Hydra composes a config in ~0.2 s of pure Python: the processes of a pool, one per
        # core, compose the cells, one of them first listing the training code (mostly a fresh
        # interpreter's imports). Forked, as in the fork server: torch is imported here (the
        # config's registries) but has run no op.
        with multiprocessing.get_context("fork").Pool(len(os.sched_getaffinity(0))) as pool:
            listed = pool.apply_async(training_files)
            configs = pool.map(compose_cell, [[*overrides, *cell.overrides] for cell in cells])
            files = listed.get()
        codes = {}  # a digest per (activation, init), shared by the sweeps
        with atomic_path(workspace_root() / CELL_CONFIGS) as tmp:
            for cell, composed in zip(cells, configs):
                key = (composed.activation.name, composed.init.name)
                if key not in codes:
                    codes[key] = cell_digest(files, *key)
                composed.code = codes[key]
                path = tmp / Path(cell.config_path).relative_to(CELL_CONFIGS)
                path.parent.mkdir(parents=True, exist_ok=True)
                OmegaConf.save(composed, path)
        print(f"compose: {len(cells)} cells -> {CELL_CONFIGS}/ (training code of "
              f"{len(files)} modules, {len(codes)} digests: one per activation x init)")


if __name__ == "__main__":
    main()
