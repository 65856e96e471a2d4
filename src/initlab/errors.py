"""A bad config or input: one message naming the key or file, the value and what is allowed,
and exit status 2."""

from __future__ import annotations

import sys
from contextlib import contextmanager


class ConfigError(ValueError):
    """A config value that is well-typed but not allowed."""


@contextmanager
def reported_errors():
    """Turn a bad config or input into one clear message on stderr and exit status 2."""
    try:
        yield
    except ConfigError as e:
        print(f"initlab: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
