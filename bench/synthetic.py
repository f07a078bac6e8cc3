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

from scanner.hasher import DETAIL_FIELDS
from scanner.session import SessionBuilder
from scanner.store import SessionInfo, connect
from scanner.walk import WALK_FIELDS, Batch

#: The conf/ default of [file] assume_nochange.
STAT_KEY = ("mtime", "ctime", "size", "device", "inode")
_BASE_TIME = 1_700_000_000 * 10**9
_FILE_MODE = stat.S_IFREG | 0o644


def url_of(index: int) -> str:
    """The url of synthetic file ``index`` (a few hundred files per directory)."""
    return f"file:///usr/share/pkg{index // 300}/file{index}.txt"


def walk_batches(indexes: Iterable[int], *, version: dict[int, int] | None = None,
                 batch_size: int = 16384) -> list[Batch]:
    """Walk batches of regular files; ``version[i]`` > 0 gives file i a later mtime/ctime/size."""
    version = version or {}
    batches: list[Batch] = []
    batch: Batch = {name: [] for name in WALK_FIELDS}
    for index in indexes:
        bump = version.get(index, 0)
        values = (url_of(index), _FILE_MODE, 0, 0, 2048 + index % 4096 + bump,
                  _BASE_TIME + index * 1000 + bump, _BASE_TIME + index * 1000 + bump,
                  index + 1, 2049, 1, None, False, None)
        for name, value in zip(WALK_FIELDS, values):
            batch[name].append(value)
        if len(batch["url"]) == batch_size:
            batches.append(batch)
            batch = {name: [] for name in WALK_FIELDS}
    if batch["url"]:
        batches.append(batch)
    return batches


def details_for(batches: list[Batch], *, version: dict[int, int] | None = None) -> tuple[list, ...]:
    """Hash-worker result columns (DETAIL_FIELDS) for every entry of ``batches``."""
    version = version or {}
    columns: tuple[list, ...] = tuple([] for _ in DETAIL_FIELDS)
    for batch in batches:
        for url, size, mtime, ctime in zip(batch["url"], batch["size"], batch["mtime_ns"],
                                           batch["ctime_ns"]):
            digest = blake3.blake3(f"{url}:{size}".encode()).digest()
            row = (url, digest, None, None, size, mtime, ctime, None, None, None)
            for column, value in zip(columns, row):
                column.append(value)
    return columns


def new_db(directory: Path) -> duckdb.DuckDBPyConnection:
    """A fresh syschangemon database in ``directory``."""
    return connect(directory)


def commit_session(con: duckdb.DuckDBPyConnection, batches: list[Batch], details: tuple[list, ...] | None,
                   ) -> SessionInfo:
    """One session from synthetic batches: load, merge, commit. With ``details`` None the
    builder decides what needs details and gets exactly those rows."""
    builder = SessionBuilder(con, stat_key=STAT_KEY)
    for batch in batches:
        builder.add_walk_batch(batch)
    if details is None:
        needed = {task[0] for task in builder.tasks_needing_detail()}
        if needed:
            subset = [{name: [v for v, url in zip(b[name], b["url"]) if url in needed] for name in b}
                      for b in batches]
            builder.add_details(details_for(subset))
    else:
        builder.add_details(details)
    builder.finish_files()
    return builder.commit(host="bench")
