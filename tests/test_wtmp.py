"""wtmp parsing and login pairing, on real wtmp files written by util-linux utmpdump.

Every scenario file is also read by util-linux `last`, and the pairing must agree with
what `last` prints: same users, lines, hosts, start times, and the same ends.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings, strategies as st

from scanner.collectors.wtmp import (
    BOOT_TIME, DEAD_PROCESS, RECORD_SIZE, RUN_LVL, USER_PROCESS, Login, Record,
    format_login, pair_logins, parse_wtmp, read_wtmp, relevant_logins,
)

UTC = timezone.utc
KERNEL = "6.1.0-13-amd64"

pytestmark = pytest.mark.skipif(
    not (shutil.which("utmpdump") and shutil.which("last")),
    reason="needs util-linux utmpdump and last")


def at(hhmm: str, day: int = 20) -> datetime:
    """An aware UTC time on 2026-11-<day>."""
    return datetime.fromisoformat(f"2026-11-{day:02d}T{hhmm}:00+00:00")


# --- building wtmp files: a compact description, written by `utmpdump -r` ---------

def login(pid: int, line: str, user: str, host: str, when: str) -> str:
    return f"[7] [{pid:05d}] [{line[-4:]:<4}] [{user}] [{line}] [{host}] [0.0.0.0] [{when}]"


def logout(pid: int, line: str, when: str) -> str:
    return f"[8] [{pid:05d}] [{line[-4:]:<4}] [] [{line}] [] [0.0.0.0] [{when}]"


def boot(when: str) -> str:
    return f"[2] [00000] [~~  ] [reboot] [~] [{KERNEL}] [0.0.0.0] [{when}]"


def shutdown(when: str) -> str:
    return f"[1] [00000] [~~  ] [shutdown] [~~] [{KERNEL}] [0.0.0.0] [{when}]"


def ts(hhmm: str, day: int = 20, usec: int = 0) -> str:
    return f"2026-11-{day:02d}T{hhmm}:00,{usec:06d}+00:00"


def write_wtmp(path: Path, *lines: str) -> Path:
    """Turn dump lines into a binary wtmp file; "\\udcXX" in a line is the raw byte XX.

    utmpdump wants the id field (ut_id) exactly 4 characters wide.
    """
    dump = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
    result = subprocess.run(["utmpdump", "-r"], input=dump, capture_output=True,
                            check=True)
    path.write_bytes(result.stdout)
    assert len(result.stdout) == RECORD_SIZE * len(lines)
    return path


# --- what `last` says about a file ---------------------------------------------------

LAST_LINE = re.compile(
    r"^(\S+)\s+(\S+)\s+(.*?)\s*(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d)\s+(\S.*)$")


def last_sessions(path: Path) -> set[tuple[str, str, str, str, str]]:
    """(user, line, host, start, end) for each login `last` lists, reboots left out.

    end is an ISO time, "down", "crash", or "open" for both "still logged in" and
    "gone - no logout": which of the two `last` prints depends on whether the
    session's process is alive on this machine, not on the file.
    """
    out = subprocess.run(["last", "-w", "-f", str(path), "--time-format", "iso"],
                         capture_output=True, text=True, check=True,
                         env={**os.environ, "TZ": "UTC"}).stdout
    sessions = set()
    for text in out.splitlines():
        match = LAST_LINE.match(text)
        if not match or match[1] == "reboot":
            continue
        user, line, host, start, rest = match.groups()
        if rest.startswith(("still logged in", "gone - no logout")):
            end = "open"
        else:
            assert rest.startswith("- "), text
            end = rest[2:].split()[0]
        sessions.add((user, line, host, datetime.fromisoformat(start).isoformat(), end))
    return sessions


def our_sessions(logins: list[Login]) -> set[tuple[str, str, str, str, str]]:
    """Our logins in the vocabulary of last_sessions (times to the second, as last)."""
    ends = {"shutdown": "down", "boot": "crash", "still logged in": "open"}
    return {
        (l.user, l.line, l.host, l.start.replace(microsecond=0).isoformat(),
         ends.get(l.end_reason) or l.end.replace(microsecond=0).isoformat())
        for l in logins
    }


def logins_of(path: Path) -> list[Login]:
    records, warnings = read_wtmp([str(path)])
    assert warnings == []
    return pair_logins(records)


# --- scenarios -----------------------------------------------------------------------

def test_login_then_logout(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(1234, "pts/0", "alice", "10.0.0.1", ts("10:00", usec=123456)),
                      logout(1234, "pts/0", ts("11:00")))
    records, warnings = read_wtmp([str(wtmp)])
    assert warnings == []
    assert records[0] == Record(type=USER_PROCESS, pid=1234, line="pts/0", id="ts/0",
                                user="alice", host="10.0.0.1",
                                time=at("10:00").replace(microsecond=123456))
    assert records[1].type == DEAD_PROCESS and records[1].user == ""
    logins = pair_logins(records)
    assert logins == [Login("alice", "pts/0", "10.0.0.1", 1234,
                            at("10:00").replace(microsecond=123456), at("11:00"), "logout")]
    assert our_sessions(logins) == last_sessions(wtmp)
    assert format_login(logins[0], UTC) == (
        "2026-11-20 10:00:00 UTC - 2026-11-20 11:00:00 UTC alice pts/0@10.0.0.1")


def test_interleaved_sessions_on_two_lines(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      login(200, "pts/1", "bob", "host.example", ts("10:05")),
                      logout(100, "pts/0", ts("10:30")),
                      login(300, "pts/0", "carol", "10.0.0.3", ts("10:40")),
                      logout(200, "pts/1", ts("10:50")),
                      logout(300, "pts/0", ts("11:00")))
    logins = logins_of(wtmp)
    assert [(l.user, l.start, l.end, l.end_reason) for l in logins] == [
        ("alice", at("10:00"), at("10:30"), "logout"),
        ("bob", at("10:05"), at("10:50"), "logout"),
        ("carol", at("10:40"), at("11:00"), "logout"),
    ]
    assert our_sessions(logins) == last_sessions(wtmp)


def test_reboot_and_shutdown_end_open_sessions(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      boot(ts("09:00")),
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      login(200, "tty1", "bob", "", ts("10:05")),
                      shutdown(ts("12:00")),
                      boot(ts("12:01")),
                      login(300, "pts/0", "dave", "10.0.0.2", ts("12:10")),
                      boot(ts("13:00")),  # no shutdown before it: a crash
                      logout(300, "pts/0", ts("13:05")))  # too late for dave's session
    logins = logins_of(wtmp)
    assert [(l.user, l.end, l.end_reason) for l in logins] == [
        ("alice", at("12:00"), "shutdown"),
        ("bob", at("12:00"), "shutdown"),
        ("dave", at("13:00"), "boot"),
    ]
    assert our_sessions(logins) == last_sessions(wtmp)
    assert {end for *_, end in last_sessions(wtmp)} == {"down", "crash"}


def test_still_logged_in(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      boot(ts("09:00")),
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      login(200, "pts/1", "bob", "10.0.0.2", ts("10:01")),
                      logout(200, "pts/1", ts("10:02")))
    logins = logins_of(wtmp)
    assert logins[0] == Login("alice", "pts/0", "10.0.0.1", 100, at("10:00"), None,
                              "still logged in")
    assert logins[1].end_reason == "logout"
    assert our_sessions(logins) == last_sessions(wtmp)
    assert format_login(logins[0], UTC) == (
        "2026-11-20 10:00:00 UTC - still logged in alice pts/0@10.0.0.1")


def test_last_too_says_still_logged_in_for_a_live_session(tmp_path: Path) -> None:
    # `last` prints "still logged in" (not "gone - no logout") only for a session
    # newer than this boot whose user exists and owns the terminal: root on
    # /dev/console, with a pid that does not exist so /dev/<line> is what it checks.
    console = Path("/dev/console")
    if not console.exists() or console.stat().st_uid != 0:
        pytest.skip("needs /dev/console owned by root")
    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.isoformat().replace("+00:00", ",000000+00:00")
    wtmp = write_wtmp(tmp_path / "wtmp", login(2_000_000_000, "console", "root", "", stamp))
    [session] = logins_of(wtmp)
    assert (session.user, session.end, session.end_reason) == ("root", None,
                                                               "still logged in")
    out = subprocess.run(["last", "-w", "-f", str(wtmp)], capture_output=True,
                         text=True, check=True).stdout
    assert "still logged in" in out.splitlines()[0]


def test_new_login_on_a_line_ends_the_one_whose_logout_was_lost(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      login(200, "pts/0", "bob", "10.0.0.2", ts("10:30")),
                      logout(200, "pts/0", ts("11:00")))
    logins = logins_of(wtmp)
    assert [(l.user, l.end, l.end_reason) for l in logins] == [
        ("alice", at("10:30"), "logout"), ("bob", at("11:00"), "logout")]
    assert our_sessions(logins) == last_sessions(wtmp)


def test_rotated_file_is_read_first(tmp_path: Path) -> None:
    old = write_wtmp(tmp_path / "wtmp.1",
                     boot(ts("09:00", day=19)),
                     login(100, "pts/0", "alice", "10.0.0.1", ts("23:50", day=19)),
                     login(200, "pts/1", "bob", "10.0.0.2", ts("23:55", day=19)),
                     logout(200, "pts/1", ts("23:56", day=19)))
    new = write_wtmp(tmp_path / "wtmp",
                     logout(100, "pts/0", ts("00:10")),
                     login(300, "pts/1", "carol", "10.0.0.3", ts("00:20")))
    records, warnings = read_wtmp([str(old), str(new)])
    assert warnings == []
    logins = pair_logins(records)
    assert [(l.user, l.end) for l in logins] == [
        ("alice", at("00:10")), ("bob", at("23:56", day=19)), ("carol", None)]
    both = tmp_path / "both"
    both.write_bytes(old.read_bytes() + new.read_bytes())
    assert our_sessions(logins) == last_sessions(both)


def test_empty_missing_and_unreadable_files_are_warnings(tmp_path: Path) -> None:
    empty = tmp_path / "wtmp.1"
    empty.write_bytes(b"")
    missing = tmp_path / "wtmp.2"
    directory = tmp_path / "adir"
    directory.mkdir()
    good = write_wtmp(tmp_path / "wtmp", login(100, "pts/0", "alice", "", ts("10:00")))
    records, warnings = read_wtmp([str(missing), str(directory), str(empty), str(good)])
    assert [r.user for r in records] == ["alice"]
    assert warnings == [f"{missing}: no such file",
                        f"{directory}: cannot read: Is a directory",
                        f"{empty}: empty, no login records"]


def test_truncated_file_keeps_the_whole_records(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      logout(100, "pts/0", ts("11:00")))
    wtmp.write_bytes(wtmp.read_bytes()[:RECORD_SIZE + 100])  # cut mid-record
    records, warnings = read_wtmp([str(wtmp)])
    assert warnings == [f"{wtmp}: truncated: the last 100 byte(s) are a partial record "
                        "and were ignored"]
    assert [l.end_reason for l in pair_logins(records)] == ["still logged in"]


def test_random_garbage_is_skipped_with_one_warning() -> None:
    data = random.Random(7).randbytes(RECORD_SIZE * 50 + 17)
    records, warnings = parse_wtmp(data)
    assert records == []
    assert warnings == [
        "50 garbage record(s) skipped (impossible type or time)",
        "truncated: the last 17 byte(s) are a partial record and were ignored"]
    assert pair_logins(records) == []


def test_garbage_and_zeroed_records_inside_a_good_file(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(100, "pts/0", "alice", "10.0.0.1", ts("10:00")),
                      login(200, "pts/1", "bob", "10.0.0.2", ts("10:01")),
                      logout(100, "pts/0", ts("11:00")))
    data = bytearray(wtmp.read_bytes())
    data[RECORD_SIZE:RECORD_SIZE + 2] = b"\xff\x7f"  # bob's record: type 32767
    data += bytes(RECORD_SIZE * 3)  # the NUL blocks a crash leaves behind
    records, warnings = parse_wtmp(bytes(data))
    assert warnings == ["1 garbage record(s) skipped (impossible type or time)",
                        "3 zeroed record(s) skipped (NUL bytes, as a crash leaves)"]
    assert [(l.user, l.end) for l in pair_logins(records)] == [("alice", at("11:00"))]


def test_non_utf8_user_and_host_are_replaced(tmp_path: Path) -> None:
    wtmp = write_wtmp(tmp_path / "wtmp",
                      login(100, "pts/0", "al\udce9x", "h\udcff\udcfe.example", ts("10:00")))
    [session] = logins_of(wtmp)
    assert (session.user, session.host) == ("al\ufffdx", "h\ufffd\ufffd.example")
    assert format_login(session, UTC).endswith("al\ufffdx pts/0@h\ufffd\ufffd.example")


def test_format_login_uses_the_given_or_local_time_zone() -> None:
    session = Login("alice", "tty1", "", 1, at("10:00"), at("11:30"), "logout")
    assert format_login(session, ZoneInfo("Europe/Berlin")) == (
        "2026-11-20 11:00:00 CET - 2026-11-20 12:30:00 CET alice tty1")
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    try:
        assert format_login(session) == (
            "2026-11-20 19:00:00 JST - 2026-11-20 20:30:00 JST alice tty1")
    finally:
        if saved is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = saved
        time.tzset()


# --- relevant_logins -----------------------------------------------------------------

def session(user: str, start: str, end: str | None) -> Login:
    return Login(user, f"pts/{user}", "", 1, at(start), end and at(end),
                 "logout" if end else "still logged in")


def test_relevant_logins_overlap_the_window_or_span_a_change() -> None:
    before = session("before", "08:00", "09:00")
    touches_start = session("touches", "09:00", "10:00")
    inside = session("inside", "10:30", "10:40")
    spans_change = session("change", "06:00", "07:00")
    open_before = session("open", "05:00", None)
    after = session("after", "12:00", "13:00")
    open_after = session("openafter", "12:30", None)
    logins = [after, open_after, inside, spans_change, before, touches_start, open_before]
    found = relevant_logins(logins, (at("10:00"), at("11:00")),
                            [at("06:30"), at("10:35"), at("06:45")])
    assert found == [open_before, spans_change, touches_start, inside]


def test_relevant_logins_have_no_duplicates() -> None:
    both = session("both", "10:00", "10:20")
    found = relevant_logins([both], (at("10:00"), at("11:00")), [at("10:10"), at("10:15")])
    assert found == [both]


def test_relevant_logins_of_nothing() -> None:
    assert relevant_logins([], (at("10:00"), at("11:00")), [at("10:10")]) == []
    assert relevant_logins([session("x", "08:00", "09:00")],
                           (at("10:00"), at("11:00")), []) == []


# --- properties ----------------------------------------------------------------------

@settings(max_examples=300)
@given(st.binary(max_size=RECORD_SIZE * 4 + 50))
def test_parse_never_raises(data: bytes) -> None:
    records, warnings = parse_wtmp(data)
    assert len(records) <= len(data) // RECORD_SIZE
    assert ("truncated" in " ".join(warnings)) == bool(len(data) % RECORD_SIZE)


records_strategy = st.lists(st.builds(
    Record,
    type=st.sampled_from([RUN_LVL, BOOT_TIME, USER_PROCESS, DEAD_PROCESS, 5, 6]),
    pid=st.integers(0, 2**31 - 1),
    line=st.sampled_from(["", "~", "~~", "pts/0", "pts/1", "tty1"]),
    id=st.just(""),
    user=st.sampled_from(["", "alice", "bob", "shutdown", "reboot", "runlevel"]),
    host=st.just(""),
    time=st.datetimes(timezones=st.just(UTC)),
), max_size=40)


@given(records_strategy)
def test_pairing_any_records_keeps_every_login(records: list[Record]) -> None:
    logins = pair_logins(records)
    started = [r for r in records if r.type == USER_PROCESS and r.user
               and not r.line.startswith("~")]
    assert [(l.user, l.line, l.start) for l in logins] == [
        (r.user, r.line, r.time) for r in started]
    for login_ in logins:
        assert (login_.end is None) == (login_.end_reason == "still logged in")


def test_pairing_200k_records_returns() -> None:
    # 100k sessions all open at once, then closed in login order: an implementation
    # that searches the open sessions for each logout would not return.
    n = 100_000
    start = at("00:00")
    records = [Record(USER_PROCESS, i, f"pts/{i}", "", "u", "", start + timedelta(seconds=i))
               for i in range(n)]
    records += [Record(DEAD_PROCESS, i, f"pts/{i}", "", "", "",
                       start + timedelta(seconds=n + i)) for i in range(n)]
    logins = pair_logins(records)
    assert len(logins) == n
    assert logins[-1].end == start + timedelta(seconds=2 * n - 1)
