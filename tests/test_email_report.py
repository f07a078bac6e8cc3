"""email-report and the mail step of run, end to end: the installed CLI, a real SMTP
server (aiosmtpd) on 127.0.0.1, and a stand-in sendmail script."""

from __future__ import annotations

import email
import email.policy
import os

import orjson
import pytest
from aiosmtpd.controller import Controller

from conftest import make_tree
from test_mail import Recorder, free_port

RECIPIENTS = ["ops@example.com", "audit@example.com"]
NOT_CONFIGURED = "mail not configured ([mail.smtp] to_addr): nothing sent\n"


class Server:
    """An SMTP server on a fixed port that a test starts when it wants it up."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = Recorder()
        self.controller: Controller | None = None

    def start(self, handler: Recorder | None = None) -> None:
        self.handler = handler or self.handler
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def messages(self) -> list[email.message.EmailMessage]:
        return [got["message"] for got in self.handler.received]

    def uuids(self) -> list[str]:
        """The report UUIDs of the mails received, in order."""
        return [message["X-Syschangemon-Report"] for message in self.messages]


@pytest.fixture
def smtp():
    server = Server()
    yield server
    if server.controller is not None:
        server.controller.stop()


def configure_mail(host, port: int, extra: str = "") -> None:
    host.configure(main=(
        "mail_handler = smtp\n"
        + extra
        + "\n[mail.smtp]\nto_addr = Ops <ops@example.com>\nbcc = audit@example.com\n"
        f"host = 127.0.0.1\nport = {port}\ntimeout = 5\n"
        "subject = {{ counts.added }} new on {{ hostname }}"
        "{% if is_empty %} (no changes){% endif %}\n"))


def baseline(host) -> None:
    make_tree(host.tree, {"passwd": "root:x:0:0\n"})
    host.run("run")


def change(host, name: str = "new.txt") -> None:
    (host.tree / name).write_text(f"{name}\n")


def states(host) -> list[tuple]:
    """(uuid, mail_state, attempts, sent, last_error) of every report, oldest first."""
    return host.query("SELECT uuid, mail_state, attempts, sent_at IS NOT NULL, last_error "
                      "FROM reports ORDER BY created")


def session_host(host) -> str:
    return host.query("SELECT host FROM sessions ORDER BY id DESC LIMIT 1")[0][0]


def test_run_mails_a_changed_report_once(host, smtp):
    smtp.start()
    configure_mail(host, smtp.port)
    baseline(host)
    clean = host.run("run", "-s")
    assert (clean.stdout, clean.stderr) == ("", "")
    assert smtp.messages == []

    change(host)
    result = host.run("run", "-s", expect=1)

    [(uuid, state, attempts, sent, error)] = [row for row in states(host) if row[1] != "skipped"]
    assert (state, attempts, sent, error) == ("sent", 1, True, None)
    assert result.stdout.endswith(f"\nreport {uuid} mailed to 2 recipients\n")
    assert result.stderr == ""
    [got] = smtp.handler.received
    assert got["rcpt_tos"] == RECIPIENTS
    message = got["message"]
    assert message["Subject"] == f"SysChangeMon > 1 new on {session_host(host)}"
    assert message["To"] == "Ops <ops@example.com>" and message["Bcc"] is None
    assert message["X-Syschangemon-Report"] == uuid
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.iter_parts()
    assert text.get_content() == host.run("print-report", "-r", uuid).stdout
    assert html.get_content() == host.run("print-report", "-r", uuid, "--html").stdout
    assert f"file://{host.tree}/new.txt" in text.get_content()
    assert host.run("list-reports").stdout.splitlines()[-1].endswith("; mail sent")


@pytest.mark.parametrize("retry", [["run", "-s"], ["email-report"]])
def test_server_down_keeps_the_report_and_the_retry_delivers_it_once(host, smtp, retry):
    configure_mail(host, smtp.port)
    baseline(host)
    change(host)
    failed = host.run("run", "-s", expect=6)
    [(uuid, state, attempts, sent, error)] = states(host)
    assert f"found new item  | file://{host.tree}/new.txt" in failed.stdout
    assert failed.stderr == (f"syschangemon: error: report {uuid} not mailed (kept for the "
                             f"next run): mail to 127.0.0.1:{smtp.port} failed: "
                             "connection refused\n")
    assert (state, attempts, sent) == ("pending", 1, False)
    assert error == f"mail to 127.0.0.1:{smtp.port} failed: connection refused"
    assert host.run("list-reports").stdout.rstrip().endswith(
        f"mail pending (1 attempts; last error: {error})")

    smtp.start()
    result = host.run(*retry)
    if retry[0] == "run":
        assert result.stdout == ""  # a clean cron run stays silent, backlog or not
    else:
        assert result.stdout == f"report {uuid} mailed to 2 recipients\n"
    assert smtp.uuids() == [uuid]
    assert states(host)[0][1:4] == ("sent", 2, True)
    assert host.run("email-report").stdout == "no report waits to be mailed\n"
    host.run("run", "-s")
    assert smtp.uuids() == [uuid]


def test_pending_reports_survive_cleanup_and_go_out_oldest_first(host, smtp):
    configure_mail(host, smtp.port, extra="report_keep = 1\n")
    baseline(host)
    for name in ("one", "two", "three"):
        change(host, name)
        host.run("run", expect=6)
    waiting = states(host)
    # The queue stops at the first failure: only the oldest report was tried each time.
    assert [(state, attempts) for _, state, attempts, _, _ in waiting] == [
        ("pending", 3), ("pending", 0), ("pending", 0)]

    smtp.start()
    result = host.run("email-report")
    assert smtp.uuids() == [row[0] for row in waiting]
    assert result.stdout.splitlines() == [
        f"report {row[0]} mailed to 2 recipients" for row in waiting]
    assert smtp.messages[1]["Subject"].endswith(" 1 new on " + session_host(host))
    # Once sent, report_keep applies to them like to any other report.
    change(host, "four")
    host.run("run", expect=1)
    [(newest, state, *_)] = states(host)
    assert state == "sent" and smtp.uuids()[-1] == newest


def test_skip_empty_marks_empty_reports_and_r_resends(host, smtp):
    smtp.start()
    configure_mail(host, smtp.port)
    baseline(host)
    host.run("collect")
    host.run("diff")  # an empty report, pending: diff never mails
    [(empty, state, *_)] = states(host)
    assert state == "pending"

    skipped = host.run("email-report", "-s")
    assert skipped.stdout == (f"report {empty} has no changes: not mailed "
                              "(--skip-empty-mail)\n")
    assert states(host)[0][1:3] == ("skipped", 0)
    assert host.run("email-report").stdout == "no report waits to be mailed\n"
    assert smtp.messages == []

    # -r names a report: it goes out whatever its state, and again when asked again.
    for count in (1, 2):
        result = host.run("email-report", "-r", empty[:8])
        assert result.stdout == f"report {empty} mailed to 2 recipients\n"
        assert smtp.uuids() == [empty] * count
    assert smtp.messages[0]["Subject"] == (
        f"SysChangeMon > 0 new on {session_host(host)} (no changes)")
    assert states(host)[0][1:4] == ("sent", 2, True)
    assert host.run("email-report", "-r", "ffffffff", expect=4).stderr == (
        "syschangemon: error: no report with UUID ffffffff\n")


class Bouncer(Recorder):
    """Refuses for good every message that mentions ``marker``, takes the others."""

    def __init__(self, marker: bytes) -> None:
        super().__init__()
        self.marker = marker

    async def handle_DATA(self, server, session, envelope):
        if self.marker in envelope.content:
            return "554 5.7.1 message content rejected"
        return await super().handle_DATA(server, session, envelope)


def test_reports_refused_while_others_go_out_are_not_retried(host, smtp):
    configure_mail(host, smtp.port, extra="report_keep = 1\n")
    baseline(host)
    change(host, "rejected.txt")
    host.run("run", expect=6)  # server down
    [(first, *_)] = states(host)
    smtp.start(Bouncer(b"rejected"))
    error = f"mail to 127.0.0.1:{smtp.port} failed: 554 5.7.1 message content rejected"

    # Refused, and nothing else went out: maybe the settings, so it stays pending.
    alone = host.run("email-report", expect=6)
    assert (alone.stdout, alone.stderr) == ("", f"syschangemon: error: report {first} not "
                                            f"mailed (kept for the next run): {error}\n")
    change(host, "rejected-too.txt")
    both = host.run("run", expect=6)
    [_, (second, *_)] = states(host)
    assert both.stderr.splitlines() == [
        f"syschangemon: error: report {uuid} not mailed (kept for the next run): {error}"
        for uuid in (first, second)]
    assert [row[1:3] for row in states(host)] == [("pending", 3), ("pending", 1)]

    # The server takes another report: the refusals were about these two.
    change(host, "fine.txt")
    taken = host.run("run", expect=6)
    [*_, (fine, *_)] = states(host)
    assert taken.stdout.endswith(f"\nreport {fine} mailed to 2 recipients\n")
    assert taken.stderr.splitlines() == [
        f"syschangemon: error: report {uuid} refused while the server takes other reports, "
        f"so it is not retried (print it with: syschangemon print-report -r {uuid}; resend "
        f"it with: syschangemon email-report -r {uuid}): {error}" for uuid in (first, second)]
    assert smtp.uuids() == [fine]
    assert states(host)[:2] == [(first, "refused", 4, False, error),
                                (second, "refused", 2, False, error)]
    assert host.run("list-reports").stdout.splitlines()[0].endswith(
        f"; mail refused (4 attempts; last error: {error})")

    # Not retried by later runs. Cleanup keeps refused reports beyond report_keep (1),
    # but only the newest report_keep of them.
    assert host.run("email-report").stdout == "no report waits to be mailed\n"
    change(host, "later.txt")
    host.run("run", expect=1)
    assert [row[:2] for row in states(host)] == [(second, "refused"), (states(host)[1][0], "sent")]
    assert smtp.uuids() == [fine, states(host)[1][0]]

    # Once the cause is mended, -r sends one.
    smtp.controller.stop()
    smtp.start(Recorder())
    assert host.run("email-report", "-r", second).stdout == (
        f"report {second} mailed to 2 recipients\n")
    assert smtp.uuids() == [second] and states(host)[0][1] == "sent"


class Quota(Recorder):
    """Takes ``allowed`` messages, then refuses the rest at DATA, as a sending quota does."""

    def __init__(self, allowed: int) -> None:
        super().__init__()
        self.allowed = allowed

    async def handle_DATA(self, server, session, envelope):
        if len(self.received) >= self.allowed:
            return "554 5.2.0 SubmissionQuotaExceeded"
        return await super().handle_DATA(server, session, envelope)


def test_refusals_after_the_last_accepted_report_stay_pending(host, smtp):
    configure_mail(host, smtp.port)
    baseline(host)
    for index in range(5):
        change(host, f"file{index}.txt")
        host.run("run", expect=6)  # server down: five reports wait
    uuids = [row[0] for row in states(host)]
    smtp.start(Quota(allowed=1))
    result = host.run("email-report", expect=6)
    assert result.stdout == f"report {uuids[0]} mailed to 2 recipients\n"
    # Nothing was taken after the refusals (a quota, maybe): they stay pending, and
    # three in a row end the pass.
    assert [line.split(" not mailed ")[0] for line in result.stderr.splitlines()] == [
        f"syschangemon: error: report {uuid}" for uuid in uuids[1:4]]
    assert [row[1:3] for row in states(host)] == [
        ("sent", 6), ("pending", 1), ("pending", 1), ("pending", 1), ("pending", 0)]


def test_some_recipients_refused_counts_as_sent_and_is_not_repeated(host, smtp):
    smtp.start(Recorder(refuse_rcpt={"audit@example.com"}))
    configure_mail(host, smtp.port)
    baseline(host)
    change(host)
    result = host.run("run", "-s", expect=6)
    [(uuid, state, attempts, sent, error)] = states(host)
    assert result.stderr.startswith(f"syschangemon: error: report {uuid} mailed, but mail to ")
    assert result.stderr.endswith("; delivered to the others\n")
    assert (state, attempts, sent) == ("sent", 1, True) and "audit@example.com (550" in error
    host.run("run", "-s")
    assert smtp.uuids() == [uuid]
    assert smtp.handler.received[0]["rcpt_tos"] == ["ops@example.com"]


def test_quiet_and_json_runs_mail_without_a_word(host, smtp):
    smtp.start()
    configure_mail(host, smtp.port)
    baseline(host)
    change(host, "one")
    quiet = host.run("run", "--quiet", expect=1)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    change(host, "two")
    as_json = host.run("run", "--format", "json", expect=1)
    model = orjson.loads(as_json.stdout)  # no mail line after the JSON
    assert smtp.uuids() == [row[0] for row in states(host)]
    assert smtp.uuids()[-1] == model["uuid"]


def test_sendmail_handler_pipes_the_message(host, tmp_path):
    script = tmp_path / "sendmail"
    script.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\ncat > "$0.message"\n'
                      'exit "${SENDMAIL_EXIT:-0}"\n')
    os.chmod(script, 0o755)
    host.configure(main=("mail_handler = sendmail\n\n[mail.smtp]\n"
                         "to_addr = ops@example.com\nbcc = audit@example.com\n"
                         f"sendmail = {script}\n"))
    baseline(host)
    change(host)
    host.run("run", "-s", expect=6, env={"SENDMAIL_EXIT": "75"})
    [(uuid, state, _, _, error)] = states(host)
    assert state == "pending" and error == f"mail via {script} failed: exit status 75"

    result = host.run("email-report")
    assert result.stdout == f"report {uuid} mailed to 2 recipients\n"
    assert (tmp_path / "sendmail.argv").read_text().splitlines() == ["-oi", "--", *RECIPIENTS]
    message = email.message_from_bytes((tmp_path / "sendmail.message").read_bytes(),
                                       policy=email.policy.default)
    assert message["Subject"] == f"SysChangeMon > SysChangeMon Report for {session_host(host)}"
    assert message["X-Syschangemon-Report"] == uuid and message["Bcc"] is None
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain", "text/html"]
    assert states(host)[0][1] == "sent"


def test_without_mail_configured_nothing_is_sent(host):
    baseline(host)
    change(host, "one")
    assert host.run("run", "--quiet", expect=1).stdout == ""
    change(host, "two")
    loud = host.run("run", expect=1)
    assert loud.stdout.endswith("\n" + NOT_CONFIGURED) and loud.stderr == ""
    assert host.run("run").stdout == ""
    assert host.run("email-report").stdout == NOT_CONFIGURED
    assert host.run("email-report", "--quiet").stdout == ""
    assert {row[1] for row in states(host)} == {"none"}


def test_bad_mail_setting_is_a_config_error(host):
    host.configure(main="[mail.smtp]\nto_addr = ops@example.com\nport = 99999\n")
    result = host.run("email-report", expect=3)
    assert result.stderr.endswith("[mail.smtp]: port: must be at most 65535, got 99999\n")
