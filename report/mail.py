"""Mail a report: settings from [mail.smtp], the MIME message, one delivery attempt.

Delivery either succeeds or raises DeliveryError with one line; which reports are still
unsent (and retried on the next run) is tracked by the caller, not here.
"""

from __future__ import annotations

import email.errors
import email.utils
import html as html_lib
import os
import re
import smtplib
import socket
import ssl
import stat
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from scanner.errors import ConfigError, DeliveryError, RefusedError
from scanner.values import parse_bool, parse_csv, parse_float, parse_int, parse_size

SECTION = "mail.smtp"
HANDLERS = ("smtp", "sendmail")
DEFAULT_SUBJECT = "SysChangeMon Report for {{ hostname }}"
TRUNCATION_NOTE = ("[report truncated at {size} bytes; print the whole report with: "
                   "syschangemon print-report -r {uuid}]")

# The subject comes from a config file; the sandbox keeps it from reaching Python
# internals, and a missing variable renders empty instead of losing the mail.
_JINJA = SandboxedEnvironment(undefined=jinja2.ChainableUndefined, autoescape=False)
_ADDR_SPEC = re.compile(r"[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+")


@dataclass(frozen=True)
class MailSettings:
    """Everything needed to build and deliver a report mail."""

    handler: str  # "smtp" | "sendmail"
    to_addrs: tuple[str, ...]
    from_addr: str
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    subject: str  # Jinja2 template source
    subject_prefix: str
    host: str = "localhost"
    port: int = 25
    timeout: float = 30.0
    ssl: bool = False  # implicit TLS (SMTP_SSL)
    tls: bool = False  # STARTTLS on a plain connection
    auth: bool = False
    username: str | None = None
    password: str | None = None
    sendmail_path: str = "/usr/sbin/sendmail"
    max_size: int = 1_048_576
    verify_tls: bool = True
    cafile: str | None = None  # when set, the only CA trusted (replaces the system store)


def mail_settings(handler: str, smtp: Mapping[str, str], *,
                  file: str | None) -> MailSettings | None:
    """Build MailSettings from mail_handler and the raw [mail.smtp] values.

    Returns None when no recipient is configured: mail is off, reports are only stored.
    """
    kind = (handler or "smtp").strip().lower()
    if kind not in HANDLERS:
        raise ConfigError(f"expected smtp or sendmail, got {handler!r}",
                          file=file, section="syschangemon", key="mail_handler")

    def raw(key: str) -> str:
        return (smtp.get(key) or "").strip()

    def where(key: str) -> dict[str, str | None]:
        return {"file": file, "section": SECTION, "key": key}

    def addresses(key: str) -> tuple[str, ...]:
        return tuple(_address(item, where(key)) for item in parse_csv(raw(key)))

    if not (to_addrs := addresses("to_addr")):
        return None
    options: dict[str, object] = {
        "handler": kind, "to_addrs": to_addrs, "cc": addresses("cc"), "bcc": addresses("bcc"),
        "from_addr": _address(raw("from") or "syschangemon@localhost", where("from")),
        "subject": raw("subject") or DEFAULT_SUBJECT,
        "subject_prefix": raw("subject_prefix"),
    }
    try:
        _JINJA.from_string(options["subject"])
    except jinja2.TemplateError as exc:
        raise ConfigError(f"bad template: {exc}", **where("subject")) from None
    for key in ("ssl", "tls", "auth", "verify_tls"):
        if raw(key):
            options[key] = parse_bool(raw(key), **where(key))
    if raw("host"):
        options["host"] = raw("host")
    if raw("port"):
        port = parse_int(raw("port"), minimum=1, **where("port"))
        if port > 65535:
            raise ConfigError(f"must be at most 65535, got {port}", **where("port"))
        options["port"] = port
    if raw("timeout"):
        options["timeout"] = parse_float(raw("timeout"), minimum=0.1, **where("timeout"))
    if raw("max_size"):
        size = parse_size(raw("max_size"), **where("max_size"))
        if size < 1024:
            raise ConfigError(f"must be at least 1024 bytes, got {size}", **where("max_size"))
        options["max_size"] = size
    if raw("sendmail"):
        options["sendmail_path"] = raw("sendmail")
    if raw("cafile"):
        if not os.access(raw("cafile"), os.R_OK):
            raise ConfigError(f"cannot read {raw('cafile')}", **where("cafile"))
        options["cafile"] = raw("cafile")
    if options.get("ssl") and options.get("tls"):
        raise ConfigError("ssl (implicit TLS) and tls (STARTTLS) exclude each other; "
                          "set only one", **where("tls"))
    password = smtp.get("password") or None
    if raw("password_file"):
        if password:
            raise ConfigError("set password or password_file, not both",
                              **where("password_file"))
        password = _read_password(raw("password_file"), where("password_file"))
    options["username"] = raw("username") or None
    options["password"] = password
    for key in ("username", "password"):
        if not (options[key] or "").isascii():
            # smtplib sends AUTH credentials as ASCII and fails on anything else.
            source = "password_file" if key == "password" and raw("password_file") else key
            raise ConfigError(f"{key} must be ASCII for SMTP AUTH", **where(source))
    for key in ("username", "password"):
        if options.get("auth") and not options[key]:
            raise ConfigError(f"auth is on but no {key} is set", **where(key))
    return MailSettings(**options)  # type: ignore[arg-type]


def render_subject(settings: MailSettings, context: Mapping[str, object]) -> str:
    """Render the subject template over the report context, prefixed, on one line."""
    try:
        subject = _JINJA.from_string(settings.subject).render(**context)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"bad template: {exc}", section=SECTION, key="subject") from None
    full = f"{settings.subject_prefix} {subject}" if settings.subject_prefix else subject
    return " ".join(full.split())


def build_message(settings: MailSettings, *, subject: str, text: str, html: str,
                  report_uuid: str, hostname: str,
                  date: datetime | None = None) -> EmailMessage:
    """The report as multipart/alternative (text, then HTML); never carries a Bcc header."""
    message = EmailMessage()
    when = date or email.utils.localtime()
    message["Date"] = email.utils.format_datetime(
        when if when.tzinfo else when.astimezone())
    message["Message-ID"] = email.utils.make_msgid(domain=_domain(hostname))
    message["From"] = settings.from_addr
    message["To"] = ", ".join(settings.to_addrs)
    if settings.cc:
        message["Cc"] = ", ".join(settings.cc)
    message["Subject"] = " ".join(subject.split())
    # RFC 3834: tells vacation responders not to answer a machine.
    message["Auto-Submitted"] = "auto-generated"
    message["X-Syschangemon-Report"] = report_uuid
    note = TRUNCATION_NOTE.format(size=settings.max_size, uuid=report_uuid)
    body, cut = _cut(text, settings.max_size)
    message.set_content(body + (f"\n{note}\n" if cut else ""), charset="utf-8")
    body, cut = _cut(html, settings.max_size)
    message.add_alternative(
        body + (f"\n<p>{html_lib.escape(note)}</p>\n" if cut else ""),
        subtype="html", charset="utf-8")
    return message


def recipients(settings: MailSettings) -> list[str]:
    """Envelope recipients: to + cc + bcc as bare addresses, de-duplicated, order kept."""
    seen: set[str] = set()
    result = []
    for entry in (*settings.to_addrs, *settings.cc, *settings.bcc):
        addr = email.utils.parseaddr(entry)[1]
        local, _, domain = addr.rpartition("@")
        key = f"{local}@{domain.lower()}"  # domains are case-insensitive, local parts not
        if key not in seen:
            seen.add(key)
            result.append(addr)
    return result


def deliver(settings: MailSettings, message: EmailMessage, *, debug: bool = False) -> None:
    """Hand the message to the SMTP server or local sendmail once; DeliveryError if refused."""
    if settings.handler == "sendmail":
        _deliver_sendmail(settings, message)
    else:
        _deliver_smtp(settings, message, debug)


def _deliver_smtp(settings: MailSettings, message: EmailMessage, debug: bool) -> None:
    where = f"mail to {settings.host}:{settings.port} failed"
    server: smtplib.SMTP | None = None
    try:
        context = _tls_context(settings) if settings.ssl or settings.tls else None
        if settings.ssl:
            server = smtplib.SMTP_SSL(settings.host, settings.port,
                                      timeout=settings.timeout, context=context)
        else:
            server = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        if debug:
            server.set_debuglevel(1)
        if settings.tls:
            # starttls raises when the server does not offer it: never fall back to plain.
            server.ehlo()
            server.starttls(context=context)
            server.ehlo()
        if settings.auth:
            server.login(settings.username or "", settings.password or "")
        # Bcc addresses go in the envelope only; the message has no Bcc header.
        refused = server.send_message(message, email.utils.parseaddr(settings.from_addr)[1],
                                      recipients(settings))
    except (smtplib.SMTPException, OSError) as exc:
        if server is not None:
            server.close()
        error = RefusedError if _refused_for_good(exc) else DeliveryError
        raise error(f"{where}: {_reason(exc, settings.timeout)}") from None
    try:
        server.quit()
    except (smtplib.SMTPException, OSError):
        pass  # the server already took the message; a failed QUIT must not resend it
    finally:
        server.close()
    if refused:
        # Some recipients got it; report the others so the failure is not silent.
        raise DeliveryError(f"{where}: recipients refused: {_refusals(refused)}; "
                            "delivered to the others")


def _deliver_sendmail(settings: MailSettings, message: EmailMessage) -> None:
    # Recipients are given on the command line rather than with -t (read them from the
    # headers), because Bcc is deliberately absent from the headers and -t would lose it.
    # "--" keeps an address that starts with "-" from being read as an option; -oi keeps
    # a line holding a single "." from ending the message.
    argv = [settings.sendmail_path, "-oi", "--", *recipients(settings)]
    where = f"mail via {settings.sendmail_path} failed"
    try:
        done = subprocess.run(argv, input=message.as_bytes(), capture_output=True,
                              timeout=settings.timeout, check=False)
    except subprocess.TimeoutExpired:
        raise DeliveryError(f"{where}: no exit within {settings.timeout:g} s") from None
    except OSError as exc:
        raise DeliveryError(f"{where}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        status = (f"exit status {done.returncode}" if done.returncode > 0
                  else f"killed by signal {-done.returncode}")
        lines = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
        raise DeliveryError(f"{where}: {status}" + (f": {lines[0].strip()}" if lines else ""))


def _tls_context(settings: MailSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.cafile)
    if not settings.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _refused_for_good(exc: BaseException) -> bool:
    """Whether the server refused the message itself, for good.

    A 5xx reply to the message data (552 too big, 554 content rejected), or 552 to its
    MAIL FROM (smtplib declares the SIZE to a server that announces the extension), may
    be about this message, or about the settings (a sender the server will not take);
    the queue tells which (report/outbox.py). 5xx replies to the connection, AUTH or
    the recipients are about the settings: those reports wait, and stop the queue.
    """
    if isinstance(exc, smtplib.SMTPDataError):
        return 500 <= exc.smtp_code < 600
    return isinstance(exc, smtplib.SMTPSenderRefused) and exc.smtp_code == 552


def _reason(exc: BaseException, timeout: float) -> str:
    """One line saying why an SMTP exchange failed."""
    if isinstance(exc, smtplib.SMTPServerDisconnected) and isinstance(exc.__context__, OSError):
        exc = exc.__context__  # smtplib wraps a timeout or reset in "unexpectedly closed"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        reason = f"recipients refused: {_refusals(exc.recipients)}"
    elif isinstance(exc, smtplib.SMTPSenderRefused):
        reason = f"sender {exc.sender} refused: {_reply(exc.smtp_code, exc.smtp_error)}"
    elif isinstance(exc, smtplib.SMTPAuthenticationError):
        reason = f"authentication failed: {_reply(exc.smtp_code, exc.smtp_error)}"
    elif isinstance(exc, smtplib.SMTPResponseException):
        reason = _reply(exc.smtp_code, exc.smtp_error)
    elif isinstance(exc, ssl.SSLCertVerificationError):
        reason = f"TLS certificate not trusted: {exc.verify_message}"
    elif isinstance(exc, ssl.SSLError):
        reason = f"TLS failure: {exc.reason or exc}"
    elif isinstance(exc, TimeoutError):
        reason = f"no answer within {timeout:g} s"
    elif isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, socket.gaierror):
        reason = f"cannot resolve the host name: {exc.strerror}"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        reason = str(exc) or type(exc).__name__
    return " ".join(reason.split())


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    return f"{code} {text}"


def _refusals(refused: Mapping[str, tuple[int, bytes]]) -> str:
    return "; ".join(f"{addr} ({_reply(code, text)})" for addr, (code, text) in refused.items())


def _address(value: str, where: Mapping[str, str | None]) -> str:
    """A validated address as it goes in a header ("Name <a@b>" or "a@b")."""
    name, addr = email.utils.parseaddr(value)
    if "\n" in value or "\r" in value or not _ADDR_SPEC.fullmatch(addr):
        raise ConfigError(f"not a mail address: {value!r}", **where)
    try:
        return str(Address(display_name=name, addr_spec=addr))
    except (ValueError, IndexError, email.errors.HeaderParseError) as exc:
        raise ConfigError(f"not a mail address: {value!r} ({exc})", **where) from None


def _read_password(path: str, where: Mapping[str, str | None]) -> str:
    """The first line of a password file that only its owner (root, as root) can read."""
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ConfigError(f"{path} is not a regular file", **where)
            if info.st_mode & 0o066:
                raise ConfigError(
                    f"{path} is readable or writable by group or others "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it", **where)
            if os.geteuid() == 0 and info.st_uid != 0:
                raise ConfigError(f"{path} is not owned by root (uid {info.st_uid})",
                                  **where)
            data = handle.read(65536)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", **where) from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text", **where) from None
    if not lines or not lines[0]:
        raise ConfigError(f"{path} is empty: the password is its first line", **where)
    return lines[0]


def _cut(body: str, limit: int) -> tuple[str, bool]:
    """The body cut to at most ``limit`` UTF-8 bytes, at a line end where possible."""
    data = body.encode("utf-8")
    if len(data) <= limit:
        return body, False
    head = data[:limit]
    newline = head.rfind(b"\n")
    if newline > 0:
        head = head[:newline + 1]
    # "ignore" only drops a character split by the cut when no line end was found.
    return head.decode("utf-8", errors="ignore"), True


def _domain(hostname: str) -> str:
    """A Message-ID domain from the host name (falls back when it is empty or odd)."""
    name = hostname.strip().strip(".")
    return name if re.fullmatch(r"[A-Za-z0-9.-]+", name or "") else "localhost"
