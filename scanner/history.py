"""Queries over stored history: the items as of any session."""

from __future__ import annotations

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


#: Items that differ between sessions A < B: each changed item's newer version (the older
#: one for removed items). Only versions with a boundary in (A, B] are read.
CHANGES_BETWEEN = """
WITH old_side AS (SELECT * FROM versions WHERE since <= $old AND until > $old AND until <= $new),
     new_side AS (SELECT * FROM versions WHERE since > $old AND since <= $new
                                          AND (until IS NULL OR until > $new))
SELECT CASE WHEN o.url IS NULL THEN 'added' WHEN n.url IS NULL THEN 'removed' ELSE 'changed' END
           AS kind,
       {columns}
FROM new_side n FULL OUTER JOIN old_side o ON o.url = n.url
ORDER BY coalesce(n.url, o.url)
"""


def changes_select() -> str:
    """CHANGES_BETWEEN with export columns taken from the new side, else the old one."""
    parts = []
    for column in ITEM_COLUMNS:
        value = f"coalesce(n.{quote(column.name)}, o.{quote(column.name)})" if column.name == "url" \
            else f"CASE WHEN n.url IS NULL THEN o.{quote(column.name)} ELSE n.{quote(column.name)} END"
        parts.append(f"lower(hex({value})) AS {quote(column.name)}" if column.sql == "BLOB"
                     else f"{value} AS {quote(column.name)}")
    return CHANGES_BETWEEN.format(columns=", ".join(parts))
