"""The difference between two sessions, computed in SQL over the versioned items.

A version is true for the sessions ``since <= S < until``. Between sessions A < B an
item can only differ if one of its versions has a boundary in (A, B]: the version
true at A ended in (A, B] (the old side), or the version true at B began in (A, B]
(the new side). DIFF_SQL joins just those two sides on url, so its cost grows with
the number of changes, not with the size of the tree. An item that changed and
changed back in between has both sides but no differing attribute and drops out.

To run it by hand (``python -c "from report.diff import DIFF_SQL; print(DIFF_SQL)"``)::

    duckdb -readonly db.duckdb
    PREPARE diff AS <DIFF_SQL>;
    EXECUTE diff(old := 3, new := 4);   -- session ids, from SELECT id, uuid FROM sessions

Python then applies the noise control, which needs the configuration:

- ``ignore_attrs`` ([syschangemon] for every item, [file] and [conffile] for file://,
  [command], [sysinfo]): an item whose changed attributes are all ignored is
  suppressed (counted, not listed); when other attributes changed too, the ignored
  ones are only left out of its list.
- ``report_exclude`` (globs on the path of file:// items, from [syschangemon],
  [file] and [conffile]; shell patterns on the name of command:// items, from
  [command]): every change of a matching item is suppressed.

and pairs renames: a removed and an added regular file with the same non-empty
content (BLAKE3 hash), or with the same device, inode and mtime when a hash is
missing (inode numbers are reused right after a delete, so inode alone would pair
unrelated files), become one "renamed" change.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import duckdb

from scanner.config import Config
from scanner.errors import ConfigError
from scanner.globs import GlobSet
from scanner.paths import FILE_SCHEME, url_to_path
from scanner.schema import COMPARED, quote
from scanner.store import SessionInfo
from scanner.values import parse_csv, parse_lines

#: Versions true at the old session that ended by the new one.
OLD_SIDE = "SELECT * FROM versions WHERE since <= $old AND until > $old AND until <= $new"
#: Versions true at the new session that began after the old one.
NEW_SIDE = ("SELECT * FROM versions WHERE since > $old AND since <= $new "
            "AND (until IS NULL OR until > $new)")

#: Columns shown under another attribute's name: the names go with the ids.
_FOLDED = {"user_name": "uid", "group_name": "gid"}


def attribute_name(column: str) -> str:
    """The name users see (in reports and in ignore_attrs) for a compared column."""
    return _FOLDED.get(column, column.removesuffix("_ns"))


#: Attribute names, in report order; ignore_attrs accepts exactly these.
ATTRIBUTES: tuple[str, ...] = tuple(dict.fromkeys(attribute_name(c) for c in COMPARED))


def _diff_sql() -> str:
    changed = ",\n        ".join(
        f"CASE WHEN o.{quote(c)} IS DISTINCT FROM n.{quote(c)} THEN '{c}' END" for c in COMPARED)
    return f"""
WITH old_side AS ({OLD_SIDE}),
     new_side AS ({NEW_SIDE})
SELECT coalesce(o.url, n.url) AS url,
       CASE WHEN o.url IS NULL THEN 'added' WHEN n.url IS NULL THEN 'removed'
            ELSE 'changed' END AS kind,
       list_filter([
        {changed}], lambda a: a IS NOT NULL) AS changed,
       o AS old_row, n AS new_row
FROM old_side o FULL OUTER JOIN new_side n ON n.url = o.url
WHERE o.url IS NULL OR n.url IS NULL OR len(changed) > 0
ORDER BY url
"""


#: The whole diff: one row per differing item (url, kind, changed columns, old and new version).
DIFF_SQL = _diff_sql()


@dataclass(frozen=True)
class DiffSettings:
    """Noise control: ignored attributes per url scheme, excluded items."""

    ignore: Mapping[str, frozenset[str]] = field(default_factory=dict)
    exclude_paths: GlobSet = field(default_factory=lambda: GlobSet(()))
    exclude_commands: tuple[str, ...] = ()

    def excluded(self, url: str) -> bool:
        """Whether report_exclude hides this item."""
        if url.startswith(FILE_SCHEME):
            return bool(self.exclude_paths) and self.exclude_paths.match(url_to_path(url))
        if url.startswith("command://"):
            name = url[len("command://"):]
            return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude_commands)
        return False


#: The sections whose ignore_attrs / report_exclude apply to each url scheme.
_SECTIONS = {"file": ("file", "conffile"), "command": ("command",), "sysinfo": ("sysinfo",)}


def diff_settings(config: Config) -> DiffSettings:
    """Read ignore_attrs and report_exclude (see the module docstring); ConfigError on bad names."""
    def attributes(section_name: str) -> set[str]:
        section = config.section(section_name)
        names = set(parse_csv(section.get("ignore_attrs") or ""))
        for name in names - set(ATTRIBUTES):
            raise ConfigError(f"unknown attribute {name!r} (choose from {', '.join(ATTRIBUTES)})",
                              **section.where("ignore_attrs"))
        return names

    common = attributes("syschangemon")
    ignore = {scheme: frozenset(common.union(*(attributes(s) for s in sections)))
              for scheme, sections in _SECTIONS.items()}
    path_globs: list[str] = []
    for name in ("syschangemon", "file", "conffile"):
        section = config.section(name)
        globs = parse_lines(section.get("report_exclude") or "")
        try:
            GlobSet(globs)  # locate a bad glob at its own key
        except ValueError as error:
            raise ConfigError(str(error), **section.where("report_exclude")) from None
        path_globs.extend(globs)
    commands = tuple(parse_lines(config.section("command").get("report_exclude") or ""))
    return DiffSettings(ignore, GlobSet(path_globs, cwd=os.getcwd()), commands)


@dataclass(frozen=True)
class Change:
    """One reported change; ``old``/``new`` are version rows (dicts of ITEM columns)."""

    kind: str  # "added" | "removed" | "changed" | "renamed"
    url: str  # the item's url (for a rename: the new one)
    old: dict | None
    new: dict | None
    #: attribute names to show: those that changed (changed, renamed), those that are
    #: set (added, removed); ignore_attrs applied
    attrs: tuple[str, ...] = ()
    old_url: str | None = None  # renamed: where it was


@dataclass(frozen=True)
class Diff:
    """The reported changes between two sessions and how many were suppressed."""

    old: SessionInfo
    new: SessionInfo
    changes: list[Change]
    suppressed: dict[str, int]  # {"ignore_attrs": n, "report_exclude": n}


def compute_diff(con: duckdb.DuckDBPyConnection, old: SessionInfo, new: SessionInfo,
                 settings: DiffSettings | None = None) -> Diff:
    """The changes from session ``old`` to the later session ``new``, noise control applied."""
    if old.id >= new.id:
        raise ValueError("the old session must be older than the new one")
    settings = settings or DiffSettings()
    suppressed = {"ignore_attrs": 0, "report_exclude": 0}
    changes: list[Change] = []
    rows = con.execute(DIFF_SQL, {"old": old.id, "new": new.id}).fetchall()
    for url, kind, columns, old_row, new_row in rows:
        if settings.excluded(url):
            suppressed["report_exclude"] += 1
            continue
        old_row = old_row if kind != "added" else None
        new_row = new_row if kind != "removed" else None
        if kind == "changed":
            attrs = _shown(columns, settings.ignore.get(_scheme(url), frozenset()))
            if not attrs:
                suppressed["ignore_attrs"] += 1
                continue
            changes.append(Change(kind, url, old_row, new_row, attrs))
        else:
            row = new_row or old_row
            attrs = _shown([c for c in COMPARED if row[c] is not None],
                           settings.ignore.get(_scheme(url), frozenset()))
            changes.append(Change(kind, url, old_row, new_row, attrs))
    changes = _pair_renames(changes, settings)
    return Diff(old, new, changes, suppressed)


def _scheme(url: str) -> str:
    return url.split("://", 1)[0]


def _shown(columns: list[str], ignored: frozenset[str]) -> tuple[str, ...]:
    names = dict.fromkeys(attribute_name(c) for c in columns)
    return tuple(name for name in names if name not in ignored)


def _rename_keys(row: dict) -> list[tuple]:
    keys = [("inode", row["device"], row["inode"], row["mtime_ns"])] if row["inode"] is not None else []
    if row["hash"] is not None and row["size"]:  # every empty file has the same hash
        keys.insert(0, ("hash", row["hash"]))
    return keys


def _pair_renames(changes: list[Change], settings: DiffSettings) -> list[Change]:
    """Turn a removed and an added regular file with the same content or inode into a rename."""
    by_key: dict[tuple, list[int]] = {}
    for index, change in enumerate(changes):
        if change.kind == "added" and change.new["type"] == "file":
            for key in _rename_keys(change.new):
                by_key.setdefault(key, []).append(index)
    taken: set[int] = set()
    renamed: dict[int, Change] = {}
    for index, change in enumerate(changes):
        if change.kind != "removed" or change.old["type"] != "file":
            continue
        match = next((i for key in _rename_keys(change.old) for i in by_key.get(key, ())
                      if i not in taken and (key[0] == "hash" or None in (
                          change.old["hash"], changes[i].new["hash"]))), None)
        if match is None:
            continue
        target = changes[match]
        columns = [c for c in COMPARED if change.old[c] != target.new[c]]
        attrs = _shown(columns, settings.ignore.get("file", frozenset()))
        renamed[match] = Change("renamed", target.url, change.old, target.new, attrs,
                                old_url=change.url)
        taken.update((match, index))
    return [renamed.get(i, change) for i, change in enumerate(changes)
            if i not in taken or i in renamed]
