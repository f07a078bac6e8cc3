"""The DuckDB database: opening it safely, the run lock, and the session queries.

One file, ``db.duckdb``, in a directory private to its owner (0700, file 0600). The
schema comes from scanner.schema; a stored schema version lets later releases
migrate. Every write that makes a session visible happens in one transaction.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from scanner.errors import LockedError, NoBaselineError, NotFoundError, StorageError, UsageError
from scanner.schema import SCHEMA_VERSION, TABLES, create_table

DB_FILE = "db.duckdb"
LOCK_FILE = "lock"
#: DuckDB's share of memory. With Python and the libraries, a collect of a million files
#: then peaks at about 480 MB; 512MB ran a no-change collect 1 s faster at 650 MB.
MEMORY_LIMIT = "320MB"
APPLICATION = "syschangemon"


@dataclass(frozen=True)
class SessionInfo:
    """A stored session as list-sessions and the reports show it."""

    id: int
    uuid: str
    host: str
    start_time: datetime
    end_time: datetime
    item_count: int
    status: str
    warnings: str | None
    digest: bytes | None = None  #: the session's link in the hash chain


def prepare_dir(directory: Path) -> None:
    """Create the storage directory 0700 (and tighten an existing one we own)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.stat().st_uid == os.geteuid():
            os.chmod(directory, 0o700)
    except OSError as error:
        raise StorageError(f"{directory}: cannot create storage directory: {error.strerror}") from None


@contextmanager
def run_lock(directory: Path) -> Iterator[None]:
    """Hold the storage lock for the duration of a command that writes.

    flock is released by the kernel when the holder dies, so a killed run never
    blocks the next one; the pid in the file only serves the message.
    """
    prepare_dir(directory)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise LockedError(f"syschangemon is already running (pid {holder}); "
                              f"lock {path}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def connect(directory: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the database in ``directory`` and check it is ours."""
    path = directory / DB_FILE
    if read_only and not path.exists():
        raise NotFoundError(f"{path}: no database yet; run 'syschangemon collect' first")
    if not read_only:
        # The directory is 0700 before DuckDB creates the file, so the file is private
        # from its first byte even before the chmod below.
        prepare_dir(directory)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
        # No progress bar: under cron, anything printed becomes a mail.
        con.execute("SET enable_progress_bar = false")
        # A monitor should stay small next to what it watches; big sorts and joins
        # spill into the (private) storage directory instead.
        con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
        # Row order in tables means nothing here (every reader sorts), and keeping it
        # would hold a whole million-row insert in memory instead of spilling it.
        con.execute("SET preserve_insertion_order = false")
        if not read_only:
            con.execute(f"SET temp_directory = '{directory / 'duckdb.tmp'}'")
    except duckdb.Error as error:
        raise StorageError(f"{path}: cannot open database: {_first_line(error)}") from None
    try:
        _check_or_create(con, path, read_only)
    except BaseException:
        con.close()
        raise
    if not read_only:
        for side in (path, path.with_name(path.name + ".wal")):
            if side.exists():
                os.chmod(side, 0o600)
    return con


def _check_or_create(con: duckdb.DuckDBPyConnection, path: Path, read_only: bool) -> None:
    tables = {row[0] for row in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    if not tables:
        if read_only:
            raise StorageError(f"{path}: empty database")
        with transaction(con):
            for name in TABLES:
                con.execute(create_table(name))
            con.executemany("INSERT INTO meta VALUES (?, ?)",
                            [("application", APPLICATION), ("schema_version", str(SCHEMA_VERSION))])
        return
    if "meta" not in tables:
        raise StorageError(f"{path}: not a syschangemon database (no meta table); "
                           "move it away or point [storage] dir elsewhere")
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    if meta.get("application") != APPLICATION:
        raise StorageError(f"{path}: not a syschangemon database")
    version = int(meta.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise StorageError(f"{path}: schema version {version} is newer than this "
                           f"syschangemon understands ({SCHEMA_VERSION})")
    missing = set(TABLES) - tables
    if missing:
        raise StorageError(f"{path}: damaged database, missing tables: {', '.join(sorted(missing))}")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def list_sessions(con: duckdb.DuckDBPyConnection) -> list[SessionInfo]:
    """All sessions, oldest first."""
    rows = con.execute(
        "SELECT id, uuid, host, start_time, end_time, item_count, status, warnings, digest "
        "FROM sessions ORDER BY id").fetchall()
    return [SessionInfo(*row) for row in rows]


def find_session(con: duckdb.DuckDBPyConnection, uuid: str | None, *, offset: int = 0) -> SessionInfo:
    """The session named by ``uuid`` (a unique prefix works), or the newest minus ``offset``."""
    if uuid is None:
        row = first_row(
            con, "SELECT id, uuid, host, start_time, end_time, item_count, status, warnings, digest "
            "FROM sessions ORDER BY id DESC LIMIT 1 OFFSET ?", [offset])
        if row is None:
            raise NotFoundError("no session stored yet; run 'syschangemon collect' first"
                                if offset == 0 else "only one session is stored")
        return SessionInfo(*row)
    rows = con.execute(
        "SELECT id, uuid, host, start_time, end_time, item_count, status, warnings, digest "
        "FROM sessions WHERE starts_with(uuid, ?) ORDER BY id", [uuid.lower()]).fetchall()
    if not rows:
        raise NotFoundError(f"no session with UUID {uuid}")
    if len(rows) > 1:
        raise NotFoundError(f"UUID prefix {uuid} names {len(rows)} sessions; give more of it")
    return SessionInfo(*rows[0])


def set_meta(con: duckdb.DuckDBPyConnection, values: dict[str, str]) -> None:
    """Store settings in the meta table, replacing earlier values of the same keys."""
    con.execute("DELETE FROM meta WHERE key IN (SELECT unnest($keys))", {"keys": list(values)})
    con.executemany("INSERT INTO meta VALUES (?, ?)", list(values.items()))


def first_row(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> tuple | None:
    """The first row of a query, reading the result to its end.

    DuckDB 2 keeps a partly fetched result open on the connection and refuses
    register() until it is finished, so nothing here uses fetchone().
    """
    rows = con.execute(sql, params).fetchmany(1) if params is not None else con.execute(sql).fetchmany(1)
    con.complete() if hasattr(con, "complete") else None
    return rows[0] if rows else None


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: object = None) -> object:
    """The single value of a one-row, one-column query (a DML statement's row count too)."""
    row = first_row(con, sql, params)
    return row[0] if row else None


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error (a failed COMMIT has already ended it)."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        try:
            con.execute("ROLLBACK")
        except duckdb.Error:
            pass  # the failed statement or COMMIT already aborted the transaction
        raise


def select_sessions(con: duckdb.DuckDBPyConnection, old_uuid: str | None,
                    new_uuid: str | None) -> tuple[SessionInfo, SessionInfo]:
    """The sessions to compare: -o/-u, or the newest and the one before it."""
    new = find_session(con, new_uuid)
    if old_uuid is not None:
        old = find_session(con, old_uuid)
        if old.id >= new.id:
            raise UsageError(f"the old session {old.uuid} (-o) is not older than the new "
                             f"session {new.uuid} (-u); swap them")
        return old, new
    previous = scalar(con, "SELECT uuid FROM sessions WHERE id < ? ORDER BY id DESC LIMIT 1",
                      [new.id])
    if previous is None:
        if scalar(con, "SELECT count(*) FROM sessions") == 1:
            raise NoBaselineError(f"only the baseline session {new.uuid} exists, so no report "
                                  "was made; collect again to compare with it")
        raise NotFoundError(f"no session is older than {new.uuid}")
    return find_session(con, previous), new
