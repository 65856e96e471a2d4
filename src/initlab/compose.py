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

Hydra composes a cell in ~0.2 s: a cell's file is kept (`initlab.memo`) by the hash of what
it is composed from (`compose_key`), so an edit recomposes only the cells it touches.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import yaml
from omegaconf import OmegaConf

from initlab import digest, memo
from initlab.cells import STUDY_LEVEL, cell_config, study_cells
from initlab.config import GROUPS, PARAMS_FILE, load_config
from initlab.errors import reported_errors
from initlab.io import atomic_path, sha256
from initlab.paths import CELL_CONFIGS, workspace_root

COMPOSED = "composed"  # the memo's kinds: a cell's composed file, and the training files
TRAINING_FILES = "training_files"

# Run in a fresh interpreter: the initlab source files that training a cell loads.
_TRAINING_MODULES = """import json, sys, initlab.train
print(json.dumps(sorted(m.__file__ for name, m in sys.modules.items()
                        if name.split(".")[0] == "initlab")))"""


def training_files() -> list[str]:
    """The initlab source files that `import initlab.train` loads in a fresh interpreter: the
    code a cell can run (the evaluation and the report are not among them). A stage forked
    from a fork server has them from the server's own import; otherwise kept by what decides
    them: the package's source, the interpreter and its PYTHONPATH."""
    if digest.SERVED_TRAINING_FILES is not None:
        return digest.SERVED_TRAINING_FILES
    kept = memo.Memo(TRAINING_FILES)
    key = memo.key(str(Path(__file__).parent), digest.package_digest(), sys.executable,
                   os.environ.get("PYTHONPATH", ""))
    if (listed := kept.get(key)) is None:
        listed = subprocess.run([sys.executable, "-c", _TRAINING_MODULES], check=True,
                                capture_output=True).stdout
        kept.put(key, listed)
    return json.loads(listed)


def compose_cell(overrides: list[str]):
    """A cell's config: the study's config composed with the cell's overrides, cut to what the
    cell depends on (`initlab.cells.cell_config`)."""
    return cell_config(load_config(overrides))


def study_inputs() -> tuple[str, dict[Path, str]]:
    """What every cell's file is composed from, read once: the key of this module and
    params.yaml without what only the study uses, and the sha256 of each conf/ file by its
    path inside conf/."""
    root = workspace_root()
    params = yaml.safe_load((root / PARAMS_FILE).read_text())
    for section in STUDY_LEVEL:
        params.pop(section, None)
    params.get("study", {}).pop("name", None)
    conf = root / "conf"
    return memo.key(sha256(Path(__file__)), json.dumps(params)), {
        p.relative_to(conf): sha256(p) for p in sorted(conf.rglob("*.yaml"))}


def compose_key(overrides: list[str], code: str, inputs: tuple[str, dict[Path, str]]) -> str:
    """What a cell's file is composed from: its overrides, the study's `inputs`
    (`study_inputs`) with the conf/ files it can read (every group's but activation's and
    init's, of which its own), and its training code's digest."""
    study, conf = inputs
    chosen = dict(o.split("=", 1) for o in overrides if o.split("=", 1)[0] in GROUPS)
    return memo.key(study, json.dumps(overrides), code, *[
        f"{path}:{sha}" for path, sha in conf.items()
        if path.parent.name not in chosen or path.stem == chosen[path.parent.name]])


def main() -> None:
    with reported_errors():
        overrides = sys.argv[1:]
        cells = study_cells(load_config(overrides))
        files = training_files()
        composed, texts, codes, inputs = memo.Memo(COMPOSED), {}, {}, study_inputs()
        for cell in cells:
            chosen = dict(o.split("=", 1) for o in cell.overrides)
            pair = (chosen["activation"], chosen["init"])
            if pair not in codes:  # a digest per (activation, init), shared by the sweeps
                codes[pair] = digest.cell_digest(files, *pair)
            key = compose_key([*overrides, *cell.overrides], codes[pair], inputs)
            texts[cell.config_path] = (key, codes[pair], composed.get(key))
        missing = [cell for cell in cells if texts[cell.config_path][2] is None]
        if missing:
            # Forked, as in the fork server: torch is imported here (the config's registries)
            # but has run no op.
            with multiprocessing.get_context("fork").Pool(
                    min(len(missing), len(os.sched_getaffinity(0)))) as pool:
                configs = pool.map(compose_cell,
                                   [[*overrides, *cell.overrides] for cell in missing])
            for cell, config in zip(missing, configs):
                key, code, _ = texts[cell.config_path]
                config.code = code
                text = OmegaConf.to_yaml(config).encode()
                texts[cell.config_path] = (key, code, text)
                composed.put(key, text)
        with atomic_path(workspace_root() / CELL_CONFIGS) as tmp:
            for config_path, (_, _, text) in texts.items():
                path = tmp / Path(config_path).relative_to(CELL_CONFIGS)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(text)
        print(f"compose: {len(cells)} cells -> {CELL_CONFIGS}/ ({len(missing)} composed, the "
              f"rest as before; training code of {len(files)} modules, {len(codes)} digests: "
              "one per activation x init)")


if __name__ == "__main__":
    main()
