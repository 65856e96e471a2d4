"""Results kept by the hash of everything they depend on, so that a stage does work in
proportion to what changed: `compose` keeps each cell's config, `evaluate` each cell's test
rows and which runs MLflow holds, `report` each figure. A stage that finds its input's key
reuses the bytes instead of computing them again; what it writes is byte for byte what a run
from scratch writes (tests/test_pipeline.py). Nothing here is a record: deleting .cache/ only
makes the next stages slower.

    .cache/<kind>/<key>     one entry, written atomically
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import pickle
import sys
from pathlib import Path

from initlab.io import atomic_path
from initlab.paths import tracking_root

CACHE = ".cache"


def key(*parts: str | bytes) -> str:
    """The hash of `parts`, each length-prefixed (("ab", "c") and ("a", "bc") differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


class Memo:
    """The entries of one kind. Under the project's root, shared by the temp copies that
    `dvc exp run --queue` works in."""

    def __init__(self, kind: str):
        self.folder = tracking_root() / CACHE / kind

    def get(self, key: str) -> bytes | None:
        try:
            return (self.folder / key).read_bytes()
        except FileNotFoundError:
            return None

    def put(self, key: str, data: bytes = b"") -> None:
        with atomic_path(self.folder / key) as tmp:
            tmp.write_bytes(data)

    def __contains__(self, key: str) -> bool:
        return (self.folder / key).is_file()



def kept(kind: str, output: str | None = None):
    """Decorate a pure function of picklable arguments: its result is kept by the hash of the
    package's source and its arguments (`fingerprint`). With `output`, the name of its path
    argument, the function writes a file instead: the file's bytes are kept (the path is not
    hashed)."""
    def decorate(fn):
        signature = inspect.signature(fn)
        # by its import name: `python -m` runs a module as __main__
        module = getattr(sys.modules[fn.__module__].__spec__, "name", fn.__module__)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            path = bound.arguments.pop(output) if output else None
            entry = key(_source(), module, fn.__qualname__,
                        *[part for name, value in sorted(bound.arguments.items())
                          for part in (name, fingerprint(value))])
            entries = Memo(kind)
            if (data := entries.get(entry)) is not None:
                if output is None:
                    return pickle.loads(data)
                Path(path).write_bytes(data)
                return None
            result = fn(*args, **kwargs)
            entries.put(entry, pickle.dumps(result) if output is None else
                        Path(path).read_bytes())
            return result
        return wrapper
    return decorate


def fingerprint(value) -> bytes:
    """The bytes that stand for an argument in a key: a table by its columns, dtypes and values,
    not its row labels (a frame cut from a larger one keeps the labels it had there, which
    change when other rows come and go: the functions kept read columns, never labels);
    containers element by element; anything else pickled."""
    import pandas as pd

    if isinstance(value, pd.Series):
        value = value.to_frame()
    if isinstance(value, pd.DataFrame):
        return key(pickle.dumps([(str(c), str(t)) for c, t in value.dtypes.items()]),
                   pd.util.hash_pandas_object(value, index=False).to_numpy().tobytes()).encode()
    if isinstance(value, dict):
        return key("dict", *[fingerprint(part) for item in value.items() for part in item]) \
            .encode()
    if isinstance(value, (list, tuple)):
        return key(type(value).__name__, *map(fingerprint, value)).encode()
    return pickle.dumps(value)


@functools.cache
def _source() -> str:
    from initlab.digest import package_digest

    return package_digest()
