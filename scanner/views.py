"""Documented views for ad hoc SQL over history (``syschangemon sql``).

They are TEMP objects created on the connection, so a read-only database needs no
schema change and the views always match this release:

- ``sessions``, ``reports``, ``logins``, ``contents``, ``versions``: the tables.
- ``items``: the current items, with readable columns (``path``, ``mtime``, ``ctime``
  as timestamps, ``hash`` as hex, ``mode_octal``).
- ``items_at(session)``: the items as of a session, by UUID (or a unique prefix) or id.
- ``changes``: every version boundary: ``session_id``, ``session_uuid``,
  ``started``, ``kind`` (added / removed / changed) and the item's url.
"""

from __future__ import annotations

import duckdb

_READABLE = """
    since, until, url,
    CASE WHEN starts_with(url, 'file://') THEN url[8:] END AS path,
    type, mode, printf('%04o', mode) AS mode_octal, uid, gid, user_name, group_name, size,
    make_timestamptz(mtime_ns // 1000) AS mtime, make_timestamptz(ctime_ns // 1000) AS ctime,
    mtime_ns, ctime_ns, inode, device, nlink, target, xattrs, lower(hex(hash)) AS hash,
    lower(hex(content)) AS content, lower(hex(stderr)) AS stderr, exit_status, note, error
"""

VIEWS = f"""
CREATE OR REPLACE TEMP VIEW items AS
SELECT {_READABLE} FROM versions WHERE until IS NULL;

CREATE OR REPLACE TEMP MACRO session_id_of(s) AS (
    SELECT id FROM sessions
    WHERE starts_with(uuid, lower(CAST(s AS VARCHAR))) OR CAST(id AS VARCHAR) = CAST(s AS VARCHAR)
    ORDER BY id LIMIT 1);

CREATE OR REPLACE TEMP MACRO items_at(s) AS TABLE
SELECT {_READABLE} FROM versions
WHERE since <= session_id_of(s) AND (until IS NULL OR until > session_id_of(s));

CREATE OR REPLACE TEMP VIEW changes AS
WITH opened AS (SELECT since AS session_id, url FROM versions),
     closed AS (SELECT until AS session_id, url FROM versions WHERE until IS NOT NULL),
     bounds AS (
        SELECT coalesce(o.session_id, c.session_id) AS session_id, coalesce(o.url, c.url) AS url,
               CASE WHEN c.url IS NULL THEN 'added' WHEN o.url IS NULL THEN 'removed'
                    ELSE 'changed' END AS kind
        FROM opened o FULL OUTER JOIN closed c ON o.session_id = c.session_id AND o.url = c.url)
SELECT b.session_id, s.uuid AS session_uuid, s.start_time AS started, b.kind, b.url
FROM bounds b JOIN sessions s ON s.id = b.session_id
WHERE b.session_id > (SELECT min(id) FROM sessions);
"""


def install_views(con: duckdb.DuckDBPyConnection) -> None:
    """Create the documented views and macros on ``con``."""
    con.execute(VIEWS)
