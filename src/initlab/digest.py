"""Digests of source code: what a trained cell depends on, so that DVC retrains a cell when,
and only when, the code that trains *it* changes.

A cell's digest (`cell_digest`) covers every module that `import initlab.train` loads, with
what belongs to other cells or to the study as a whole cut out first:

- the registries (inits, data-dependent inits, activations): the other entries, and the
  functions and classes only they name; the cell's own entry and the shared helpers stay;
- the schema's study-level sections (the report's thresholds, the sweeps' lists) and the
  cell list (`study_cells`): they decide which cells there are, not what one computes.

So adding an init or an activation retrains only its own cells, editing the report or a
threshold retrains none, and an edit to the loop, the model, the probes or the data code
retrains every cell. Light on imports (the source parsing is `initlab.pruning`): the fork
server's client, a process per stage, imports this module for `package_digest`.
"""

from __future__ import annotations

import hashlib
import os

# Set in a fork server (`initlab.forkserver`), whose first import is the trainer: the files
# that import loaded, the training files, which the stages it forks inherit (`initlab.compose`
# then lists them without a fresh interpreter).
SERVED_TRAINING_FILES: list[str] | None = None

# module (path inside the package) -> (its registry variable, top-level names never hashed)
PRUNED = {
    "inits/__init__.py": ("INITS", ()),
    "inits/data_dependent.py": ("DATA_INITS", ()),
    "activations.py": ("ACTIVATIONS", ()),
    "schema.py": (None, ("ReportConfig", "GridConfig", "MoreSeedsConfig", "DepthSweepConfig",
                         "BatchnormSweepConfig", "SECTIONS")),
    "cells.py": (None, ("study_cells",)),
}


def files_digest(files, texts: dict[str, str] | None = None) -> str:
    """sha256 over (path inside the package, sha256 of the file, or of `texts[path]`), the
    files in the order of their paths' parts."""
    files = sorted(map(str, files), key=lambda file: file.split(os.sep))
    package = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
    digest = hashlib.sha256()
    for file in files:
        name = os.path.relpath(file, package).replace(os.sep, "/")
        content = (texts or {}).get(name)
        if content is None:
            with open(file, "rb") as f:
                body = hashlib.file_digest(f, "sha256").hexdigest()
        else:
            body = hashlib.sha256(content.encode()).hexdigest()
        digest.update(f"{name} {body}\n".encode())
    return digest.hexdigest()


def package_digest() -> str:
    """The digest of every source file of the package: a fork server's identity."""
    return files_digest(os.path.join(folder, name)
                        for folder, _, names in os.walk(os.path.dirname(__file__))
                        for name in names if name.endswith(".py"))


def cell_digest(files, activation: str, init: str) -> str:
    """The digest of the training code that a cell of `activation` x `init` runs (`files`:
    the modules `import initlab.train` loads); a data-dependent init keeps its first draw's
    init (its `pre_init`) too."""
    from initlab.pruning import pre_inits, pruned_source  # parsing: not for the client

    files = list(map(str, files))
    package = os.path.commonpath(files)

    def source(name: str) -> str:
        with open(os.path.join(package, name)) as f:
            return f.read()

    pre_init = pre_inits(source("inits/data_dependent.py")).get(init)
    keep = {"inits/__init__.py": {init, pre_init} - {None},
            "inits/data_dependent.py": {init}, "activations.py": {activation}}
    texts = {name: pruned_source(source(name), registry, dropped, keep.get(name, set()))
             for name, (registry, dropped) in PRUNED.items()
             if os.path.join(package, name) in files}
    return files_digest(files, texts)
