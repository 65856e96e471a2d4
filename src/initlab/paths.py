"""Where the project's files are: the workspace (the folder with dvc.yaml), the MLflow store's
owner, and the paths the stages hand each other."""

from __future__ import annotations

from pathlib import Path

from initlab.errors import ConfigError

# Every cell's composed config: runs/configs/<sweep>/<cell>.yaml (the compose stage).
CELL_CONFIGS = "runs/configs"
# A row per run (cell x seed): `evaluate` writes it, `report` reads it.
RESULTS_CSV = Path("reports") / "results.csv"


def workspace_root() -> Path:
    """The nearest directory at or above the cwd that holds dvc.yaml: where conf/, data/ and
    runs/ live (a `dvc exp run --queue` temp copy is a workspace of its own)."""
    here = Path.cwd().resolve()
    for directory in (here, *here.parents):
        if (directory / "dvc.yaml").is_file():
            return directory
    raise ConfigError(f"no dvc.yaml at or above {here}: run initlab from inside the project")


def tracking_root() -> Path:
    """The project that owns the MLflow store. DVC runs queued experiments in a temp copy
    under `<project>/.dvc/tmp/exps/`; their runs belong in the project's store, not the copy's."""
    root = workspace_root()
    parts = root.parts
    if ".dvc" in parts:
        return Path(*parts[: parts.index(".dvc")])
    return root
