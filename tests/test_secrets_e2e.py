"""No byte of a secret file's content in the database, any printed report, or the mail."""

from __future__ import annotations

from conftest import make_tree
from test_conffile import PEM, conffile_plugin, raw_database
from test_email_report import configure_mail, smtp  # noqa: F401 - the fixture

SECRETS = (b"SHADOW-SECRET-MARKER", b"PEM-SECRET-MARKER", b"REDACTED-SECRET-MARKER")


def secret_tree(round_: int) -> dict:
    return {"etc": {
        "sudoers": f"root ALL=(ALL) ALL # VISIBLE-MARKER {round_}\n",
        "shadow": f"root:SHADOW-SECRET-MARKER{round_}:19000::::::\n",
        "id_ed25519": f"comment {round_}\n" + PEM.replace("b3Bl", "PEM-SECRET-MARKER"),
        "app.conf": f"user = a{round_}\npassword = REDACTED-SECRET-MARKER{round_}\n",
        "<script>alert(1)&.conf": f"x = <script>alert({round_})</script>\n",
    }}


def test_secrets_stay_out_of_db_reports_and_mail(host, smtp):  # noqa: F811
    smtp.start()
    host.configure(plugins=conffile_plugin(host, exclude=["**/shadow*"]))
    configure_mail(host, smtp.port)  # rewrites the main file; plugins.d/conffile.conf stays
    make_tree(host.tree, secret_tree(1))
    host.run("run")
    make_tree(host.tree, secret_tree(2))  # every file changes, secrets included
    result = host.run("run", expect=1)
    printed = [result.stdout.encode()] + [
        host.run("print-report", "--format", fmt).stdout.encode()
        for fmt in ("text", "html", "json", "ndjson")]
    mails = [message.as_bytes() for message in smtp.messages]
    assert mails, "the changed run sent a mail"
    everything = printed + mails + [raw_database(host)]
    # The visible text is there, so the checks below can fail.
    assert all(b"VISIBLE-MARKER" in blob for blob in printed + [raw_database(host)])
    for blob in everything:
        for secret in SECRETS:
            assert secret not in blob, secret
    html = host.run("print-report", "--format", "html").stdout
    assert "<script>" not in html and "&lt;script&gt;" in html
