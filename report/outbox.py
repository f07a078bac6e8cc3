"""The mail queue: stored reports whose mail_state is 'pending', mailed oldest first.

A report is marked sent only after the server (or sendmail) accepted it. Each delivery
attempt is followed by one UPDATE of that report's row (its own transaction), so a crash
or a full disk between the two can at worst mail a report twice, never lose it.

A failed delivery is recorded (attempts, last_error), the report stays pending and the
queue stops there: when the server is down, each further report would only wait out
the same timeout, and the next run retries them all in order. A server that took the
message but refused some recipients counts as sent (the others have it; sending again
would repeat it to them on every run) and is still reported as a failure.

A server that refuses the message itself (a 5xx reply to its data: too big, taken for
spam) does not stop the queue at once: the reports behind it are tried too. If the
server takes a later one, the refusal was about what the refused report holds, and
would come again on every run: it becomes 'refused', as a mail server bounces a
message. It is not retried, retention keeps the newest ``report_keep`` refused reports
besides the newest reports, and ``email-report -r`` sends one again once the cause is
mended. If the server takes none after it, the refusal may as well be about the
settings (a sender the server does not accept, DMARC) or a quota: the report stays
pending. Three refusals in a row end the pass, so that refusing settings cost three
attempts a run, not one per waiting report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.message import EmailMessage

import duckdb

from report.mail import (MailSettings, build_message, deliver, mail_settings, recipients,
                         render_subject)
from report.render import render
from report.store import ReportInfo, list_reports, load_model
from scanner.config import Config
from scanner.errors import DeliveryError, RefusedError

#: The end of report.mail's message when the server took the mail for some recipients.
PARTIAL_DELIVERY = "delivered to the others"

_SENT = """
UPDATE reports SET mail_state = 'sent', sent_at = $now, last_error = $error,
                   attempts = coalesce(attempts, 0) + 1
WHERE uuid = $uuid
"""
_FAILED = """
UPDATE reports SET last_error = $error, attempts = coalesce(attempts, 0) + 1
WHERE uuid = $uuid
"""
#: Refusals in a row after which a pass stops: by then the settings are the likelier cause.
REFUSALS_IN_A_ROW = 3
_REFUSED = "UPDATE reports SET mail_state = 'refused' WHERE uuid = $uuid AND mail_state = 'pending'"
_SKIPPED = "UPDATE reports SET mail_state = 'skipped' WHERE uuid = $uuid AND mail_state = 'pending'"


@dataclass(frozen=True)
class Outbox:
    """What mailing needs from the configuration."""

    settings: MailSettings
    template_dir: str | None = None

    @property
    def recipient_count(self) -> int:
        """Envelope recipients of every mail (to, cc and bcc, de-duplicated)."""
        return len(recipients(self.settings))


@dataclass(frozen=True)
class Outcome:
    """What happened to one report: 'sent', 'skipped' or 'refused'."""

    uuid: str
    state: str


@dataclass
class QueueResult:
    """The reports handled, in order, and the failures met (the last may have stopped it)."""

    done: list[Outcome] = field(default_factory=list)
    errors: list[DeliveryError] = field(default_factory=list)


def outbox_from_config(config: Config) -> Outbox | None:
    """The Outbox of [syschangemon] mail_handler, template_dir and [mail.smtp].

    None when no to_addr is set: mail is off and reports are only stored.
    """
    main, smtp = config.section("syschangemon"), config.section("mail.smtp")
    settings = mail_settings(main.get("mail_handler") or "smtp", smtp.values,
                             file=smtp.sources.get("to_addr"))
    if settings is None:
        return None
    return Outbox(settings, main.get("template_dir") or None)


def subject_context(model: dict) -> dict[str, object]:
    """The variables of the subject template, taken from a report model."""
    sessions = model["sessions"]
    return {"hostname": sessions["new"]["host"], "host": sessions["new"]["host"],
            "is_empty": model["is_empty"], "counts": model["counts"],
            "report_uuid": model["uuid"], "created": model["created"],
            "old_session": sessions["old"]["uuid"], "new_session": sessions["new"]["uuid"]}


def compose(outbox: Outbox, model: dict) -> EmailMessage:
    """The mail of a stored report model: subject, text and HTML as print-report shows them."""
    settings = outbox.settings
    return build_message(
        settings, subject=render_subject(settings, subject_context(model)),
        text=render(model, "text", template_dir=outbox.template_dir),
        html=render(model, "html", template_dir=outbox.template_dir),
        report_uuid=model["uuid"], hostname=model["sessions"]["new"]["host"])


def send_report(con: duckdb.DuckDBPyConnection, outbox: Outbox, report: ReportInfo, *,
                debug: bool = False) -> None:
    """Mail one report once, whatever its mail_state, and record the outcome in its row.

    Raises DeliveryError naming the report when the server did not take it (RefusedError
    when it refused the message itself); the row then keeps its mail_state (a pending
    report stays pending) with attempts and last_error.
    """
    uuid = report.uuid
    message = compose(outbox, load_model(con, uuid))
    try:
        deliver(outbox.settings, message, debug=debug)
    except DeliveryError as exc:
        error = str(exc)
        if error.endswith(PARTIAL_DELIVERY):
            con.execute(_SENT, {"uuid": uuid, "error": error, "now": _now()})
            raise DeliveryError(f"report {uuid} mailed, but {error}") from None
        con.execute(_FAILED, {"uuid": uuid, "error": error})
        kept = " (kept for the next run)" if report.mail_state == "pending" else ""
        message = f"report {uuid} not mailed{kept}: {error}"
        if isinstance(exc, RefusedError):
            raise RefusedError(message, reason=error) from None
        raise DeliveryError(message) from None
    con.execute(_SENT, {"uuid": uuid, "error": None, "now": _now()})


def skip_report(con: duckdb.DuckDBPyConnection, uuid: str) -> None:
    """Mark a pending report as not needing mail (an empty report under -s)."""
    con.execute(_SKIPPED, {"uuid": uuid})


def pending_reports(con: duckdb.DuckDBPyConnection) -> list[ReportInfo]:
    """Reports waiting to be mailed, oldest first."""
    return [info for info in list_reports(con) if info.mail_state == "pending"]


def send_pending(con: duckdb.DuckDBPyConnection, outbox: Outbox, *, skip_empty: bool,
                 debug: bool = False) -> QueueResult:
    """Mail every pending report, oldest first, until a delivery fails for a reason
    other than a refusal of the message (see the module docstring for refusals).

    With ``skip_empty`` a pending report without changes is marked skipped instead.
    The failures are returned, not raised, so that the caller can first say what was
    sent.
    """
    result = QueueResult()
    refused: list[tuple[str, RefusedError]] = []
    bounced = 0  # refusals followed by an accepted report: about what those reports hold
    for info in pending_reports(con):
        if skip_empty and info.is_empty:
            skip_report(con, info.uuid)
            result.done.append(Outcome(info.uuid, "skipped"))
            continue
        try:
            send_report(con, outbox, info, debug=debug)
        except RefusedError as exc:
            refused.append((info.uuid, exc))
            if len(refused) - bounced >= REFUSALS_IN_A_ROW:
                break
            continue
        except DeliveryError as exc:
            result.errors.append(exc)
            if not str(exc).endswith(PARTIAL_DELIVERY):
                break
        bounced = len(refused)
        result.done.append(Outcome(info.uuid, "sent"))
    bounces: list[DeliveryError] = []
    for uuid, exc in refused[:bounced]:
        con.execute(_REFUSED, {"uuid": uuid})
        result.done.append(Outcome(uuid, "refused"))
        bounces.append(RefusedError(
            f"report {uuid} refused while the server takes other reports, so it is not "
            f"retried (print it with: syschangemon print-report -r {uuid}; resend it with: "
            f"syschangemon email-report -r {uuid}): {exc.reason}"))
    # In this order: the bounces, the refusals still pending, then what stopped the pass.
    result.errors = bounces + [exc for _, exc in refused[bounced:]] + result.errors
    return result


def _now() -> datetime:
    return datetime.now(timezone.utc)
