"""wtmp: store the host's login sessions in the ``logins`` table.

Reads ``<wtmp_path>.1`` (when present) and then ``wtmp_path``, pairs logins with
their ends (scanner.collectors.wtmp) and merges them into ``logins``, keyed by
(user, line, host, pid, start):

- a login not stored yet is inserted;
- a stored login that was open and now has an end gets that end and end_reason;
- nothing is ever deleted here, so a report can name logins after wtmp rotated.

A login still open in the database but older than every record read (its start
rotated out of both files) is fed to the pairing first, so a logout or reboot in
the current file still closes it.

The logins are written in their own transaction just before the session commits,
not as part of the session: they are facts about the host, true whether or not
this session is stored. A missing, empty or damaged wtmp file is a warning in
the session, never a failed collect.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa

from scanner.collectors.wtmp import USER_PROCESS, Login, Record, pair_logins, read_wtmp
from scanner.config import Config
from scanner.schema import LOGIN_COLUMNS, column_list
from scanner.session import SessionBuilder

_KEY = ("user", "line", "host", "pid", "start")
_TIME = pa.timestamp("us", tz="UTC")
_ARROW = {"user": pa.string(), "line": pa.string(), "host": pa.string(), "pid": pa.int32(),
          "start": _TIME, "end": _TIME, "end_reason": pa.string()}
_MATCH = " AND ".join(f'l."{name}" = n."{name}"' for name in _KEY)

_OPEN_BEFORE = """
SELECT "user", line, host, pid, start FROM logins
WHERE "end" IS NULL AND start < ? ORDER BY start
"""
# One row per key: wtmp.1 and wtmp can overlap after a copytruncate rotation.
_STAGE = f"""
CREATE OR REPLACE TEMP TABLE wtmp_logins AS
SELECT * FROM wtmp_batch
QUALIFY row_number() OVER (PARTITION BY {", ".join(f'"{k}"' for k in _KEY)}
                           ORDER BY "end" IS NULL, "end") = 1
"""
_CLOSE = f"""
UPDATE logins l SET "end" = n."end", end_reason = n.end_reason
FROM wtmp_logins n WHERE {_MATCH} AND l."end" IS NULL AND n."end" IS NOT NULL
"""
_INSERT = f"""
INSERT INTO logins ({column_list(LOGIN_COLUMNS)})
SELECT {column_list(LOGIN_COLUMNS, "n.")} FROM wtmp_logins n
WHERE NOT EXISTS (SELECT 1 FROM logins l WHERE {_MATCH})
"""


def wtmp_paths(wtmp_path: str) -> list[str]:
    """The files to read, oldest first: the rotated one if present, then the live one."""
    rotated = wtmp_path + ".1"
    return [rotated, wtmp_path] if os.path.exists(rotated) else [wtmp_path]


def store_logins(con: duckdb.DuckDBPyConnection, records: list[Record]) -> tuple[int, int]:
    """Pair ``records`` (file order) and merge them into ``logins``; (inserted, closed)."""
    if not records:
        return 0, 0
    oldest = min(record.time for record in records)
    seeds = [Record(USER_PROCESS, pid, line, "", user, host, start)
             for user, line, host, pid, start in con.execute(_OPEN_BEFORE, [oldest]).fetchall()]
    logins = pair_logins(seeds + records)
    if not logins:
        return 0, 0
    con.register("wtmp_batch", _arrow(logins))
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(_STAGE)
            closed = con.execute(_CLOSE).fetchall()[0][0]
            inserted = con.execute(_INSERT).fetchall()[0][0]
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.unregister("wtmp_batch")
        con.execute("DROP TABLE IF EXISTS temp.wtmp_logins")
    return inserted, closed


def _arrow(logins: list[Login]) -> pa.Table:
    columns = {name: [getattr(login, name) for login in logins] for name in _ARROW}
    return pa.table({name: pa.array(values, _ARROW[name]) for name, values in columns.items()})


def run(config: Config, builder: SessionBuilder) -> None:
    """Collector entry point: read wtmp, warn about what could not be read, store logins."""
    wtmp_path = config.section("wtmp").get("wtmp_path", "")
    records, warnings = read_wtmp(wtmp_paths(wtmp_path))
    for warning in warnings:
        builder.warn(f"wtmp: {warning}")
    store_logins(builder.con, records)
