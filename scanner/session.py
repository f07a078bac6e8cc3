"""Build one session: stage walked entries and collector items, then merge them into
the versioned items in a single transaction.

Staging lives in TEMP tables (memory, never the database file), so a process killed at
any moment before COMMIT leaves the database exactly as it was.
"""

from __future__ import annotations

import grp
import pwd
import socket
import uuid as uuidlib
from collections.abc import Iterable
from datetime import datetime, timezone

import duckdb
import orjson
import pyarrow as pa

from scanner.chain import seal
from scanner.hasher import DETAIL_FIELDS
from scanner.schema import COMPARED, CONTENT_COLUMNS, ITEM_COLUMNS, column_list, create_table, quote
from scanner.store import SessionInfo, scalar, set_meta, transaction
from scanner.walk import WALK_FIELDS, Batch

_WALK_TYPES = {
    "url": pa.string(), "st_mode": pa.int64(), "uid": pa.int64(), "gid": pa.int64(),
    "size": pa.int64(), "mtime_ns": pa.int64(), "ctime_ns": pa.int64(),
    "inode": pa.uint64(), "device": pa.uint64(), "nlink": pa.int64(),
    "target": pa.string(), "force": pa.bool_(), "error": pa.string(),
}
_DETAIL_TYPES = {
    "url": pa.string(), "hash": pa.binary(), "xattrs": pa.string(), "error": pa.string(),
    "size": pa.int64(), "mtime_ns": pa.int64(), "ctime_ns": pa.int64(),
    "content": pa.binary(), "note": pa.string(), "data": pa.binary(),
}
_ARROW_OF_SQL = {"VARCHAR": pa.string(), "INTEGER": pa.int32(), "BIGINT": pa.int64(),
                 "UBIGINT": pa.uint64(), "BLOB": pa.binary(), "BOOLEAN": pa.bool_()}
#: Stat attributes users may name in assume_nochange, and the columns they compare.
STAT_KEY_COLUMNS = {"mtime": "mtime_ns", "ctime": "ctime_ns", "size": "size",
                    "device": "device", "inode": "inode", "uid": "uid", "gid": "gid",
                    "mode": "mode"}

_SETUP = """
CREATE OR REPLACE TEMP MACRO file_type(m) AS CASE (m & 61440)
    WHEN 32768 THEN 'file' WHEN 16384 THEN 'dir' WHEN 40960 THEN 'symlink'
    WHEN 4096 THEN 'fifo' WHEN 49152 THEN 'socket' WHEN 8192 THEN 'chardev'
    WHEN 24576 THEN 'blockdev' ELSE 'unknown' END;
CREATE OR REPLACE TEMP VIEW current_versions AS SELECT * FROM versions WHERE until IS NULL;
"""

#: Patch unreadable-directory rows (url + error only) onto the directory's own row.
_PATCH_DIR_ERRORS = """
UPDATE walk SET error = e.error
FROM (SELECT url, error FROM walk WHERE st_mode IS NULL) e
WHERE walk.url = e.url AND walk.st_mode IS NOT NULL
"""
_ORPHAN_DIR_ERRORS = """
SELECT e.url, e.error FROM walk e
WHERE e.st_mode IS NULL AND NOT EXISTS (SELECT 1 FROM walk w WHERE w.url = e.url AND w.st_mode IS NOT NULL)
"""

#: Every walked entry gets a row: details from this scan, or reused from the current version.
_BUILD_FILE_ITEMS = """
INSERT INTO scan
SELECT w.url, file_type(w.st_mode), (w.st_mode & 4095)::INTEGER, w.uid, w.gid, u.name, g.name,
       coalesce(d.size, w.size), coalesce(d.mtime_ns, w.mtime_ns), coalesce(d.ctime_ns, w.ctime_ns),
       w.inode, w.device, w.nlink, w.target,
       CASE WHEN d.url IS NULL THEN v.xattrs ELSE d.xattrs END,
       CASE WHEN d.url IS NULL THEN v.hash ELSE d.hash END,
       CASE WHEN d.url IS NULL THEN v.content ELSE d.content END,
       NULL, NULL,
       CASE WHEN d.url IS NULL THEN v.note ELSE d.note END,
       coalesce(w.error, d.error)
FROM walk w
LEFT JOIN detail d ON d.url = w.url
LEFT JOIN current_versions v ON v.url = w.url
LEFT JOIN names_user u ON u.id = w.uid
LEFT JOIN names_group g ON g.id = w.gid
WHERE w.st_mode IS NOT NULL
"""

#: Current items missing from the scan. Items below a directory that could not be
#: listed this time are not "removed": they keep their version until it can be read.
_VANISHED = """
CREATE OR REPLACE TEMP TABLE vanished AS
SELECT v.url FROM current_versions v ANTI JOIN scan s ON s.url = v.url
WHERE NOT EXISTS (SELECT 1 FROM walk e WHERE e.st_mode IS NULL AND starts_with(v.url, e.url || '/'))
"""


class SessionBuilder:
    """Collects one session's items into staging tables, then commits them as a session."""

    def __init__(self, con: duckdb.DuckDBPyConnection, *, stat_key: Iterable[str],
                 paranoid: bool = False, chain_key: bytes | None = None) -> None:
        self.con = con
        self.chain_key = chain_key
        self.paranoid = paranoid
        self.stat_key = [STAT_KEY_COLUMNS[name] for name in stat_key]
        self.warnings: list[str] = []
        self.start_time = datetime.now(timezone.utc)
        con.execute(_SETUP)
        walk_columns = tuple(_column(name, _WALK_TYPES[name]) for name in WALK_FIELDS)
        detail_columns = tuple(_column(name, _DETAIL_TYPES[name]) for name in DETAIL_FIELDS)
        for name, columns in (("walk", walk_columns), ("detail", detail_columns),
                              ("scan", ITEM_COLUMNS), ("new_contents", CONTENT_COLUMNS)):
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
            con.execute(create_table(name, temp=True, columns=columns))
        self.has_history = bool(scalar(
            con, "SELECT count(*) > 0 FROM current_versions"))

    def warn(self, message: str) -> None:
        """Record a warning in the session (shown by reports and list-sessions)."""
        self.warnings.append(message)

    def add_walk_batch(self, batch: Batch) -> None:
        """Bulk-load one batch of walked entries."""
        table = pa.table({name: pa.array(batch[name], _WALK_TYPES[name]) for name in WALK_FIELDS})
        self.con.register("walk_batch", table)
        self.con.execute("INSERT INTO walk SELECT * FROM walk_batch")
        self.con.unregister("walk_batch")

    def add_details(self, columns: tuple[list, ...]) -> None:
        """Bulk-load hash worker results (DETAIL_FIELDS columns)."""
        table = pa.table({name: pa.array(values, _DETAIL_TYPES[name])
                          for name, values in zip(DETAIL_FIELDS, columns)})
        self.con.register("detail_batch", table)
        self.con.execute("INSERT INTO detail SELECT * EXCLUDE (data), NULL FROM detail_batch")
        self.con.execute("INSERT INTO new_contents SELECT content, data, octet_length(data) "
                         "FROM detail_batch WHERE data IS NOT NULL")
        self.con.unregister("detail_batch")

    def add_items(self, rows: list[dict]) -> None:
        """Stage non-file items (commands, sysinfo): dicts keyed by ITEM_COLUMNS names."""
        if not rows:
            return
        table = pa.table({c.name: pa.array([row.get(c.name) for row in rows], _ARROW_OF_SQL[c.sql])
                          for c in ITEM_COLUMNS})
        self.con.register("item_batch", table)
        self.con.execute(f"INSERT INTO scan SELECT {column_list(ITEM_COLUMNS)} FROM item_batch")
        self.con.unregister("item_batch")

    def add_content(self, digest: bytes, data: bytes) -> None:
        """Stage a content blob (stored once per digest)."""
        self.con.execute("INSERT INTO new_contents VALUES (?, ?, ?)", [digest, data, len(data)])

    def tasks_needing_detail(self) -> list[tuple[str, int, int, int]]:
        """Walked entries whose digest and xattrs cannot be reused from the current version."""
        # The walk holds st_mode; versions hold the permission bits as mode.
        walked = {c: "(w.st_mode & 4095)" if c == "mode" else f"w.{quote(c)}" for c in self.stat_key}
        reuse = " AND ".join(f"{value} IS NOT DISTINCT FROM v.{quote(c)}"
                             for c, value in walked.items())
        if self.paranoid or not reuse:
            reuse = "FALSE"
        query = f"""
            SELECT w.url, w.st_mode, w.inode, w.device FROM walk w
            LEFT JOIN current_versions v ON v.url = w.url
            WHERE w.st_mode IS NOT NULL AND NOT (
                v.url IS NOT NULL AND NOT w.force AND v.error IS NULL
                AND v.type = file_type(w.st_mode)
                AND (v.hash IS NOT NULL OR file_type(w.st_mode) <> 'file')
                AND {reuse})
        """
        return self.con.execute(query).fetchall()

    def _resolve_names(self) -> None:
        """Owner and group names, looked up once per id rather than per file."""
        for kind, column, lookup in (("user", "uid", _user_name), ("group", "gid", _group_name)):
            ids = [row[0] for row in self.con.execute(
                f"SELECT DISTINCT {column} FROM walk WHERE {column} IS NOT NULL").fetchall()]
            table = pa.table({"id": pa.array(ids, pa.int64()),
                              "name": pa.array([lookup(i) for i in ids], pa.string())})
            self.con.register("names_batch", table)
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE names_{kind} AS SELECT * FROM names_batch")
            self.con.unregister("names_batch")

    def finish_files(self) -> None:
        """Turn walked entries and worker results into item rows in the scan table."""
        self.con.execute(_PATCH_DIR_ERRORS)
        for url, error in self.con.execute(_ORPHAN_DIR_ERRORS).fetchall():
            self.warn(f"{url}: {error}")
        self._resolve_names()
        self.con.execute(_BUILD_FILE_ITEMS)

    def commit(self, *, host: str | None = None) -> SessionInfo:
        """Merge the scan into the versioned items as a new session, in one transaction."""
        con = self.con
        host = host or socket.gethostname()
        session_uuid = str(uuidlib.uuid4())
        changed = " OR ".join(f"s.{quote(c)} IS DISTINCT FROM v.{quote(c)}" for c in COMPARED)
        with transaction(con):
            session_id = scalar(
                con, "SELECT greatest((SELECT coalesce(max(id), 0) FROM sessions),"
                " (SELECT coalesce(max(value::INTEGER), 0) FROM meta WHERE key = 'last_session_id')) + 1")
            con.execute(_VANISHED)
            con.execute(f"""
                CREATE OR REPLACE TEMP TABLE changed AS
                SELECT s.* FROM scan s LEFT JOIN current_versions v ON v.url = s.url
                WHERE v.url IS NULL OR {changed}""")
            con.execute("""
                UPDATE versions SET until = $sid
                WHERE until IS NULL AND url IN (
                    SELECT url FROM changed
                    UNION ALL
                    SELECT url FROM vanished)
            """, {"sid": session_id})
            con.execute(f"INSERT INTO versions SELECT $sid, NULL, {column_list(ITEM_COLUMNS)} FROM changed",
                        {"sid": session_id})
            con.execute("""
                INSERT INTO contents SELECT DISTINCT ON (digest) * FROM new_contents n
                WHERE NOT EXISTS (SELECT 1 FROM contents c WHERE c.digest = n.digest)""")
            item_count = scalar(con, "SELECT count(*) FROM scan")
            end_time = datetime.now(timezone.utc)
            digest, previous = seal(con, session_id, session_uuid, self.chain_key)
            con.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, 'closed', ?, ?, ?)",
                        [session_id, session_uuid, host, self.start_time, end_time, item_count,
                         orjson.dumps(self.warnings).decode() if self.warnings else None,
                         digest, previous])
            set_meta(con, {"last_session_id": str(session_id)})
        for name in ("walk", "detail", "scan", "new_contents", "changed", "vanished"):
            con.execute(f"DROP TABLE IF EXISTS temp.{name}")
        return SessionInfo(session_id, session_uuid, host, self.start_time, end_time, item_count,
                           "closed", orjson.dumps(self.warnings).decode() if self.warnings else None,
                           digest)


def _column(name: str, arrow_type: pa.DataType):
    from scanner.schema import Column
    sql = {pa.string(): "VARCHAR", pa.int64(): "BIGINT", pa.uint64(): "UBIGINT",
           pa.binary(): "BLOB", pa.bool_(): "BOOLEAN"}[arrow_type]
    return Column(name, sql, "")


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except (KeyError, OverflowError):
        return None  # an unknown id is not an error


def _group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except (KeyError, OverflowError):
        return None
