"""list-sessions, cleanup and export."""

from __future__ import annotations

import argparse
import csv

from scanner.commands.context import Command, Context
from scanner.chain import chain_key, verify
from scanner.errors import ExitCode, TamperedError
from scanner.history import items_at
from scanner.retention import cleanup
from scanner.schema import ITEM_COLUMNS
from scanner.store import find_session, list_sessions
from scanner.timefmt import local_time
from scanner.values import parse_int

import orjson


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
    that is still waiting to be mailed.
    """
    session_keep, report_keep = retention_settings(context)
    with context.writing() as con:
        result = cleanup(con, session_keep=session_keep, report_keep=report_keep)
    context.say(f"cleanup: removed {result.sessions} sessions, {result.versions} item versions, "
                f"{result.reports} reports")
    return ExitCode.OK


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of export."""
    parser.add_argument("--output", metavar="PATH", help="write to PATH instead of standard output")


def run_export(context: Context) -> int:
    """Export the items of a session as CSV (default: the newest session, or -u UUID).

    One row per item with the session UUID and host first; digests are hex. Paths
    that hold control characters, backslashes or bytes that are not UTF-8 are
    written escaped (\\xNN, \\\\), as everywhere in syschangemon.
    """
    with context.reading() as con:
        session = find_session(con, context.args.session_uuid)
        cursor = items_at(con, session.id)
        handle = open(context.args.output, "w", newline="", encoding="utf-8") \
            if context.args.output else context.stdout
        try:
            writer = csv.writer(handle)
            writer.writerow(["session_uuid", "host"] + [c.name for c in ITEM_COLUMNS])
            while rows := cursor.fetchmany(10000):
                writer.writerows((session.uuid, session.host) + row for row in rows)
        finally:
            if handle is not context.stdout:
                handle.close()
    return ExitCode.OK


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
