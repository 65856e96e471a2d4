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
retrains every cell. Light on imports: the fork server's client uses `files_digest`.
"""

from __future__ import annotations

import ast
import hashlib
import os
from pathlib import Path

# module (path inside the package) -> (its registry variable, top-level names never hashed)
PRUNED = {
    "inits/__init__.py": ("INITS", ()),
    "inits/data_dependent.py": ("DATA_INITS", ()),
    "activations.py": ("ACTIVATIONS", ()),
    "schema.py": (None, ("ReportConfig", "GridConfig", "MoreSeedsConfig", "DepthSweepConfig",
                         "BatchnormSweepConfig", "SECTIONS")),
    "cells.py": (None, ("study_cells",)),
}


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def files_digest(files, texts: dict[str, str] | None = None) -> str:
    """sha256 over (path inside the package, sha256 of the file, or of `texts[path]`)."""
    files = sorted(map(Path, files))
    package = Path(os.path.commonpath(files)) if len(files) > 1 else files[0].parent
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(package).as_posix()
        content = (texts or {}).get(name)
        body = sha256_text(content) if content is not None else \
            hashlib.sha256(file.read_bytes()).hexdigest()
        digest.update(f"{name} {body}\n".encode())
    return digest.hexdigest()


def package_digest() -> str:
    """The digest of every source file of the package: a fork server's identity."""
    return files_digest(Path(__file__).parent.rglob("*.py"))


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _registry(tree: ast.Module, variable: str) -> tuple[ast.stmt, dict[str, ast.expr]]:
    """The statement that assigns the registry dict `variable`, and its entries by name."""
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == variable:
            return node, {k.value: v for k, v in zip(node.value.keys, node.value.values)}
    raise ValueError(f"no registry {variable}")


def pruned_source(source: str, registry: str | None, dropped, keep: set[str]) -> str:
    """The module's source without: the top-level names in `dropped`; the registry's entries
    other than those in `keep` (their source kept, in order), and the top-level functions and
    classes that only other entries name."""
    tree = ast.parse(source)
    removed, kept_entries = set(dropped), []
    if registry:
        statement, entries = _registry(tree, registry)
        mine = set().union(*[_names(v) for k, v in entries.items() if k in keep])
        others = set().union(*[_names(v) for k, v in entries.items() if k not in keep])
        removed |= others - mine
        kept_entries = [ast.get_source_segment(source, entries[k]) for k in sorted(keep)
                        if k in entries]
    parts = []
    for node in tree.body:
        if registry and node is statement:
            parts.append(f"{registry}: {sorted(keep)} = {kept_entries}")
            continue
        name = getattr(node, "name", None)
        if name is None and isinstance(node, (ast.Assign, ast.AnnAssign)):
            target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
            name = getattr(target, "id", None)
        if name not in removed:
            parts.append(ast.get_source_segment(source, node))
    return "\n".join(parts)


def cell_digest(files, activation: str, init: str, pre_init: str | None = None) -> str:
    """The digest of the training code that a cell of `activation` x `init` runs (`files`:
    the modules `import initlab.train` loads; `pre_init`: a data-dependent init's first
    draw)."""
    files = list(map(Path, files))
    package = Path(os.path.commonpath(files))
    keep = {"inits/__init__.py": {init, pre_init} - {None},
            "inits/data_dependent.py": {init}, "activations.py": {activation}}
    texts = {}
    for name, (registry, dropped) in PRUNED.items():
        path = package / name
        if path in files:
            texts[name] = pruned_source(path.read_text(), registry, dropped,
                                        keep.get(name, set()))
    return files_digest(files, texts)


def pre_init_of(files, init: str) -> str | None:
    """The `pre_init` of a data-dependent init, read from its registry's source."""
    path = Path(os.path.commonpath(list(map(Path, files)))) / "inits/data_dependent.py"
    _, entries = _registry(ast.parse(path.read_text()), "DATA_INITS")
    entry = entries.get(init)
    return entry.args[1].value if isinstance(entry, ast.Call) else None
