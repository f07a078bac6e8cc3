"""The report model: plain dicts and lists built from a Diff, the one input of every format.

It is stored as JSON (orjson) with the report, so a report prints the same later,
whatever has been cleaned up since. Every string in it is ready to show: times in the
local time zone of the run that made it, digests in hex, modes as ``0755 rwxr-xr-x``,
and anything that came from the host (names, content, command output, login records)
terminal-safe: control characters are written ``\\xNN`` as in urls (tabs are kept).

Layout (``format`` 1)::

    {format, uuid, created, created_utc, host, is_empty,
     counts: {added, removed, changed, renamed, suppressed, ignore_attrs, report_exclude},
     sessions: {old: SESSION, new: SESSION}, warnings: [str], logins: [str],
     changes: [{kind, url, old_url, type, directory,
                attrs: [{name, old, new}],          # old/new: str, or None for the absent side
                texts: [{label, kind, lines, omitted}]}]}  # kind "diff" or "text"
    SESSION = {id, uuid, host, start_time, end_time, item_count, warnings, chain}
"""

from __future__ import annotations

import difflib
import stat
from datetime import datetime, timezone

import duckdb
import orjson

from report.diff import Change, Diff
from scanner.collectors.wtmp import Login, format_login, relevant_logins
from scanner.paths import escape
from scanner.store import SessionInfo
from scanner.timefmt import from_ns, local_time

#: What report.render turns a model into (here, so the command line can offer them
#: without importing Jinja2).
FORMATS = ("text", "html", "json", "ndjson")

MODEL_FORMAT = 1
#: Lines of a new item's text shown in the report.
PREVIEW_LINES = 200
#: Lines of one unified diff shown in the report.
MAX_DIFF_LINES = 1000
#: Lines of context around each difference (as diff -u).
CONTEXT_LINES = 3
#: Change kinds in report order, with the labels of the text report.
KINDS = {"removed": "lost old item", "added": "found new item",
         "renamed": "renamed item", "changed": "changed item"}
_TEXT_ATTRS = ("content", "stderr")

#: Logins that can overlap the window or a change time (relevant_logins picks from them).
LOGINS_SQL = """
SELECT "user", line, host, pid, start, "end", end_reason FROM logins
WHERE start <= $until AND ("end" IS NULL OR "end" >= $since)
ORDER BY start
"""
CONTENTS_SQL = "SELECT digest, data FROM contents WHERE digest IN (SELECT unnest($digests))"


def safe(text: str) -> str:
    """``text`` with control characters (but tabs) written \\xNN, as scanner.paths.escape does."""
    if text.replace("\t", " ").isprintable():
        return text
    return "\t".join(escape(part) for part in text.split("\t"))


def decode(data: bytes) -> str:
    """Stored bytes as text: UTF-8, or Latin-1 when they are not valid UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def format_attr(name: str, row: dict) -> str | None:
    """One attribute of a version row as the report shows it (None when unset)."""
    column = {"mtime": "mtime_ns", "ctime": "ctime_ns"}.get(name, name)
    value = row.get(column)
    if value is None:
        return None
    if name == "mode":
        return f"{value:04o} {stat.filemode(value | stat.S_IFREG)[1:]}"
    if name in ("uid", "gid"):
        owner = row.get("user_name" if name == "uid" else "group_name")
        return f"{value} ({safe(owner)})" if owner else str(value)
    if name in ("mtime", "ctime"):
        return from_ns(value)
    if isinstance(value, bytes):
        return value.hex()
    if name == "xattrs":
        pairs = orjson.loads(value)
        return "\n".join(safe(f"{key}={pairs[key]}") for key in sorted(pairs)) or "(none)"
    return safe(str(value))


def build_model(con: duckdb.DuckDBPyConnection, diff: Diff, *, uuid: str,
                created: datetime) -> dict:
    """The report model of ``diff`` (see the module docstring for its layout)."""
    blobs = _load_blobs(con, diff.changes)
    changes = [_change(change, blobs) for change in diff.changes]
    counts = {kind: sum(1 for c in changes if c["kind"] == kind) for kind in KINDS}
    suppressed = sum(diff.suppressed.values())
    return {
        "format": MODEL_FORMAT,
        "uuid": uuid,
        "created": local_time(created),
        "created_utc": created.astimezone(timezone.utc).isoformat(),
        "host": safe(diff.new.host),
        "is_empty": not changes,
        "counts": {**counts, "suppressed": suppressed, **diff.suppressed},
        "sessions": {"old": _session(diff.old), "new": _session(diff.new)},
        "warnings": [safe(w) for w in _warnings(diff.new)]
        + [f"old session: {safe(w)}" for w in _warnings(diff.old)],
        "logins": relevant_login_lines(con, diff),
        "changes": changes,
    }


def _warnings(session: SessionInfo) -> list[str]:
    return orjson.loads(session.warnings) if session.warnings else []


def _session(session: SessionInfo) -> dict:
    return {"id": session.id, "uuid": session.uuid, "host": safe(session.host),
            "start_time": local_time(session.start_time), "end_time": local_time(session.end_time),
            "item_count": session.item_count, "warnings": [safe(w) for w in _warnings(session)],
            # The hash-chain link: a copy of this report kept elsewhere shows whether
            # stored history was rewritten afterwards (syschangemon verify).
            "chain": session.digest.hex() if session.digest else "-"}


def _directory(url: str) -> str:
    scheme, _, rest = url.partition("://")
    if scheme != "file":
        return f"{scheme}://"
    return f"file://{rest.rsplit('/', 1)[0] or '/'}"


def _change(change: Change, blobs: dict[bytes, bytes]) -> dict:
    row = change.new or change.old
    attrs: list[dict] = []
    texts: list[dict] = []
    for name in change.attrs:
        old = format_attr(name, change.old) if change.old else None
        new = format_attr(name, change.new) if change.new else None
        if name in _TEXT_ATTRS:
            text = _text_block(name, change, blobs)
            if text is not None:
                texts.append(text)
                continue
        if change.kind in ("changed", "renamed"):
            old, new = old or "(none)", new or "(none)"
        attrs.append({"name": name, "old": old, "new": new})
    return {"kind": change.kind, "url": change.url, "old_url": change.old_url,
            "type": row["type"], "directory": _directory(change.url), "attrs": attrs,
            "texts": texts}


def _text_block(name: str, change: Change, blobs: dict[bytes, bytes]) -> dict | None:
    """A unified diff (changed, both texts stored) or the text of a new item; else None.

    An item that had no text before (a command's first stderr) diffs from empty; one
    whose text is gone (withheld now, see its note) shows digests, not the old text.
    """
    old = blobs.get(change.old[name]) if change.old else None
    if change.old and change.old[name] is None:
        old = b""
    new = blobs.get(change.new[name]) if change.new else None
    if change.kind == "added" and new is not None:
        lines = _lines(new)
        return {"label": name, "kind": "text", "lines": [safe(line) for line in lines[:PREVIEW_LINES]],
                "omitted": max(0, len(lines) - PREVIEW_LINES)}
    if old is None or new is None or change.kind == "removed":
        return None
    diff = list(difflib.unified_diff(_lines(old), _lines(new), n=CONTEXT_LINES, lineterm=""))[2:]
    shown = [line[:1] + safe(line[1:]) for line in diff[:MAX_DIFF_LINES]]
    return {"label": f"diff of {name}", "kind": "diff", "lines": shown,
            "omitted": max(0, len(diff) - MAX_DIFF_LINES)}


def _lines(data: bytes) -> list[str]:
    text = decode(data)
    lines = text.split("\n") if text else []
    return lines[:-1] if text.endswith("\n") else lines


def _load_blobs(con: duckdb.DuckDBPyConnection, changes: list[Change]) -> dict[bytes, bytes]:
    digests = {row[name] for change in changes if set(change.attrs) & set(_TEXT_ATTRS)
               for row in (change.old, change.new) if row for name in _TEXT_ATTRS if row[name]}
    if not digests:
        return {}
    return dict(con.execute(CONTENTS_SQL, {"digests": list(digests)}).fetchall())


def _change_time(row: dict) -> datetime | None:
    ns = row.get("ctime_ns") or row.get("mtime_ns")
    return datetime.fromtimestamp(ns / 1e9, timezone.utc) if ns else None


def relevant_login_lines(con: duckdb.DuckDBPyConnection, diff: Diff) -> list[str]:
    """Logins during the window between the sessions, or open at the ctime of a changed,
    added or renamed item (formatted lines; none while the logins table is empty)."""
    window = (diff.old.start_time, diff.new.end_time)
    times = [t for c in diff.changes if c.new and (t := _change_time(c.new)) is not None]
    rows = con.execute(LOGINS_SQL, {"since": min([window[0], *times]),
                                    "until": max([window[1], *times])}).fetchall()
    logins = [Login(*row) for row in rows]
    return [safe(format_login(login)) for login in relevant_logins(logins, window, times)]


def summary(counts: dict) -> str:
    """``2 changed, 1 new, 1 lost, 1 renamed; 3 suppressed (...)`` or ``no changes``."""
    parts = [f"{counts.get(kind, 0)} {word}" for kind, word in (
        ("changed", "changed"), ("added", "new"), ("removed", "lost"), ("renamed", "renamed"))
        if counts.get(kind)]
    text = ", ".join(parts) or "no changes"
    if counts.get("suppressed"):
        why = ", ".join(f"{counts[key]} by {key}" for key in ("ignore_attrs", "report_exclude")
                        if counts.get(key))
        text += f"; {counts['suppressed']} suppressed ({why})"
    return text
