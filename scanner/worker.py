"""What a worker process runs: walk tasks, and hash tasks for the files to read.

The parent (scanner/pool.py) starts the workers from a forkserver that has imported
this module, so each worker starts clean (no DuckDB threads) and already warm. A task
writes what it found to a Parquet file in the staging directory (scanner/staging.py)
and returns its name: building and encoding the rows here, in parallel, keeps the
parent free.
"""

from __future__ import annotations

import os
import select
import threading
from contextlib import AbstractContextManager, nullcontext
from typing import Any, NamedTuple

import pyarrow as pa

from scanner import hasher
from scanner.hasher import DETAIL_SCHEMA
from scanner.staging import write_table
from scanner.walk import WALK_SCHEMA, Directory, Walker, WalkOutput, WalkSpec, walk_table

#: A walk task's table: the walked entry and, when the task also read it, what reading
#: found (the DETAIL_SCHEMA columns as ``d_*``; ``detailed`` tells which rows have them).
#: One row per entry: no second copy of the url, and no join to put them together.
ENTRY_SCHEMA = pa.schema(list(WALK_SCHEMA) + [pa.field("d_" + f.name, f.type) for f in DETAIL_SCHEMA][1:]
                         + [pa.field("detailed", pa.bool_())])
#: What the workers stage, by kind (scanner/staging.py): walk tasks' and hash tasks' rows.
STAGED_SCHEMAS = {"walk": ENTRY_SCHEMA, "detail": DETAIL_SCHEMA}
_walker: Walker | None = None
_staging = ""


class TaskResult(NamedTuple):
    """What a task sends back to the parent: file names and counts, not the rows."""

    walk_file: str | None        # ENTRY_SCHEMA rows, in the staging directory
    detail_file: str | None      # DETAIL_SCHEMA rows (hash tasks)
    contents: pa.Table | None    # CONTENT_SCHEMA: texts to store, if any (few)
    pending: list[Directory]
    warnings: list[str]
    walked: int                  # rows in walk_file
    unlisted: int                # of which directories that could not be listed
    read: int                    # entries read (hashed, or their xattrs read)
    bytes_hashed: int
    waited: int = 0              # of the files read, those the page cache did not hold


def init_worker(options: dict[str, Any], spec: WalkSpec | None, parent: int) -> None:
    """Pool initializer: keep the hashing options, the staging directory and the walk
    spec for every later task, and end with the ``parent`` process."""
    global _walker, _staging
    _exit_with(parent)
    hasher.init_worker(options)
    _staging = options["staging"]
    _walker = Walker(spec) if spec is not None else None


def _exit_with(parent: int) -> None:
    """End this worker as soon as the process that started the pool is gone.

    A collect killed by SIGKILL (the OOM killer, a timeout) sends its workers nothing:
    they are the forkserver's children, not its own, and a worker waiting for a task
    holds both ends of the task pipe, so it would wait forever, and the forkserver
    with it (each worker holds its "alive" pipe). A thread waits on a pidfd of the
    parent instead; once the workers are gone, the forkserver ends too.
    """
    try:
        handle = os.pidfd_open(parent)
    except ProcessLookupError:
        os._exit(1)
    except OSError:
        return  # no pidfd (Linux < 5.3): a killed run may leave idle workers behind

    def watch() -> None:
        select.select([handle], [], [])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def bases_task(paths: list[str], with_details: bool) -> TaskResult:
    """The include bases themselves, and the directories below them to walk."""
    assert _walker is not None
    with _reader(with_details) as reader:
        return _finish(_walker.bases(paths, reader), reader)


def walk_task(directories: list[Directory], budget: int, with_details: bool) -> TaskResult:
    """Walk about ``budget`` entries from ``directories``; with_details also reads each
    entry found (a first session, or --paranoid: everything is read anyway)."""
    assert _walker is not None
    with _reader(with_details) as reader:
        return _finish(_walker.walk(directories, budget, reader), reader)


def _reader(with_details: bool) -> AbstractContextManager[hasher.Reader | None]:
    """A reader for the entries a walk finds, or None when it only walks."""
    return hasher.Reader() if with_details else nullcontext()


def detail_task(tasks: list[tuple[str, int, int, int]]) -> TaskResult:
    """Digests and xattrs of (url, st_mode, inode, device) entries."""
    columns, waited = hasher.detail_batch(tasks)
    detail, contents = hasher.detail_tables(columns)
    return TaskResult(None, write_table(_staging, "detail", detail), contents, [], [], 0, 0,
                      len(tasks), hasher.bytes_hashed(columns), waited)


def entry_table(rows: list[tuple], details: tuple[list, ...] | None,
                detailed: list[bool] | None = None) -> pa.Table:
    """Walk rows, and ``detail_batch`` columns aligned with them (or None), as ENTRY_SCHEMA;
    ``detailed`` tells which rows the columns hold results for."""
    table = walk_table(rows)
    count = len(rows)
    if details is None:
        extra = [pa.nulls(count, f.type) for f in ENTRY_SCHEMA][len(WALK_SCHEMA):-1]
        detailed = [False] * count
    else:
        extra = [pa.array(values, f.type) for values, f in zip(details[1:], list(DETAIL_SCHEMA)[1:])]
    return pa.Table.from_arrays(table.columns + extra + [pa.array(detailed, pa.bool_())], schema=ENTRY_SCHEMA)


def _finish(out: WalkOutput, reader: hasher.Reader | None) -> TaskResult:
    rows = out.rows
    unlisted = sum(row[1] is None for row in rows)
    if not rows:
        return TaskResult(None, None, None, out.pending, out.warnings, 0, 0, 0, 0)
    if reader is None:
        return TaskResult(write_table(_staging, "walk", entry_table(rows, None)), None, None,
                          out.pending, out.warnings, len(rows), unlisted, 0, 0)
    # The walk handed every entry to the reader but the error rows (an unreadable
    # directory), which have no mode and nothing to read.
    columns = (None,) + reader.columns(len(rows))
    detailed = [row[1] is not None for row in rows]
    return TaskResult(write_table(_staging, "walk", entry_table(rows, columns, detailed)), None,
                      hasher.content_table(columns[7], columns[9]), out.pending, out.warnings,
                      len(rows), unlisted, len(rows) - unlisted, hasher.bytes_hashed(columns),
                      reader.waited)

