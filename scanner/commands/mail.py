"""email-report, and the mail step that ends run.

report.outbox (smtplib, ssl, email, Jinja2) is imported by the functions that mail,
not with this module: every command imports it, and collect sends no mail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from report.store import find_report
from scanner.commands.context import Command, Context
from scanner.errors import ExitCode

if TYPE_CHECKING:
    from report.outbox import Outbox

NOT_CONFIGURED = "mail not configured ([mail.smtp] to_addr): nothing sent"


def _mailed(outbox: Outbox, uuid: str) -> str:
    count = outbox.recipient_count
    return f"report {uuid} mailed to {count} recipient{'' if count == 1 else 's'}"


def _skipped(uuid: str) -> str:
    return f"report {uuid} has no changes: not mailed (--skip-empty-mail)"


def mail_queue(context: Context, con: duckdb.DuckDBPyConnection, *, announce: bool) -> None:
    """Mail every pending report, oldest first; raise the last DeliveryError met (the
    others are printed as error lines first).

    Says what was mailed or skipped (or that mail is off) only when ``announce`` is set.
    """
    from report.outbox import outbox_from_config

    outbox = outbox_from_config(context.config)
    if outbox is None:
        if announce:
            context.say(NOT_CONFIGURED)
        return
    _send_queue(context, con, outbox, announce=announce)


def _send_queue(context: Context, con: duckdb.DuckDBPyConnection, outbox: Outbox, *,
                announce: bool) -> None:
    from report.outbox import send_pending

    result = send_pending(con, outbox, skip_empty=context.args.skip_empty_mail,
                          debug=context.args.debug)
    if announce:
        for outcome in result.done:
            if outcome.state != "refused":  # its error line says it
                context.say(_mailed(outbox, outcome.uuid) if outcome.state == "sent"
                            else _skipped(outcome.uuid))
    if result.errors:
        # One line per failure: the last one is the error that sets the exit status.
        for error in result.errors[:-1]:
            context.error(str(error))
        raise result.errors[-1]


def run_email_report(context: Context) -> int:
    """Mail the reports that wait to be mailed, oldest first (-r UUID: that report).

    A report counts as mailed once the SMTP server (or sendmail, with
    [syschangemon] mail_handler = sendmail) accepted it. Until then it stays
    pending: cleanup keeps it and the next email-report or run retries it. When a
    delivery fails, the reports after it wait too; one line names the report and
    the server, and the exit status is 6. When the server refuses a message itself
    (a 5xx reply to it: too big, taken for spam), the reports after it are tried
    anyway; if the server takes one of them, the refused ones become "refused", as
    a bounce: not retried, kept by cleanup (the newest report_keep refused ones,
    besides the newest report_keep reports), sent again by -r. Prints "report <uuid>
    mailed to N recipients" for each report sent.

    -r UUID mails that report whatever its state, so it also resends a report
    that was mailed before. -s/--skip-empty-mail marks reports without changes as
    skipped instead of mailing them. Without [mail.smtp] to_addr nothing is sent:
    one line says so and the exit status is 0.

    run ends with the same step, silent unless it printed a text report: a clean
    run under cron prints nothing, --format json/ndjson/html output stays
    parseable, and each failed delivery is a line of an error.
    """
    from report.outbox import outbox_from_config, pending_reports, send_report, skip_report

    outbox = outbox_from_config(context.config)
    if outbox is None:
        context.say(NOT_CONFIGURED)
        return ExitCode.OK
    with context.writing() as con:
        if context.args.report_uuid is None:
            if not pending_reports(con):
                context.say("no report waits to be mailed")
                return ExitCode.OK
            _send_queue(context, con, outbox, announce=True)
            return ExitCode.OK
        report = find_report(con, context.args.report_uuid)
        if context.args.skip_empty_mail and report.is_empty:
            skip_report(con, report.uuid)
            context.say(_skipped(report.uuid))
            return ExitCode.OK
        send_report(con, outbox, report, debug=context.args.debug)
    context.say(_mailed(outbox, report.uuid))
    return ExitCode.OK


EMAIL_REPORT = Command("email-report", run_email_report)
