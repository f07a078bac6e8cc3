"""Queries over stored history: the items as of any session."""

from __future__ import annotations

import duckdb

from scanner.schema import ITEM_COLUMNS, quote

#: The state at session S: every version with since <= S < until.
ITEMS_AT = """
SELECT {columns} FROM versions
WHERE since <= $session AND (until IS NULL OR until > $session)
ORDER BY url
"""


def export_select(prefix: str = "") -> str:
    """Item columns for export: digests as lowercase hex, everything else as stored."""
    parts = []
    for column in ITEM_COLUMNS:
        name = prefix + quote(column.name)
        parts.append(f"lower(hex({name})) AS {quote(column.name)}" if column.sql == "BLOB" else name)
    return ", ".join(parts)


def items_at(con: duckdb.DuckDBPyConnection, session_id: int) -> duckdb.DuckDBPyConnection:
    """Execute the items-at-session query for export (rows in ITEM_COLUMNS order)."""
    return con.execute(ITEMS_AT.format(columns=export_select()), {"session": session_id})
