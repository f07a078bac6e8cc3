"""sql: ad hoc queries over any stored snapshot."""

from __future__ import annotations

import argparse
import csv
from datetime import datetime

import duckdb
import orjson

from scanner.commands.context import Command, Context
from scanner.errors import ExitCode, UsageError
from scanner.paths import escape
from scanner.views import install_views


def add_sql_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of sql."""
    parser.add_argument("query", help="the SQL query (DuckDB dialect)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output format (default: an aligned table)")


def run_sql(context: Context) -> int:
    """Run a read-only SQL query over the stored history.

    Views: items (current items, readable columns), items_at('<uuid or id>') (the
    items as of a session), changes (every added/removed/changed item per session),
    and the tables sessions, versions, contents, reports, logins. Example:
    syschangemon sql "SELECT path, mode_octal FROM items WHERE mode & 2048 > 0"
    """
    with context.reading() as con:
        install_views(con)
        try:
            cursor = con.execute(context.args.query)
        except duckdb.Error as error:
            raise UsageError(f"query: {' '.join(str(error).split())}") from None
        names = [d[0] for d in cursor.description or []]
        rows = cursor.fetchall()
    write = {"table": _table, "csv": _csv, "json": _json}[context.args.format]
    write(context, names, rows)
    return ExitCode.OK


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    text = str(value)
    return text if text.isprintable() else escape(text)


def _table(context: Context, names: list[str], rows: list[tuple]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(n)] + [len(r[i]) for r in cells]) for i, n in enumerate(names)]
    context.say("  ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip())
    context.say("  ".join("-" * w for w in widths))
    for row in cells:
        context.say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    context.say(f"({len(rows)} rows)")


def _csv(context: Context, names: list[str], rows: list[tuple]) -> None:
    writer = csv.writer(context.stdout)
    writer.writerow(names)
    writer.writerows([_cell(v) for v in row] for row in rows)


def _json(context: Context, names: list[str], rows: list[tuple]) -> None:
    records = [dict(zip(names, row)) for row in rows]
    context.stdout.write(orjson.dumps(records, default=_json_default,
                                      option=orjson.OPT_INDENT_2).decode() + "\n")


def _json_default(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


SQL = Command("sql", run_sql, add_sql_arguments)
