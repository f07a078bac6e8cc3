"""Start the forkserver the worker processes are forked from.

Workers come from a forkserver that has imported only what they run, not from a fork
of the collect process, which would inherit DuckDB's threads. This module imports
nothing heavy, so the console entry point (scanner/launch.py) can start the forkserver
before anything else loads.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import context, forkserver

#: Modules the forkserver imports once, so that each worker starts warm.
PRELOAD = ["scanner.worker", "pyarrow.parquet"]


def prestart() -> context.BaseContext:
    """Start the forkserver without waiting for it; returns the context workers use.
    Later calls return at once."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    forkserver.ensure_running()
    return ctx
