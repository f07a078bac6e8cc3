"""The one definition of every stored column.

DDL, the bulk-load column order, the diff's list of compared attributes and the
export headers all derive from these tuples; tests compare the live tables with them.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Column:
    """A stored column: its name, DuckDB type and meaning (the meaning is user documentation),
    and the compression its table stores it with when DuckDB's choice costs too much."""

    name: str
    sql: str
    doc: str
    compression: str | None = None


#: Attributes of an item. A version row holds one set of them, true for a range of sessions.
ITEM_COLUMNS: tuple[Column, ...] = (
    # Paths and digests are most of a baseline's bytes. DuckDB's own choice for them
    # (dictionary + FSST, picked per segment after analysing it) made a 245,000-row
    # baseline's INSERT 0.17 s slower (0.46 against 0.29 s) and its checkpoint 0.07 s
    # slower; with ZSTD the database file is also a fifth smaller (26 against 33 MB).
    Column("url", "VARCHAR", "item key: file://<path>, command://<name> or sysinfo://; "
           "control characters, backslashes and bytes that are not UTF-8 are written \\xNN / \\\\",
           compression="zstd"),
    Column("type", "VARCHAR", "file, dir, symlink, fifo, socket, chardev, blockdev, command, sysinfo"),
    Column("mode", "INTEGER", "permission bits including setuid, setgid and sticky (07777)"),
    Column("uid", "BIGINT", "owner user id"),
    Column("gid", "BIGINT", "owner group id"),
    Column("user_name", "VARCHAR", "owner user name (NULL for an id without a name)"),
    Column("group_name", "VARCHAR", "owner group name (NULL for an id without a name)"),
    Column("size", "BIGINT", "size in bytes (output size for commands)"),
    Column("mtime_ns", "BIGINT", "modification time, nanoseconds since the epoch"),
    Column("ctime_ns", "BIGINT", "inode change time, nanoseconds since the epoch"),
    Column("inode", "UBIGINT", "inode number"),
    Column("device", "UBIGINT", "device number of the filesystem"),
    Column("nlink", "BIGINT", "number of hard links"),
    Column("target", "VARCHAR", "symlink target (escaped like url)"),
    Column("xattrs", "VARCHAR", "extended attributes (ACLs, SELinux label, capabilities) as "
           "a JSON object; values that are not printable text are hex (0x...)"),
    Column("hash", "BLOB", "digest of the content: BLAKE3, or SHA-256 with [file] hash = sha256",
           compression="zstd"),
    Column("content", "BLOB", "digest of the stored text or stdout in the contents table"),
    Column("stderr", "BLOB", "digest of a command's stderr in the contents table"),
    Column("exit_status", "INTEGER", "a command's exit status"),
    Column("note", "VARCHAR", "why content was withheld or cut (secret file, size, timeout)"),
    Column("error", "VARCHAR", "what could not be read, if anything"),
)

#: A version row: the sessions it was true for, then the item's attributes.
VERSION_COLUMNS: tuple[Column, ...] = (
    Column("since", "INTEGER", "id of the first session this version was seen in"),
    Column("until", "INTEGER", "id of the first session it was no longer true in; NULL while current"),
) + ITEM_COLUMNS

SESSION_COLUMNS: tuple[Column, ...] = (
    Column("id", "INTEGER", "session number; orders sessions"),
    Column("uuid", "VARCHAR", "session UUID, the name users see"),
    Column("host", "VARCHAR", "host name"),
    Column("start_time", "TIMESTAMPTZ", "when collection started"),
    Column("end_time", "TIMESTAMPTZ", "when collection ended"),
    Column("item_count", "BIGINT", "number of items in the session"),
    Column("status", "VARCHAR", "closed (sessions are written whole, in one transaction)"),
    Column("warnings", "VARCHAR", "JSON list of warnings (a collector that could not run...)"),
    Column("digest", "BLOB", "digest over the session's items chained to the previous session's"),
    Column("prev_digest", "BLOB", "the previous session's digest"),
)

CONTENT_COLUMNS: tuple[Column, ...] = (
    Column("digest", "BLOB", "BLAKE3 digest of data (the key items refer to)"),
    Column("data", "BLOB", "the stored bytes: text of a config file, a command's output"),
    Column("size", "BIGINT", "length of data"),
)

#: reports.mail_state values; the unsent ones are alerts nobody has received yet,
#: which retention keeps whatever their age.
MAIL_STATES = ("pending", "sent", "skipped", "refused", "none")
UNSENT_MAIL_STATES = ("pending", "refused")

REPORT_COLUMNS: tuple[Column, ...] = (
    Column("uuid", "VARCHAR", "report UUID"),
    Column("old_session", "INTEGER", "id of the older session"),
    Column("new_session", "INTEGER", "id of the newer session"),
    Column("created", "TIMESTAMPTZ", "when the report was made"),
    Column("is_empty", "BOOLEAN", "true when nothing was added, removed or changed"),
    Column("counts", "VARCHAR", "JSON object: added, removed, changed, renamed, suppressed"),
    Column("model", "VARCHAR", "the whole report model as JSON"),
    Column("mail_state", "VARCHAR", "pending, sent, skipped (empty), refused (bounced) or none (mail off)"),
    Column("sent_at", "TIMESTAMPTZ", "when a mail server accepted it"),
    Column("last_error", "VARCHAR", "the last delivery error"),
    Column("attempts", "INTEGER", "delivery attempts so far"),
)

LOGIN_COLUMNS: tuple[Column, ...] = (
    Column("user", "VARCHAR", "user name"),
    Column("line", "VARCHAR", "terminal line (pts/0, tty1...)"),
    Column("host", "VARCHAR", "remote host"),
    Column("pid", "INTEGER", "login process id"),
    Column("start", "TIMESTAMPTZ", "login time"),
    Column("end", "TIMESTAMPTZ", "logout, reboot or shutdown time; NULL while logged in"),
    Column("end_reason", "VARCHAR", "logout, boot, shutdown or still logged in"),
)

META_COLUMNS: tuple[Column, ...] = (
    Column("key", "VARCHAR", "setting name (schema_version, application)"),
    Column("value", "VARCHAR", "its value"),
)

TABLES: dict[str, tuple[Column, ...]] = {
    "meta": META_COLUMNS,
    "sessions": SESSION_COLUMNS,
    "versions": VERSION_COLUMNS,
    "contents": CONTENT_COLUMNS,
    "reports": REPORT_COLUMNS,
    "logins": LOGIN_COLUMNS,
}

#: Attributes the diff compares (everything but the key).
COMPARED: tuple[str, ...] = tuple(c.name for c in ITEM_COLUMNS if c.name != "url")


def quote(name: str) -> str:
    """An identifier quoted for DuckDB (user, end and similar are keywords)."""
    return '"' + name.replace('"', '""') + '"'


def column_list(columns: tuple[Column, ...], prefix: str = "") -> str:
    """Comma-separated, quoted column names, optionally qualified with ``prefix``."""
    return ", ".join(prefix + quote(c.name) for c in columns)


def create_table(name: str, *, temp: bool = False, columns: tuple[Column, ...] | None = None) -> str:
    """CREATE TABLE statement for one of TABLES (or for ``columns`` under ``name``)."""
    columns = columns or TABLES[name]
    body = ",\n    ".join(f"{quote(c.name)} {c.sql}"
                          + (f" USING COMPRESSION {c.compression}" if c.compression and not temp else "")
                          for c in columns)
    return f"CREATE {'TEMP ' if temp else ''}TABLE {quote(name)} (\n    {body}\n)"
