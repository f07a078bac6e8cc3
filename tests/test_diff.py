"""The SQL diff and the report model, on histories written through the real schema.

``build_history`` writes a fixed three-session history (sessions, versions, contents,
logins) with fixed UUIDs and times; test_report_render renders its golden files from it.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import blake3
import pytest

from report.diff import DiffSettings, compute_diff, diff_settings
from report.model import MAX_DIFF_LINES, PREVIEW_LINES, build_model, summary
from report.store import find_report, list_reports, load_model, save_report
from scanner.config import load_config
from scanner.errors import ConfigError, NotFoundError
from scanner.globs import GlobSet
from scanner.schema import ITEM_COLUMNS, LOGIN_COLUMNS, VERSION_COLUMNS, column_list
from scanner.store import connect, find_session

UTC = timezone.utc
DAY = datetime(2026, 3, 29, tzinfo=UTC)
OLD_UUID = "11111111-1111-4111-8111-111111111111"
MID_UUID = "22222222-2222-4222-8222-222222222222"
NEW_UUID = "33333333-3333-4333-8333-333333333333"
REPORT_UUID = "99999999-9999-4999-8999-999999999999"
CREATED = DAY + timedelta(hours=12, minutes=1, seconds=3)
#: Noise control of the golden report: the shipped [file] default and one exclude.
SETTINGS = DiffSettings(ignore={"file": frozenset({"ctime", "inode", "device", "nlink"})},
                        exclude_paths=GlobSet(["/var/log/**"]))


def ns(hours: float) -> int:
    """Nanoseconds since the epoch, ``hours`` after midnight of DAY."""
    return int((DAY + timedelta(hours=hours)).timestamp() * 1e9)


class History:
    """Writes sessions, versions, contents and logins rows as collect and wtmp would."""

    def __init__(self, con) -> None:
        self.con = con
        self.inode = 1000

    def session(self, id: int, uuid: str, hour: float, warnings: str | None = None) -> None:
        start = DAY + timedelta(hours=hour, seconds=1)
        # A fixed stand-in for the chain digest, so the golden reports show the chain row.
        self.con.execute("INSERT INTO sessions VALUES (?, ?, 'web01.example', ?, ?, 0, 'closed', ?, "
                         "?, NULL)", [id, uuid, start, start + timedelta(seconds=61), warnings,
                                      blake3.blake3(uuid.encode()).digest()])

    def version(self, url: str, since: int, until: int | None = None, *, data: bytes | None = None,
                text: bool = False, **attrs) -> dict:
        """One version row; ``data`` gives hash and size, ``text`` stores it as content."""
        self.inode += 1
        row = {"url": url, "type": "file", "mode": 0o644, "uid": 0, "gid": 0,
               "user_name": "root", "group_name": "root", "mtime_ns": ns(-24), "ctime_ns": ns(-24),
               "inode": self.inode, "device": 2049, "nlink": 1}
        if data is not None:
            digest = blake3.blake3(data).digest()
            row.update(size=len(data), hash=digest)
            if text:
                row["content"] = digest
                self.content(data)
        row.update(attrs)
        values = [since, until] + [row.get(c.name) for c in ITEM_COLUMNS]
        self.con.execute(f"INSERT INTO versions ({column_list(VERSION_COLUMNS)}) VALUES "
                         f"({', '.join('?' * len(values))})", values)
        return row

    def content(self, data: bytes) -> bytes:
        digest = blake3.blake3(data).digest()
        self.con.execute("INSERT INTO contents SELECT ?, ?, ? WHERE NOT EXISTS "
                         "(SELECT 1 FROM contents WHERE digest = ?)", [digest, data, len(data), digest])
        return digest

    def login(self, user: str, line: str, host: str, start: float, end: float | None) -> None:
        values = [user, line, host, 4242, DAY + timedelta(hours=start),
                  None if end is None else DAY + timedelta(hours=end),
                  "still logged in" if end is None else "logout"]
        self.con.execute(f"INSERT INTO logins ({column_list(LOGIN_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                         values)

    def finish(self) -> None:
        self.con.execute("UPDATE sessions SET item_count = (SELECT count(*) FROM versions v "
                         "WHERE v.since <= sessions.id AND (v.until IS NULL OR v.until > sessions.id))")


PASSWD_OLD = b"".join(f"{name}:x:{uid}:{uid}::/home/{name}:/bin/sh\n".encode() for uid, name in enumerate(
    ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail"]))
PASSWD_NEW = PASSWD_OLD.replace(b"games:x:5:5::/home/games:/bin/sh\n", b"") + b"mallory:x:0:0::/root:/bin/sh\n"


def build_history(con) -> None:
    """Sessions 1, 2, 3 (10:00, 11:00, 12:00 UTC) and a change of every kind between 1 and 3."""
    h = History(con)
    h.session(1, OLD_UUID, 10)
    h.session(2, MID_UUID, 11)
    h.session(3, NEW_UUID, 12, '["file:///etc/private: Permission denied"]')
    h.version("file:///etc/fstab", 1, data=b"/dev/sda1 / ext4 defaults 0 1\n", text=True)
    h.version("file:///etc/passwd", 1, 2, data=PASSWD_OLD, text=True, inode=7)
    h.version("file:///etc/passwd", 2, data=PASSWD_NEW, text=True, inode=7,
              mtime_ns=ns(10.5), ctime_ns=ns(10.5))
    # Changed at 2 and changed back at 3: no difference between 1 and 3.
    h.version("file:///etc/hosts", 1, 2, data=b"127.0.0.1 localhost\n", inode=8)
    h.version("file:///etc/hosts", 2, 3, data=b"6.6.6.6 localhost\n", inode=8, mtime_ns=ns(10.6))
    h.version("file:///etc/hosts", 3, data=b"127.0.0.1 localhost\n", inode=8)
    h.version("file:///etc/cron.d", 1, 3, type="dir", mode=0o755, size=4096, nlink=2, inode=9)
    h.version("file:///etc/cron.d", 3, type="dir", mode=0o755, size=4096, nlink=2, inode=9,
              mtime_ns=ns(11.5), ctime_ns=ns(11.5))
    h.version("file:///etc/cron.d/old-job", 1, 3, data=b"* * * * * root /bin/true\n")
    h.version("file:///etc/new.conf", 3, text=True, mtime_ns=ns(11.5), ctime_ns=ns(11.5),
              data=b"# added\nkey = <script>alert(2)</script>\nesc = \x1b[31mred\x1b[0m\tend\n")
    h.version("file:///usr/bin/sudo", 1, 2, data=b"ELF sudo", mode=0o755, inode=10)
    h.version("file:///usr/bin/sudo", 2, data=b"ELF sudo", mode=0o4755, inode=10, ctime_ns=ns(10.7))
    h.version("file:///etc/motd", 1, 2, data=b"welcome\n", inode=11)
    h.version("file:///etc/motd", 2, data=b"welcome\n", inode=12, ctime_ns=ns(10.8))
    h.version("file:///var/log/syslog", 1, 2, data=b"a\n", inode=13)
    h.version("file:///var/log/syslog", 2, data=b"a\nb\n", inode=13, mtime_ns=ns(10.9))
    h.version("file:///etc/ssl/old.pem", 1, 3, data=b"-----BEGIN CERTIFICATE-----\n", inode=14)
    h.version("file:///etc/ssl/new.pem", 3, data=b"-----BEGIN CERTIFICATE-----\n", inode=14,
              ctime_ns=ns(11.6))
    h.version("file:///etc/alternatives/editor", 1, 2, type="symlink", mode=0o777,
              target="/usr/bin/vim.basic", size=18)
    h.version("file:///etc/alternatives/editor", 2, type="symlink", mode=0o777,
              target="/usr/bin/nano", size=13)
    h.version("command://ip_route", 1, 2, type="command", data=b"default via 10.0.0.1 dev eth0\n",
              text=True, exit_status=0, hash=None, uid=None, gid=None, user_name=None, group_name=None,
              inode=None, device=None, nlink=None, mode=None, mtime_ns=None, ctime_ns=None)
    h.version("command://ip_route", 2, type="command", data=b"default via 10.6.6.6 dev eth0\n",
              text=True, exit_status=2, hash=None, stderr=h.content(b"RTNETLINK answers: \x07error\n"),
              uid=None, gid=None, user_name=None, group_name=None, inode=None, device=None,
              nlink=None, mode=None, mtime_ns=None, ctime_ns=None)
    h.version("file:///etc/ssh/ssh_host_ed25519_key", 1, 2, data=b"KEY1\n", text=True, mode=0o600)
    h.version("file:///etc/ssh/ssh_host_ed25519_key", 2, data=b"KEY2\n", mode=0o600,
              note="private key: content withheld", mtime_ns=ns(10.95))
    h.version("file:///etc/gshadow", 3, data=b"root:*::\n", mode=0o640, group_name="shadow",
              gid=42, note="secret file: content withheld")
    h.version("file:///usr/bin/ping", 1, 2, data=b"ELF ping", mode=0o755)
    h.version("file:///usr/bin/ping", 2, data=b"ELF ping", mode=0o755,
              xattrs='{"security.capability": "0x0100000200200000"}')
    h.version("file:///etc/sudoers", 1, 2, data=b"root ALL=(ALL) ALL\n", mode=0o440)
    h.version("file:///etc/sudoers", 2, data=b"root ALL=(ALL) ALL\n", mode=0o440, uid=1000,
              user_name="mallory")
    h.version("file:///etc/latin1.conf", 1, 2, data=b"caf\xe9 = 1\n", text=True)
    h.version("file:///etc/latin1.conf", 2, data=b"caf\xe9 = 2\n", text=True)
    h.version("file:///tmp/<script>alert(1)</script>", 3, data=b"x")
    h.login("alice", "pts/0", "10.0.0.5", 10.5, 10.75)
    h.login("bob", "pts/1", "10.0.0.6", -48, -47)
    h.login("root", "tty1", "", 8, None)
    h.finish()


@pytest.fixture
def utc(monkeypatch):
    """Local time is UTC for the test (report times are local)."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def history(tmp_path):
    """A database holding build_history's sessions; yields the connection."""
    con = connect(tmp_path / "storage")
    build_history(con)
    yield con
    con.close()


def golden_model(con) -> dict:
    """The model of the golden report: sessions 1 to 3 with SETTINGS."""
    diff = compute_diff(con, find_session(con, OLD_UUID), find_session(con, NEW_UUID), SETTINGS)
    return build_model(con, diff, uuid=REPORT_UUID, created=CREATED)


def by_url(diff) -> dict:
    return {change.url: change for change in diff.changes}


def test_diff_lists_each_kind_with_its_changed_attributes(history):
    diff = compute_diff(history, find_session(history, OLD_UUID), find_session(history, NEW_UUID),
                        SETTINGS)
    changes = by_url(diff)
    kinds = {url: change.kind for url, change in changes.items()}
    assert kinds == {
        "file:///etc/passwd": "changed", "file:///etc/cron.d": "changed",
        "file:///etc/cron.d/old-job": "removed", "file:///etc/new.conf": "added",
        "file:///usr/bin/sudo": "changed", "file:///etc/ssl/new.pem": "renamed",
        "file:///etc/alternatives/editor": "changed", "command://ip_route": "changed",
        "file:///etc/ssh/ssh_host_ed25519_key": "changed", "file:///etc/gshadow": "added",
        "file:///usr/bin/ping": "changed", "file:///etc/sudoers": "changed",
        "file:///etc/latin1.conf": "changed", "file:///tmp/<script>alert(1)</script>": "added",
    }
    assert changes["file:///etc/passwd"].attrs == ("size", "mtime", "hash", "content")
    assert changes["file:///usr/bin/sudo"].attrs == ("mode",)  # ctime is ignored
    assert changes["file:///etc/alternatives/editor"].attrs == ("size", "target")
    assert changes["command://ip_route"].attrs == ("content", "stderr", "exit_status")
    assert changes["file:///etc/sudoers"].attrs == ("uid",)  # user_name shows under uid
    assert changes["file:///etc/ssl/new.pem"].old_url == "file:///etc/ssl/old.pem"
    # motd changed only ctime and inode; syslog is under report_exclude.
    assert diff.suppressed == {"ignore_attrs": 1, "report_exclude": 1}


def test_diff_of_any_two_sessions_only_sees_their_boundaries(history):
    one, two, three = (find_session(history, u) for u in (OLD_UUID, MID_UUID, NEW_UUID))
    first, second = by_url(compute_diff(history, one, two)), by_url(compute_diff(history, two, three))
    # hosts changed 1->2 and back 2->3: listed in each step, not in 1->3.
    assert first["file:///etc/hosts"].attrs == ("size", "mtime", "hash")
    assert second["file:///etc/hosts"].kind == "changed"
    assert "file:///etc/hosts" not in by_url(compute_diff(history, one, three))
    assert "file:///etc/fstab" not in first and "file:///etc/fstab" not in second
    assert first.keys().isdisjoint({"file:///etc/new.conf", "file:///etc/cron.d/old-job"})
    assert second["file:///etc/cron.d/old-job"].kind == "removed"
    with pytest.raises(ValueError):
        compute_diff(history, three, one)


def test_renames_need_the_same_content_or_inode_and_mtime(tmp_path):
    con = connect(tmp_path)
    h = History(con)
    h.session(1, OLD_UUID, 10)
    h.session(2, NEW_UUID, 11)
    h.version("file:///a/empty-old", 1, 2, data=b"")  # empty files are not paired
    h.version("file:///a/empty-new", 2, data=b"")
    h.version("file:///a/unreadable", 1, 2, error="Permission denied", inode=50, mtime_ns=ns(1))
    h.version("file:///b/unreadable", 2, error="Permission denied", inode=50, mtime_ns=ns(1))
    h.version("file:///a/reused", 1, 2, inode=60, mtime_ns=ns(1))  # inode reused by a new file
    h.version("file:///b/reused", 2, inode=60, mtime_ns=ns(2))
    h.version("file:///a/dir", 1, 2, type="dir", data=b"x")
    h.version("file:///b/dir", 2, type="dir", data=b"x")
    h.version("file:///a/hashed", 1, 2, data=b"same", inode=70)
    h.version("file:///b/hashed", 2, data=b"same", inode=71)
    diff = compute_diff(con, find_session(con, OLD_UUID), find_session(con, NEW_UUID))
    kinds = sorted((c.kind, c.old_url or "", c.url) for c in diff.changes)
    assert kinds == [
        ("added", "", "file:///a/empty-new"), ("added", "", "file:///b/dir"),
        ("added", "", "file:///b/reused"),
        ("removed", "", "file:///a/dir"), ("removed", "", "file:///a/empty-old"),
        ("removed", "", "file:///a/reused"),
        ("renamed", "file:///a/hashed", "file:///b/hashed"),
        ("renamed", "file:///a/unreadable", "file:///b/unreadable"),
    ]
    assert by_url(diff)["file:///b/hashed"].attrs == ("inode",)  # nothing ignored here
    con.close()


def test_model_content_diffs_previews_notes_and_escaping(history, utc):
    changes = {c["url"]: c for c in golden_model(history)["changes"]}
    passwd = changes["file:///etc/passwd"]
    assert [a["name"] for a in passwd["attrs"]] == ["size", "mtime", "hash"]
    assert passwd["texts"][0]["label"] == "diff of content"
    assert passwd["texts"][0]["lines"][0] == "@@ -3,7 +3,7 @@"
    assert "-games:x:5:5::/home/games:/bin/sh" in passwd["texts"][0]["lines"]
    assert passwd["texts"][0]["lines"][-1] == "+mallory:x:0:0::/root:/bin/sh"
    new = changes["file:///etc/new.conf"]["texts"][0]
    assert new["kind"] == "text"
    assert new["lines"][2] == "esc = \\x1b[31mred\\x1b[0m\tend"
    latin = changes["file:///etc/latin1.conf"]["texts"][0]["lines"]
    assert latin == ["@@ -1 +1 @@", "-café = 1", "+café = 2"]
    route = changes["command://ip_route"]
    assert route["attrs"] == [{"name": "exit_status", "old": "0", "new": "2"}]
    # The first stderr diffs from empty; its control character is escaped.
    assert [t["label"] for t in route["texts"]] == ["diff of content", "diff of stderr"]
    assert route["texts"][1]["lines"] == ["@@ -0,0 +1 @@", "+RTNETLINK answers: \\x07error"]
    key = {a["name"]: a for a in changes["file:///etc/ssh/ssh_host_ed25519_key"]["attrs"]}
    assert key["note"] == {"name": "note", "old": "(none)", "new": "private key: content withheld"}
    gshadow = {a["name"]: a["new"] for a in changes["file:///etc/gshadow"]["attrs"]}
    assert gshadow["note"] == "secret file: content withheld" and gshadow["gid"] == "42 (shadow)"
    sudo = changes["file:///usr/bin/sudo"]["attrs"]
    assert sudo == [{"name": "mode", "old": "0755 rwxr-xr-x", "new": "4755 rwsr-xr-x"}]
    ping = changes["file:///usr/bin/ping"]["attrs"]
    assert ping == [{"name": "xattrs", "old": "(none)", "new": "security.capability=0x0100000200200000"}]


def test_model_bounds_long_texts(tmp_path, utc):
    con = connect(tmp_path)
    h = History(con)
    h.session(1, OLD_UUID, 10)
    h.session(2, NEW_UUID, 11)
    h.version("file:///big", 2, data=b"".join(b"%d\n" % i for i in range(PREVIEW_LINES + 5)), text=True)
    h.version("file:///diff", 1, 2, data=b"".join(b"%d\n" % i for i in range(2000)), text=True)
    h.version("file:///diff", 2, data=b"".join(b"%d!\n" % i for i in range(2000)), text=True)
    model = build_model(con, compute_diff(con, find_session(con, OLD_UUID), find_session(con, NEW_UUID)),
                        uuid=REPORT_UUID, created=CREATED)
    big, diff = (c["texts"][0] for c in model["changes"])
    assert len(big["lines"]) == PREVIEW_LINES and big["omitted"] == 5
    assert len(diff["lines"]) == MAX_DIFF_LINES and diff["omitted"] == 4001 - MAX_DIFF_LINES
    con.close()


def test_model_sessions_counts_warnings_and_logins(history, utc):
    model = golden_model(history)
    assert model["counts"] == {"removed": 1, "added": 3, "renamed": 1, "changed": 9,
                               "suppressed": 2, "ignore_attrs": 1, "report_exclude": 1}
    assert summary(model["counts"]) == ("9 changed, 3 new, 1 lost, 1 renamed; "
                                        "2 suppressed (1 by ignore_attrs, 1 by report_exclude)")
    assert model["sessions"]["new"]["start_time"] == "2026-03-29 12:00:01 UTC"
    assert model["sessions"]["old"]["item_count"] == 15
    assert model["warnings"] == ["file:///etc/private: Permission denied"]
    # alice was logged in during the window, root still is; bob left two days before.
    assert model["logins"] == [
        "2026-03-29 08:00:00 UTC - still logged in root tty1",
        "2026-03-29 10:30:00 UTC - 2026-03-29 10:45:00 UTC alice pts/0@10.0.0.5",
    ]


def test_no_logins_recorded_gives_an_empty_list(history, utc):
    history.execute("DELETE FROM logins")
    assert golden_model(history)["logins"] == []


def test_report_store_round_trip_and_lookup(history, utc):
    model = golden_model(history)
    saved = save_report(history, model, mail_state="pending")
    assert (saved.uuid, saved.old_uuid, saved.new_uuid) == (REPORT_UUID, OLD_UUID, NEW_UUID)
    assert saved.counts == model["counts"] and not saved.is_empty and saved.attempts == 0
    assert load_model(history, REPORT_UUID) == model
    assert find_report(history, "9999").uuid == REPORT_UUID
    assert find_report(history, None).uuid == REPORT_UUID
    assert [r.uuid for r in list_reports(history)] == [REPORT_UUID]
    with pytest.raises(NotFoundError, match="no report with UUID abc"):
        find_report(history, "abc")
    with pytest.raises(ValueError):
        save_report(history, model, mail_state="maybe")


def test_find_report_on_an_empty_database(tmp_path):
    con = connect(tmp_path)
    with pytest.raises(NotFoundError, match="no report stored yet"):
        find_report(con, None)
    con.close()


def test_diff_settings_from_configuration(tmp_path):
    (tmp_path / "syschangemon.conf").write_text(
        "[syschangemon]\nreport_exclude =\n    /var/log/**\nignore_attrs = mtime\n")
    (tmp_path / "plugins.d").mkdir()
    (tmp_path / "plugins.d" / "cmd.conf").write_text(
        "[command]\nenable_plugin = true\nignore_attrs = exit_status\nreport_exclude = ip_*\n")
    settings = diff_settings(load_config(str(tmp_path), is_root=False))
    assert settings.ignore["command"] == {"mtime", "exit_status"}
    assert settings.ignore["file"] == {"mtime"}  # [file] is not in this configuration
    assert settings.excluded("file:///var/log/syslog") and not settings.excluded("file:///etc/x")
    assert settings.excluded("command://ip_route") and not settings.excluded("command://df")
    (tmp_path / "plugins.d" / "cmd.conf").write_text("[command]\nignore_attrs = mtime, colour\n")
    with pytest.raises(ConfigError, match=r"\[command\]: ignore_attrs: unknown attribute 'colour'"):
        diff_settings(load_config(str(tmp_path), is_root=False))
