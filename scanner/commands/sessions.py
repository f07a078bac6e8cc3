"""list-sessions, cleanup and export."""

from __future__ import annotations

import argparse
import csv

import orjson

from scanner.chain import chain_key, verify
from scanner.commands.context import Command, Context
from scanner.errors import ExitCode, TamperedError, UsageError
from scanner.history import ITEMS_AT, changes_select, export_select
from scanner.retention import cleanup
from scanner.store import find_session, list_sessions, select_sessions
from scanner.timefmt import local_time
from scanner.values import parse_int


def run_list_sessions(context: Context) -> int:
    """List the sessions stored in the database, oldest first.

    One line per session: UUID, start time, item count, and the number of warnings.
    """
    with context.reading() as con:
        sessions = list_sessions(con)
    if not sessions:
        context.say("no sessions stored yet")
    for session in sessions:
        warnings = len(orjson.loads(session.warnings)) if session.warnings else 0
        context.say(f"{session.uuid} {local_time(session.start_time)} "
                    f"{session.item_count} items" + (f", {warnings} warnings" if warnings else ""))
    return ExitCode.OK


def retention_settings(context: Context) -> tuple[int, int]:
    """session_keep and report_keep from [syschangemon]."""
    section = context.config.section("syschangemon")
    sessions = parse_int(section.get("session_keep", "168"), minimum=2, **section.where("session_keep"))
    reports = parse_int(section.get("report_keep", "168"), minimum=1, **section.where("report_keep"))
    return sessions, reports


def run_cleanup(context: Context) -> int:
    """Clean up the database: expunge old sessions and reports.

    Keeps the newest session_keep sessions and report_keep reports ([syschangemon]),
    drops the stored versions no kept session can see, and never drops a report
    that is still waiting to be mailed. Reports the mail server refused (see
    email-report) are kept beyond report_keep too: the newest report_keep of them.
    """
    session_keep, report_keep = retention_settings(context)
    with context.writing() as con:
        result = cleanup(con, session_keep=session_keep, report_keep=report_keep)
    context.say(f"cleanup: removed {result.sessions} sessions, {result.versions} item versions, "
                f"{result.reports} reports")
    return ExitCode.OK


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of export."""
    parser.add_argument("--format", choices=("csv", "jsonl", "parquet"), default="csv",
                        help="csv (default), jsonl (one JSON object per line) or parquet "
                             "(needs --output)")
    parser.add_argument("--output", metavar="PATH", help="write to PATH instead of standard output")
    parser.add_argument("--changes", action="store_true",
                        help="export the items that changed between the old session (-o, default "
                             "the one before) and the session (-u, default the newest), with a "
                             "kind column: added, removed, changed")


def run_export(context: Context) -> int:
    """Export the items of a session, or the changes between two sessions.

    Every row starts with the host and session UUID, so files from many hosts can be
    queried as one table (DuckDB, Spark, Trino... over a glob of Parquet files).
    Digests are hex. Paths holding control characters, backslashes or bytes that are
    not UTF-8 are written escaped (\\xNN, \\\\), as everywhere in syschangemon.
    """
    args = context.args
    if args.format == "parquet" and not args.output:
        raise UsageError("export --format parquet needs --output PATH")
    with context.reading() as con:
        session = find_session(con, args.session_uuid)
        prefix = "$uuid AS session_uuid, $host AS host"
        params: dict = {"uuid": session.uuid, "host": session.host}
        if args.changes:
            old, session = select_sessions(con, args.old_session_uuid, args.session_uuid)
            query = f"SELECT {prefix}, $old_uuid AS old_session_uuid, * FROM ({changes_select()})"
            params |= {"old": old.id, "new": session.id, "old_uuid": old.uuid}
        else:
            query = f"SELECT {prefix}, * FROM ({ITEMS_AT.format(columns=export_select())})"
            params["session"] = session.id
        if args.output:
            options = {"csv": "FORMAT csv, HEADER", "jsonl": "FORMAT json",
                       "parquet": "FORMAT parquet"}[args.format]
            con.execute(f"COPY ({query}) TO {_literal(args.output)} ({options})", params)
        else:
            _write_stream(context, con.execute(query, params), args.format)
    return ExitCode.OK


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _write_stream(context: Context, cursor, fmt: str) -> None:
    names = [d[0] for d in cursor.description]
    if fmt == "csv":
        writer = csv.writer(context.stdout)
        writer.writerow(names)
        while rows := cursor.fetchmany(10000):
            writer.writerows(rows)
        return
    while rows := cursor.fetchmany(10000):
        for row in rows:
            context.stdout.write(orjson.dumps(dict(zip(names, row)), default=str).decode() + "\n")


def run_verify(context: Context) -> int:
    """Verify the hash chain of the stored sessions.

    Recomputes every kept session's digest from its stored item versions (and the
    whole state at the oldest kept session) and names the first session whose items
    no longer match. Prints the chain head, which every report also shows.
    """
    key = chain_key(context.config)
    with context.reading() as con:
        result = verify(con, key)
    if not result.ok:
        raise TamperedError(f"history was modified: {result.problem}")
    context.say(f"chain intact: {result.sessions} sessions, head {result.head or '-'}")
    return ExitCode.OK


LIST_SESSIONS = Command("list-sessions", run_list_sessions)
VERIFY = Command("verify", run_verify)
CLEANUP = Command("cleanup", run_cleanup)
EXPORT = Command("export", run_export, add_export_arguments)
