"""Mail settings, message building and delivery against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import email
import email.policy
import os
import socket
import ssl
import subprocess
import threading
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from report.mail import (MailSettings, build_message, deliver, mail_settings, recipients,
                         render_subject)
from scanner.errors import ConfigError, DeliveryError, RefusedError

# Some servers below require AUTH over a plain connection on purpose; aiosmtpd warns.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")

UUID = "5f0c6a38-8d8a-4c4e-9d55-0d0e7f6f3a11"
TEXT = "Changed: /etc/passwd\nGrüße aus Köln — ünïcödé ✓\n"
HTML = "<html><body><p>Changed: /etc/passwd</p><p>Grüße aus Köln ✓</p></body></html>"


# --- a real SMTP server ------------------------------------------------------------------

class Recorder:
    """An aiosmtpd handler that keeps what it received; it can refuse addresses or data."""

    def __init__(self, refuse_rcpt: set[str] | None = None, refuse_data: str | None = None):
        self.refuse_rcpt = refuse_rcpt or set()
        self.refuse_data = refuse_data
        self.received: list[dict] = []
        self.logins: list[tuple[str, str, str]] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse_rcpt:
            return f"550 5.1.1 <{address}>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.refuse_data:
            return self.refuse_data
        self.received.append({
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            # The wire has CRLF line ends; a mailbox stores LF.
            "message": email.message_from_bytes(envelope.content.replace(b"\r\n", b"\n"),
                                                policy=email.policy.default),
            "raw": envelope.content,
            "tls": server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": session.authenticated,
        })
        return "250 2.0.0 queued"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        assert isinstance(auth_data, LoginPassword)
        login, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((mechanism, login, password))
        # handled=False: aiosmtpd then sends the 535 reply itself.
        return AuthResult(success=(login, password) == ("mailer", "s3cret password"),
                          handled=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def cert(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(keyfile), "-out", str(certfile), "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return str(certfile), str(keyfile)


@pytest.fixture
def server_tls(cert) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert)
    return context


@pytest.fixture
def start_server():
    """Start an SMTP server on 127.0.0.1; stopped when the test ends."""
    running: list[Controller] = []

    def start(handler: Recorder | None = None, port: int | None = None, **kwargs):
        handler = handler or Recorder()
        if kwargs.pop("with_auth", False):
            kwargs.update(authenticator=handler.authenticate, auth_required=True)
        controller = Controller(handler, hostname="127.0.0.1", port=port or free_port(),
                                **kwargs)
        controller.start()
        running.append(controller)
        return controller.port, handler

    yield start
    for controller in running:
        controller.stop()


def make_settings(port: int, **changes) -> MailSettings:
    base = MailSettings(
        handler="smtp", to_addrs=("Ops Team <ops@example.com>",),
        from_addr="syschangemon@web01.example", cc=("cc@example.com",),
        bcc=("audit@example.com",), subject="Report for {{ hostname }}",
        subject_prefix="SysChangeMon >", host="127.0.0.1", port=port, timeout=5.0)
    return replace(base, **changes)


def make_message(settings: MailSettings, text: str = TEXT, html: str = HTML):
    subject = render_subject(settings, {"hostname": "web01.example", "is_empty": False})
    return build_message(settings, subject=subject, text=text, html=html,
                         report_uuid=UUID, hostname="web01.example")


def send(settings: MailSettings, **kwargs) -> None:
    deliver(settings, make_message(settings, **kwargs))


# --- delivery over SMTP ------------------------------------------------------------------

def test_plain_smtp_delivers_multipart_report_and_bcc_only_in_envelope(start_server):
    port, handler = start_server()
    send(make_settings(port))

    [got] = handler.received
    assert got["mail_from"] == "syschangemon@web01.example"
    assert got["rcpt_tos"] == ["ops@example.com", "cc@example.com", "audit@example.com"]
    message = got["message"]
    assert message.get_content_type() == "multipart/alternative"
    plain, rich = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert rich.get_content_type() == "text/html"
    assert plain.get_content_charset() == rich.get_content_charset() == "utf-8"
    assert plain.get_content() == TEXT
    assert "Grüße aus Köln ✓" in rich.get_content()
    assert message["From"] == "syschangemon@web01.example"
    assert message["To"] == "Ops Team <ops@example.com>"
    assert message["Cc"] == "cc@example.com"
    assert message["Bcc"] is None
    assert b"audit@example.com" not in got["raw"]
    assert message["Subject"] == "SysChangeMon > Report for web01.example"
    assert message["Message-ID"].endswith("@web01.example>")
    assert message["Date"].datetime is not None
    assert message["X-Syschangemon-Report"] == UUID
    assert message["Auto-Submitted"] == "auto-generated"
    assert not got["tls"]


def test_starttls_with_certificate_verified_against_cafile(start_server, server_tls, cert):
    port, handler = start_server(tls_context=server_tls, require_starttls=True)
    send(make_settings(port, tls=True, cafile=cert[0]))
    [got] = handler.received
    assert got["tls"]
    assert got["message"]["Subject"] == "SysChangeMon > Report for web01.example"


def test_server_that_requires_starttls_refuses_a_plain_client(start_server, server_tls):
    port, handler = start_server(tls_context=server_tls, require_starttls=True)
    with pytest.raises(DeliveryError, match=rf"^mail to 127.0.0.1:{port} failed: .*530"):
        send(make_settings(port))
    assert handler.received == []


def test_untrusted_certificate_fails_unless_verification_is_off(start_server, server_tls):
    port, handler = start_server(tls_context=server_tls)
    with pytest.raises(DeliveryError, match="TLS certificate not trusted: .*self.signed"):
        send(make_settings(port, tls=True))
    assert handler.received == []
    send(make_settings(port, tls=True, verify_tls=False))
    assert handler.received[0]["tls"]


def test_starttls_not_offered_is_an_error_not_a_plain_fallback(start_server, cert):
    port, handler = start_server()
    with pytest.raises(DeliveryError, match="STARTTLS extension not supported"):
        send(make_settings(port, tls=True, cafile=cert[0]))
    assert handler.received == []


def test_implicit_tls(start_server, server_tls, cert):
    port, handler = start_server(ssl_context=server_tls)
    send(make_settings(port, ssl=True, cafile=cert[0]))
    [got] = handler.received
    assert got["tls"]
    assert got["rcpt_tos"] == ["ops@example.com", "cc@example.com", "audit@example.com"]


@pytest.mark.parametrize("mechanism", ["LOGIN", "PLAIN"])
@pytest.mark.parametrize("transport", ["plain", "starttls", "ssl"])
def test_auth(start_server, server_tls, cert, mechanism, transport):
    other = {"LOGIN": "PLAIN", "PLAIN": "LOGIN"}[mechanism]
    server_args = {"with_auth": True, "auth_exclude_mechanism": [other]}
    settings = {"auth": True, "username": "mailer", "password": "s3cret password"}
    if transport == "plain":
        server_args["auth_require_tls"] = False
    elif transport == "starttls":
        server_args["tls_context"] = server_tls
        settings.update(tls=True, cafile=cert[0])
    else:
        # aiosmtpd only counts STARTTLS as TLS for auth_require_tls; this link is TLS.
        server_args.update(ssl_context=server_tls, auth_require_tls=False)
        settings.update(ssl=True, cafile=cert[0])
    port, handler = start_server(**server_args)

    send(make_settings(port, **settings))

    assert handler.logins == [(mechanism, "mailer", "s3cret password")]
    [got] = handler.received
    assert got["authenticated"]
    assert got["tls"] == (transport != "plain")


def test_wrong_password_and_missing_auth_are_refused(start_server):
    port, handler = start_server(with_auth=True, auth_require_tls=False)
    with pytest.raises(DeliveryError, match=r"authentication failed: 535"):
        send(make_settings(port, auth=True, username="mailer", password="wrong"))
    with pytest.raises(DeliveryError, match=r"530"):
        send(make_settings(port))
    assert handler.received == []


def test_all_recipients_refused(start_server):
    handler = Recorder(refuse_rcpt={"ops@example.com", "cc@example.com", "audit@example.com"})
    port, _ = start_server(handler)
    with pytest.raises(DeliveryError) as caught:
        send(make_settings(port))
    message = str(caught.value)
    assert message.startswith(f"mail to 127.0.0.1:{port} failed: recipients refused: ")
    assert "ops@example.com (550 5.1.1 <ops@example.com>: no such user)" in message
    assert "\n" not in message
    assert handler.received == []
    # The same recipients would refuse every report: not a refusal of this message.
    assert not isinstance(caught.value, RefusedError)


def test_some_recipients_refused_is_reported_after_the_others_got_it(start_server):
    port, handler = start_server(Recorder(refuse_rcpt={"audit@example.com"}))
    with pytest.raises(DeliveryError, match=r"recipients refused: audit@example.com \(550 .*"
                                            r"delivered to the others$"):
        send(make_settings(port))
    assert handler.received[0]["rcpt_tos"] == ["ops@example.com", "cc@example.com"]


def test_data_refused_for_good(start_server):
    port, _ = start_server(Recorder(refuse_data="554 5.7.1 looks like spam"))
    with pytest.raises(RefusedError,
                       match=rf"^mail to 127.0.0.1:{port} failed: 554 5.7.1 looks like spam$"):
        send(make_settings(port))


def test_data_deferred_is_not_a_refusal(start_server):
    port, _ = start_server(Recorder(refuse_data="451 4.3.0 try again later"))
    with pytest.raises(DeliveryError, match=r"451 4.3.0 try again later$") as caught:
        send(make_settings(port))
    assert not isinstance(caught.value, RefusedError)


def test_message_over_the_servers_size_limit_is_refused_for_good(start_server):
    # aiosmtpd announces SIZE; smtplib then declares the size at MAIL FROM, and the
    # server answers 552 before any data is sent.
    port, handler = start_server(data_size_limit=2_000)
    with pytest.raises(RefusedError, match=r"sender syschangemon@web01.example refused: 552 "):
        send(make_settings(port), text="x" * 5_000)
    assert handler.received == []


def test_server_down_then_up(start_server):
    port = free_port()
    with pytest.raises(DeliveryError, match=rf"^mail to 127.0.0.1:{port} failed: "
                                            "connection refused$"):
        send(make_settings(port))
    _, handler = start_server(port=port)
    send(make_settings(port))
    assert len(handler.received) == 1


def test_silent_server_times_out():
    # Accepts the connection (kernel backlog) but never greets: the timeout must apply.
    # The attempt runs in a thread so that a lost timeout fails the test, not hangs it.
    errors: list[str] = []

    def attempt(port: int) -> None:
        try:
            send(make_settings(port, timeout=0.5))
        except DeliveryError as exc:
            errors.append(str(exc))

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        worker = threading.Thread(target=attempt, args=(silent.getsockname()[1],),
                                  daemon=True)
        worker.start()
        worker.join(5)
        assert not worker.is_alive(), "deliver ignored its timeout"
    assert len(errors) == 1 and errors[0].endswith("failed: no answer within 0.5 s")


def test_debug_shows_the_smtp_dialogue(start_server, capsys):
    port, _ = start_server()
    deliver(make_settings(port), make_message(make_settings(port)), debug=True)
    assert "mail FROM:<syschangemon@web01.example>" in capsys.readouterr().err


# --- the message -------------------------------------------------------------------------

def test_big_body_is_cut_on_a_line_end_with_a_note(start_server):
    port, handler = start_server()
    settings = make_settings(port, max_size=2048)
    lines = [f"line {n:03d} " + "é" * 40 for n in range(200)]
    send(settings, text="\n".join(lines) + "\n",
         html="<pre>\n" + "\n".join(lines) + "\n</pre>")

    plain, rich = handler.received[0]["message"].iter_parts()
    note = (f"[report truncated at 2048 bytes; print the whole report with: "
            f"syschangemon print-report -r {UUID}]")
    text = plain.get_content()
    body, _, tail = text.rpartition("\n" + note)
    assert tail.strip() == ""
    assert len(body.encode()) <= 2048
    assert body.splitlines() == lines[:len(body.splitlines())]
    assert len(body.splitlines()) > 10
    html = rich.get_content()
    assert f"<p>{note}</p>" in html
    assert len(html.encode()) < 2048 + 200


def test_cut_without_line_end_keeps_utf8_whole():
    settings = make_settings(25, max_size=1024)
    message = build_message(settings, subject="s", text="ü" * 5000, html="x",
                            report_uuid=UUID, hostname="h")
    text = message.get_body(("plain",)).get_content()
    assert text.startswith("ü" * 512 + "\n[report truncated at 1024 bytes")
    assert message.get_body(("html",)).get_content().strip() == "x"


def test_message_headers_without_cc_and_with_fixed_date():
    settings = make_settings(25, cc=())
    when = datetime(2024, 5, 1, 12, 30, tzinfo=timezone.utc)
    message = build_message(settings, subject="line one\nline two", text="t", html="h",
                            report_uuid=UUID, hostname="", date=when)
    assert message["Cc"] is None and message["Bcc"] is None
    assert message["Date"].datetime == when
    assert message["Subject"] == "line one line two"
    assert message["Message-ID"].endswith("@localhost>")


def test_render_subject():
    settings = make_settings(25, subject="{{ counts.changed }} changes on {{ hostname }}"
                                         "{% if is_empty %} (none){% endif %}")
    subject = render_subject(settings, {"hostname": "web01\nBcc: x@evil.example",
                                        "counts": {"changed": 3}, "is_empty": False})
    assert subject == "SysChangeMon > 3 changes on web01 Bcc: x@evil.example"
    # A missing value renders empty instead of losing the alert.
    assert render_subject(replace(settings, subject_prefix=""), {}) == "changes on"


def test_render_subject_sandboxed():
    settings = make_settings(25, subject="{{ hostname.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match=r"\[mail.smtp\]: subject: ") as caught:
        render_subject(settings, {"hostname": "h"})
    assert caught.value.key == "subject"


def test_recipients_deduplicated_in_order():
    settings = make_settings(25, to_addrs=("ops@example.com",),
                             cc=("ops@EXAMPLE.com", "cc@example.com"),
                             bcc=("Audit <audit@example.com>", "cc@example.com"))
    assert recipients(settings) == ["ops@example.com", "cc@example.com", "audit@example.com"]


# --- mail_settings -----------------------------------------------------------------------

def test_mail_settings_from_config_values():
    settings = mail_settings("smtp", {
        "to_addr": "ops@example.com, Jane Doe <jane@example.com>", "from": "scm@example.com",
        "cc": "a@example.com,b@example.com", "bcc": "audit@example.com",
        "subject": "Report for {{ hostname }}", "subject_prefix": "SysChangeMon >",
        "host": "mail.example.com", "port": "587", "timeout": "12.5", "tls": "yes",
        "auth": "on", "username": "mailer", "password": "pw", "max_size": "256k",
        "verify_tls": "true"}, file="/etc/syschangemon/syschangemon.conf")
    assert settings == MailSettings(
        handler="smtp", to_addrs=("ops@example.com", "Jane Doe <jane@example.com>"),
        from_addr="scm@example.com", cc=("a@example.com", "b@example.com"),
        bcc=("audit@example.com",), subject="Report for {{ hostname }}",
        subject_prefix="SysChangeMon >", host="mail.example.com", port=587, timeout=12.5,
        tls=True, auth=True, username="mailer", password="pw", max_size=262144)


@pytest.mark.parametrize("to_addr", [None, "", "  ", " , "])
def test_no_recipient_means_mail_is_off(to_addr):
    values = {"host": "localhost"} if to_addr is None else {"to_addr": to_addr}
    assert mail_settings("smtp", values, file=None) is None


@pytest.mark.parametrize("word, expected", [
    ("true", True), ("yes", True), ("on", True), ("1", True), ("TRUE", True), ("Yes", True),
    ("false", False), ("no", False), ("off", False), ("0", False), ("Off", False)])
@pytest.mark.parametrize("key", ["ssl", "tls", "verify_tls"])
def test_booleans_in_every_spelling(word, expected, key):
    settings = mail_settings("smtp", {"to_addr": "ops@example.com", key: word}, file=None)
    assert getattr(settings, key) is expected


@pytest.mark.parametrize("key, value", [
    ("port", "twenty-five"), ("port", "0"), ("port", "70000"), ("timeout", "soon"),
    ("timeout", "0"), ("ssl", "maybe"), ("auth", "2"), ("max_size", "lots"),
    ("max_size", "10"), ("to_addr", "ops at example.com"), ("cc", "a@example.com, nobody"),
    ("bcc", "<>"), ("from", "scm@example.com\nBcc: victim@example.com"),
    ("subject", "{{ hostname"), ("cafile", "/nonexistent/ca.pem")])
def test_bad_value_names_its_key(key, value):
    values = {"to_addr": "ops@example.com", key: value}
    with pytest.raises(ConfigError) as caught:
        mail_settings("smtp", values, file="/etc/syschangemon/syschangemon.conf")
    assert caught.value.key == key
    assert str(caught.value).startswith(
        f"/etc/syschangemon/syschangemon.conf: [mail.smtp]: {key}: ")


def test_unknown_handler():
    with pytest.raises(ConfigError, match=r"^f.conf: \[syschangemon\]: mail_handler: .*"
                                          "'carrier-pigeon'") as caught:
        mail_settings("carrier-pigeon", {"to_addr": "ops@example.com"}, file="f.conf")
    assert caught.value.key == "mail_handler"


def test_ssl_and_tls_together_refused():
    with pytest.raises(ConfigError, match="exclude each other"):
        mail_settings("smtp", {"to_addr": "a@example.com", "ssl": "1", "tls": "1"}, file=None)


def test_auth_needs_username_and_password():
    with pytest.raises(ConfigError) as caught:
        mail_settings("smtp", {"to_addr": "a@example.com", "auth": "yes"}, file=None)
    assert caught.value.key == "username"
    with pytest.raises(ConfigError) as caught:
        mail_settings("smtp", {"to_addr": "a@example.com", "auth": "yes", "username": "u"},
                      file=None)
    assert caught.value.key == "password"


def test_password_file_must_be_private(tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret pässword\n")
    values = {"to_addr": "a@example.com", "auth": "yes", "username": "mailer",
              "password_file": str(secret)}
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match=f"{secret} is readable or writable by group or "
                                          "others \\(mode 0644\\)") as caught:
        mail_settings("smtp", values, file=None)
    assert caught.value.key == "password_file"
    secret.chmod(0o620)
    with pytest.raises(ConfigError, match="mode 0620"):
        mail_settings("smtp", values, file=None)
    secret.chmod(0o600)
    with pytest.raises(ConfigError, match="ASCII"):
        mail_settings("smtp", values, file=None)
    secret.write_text("s3cret password\nignored second line\n")
    assert mail_settings("smtp", values, file=None).password == "s3cret password"


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership check applies to root only")
def test_password_file_not_owned_by_root_refused_as_root(tmp_path):
    secret = tmp_path / "smtp-password"
    secret.write_text("pw\n")
    secret.chmod(0o600)
    os.chown(secret, 65534, 65534)
    with pytest.raises(ConfigError, match="not owned by root"):
        mail_settings("smtp", {"to_addr": "a@example.com", "password_file": str(secret)},
                      file=None)


def test_password_file_missing_or_empty(tmp_path):
    values = {"to_addr": "a@example.com", "password_file": str(tmp_path / "absent")}
    with pytest.raises(ConfigError, match="cannot read .*absent: No such file"):
        mail_settings("smtp", values, file=None)
    empty = tmp_path / "empty"
    empty.touch(mode=0o600)
    with pytest.raises(ConfigError, match="is empty"):
        mail_settings("smtp", {**values, "password_file": str(empty)}, file=None)
    with pytest.raises(ConfigError, match="not both"):
        mail_settings("smtp", {**values, "password_file": str(empty), "password": "pw"},
                      file=None)


# --- the sendmail handler ----------------------------------------------------------------

def stand_in(tmp_path: Path, body: str) -> str:
    script = tmp_path / "sendmail"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_sendmail_gets_recipients_as_arguments_and_message_on_stdin(tmp_path):
    path = stand_in(tmp_path, f'printf "%s\\n" "$@" > {tmp_path}/argv\n'
                              f"cat > {tmp_path}/stdin\n")
    settings = mail_settings("sendmail", {
        "to_addr": "Ops Team <ops@example.com>", "cc": "cc@example.com",
        "bcc": "-oQ/tmp/evil@example.com, audit@example.com", "sendmail": path,
        "subject": "Report for {{ hostname }}", "subject_prefix": "SCM"}, file=None)
    deliver(settings, make_message(settings))

    argv = (tmp_path / "argv").read_text().splitlines()
    assert argv == ["-oi", "--", "ops@example.com", "cc@example.com",
                    "-oQ/tmp/evil@example.com", "audit@example.com"]
    raw = (tmp_path / "stdin").read_bytes()
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert message["To"] == "Ops Team <ops@example.com>"
    assert message["Bcc"] is None and b"audit@example.com" not in raw
    assert message["Subject"] == "SCM Report for web01.example"
    assert message.get_body(("plain",)).get_content() == TEXT


def test_sendmail_failure_is_a_delivery_error(tmp_path):
    path = stand_in(tmp_path, "cat >/dev/null\necho 'queue directory full' >&2\n"
                              "echo 'second line' >&2\nexit 75\n")
    settings = make_settings(0, handler="sendmail", sendmail_path=path)
    with pytest.raises(DeliveryError, match=rf"^mail via {path} failed: exit status 75: "
                                            "queue directory full$"):
        send(settings)


def test_sendmail_missing_binary(tmp_path):
    settings = make_settings(0, handler="sendmail", sendmail_path=str(tmp_path / "nope"))
    with pytest.raises(DeliveryError, match="failed: No such file or directory$"):
        send(settings)
