"""Synthetic walk batches and worker results for the database micro-benchmarks.

They feed SessionBuilder exactly what the walk and the hash workers would, without a
tree on disk, so a benchmark of the bulk load, the merge or the diff measures only the
database side.
"""

from __future__ import annotations

import stat
from collections.abc import Iterable
from pathlib import Path

import blake3
import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from scanner.hasher import detail_tables
from scanner.session import SessionBuilder
from scanner.store import SessionInfo, connect
from scanner.worker import entry_table

#: The conf/ default of [file] assume_nochange.
STAT_KEY = ("mtime", "ctime", "size", "device", "inode")
_BASE_TIME = 1_700_000_000 * 10**9
_FILE_MODE = stat.S_IFREG | 0o644


def url_of(index: int) -> str:
    """The url of synthetic file ``index`` (a few hundred files per directory)."""
    return f"file:///usr/share/pkg{index // 300}/file{index}.txt"


def walk_batches(indexes: Iterable[int], *, version: dict[int, int] | None = None,
                 batch_size: int = 16384) -> list[pa.Table]:
    """Walk tables (ENTRY_SCHEMA) of regular files; ``version[i]`` > 0 gives file i a later
    mtime/ctime/size."""
    version = version or {}
    batches: list[pa.Table] = []
    rows: list[tuple] = []
    for index in indexes:
        bump = version.get(index, 0)
        rows.append((url_of(index), _FILE_MODE, 0, 0, 2048 + index % 4096 + bump,
                     _BASE_TIME + index * 1000 + bump, _BASE_TIME + index * 1000 + bump,
                     index + 1, 2049, 1, None, False, None))
        if len(rows) == batch_size:
            batches.append(entry_table(rows, None))
            rows = []
    if rows:
        batches.append(entry_table(rows, None))
    return batches


def details_for(batches: list[pa.Table]) -> list[pa.Table]:
    """Hash-worker results (DETAIL_SCHEMA tables) for every entry of ``batches``."""
    tables = []
    for batch in batches:
        columns = batch.select(["url", "size", "mtime_ns", "ctime_ns"]).to_pydict()
        count = batch.num_rows
        digests = [blake3.blake3(f"{url}:{size}".encode()).digest()
                   for url, size in zip(columns["url"], columns["size"])]
        nothing = [None] * count
        tables.append(detail_tables((columns["url"], digests, nothing, nothing, columns["size"],
                                     columns["mtime_ns"], columns["ctime_ns"], nothing, nothing,
                                     nothing))[0])
    return tables


def new_db(directory: Path) -> duckdb.DuckDBPyConnection:
    """A fresh syschangemon database in ``directory``."""
    return connect(directory)


def commit_session(con: duckdb.DuckDBPyConnection, batches: list[pa.Table],
                   details: list[pa.Table] | None) -> SessionInfo:
    """One session from synthetic batches: load, merge, commit. With ``details`` None the
    builder decides what needs details and gets exactly those rows."""
    builder = SessionBuilder(con, stat_key=STAT_KEY)
    for batch in batches:
        builder.add_walk_batch(batch)
    if details is None:
        needed = builder.tasks_needing_detail().column("url")
        if len(needed):
            details = details_for([b.filter(pc.is_in(b.column("url"), needed)) for b in batches])
    for table in details or []:
        builder.add_details(table)
    builder.finish_files()
    return builder.commit(host="bench")
