"""wtmp collector: login sessions from real wtmp files (utmpdump -r) stored in the logins table."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import orjson
import pytest

from scanner.collectors.wtmp import Login
from test_wtmp import at, boot, last_sessions, login, logout, our_sessions, ts, write_wtmp

pytestmark = pytest.mark.skipif(
    not (shutil.which("utmpdump") and shutil.which("last")),
    reason="needs util-linux utmpdump and last")


def configure(host, wtmp: Path) -> None:
    host.configure(plugins={"wtmp": f"[wtmp]\nenable_plugin = true\nwtmp_path = {wtmp}\n"})


def stored(host) -> list[Login]:
    rows = host.query('SELECT "user", line, host, pid, start, "end", end_reason FROM logins '
                      "ORDER BY start, line")
    return [Login(*row) for row in rows]


def warnings(host) -> list[str]:
    [(text,)] = host.query("SELECT warnings FROM sessions ORDER BY id DESC LIMIT 1")
    return orjson.loads(text) if text else []


ALICE = login(100, "pts/0", "alice", "10.0.0.1", ts("10:00"))
BOB = login(200, "pts/1", "bob", "10.0.0.2", ts("10:05"))


def test_logins_are_stored_and_closed_later_without_duplicates(host) -> None:
    wtmp = host.base / "wtmp"
    write_wtmp(wtmp, boot(ts("09:00")), ALICE, BOB, logout(200, "pts/1", ts("10:30")))
    configure(host, wtmp)
    host.run("collect")
    assert [(l.user, l.end, l.end_reason) for l in stored(host)] == [
        ("alice", None, "still logged in"), ("bob", at("10:30"), "logout")]
    assert our_sessions(stored(host)) == last_sessions(wtmp)

    # wtmp grows: alice logs out, carol logs in. The next collect closes alice's
    # session in place and adds carol; nothing is stored twice.
    write_wtmp(wtmp, boot(ts("09:00")), ALICE, BOB, logout(200, "pts/1", ts("10:30")),
               logout(100, "pts/0", ts("11:00")),
               login(300, "pts/1", "carol", "", ts("11:10")))
    host.run("collect")
    logins = stored(host)
    assert [(l.user, l.line, l.host, l.pid, l.start, l.end, l.end_reason) for l in logins] == [
        ("alice", "pts/0", "10.0.0.1", 100, at("10:00"), at("11:00"), "logout"),
        ("bob", "pts/1", "10.0.0.2", 200, at("10:05"), at("10:30"), "logout"),
        ("carol", "pts/1", "", 300, at("11:10"), None, "still logged in")]
    assert our_sessions(logins) == last_sessions(wtmp)
    host.run("collect")
    assert stored(host) == logins
    assert warnings(host) == []


def test_rotated_file_is_read_and_logins_outlive_rotation(host) -> None:
    wtmp = host.base / "wtmp"
    write_wtmp(wtmp, boot(ts("09:00")), ALICE, BOB)
    configure(host, wtmp)
    host.run("collect")
    # Rotation: the old file becomes wtmp.1 and bob's logout lands in the new file.
    os.rename(wtmp, host.base / "wtmp.1")
    write_wtmp(wtmp, logout(200, "pts/1", ts("10:30")))
    host.run("collect")
    assert [(l.user, l.end) for l in stored(host)] == [("alice", None), ("bob", at("10:30"))]
    # A second rotation drops alice's login record from both files; her session is
    # still in the database, and the reboot in the current file ends it.
    os.rename(wtmp, host.base / "wtmp.1")
    write_wtmp(wtmp, boot(ts("12:00")), login(400, "pts/0", "dave", "", ts("12:05")))
    host.run("collect")
    assert [(l.user, l.end, l.end_reason) for l in stored(host)] == [
        ("alice", at("12:00"), "boot"), ("bob", at("10:30"), "logout"),
        ("dave", None, "still logged in")]
    assert warnings(host) == []


def test_open_login_whose_start_rotated_away_is_closed_by_its_logout(host) -> None:
    wtmp = host.base / "wtmp"
    write_wtmp(wtmp, ALICE)
    configure(host, wtmp)
    host.run("collect")
    write_wtmp(wtmp, logout(100, "pts/0", ts("11:00")))  # no wtmp.1: the login record is gone
    host.run("collect")
    assert [(l.user, l.end, l.end_reason) for l in stored(host)] == [
        ("alice", at("11:00"), "logout")]


def test_missing_file_is_a_warning_and_the_session_is_stored(host) -> None:
    configure(host, host.base / "no-wtmp")
    result = host.run("collect")
    assert warnings(host) == [f"wtmp: {host.base / 'no-wtmp'}: no such file"]
    assert "warning: wtmp:" in result.stderr
    assert host.query("SELECT count(*) FROM sessions") == [(1,)]
    assert stored(host) == []


def test_garbage_and_truncated_files_are_warnings(host) -> None:
    wtmp = host.base / "wtmp"
    good = write_wtmp(host.base / "good", ALICE).read_bytes()
    wtmp.write_bytes(good + b"\xff" * 384 + good[:100])
    configure(host, wtmp)
    host.run("collect")
    assert [l.user for l in stored(host)] == ["alice"]
    assert warnings(host) == [
        f"wtmp: {wtmp}: 1 garbage record(s) skipped (impossible type or time)",
        f"wtmp: {wtmp}: truncated: the last 100 byte(s) are a partial record and were ignored"]
