"""The syschangemon CLI hashing with SHA-256 instead of BLAKE3: a benchmark-only stand-in.

The hasher already knows ``algorithm = "sha256"``, but no [file] key selects it yet, so
``python -m bench --hash sha256`` runs the CLI through this module, which swaps the
option where collect hands it to the worker pool. It patches private names: when they
change, ``available()`` says so and the bench skips the row with a note.
"""

from __future__ import annotations

import sys


def available() -> bool:
    """Whether the private hook this module patches still exists."""
    try:
        from scanner import collect
    except ImportError:
        return False
    return hasattr(collect, "_LazyPool") and "options" in collect._LazyPool.__init__.__code__.co_varnames


def _patch() -> None:
    from scanner import collect

    original = collect._LazyPool.__init__

    def with_sha256(self, workers, options, *args, **kwargs):
        original(self, workers, {**options, "algorithm": "sha256"}, *args, **kwargs)

    collect._LazyPool.__init__ = with_sha256


if __name__ == "__main__":
    from scanner.cli import main

    _patch()
    sys.exit(main())
