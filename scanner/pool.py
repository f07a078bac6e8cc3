"""The parent's side of the worker pool: hand out walk and hash tasks, gather results.

The walk is split by directory: a task walks about ``budget`` entries and returns the
directories it did not reach, which go back into the queue, so both (all) cores walk
until the tree is done. One process cannot lstat fast enough to keep up with find;
two can. Results come back as Parquet files (scanner/staging.py), so the parent only
counts them and decides what to hand out next.
"""

from __future__ import annotations

import os
import queue
import sys
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from scanner import worker
from scanner.errors import SysChangeMonError
from scanner.forkserver import prestart
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
#: The pool grows to its readers when one file in WAITED_SHARE of those read so far
#: (and at least WAITED_MIN) was not in the page cache.
WAITED_SHARE = 8
WAITED_MIN = 32


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


_WORKER_DIED = "a worker process died (killed, or out of memory?); nothing of this run was stored"


class WorkerError(SysChangeMonError):
    """A worker process died (killed, out of memory): the session cannot be complete."""


class WorkerPool:
    """A pool of worker processes, started on first use (or by ``start``).

    It starts ``workers`` processes and grows to ``readers`` once reads wait on the
    disk: with a warm cache, processes beyond the cores only share them out (a warm
    210,870-file baseline took 6 % more CPU with 4 workers than with 2); with a cold
    one, the number of reads in flight decides (60,000 files cold: 4.0-4.4 s with 4,
    4.4-4.9 s with 2). The extra workers are a second executor, started when the tasks
    so far report that at least one file in WAITED_SHARE of those read was not cached.

    concurrent.futures rather than multiprocessing.Pool: when a worker dies (the OOM
    killer, a crash in a library) the pending tasks fail at once, where Pool would start
    a new worker and leave the lost task's caller waiting forever, holding the run lock.
    """

    def __init__(self, workers: int, options: dict[str, Any], spec: WalkSpec | None,
                 *, readers: int | None = None) -> None:
        self.workers, self.options, self.spec = workers, options, spec
        self.readers = max(readers or workers, workers)
        #: Executors and the tasks each has in flight; a second joins when reads wait.
        self.executors: list[ProcessPoolExecutor] = []
        self.sizes: list[int] = []
        self.loads: list[int] = []
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.read = self.waited = 0

    @property
    def in_flight(self) -> int:
        """Tasks submitted whose result has not been taken yet."""
        return sum(self.loads)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            # Failing or interrupted: what the workers are doing is thrown away anyway.
            self.terminate()
        for executor in self.executors:
            executor.shutdown(wait=True, cancel_futures=True)

    def terminate(self) -> None:
        """Stop every worker now: the tasks in flight fail (with WorkerError)."""
        # (The executor has no public way to stop its workers before Python 3.14.)
        for executor in list(self.executors):
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                if process.is_alive():
                    process.terminate()

    def start(self) -> None:
        """Start the workers now (else the first task does)."""
        if not self.executors:
            self._add(self.workers)

    def _add(self, processes: int) -> None:
        self.executors.append(ProcessPoolExecutor(processes, mp_context=prestart(),
                                                  initializer=worker.init_worker,
                                                  initargs=(self.options, self.spec, os.getpid())))
        self.sizes.append(processes)
        self.loads.append(0)

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
        # The executor with the fewest tasks in flight per process.
        index = min(range(len(self.loads)), key=lambda each: self.loads[each] / self.sizes[each])
        with _main_script_hidden():  # workers are started on demand, by a submit
            try:
                future = self.executors[index].submit(function, *args)
            except BrokenProcessPool:  # a worker died since the last result came in
                raise WorkerError(_WORKER_DIED) from None
        future.add_done_callback(lambda done: self.results.put((index, done)))
        self.loads[index] += 1

    def _next(self) -> TaskResult:
        index, future = self.results.get()
        self.loads[index] -= 1
        try:
            result = future.result()
        except BrokenProcessPool:
            raise WorkerError(_WORKER_DIED) from None
        self._widen_if_waiting(result)
        return result

    def _widen_if_waiting(self, result: TaskResult) -> None:
        """Start the readers beyond the first workers once the cache proves cold."""
        self.read += result.read
        self.waited += result.waited
        if len(self.executors) == 1 and self.readers > self.workers and \
                self.waited >= WAITED_MIN and self.waited * WAITED_SHARE >= self.read:
            self._add(self.readers - self.workers)
            self.workers = self.readers
