"""What of a module's source a cell's digest keeps (`initlab.digest.cell_digest`): the
module without the registry entries of other cells and what only they use. Apart from
`initlab.digest` because it parses Python (`ast`), which the fork server's client, importing
`initlab.digest` for `package_digest`, would otherwise pay in every stage's process."""

from __future__ import annotations

import ast
import functools


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
def pre_inits(source: str) -> dict[str, str]:
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
