"""diff, print-report, list-reports and run."""

from __future__ import annotations

import argparse
import uuid as uuidlib
from datetime import datetime, timezone

import duckdb

from report.diff import DiffSettings, compute_diff, diff_settings
from report.model import FORMATS, build_model, summary
from report.store import (ReportInfo, find_report, last_reported_session, list_reports, load_model,
                          save_report)
from scanner.collect import collect
from scanner.commands.collect import add_collect_arguments, collecting
from scanner.commands.context import Command, Context
from scanner.commands.mail import mail_queue
from scanner.commands.sessions import retention_settings
from scanner.config import Config
from scanner.errors import ExitCode
from scanner.retention import cleanup
from scanner.schema import UNSENT_MAIL_STATES
from scanner.store import SessionInfo, find_session, select_sessions
from scanner.timefmt import local_time
from scanner.values import parse_csv


def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """--format, for the commands that print a report."""
    parser.add_argument("--format", choices=FORMATS, default=None,
                        help="report format (default: text; -t/--html means html)")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of run: those of collect and of print-report."""
    add_collect_arguments(parser)
    add_format_argument(parser)


def report_format(args: argparse.Namespace) -> str:
    """--format if given, else html for -t/--html, else text."""
    return args.format or ("html" if args.html else "text")


def template_dir(config: Config) -> str | None:
    """[syschangemon] template_dir, if set."""
    return config.section("syschangemon").get("template_dir") or None


def mail_state_for(config: Config, *, is_empty: bool, skip_empty: bool) -> str:
    """none without [mail.smtp] to_addr, skipped for an empty report under -s, else pending."""
    if not parse_csv(config.section("mail.smtp").get("to_addr") or ""):
        return "none"
    return "skipped" if is_empty and skip_empty else "pending"


def make_report(context: Context, con: duckdb.DuckDBPyConnection, old: SessionInfo,
                new: SessionInfo, settings: DiffSettings) -> tuple[ReportInfo, dict]:
    """Diff two sessions, build the model and store it as a new report."""
    diff = compute_diff(con, old, new, settings)
    model = build_model(con, diff, uuid=str(uuidlib.uuid4()), created=datetime.now(timezone.utc))
    state = mail_state_for(context.config, is_empty=model["is_empty"],
                           skip_empty=context.args.skip_empty_mail)
    return save_report(con, model, mail_state=state), model


def _print(context: Context, output: str) -> None:
    if output:
        context.say(output.removesuffix("\n"))


def _print_rendered(context: Context, model: dict, fmt: str) -> None:
    """Print the report ``model`` in ``fmt``, with [syschangemon] template_dir."""
    # Imported here: every command imports this module, and collect needs no Jinja2.
    from report.render import render

    _print(context, render(model, fmt, template_dir=template_dir(context.config)))


def run_diff(context: Context) -> int:
    """Diff two sessions and save the report in the database (default: the two newest).

    -o UUID picks the old session and -u UUID the new one (a unique prefix of a UUID
    works); the old one must be older. Prints "report <uuid> saved" with a summary;
    print-report shows the report. Exits 1 when changes were found, 0 when there
    were none, 8 when only a baseline session exists (no report is made then).
    """
    settings = diff_settings(context.config)
    with context.writing() as con:
        old, new = select_sessions(con, context.args.old_session_uuid, context.args.session_uuid)
        info, model = make_report(context, con, old, new, settings)
    context.say(f"report {info.uuid} saved: {summary(model['counts'])}")
    return ExitCode.OK if model["is_empty"] else ExitCode.CHANGES


def run_print_report(context: Context) -> int:
    """Print a report from the database (default: the newest; -r UUID picks one).

    --format text (the default), html (also -t/--html), json (the whole report
    model) or ndjson (one change per line, for log shippers). Templates in
    [syschangemon] template_dir replace the built-in report.txt.j2 / report.html.j2.
    """
    fmt = report_format(context.args)
    with context.reading() as con:
        info = find_report(con, context.args.report_uuid)
        model = load_model(con, info.uuid)
    _print_rendered(context, model, fmt)
    return ExitCode.OK


def run_list_reports(context: Context) -> int:
    """List the reports stored in the database, oldest first.

    One line per report: UUID, creation time, old -> new session (UUID prefixes),
    what changed, and the mail state (pending, sent, skipped, refused, none).
    """
    with context.reading() as con:
        reports = list_reports(con)
    if not reports:
        context.say("no reports stored yet")
    for report in reports:
        mail = f"mail {report.mail_state}"
        if report.mail_state in UNSENT_MAIL_STATES and report.last_error:
            mail += f" ({report.attempts} attempts; last error: {report.last_error})"
        context.say(f"{report.uuid} {local_time(report.created)} "
                    f"{report.old_uuid[:8]}->{report.new_uuid[:8]} "
                    f"{summary(report.counts)}; {mail}")
    return ExitCode.OK


def run_run(context: Context) -> int:
    """Run collect, diff, cleanup, print-report and email-report, in this order.

    Made for cron: prints the report only when something changed, and nothing at
    all for a clean run or with --quiet (warnings of the scan are in the report).
    The first run on a host collects the baseline and says so. Exits 1 when changes
    were found, 0 when there were none (and for the baseline).

    The new session is compared with the last one a stored report reached (the
    oldest stored one if none did), which is the one before it unless a collect
    was run by hand since, or a run was killed after its collect: no change goes
    unreported. Should the report of that span fail (the error says why),
    "syschangemon diff" reports the two newest sessions, and runs go on from there.
    """
    fmt = report_format(context.args)
    session_keep, report_keep = retention_settings(context)
    settings = diff_settings(context.config)  # a bad setting fails before the long scan
    with collecting(context) as (con, scan):
        previous = last_reported_session(con)
        result = collect(context.config, con, scan, paranoid=context.args.paranoid)
        new = result.session
        if previous is None:
            cleanup(con, session_keep=session_keep, report_keep=report_keep)
            context.say(f"baseline session {new.uuid} collected ({new.item_count} items); "
                        "the next run reports the changes since")
            for warning in result.warnings:
                context.warn(warning)
            return ExitCode.OK
        _, model = make_report(context, con, find_session(con, previous), new, settings)
        cleanup(con, session_keep=session_keep, report_keep=report_keep)
        if not model["is_empty"]:
            _print_rendered(context, model, fmt)
        # email-report, under the lock: every pending report, this one included. Mail
        # lines only follow a printed text report: a clean cron run stays silent and
        # json/html output stays parseable. A failure raises DeliveryError (exit 6)
        # with everything else already stored.
        mail_queue(context, con, announce=not model["is_empty"] and fmt == "text")
    return ExitCode.OK if model["is_empty"] else ExitCode.CHANGES


DIFF = Command("diff", run_diff)
PRINT_REPORT = Command("print-report", run_print_report, add_format_argument)
LIST_REPORTS = Command("list-reports", run_list_reports)
RUN = Command("run", run_run, add_run_arguments)
