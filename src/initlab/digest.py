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
retrains every cell. Light on imports: the fork server's client uses `package_digest`.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

from initlab.io import sha256

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
    """sha256 over (path inside the package, sha256 of the file, or of `texts[path]`)."""
    files = sorted(map(Path, files))
    package = Path(os.path.commonpath(files)) if len(files) > 1 else files[0].parent
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(package).as_posix()
        content = (texts or {}).get(name)
        body = sha256(file) if content is None else hashlib.sha256(content.encode()).hexdigest()
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


def _top_name(node: ast.stmt) -> str | None:
    """The name a top-level statement defines (a function, a class, an assigned variable)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, (ast.Assign, ast.AnnAssign)):
        target = node.target if isinstance(node, ast.AnnAssign) else node.targets[0]
        return getattr(target, "id", None)
    return None


@functools.lru_cache(maxsize=16)
def _parsed(source: str, registry: str | None):
    """A module's top-level statements as (name, source), its registry's index among them,
    and the registry's entries as name -> (the names the entry uses, its source). Parsed once
    per source text: the study's cells and a fork server's requests share it."""
    tree = ast.parse(source)
    statements = [(_top_name(node), ast.get_source_segment(source, node)) for node in tree.body]
    if not registry:
        return statements, None, {}
    statement, entries = _registry(tree, registry)
    return statements, tree.body.index(statement), {
        name: (_names(value), ast.get_source_segment(source, value))
        for name, value in entries.items()}


@functools.lru_cache(maxsize=4)
def _pre_inits(source: str) -> dict[str, str]:
    """Each data-dependent init's `pre_init` (`DataInit(fn, pre_init, options)`)."""
    _, entries = _registry(ast.parse(source), "DATA_INITS")
    return {name: entry.args[1].value for name, entry in entries.items()}


def pruned_source(source: str, registry: str | None, dropped, keep: set[str]) -> str:
    """The module's source without: the top-level names in `dropped`; the registry's entries
    other than those in `keep` (their source kept, in order), and the top-level functions and
    classes that only other entries name."""
    statements, at, entries = _parsed(source, registry)
    mine = set().union(*[used for name, (used, _) in entries.items() if name in keep])
    others = set().union(*[used for name, (used, _) in entries.items() if name not in keep])
    removed = set(dropped) | (others - mine)
    kept = [entries[name][1] for name in sorted(keep) if name in entries]
    return "\n".join(f"{registry}: {sorted(keep)} = {kept}" if i == at else text
                     for i, (name, text) in enumerate(statements) if name not in removed)


def cell_digest(files, activation: str, init: str) -> str:
    """The digest of the training code that a cell of `activation` x `init` runs (`files`:
    the modules `import initlab.train` loads); a data-dependent init keeps its first draw's
    init (its `pre_init`) too."""
    files = list(map(Path, files))
    package = Path(os.path.commonpath(files))
    pre_init = _pre_inits((package / "inits/data_dependent.py").read_text()).get(init)
    keep = {"inits/__init__.py": {init, pre_init} - {None},
            "inits/data_dependent.py": {init}, "activations.py": {activation}}
    texts = {}
    for name, (registry, dropped) in PRUNED.items():
        path = package / name
        if path in files:
            texts[name] = pruned_source(path.read_text(), registry, dropped,
                                        keep.get(name, set()))
    return files_digest(files, texts)
