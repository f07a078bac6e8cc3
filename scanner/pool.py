"""The parent's side of the worker pool: hand out walk and hash tasks, gather results.

The walk is split by directory: a task walks about ``budget`` entries and returns the
directories it did not reach, which go back into the queue, so both (all) cores walk
until the tree is done. One process cannot lstat fast enough to keep up with find;
two can, and the parent meanwhile only loads finished Arrow tables into DuckDB.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
from multiprocessing import forkserver
from collections import deque
from contextlib import contextmanager
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from scanner import worker
from scanner.walk import Directory, WalkSpec
from scanner.worker import TaskResult

#: Entries a walk task gathers before it hands back the rest of its directories: big
#: enough that a task costs far more than its round trip, small enough to share the tree.
WALK_BUDGET = 8192
#: The same when the task also reads every file it finds (a first session).
WALK_AND_READ_BUDGET = 4096
#: Budget while the queue holds fewer directories than there are workers: a small
#: first bite, so the top of the tree fans out to every worker quickly.
FIRST_BUDGET = 256
#: Files per hash task: big enough to amortize the IPC (1024 measured 6 % faster than
#: 256 on a 60k-file baseline), small enough to balance the last tasks.
CHUNK = 1024


def prestart() -> multiprocessing.context.BaseContext:
    """Start the forkserver the workers are forked from, without waiting for it.

    Workers come from a forkserver that has imported only what they run, not from a
    fork of this process, which would inherit DuckDB's threads. Call it early, before
    opening the database, so it warms up meanwhile; later calls return at once.
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["scanner.worker", "pyarrow.parquet"])
    forkserver.ensure_running()
    return context


@contextmanager
def _main_script_hidden() -> Iterator[None]:
    """Keep new workers from running the main script again.

    multiprocessing has each new process import the parent's main script, in case a
    task refers to something defined there. Ours never do, and the script (the
    console script, pytest) imports the whole CLI: that would delay every worker's
    first task, and a script gone missing (a package upgrade) would make the pool
    restart failing workers forever.
    """
    main = sys.modules["__main__"]
    path = main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        if path is not None:
            main.__file__ = path


class WorkerPool:
    """A pool of worker processes, started on first use (or by ``start``)."""

    def __init__(self, workers: int, options: dict[str, Any], spec: WalkSpec | None) -> None:
        self.workers, self.options, self.spec = workers, options, spec
        self.pool = None
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.in_flight = 0

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()

    def start(self) -> None:
        """Start the workers now (else the first task does)."""
        if self.pool is None:
            context = prestart()
            with _main_script_hidden():
                self.pool = context.Pool(self.workers, initializer=worker.init_worker,
                                         initargs=(self.options, self.spec))

    def walk(self, bases: list[str], *, with_details: bool) -> Iterator[TaskResult]:
        """Walk the tree below ``bases``; yields each task's result as it arrives."""
        self._submit(worker.bases_task, (bases, with_details))
        todo: deque[Directory] = deque()
        budget = WALK_AND_READ_BUDGET if with_details else WALK_BUDGET
        while self.in_flight:
            result = self._next()
            todo.extend(result.pending)
            yield result
            while todo and self.in_flight < 2 * self.workers:
                # Split what is left between the free slots; take from the end (depth-first).
                share = max(1, len(todo) // (2 * self.workers))
                batch = [todo.pop() for _ in range(min(share, len(todo)))]
                bite = budget if len(todo) >= self.workers else FIRST_BUDGET
                self._submit(worker.walk_task, (batch, bite, with_details))

    def details(self, tasks: pa.Table) -> Iterator[TaskResult]:
        """Read the entries of a (url, st_mode, inode, device) table in chunks; yields each
        chunk's result. Only a few chunks wait in the pool's queue at a time, so memory
        stays flat however many files changed."""
        for batch in tasks.to_batches(max_chunksize=CHUNK):
            chunk = list(zip(*(column.to_pylist() for column in batch.columns)))
            self._submit(worker.detail_task, (chunk,))
            while self.in_flight >= 2 * self.workers:
                yield self._next()
        while self.in_flight:
            yield self._next()

    def _submit(self, function, args: tuple) -> None:
        self.start()
        self.pool.apply_async(function, args, callback=self.results.put,
                              error_callback=self.results.put)
        self.in_flight += 1

    def _next(self) -> TaskResult:
        result = self.results.get()
        self.in_flight -= 1
        if isinstance(result, BaseException):
            raise result
        return result
