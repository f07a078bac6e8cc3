"""Login records from wtmp: parse the binary file and pair logins with their ends.

The format
----------
wtmp (``/var/log/wtmp``, rotated to ``wtmp.1``) is an append-only array of glibc
``struct utmp`` records of 384 bytes each on Linux x86-64 and arm64, little endian::

    short ut_type; (2 bytes padding) int ut_pid; char ut_line[32]; char ut_id[4];
    char ut_user[32]; char ut_host[256]; short e_termination, e_exit;
    int32 ut_session; int32 tv_sec; int32 tv_usec; int32 ut_addr_v6[4]; char unused[20]

Strings are NUL-padded (not terminated when they fill the field) and decoded as UTF-8
with replacement characters, so a hostile user or host name cannot stop a report.
A record whose type is not 0..9 or whose time is impossible is garbage: it is skipped
and counted in one warning. Blocks of NUL bytes (a crash can leave them in the file)
are skipped likewise. A partial record at the end is reported as "truncated".
Nothing in here raises on bad input: wtmp is written by other programs and a broken
file must cost a warning in the report, never the run.

The pairing rule
----------------
Records are taken in file order (oldest file first). A USER_PROCESS record opens a
session on its line (``pts/0``). The session ends at the first later record of one of
these kinds, as util-linux ``last`` decides:

- a DEAD_PROCESS (or a USER_PROCESS with an empty user, which is how some programs
  log out) on the same line: end_reason "logout";
- another USER_PROCESS on the same line (the logout record was lost): "logout" at the
  time of the new login, which is what ``last`` shows too;
- a shutdown record (RUN_LVL with user "shutdown", or a sysvinit change to runlevel
  0 or 6): every open session ends, "shutdown" (``last`` prints "down");
- a BOOT_TIME record (user "reboot"): every open session ends, "boot" (``last`` prints
  "crash": the machine went down without logging anyone out).

A session with none of these after it is still open: end None, "still logged in".
Open sessions live in a dict keyed by line, so pairing is one pass and linear in the
number of records; a boot closes each open session once.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

# "xx" is the padding after ut_type: without it "<" (no alignment) makes 382 bytes.
UTMP = struct.Struct("<hxxi32s4s32s256shhiii4i20s")
RECORD_SIZE = UTMP.size
assert RECORD_SIZE == 384

EMPTY, RUN_LVL, BOOT_TIME, NEW_TIME, OLD_TIME = 0, 1, 2, 3, 4
INIT_PROCESS, LOGIN_PROCESS, USER_PROCESS, DEAD_PROCESS, ACCOUNTING = 5, 6, 7, 8, 9

STILL_LOGGED_IN = "still logged in"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ZERO_RECORD = bytes(RECORD_SIZE)


@dataclass(frozen=True, slots=True)
class Record:
    """One utmp record, strings decoded, time as an aware UTC datetime."""

    type: int
    pid: int
    line: str
    id: str
    user: str
    host: str
    time: datetime


@dataclass(frozen=True, slots=True)
class Login:
    """One login session: from a USER_PROCESS record to what ended it (if anything)."""

    user: str
    line: str
    host: str
    pid: int
    start: datetime
    end: datetime | None  # None while still logged in
    end_reason: str  # "logout" | "boot" | "shutdown" | "still logged in"


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def parse_wtmp(data: bytes) -> tuple[list[Record], list[str]]:
    """Decode wtmp bytes into records, in file order, and warnings about bad parts.

    Never raises: garbage records are skipped and counted, a partial record at the
    end is dropped with a "truncated" warning.
    """
    view = memoryview(data).cast("B")
    whole = len(view) - len(view) % RECORD_SIZE
    records: list[Record] = []
    warnings: list[str] = []
    garbage = zeroed = 0
    for offset in range(0, whole, RECORD_SIZE):
        raw = view[offset:offset + RECORD_SIZE]
        (ut_type, pid, line, ut_id, user, host, _term, _exit, _session,
         sec, usec, *_rest) = UTMP.unpack(raw)
        if not 0 <= ut_type <= ACCOUNTING or sec < 0 or not 0 <= usec < 1_000_000:
            garbage += 1
            continue
        if ut_type == EMPTY and raw == _ZERO_RECORD:
            zeroed += 1
            continue
        records.append(Record(
            type=ut_type, pid=pid, line=_text(line), id=_text(ut_id),
            user=_text(user), host=_text(host),
            time=_EPOCH + timedelta(seconds=sec, microseconds=usec),
        ))
    if garbage:
        warnings.append(f"{garbage} garbage record(s) skipped (impossible type or time)")
    if zeroed:
        warnings.append(f"{zeroed} zeroed record(s) skipped (NUL bytes, as a crash leaves)")
    if whole != len(view):
        warnings.append(f"truncated: the last {len(view) - whole} byte(s) are a partial "
                        f"record and were ignored")
    return records, warnings


def read_wtmp(paths: Sequence[str]) -> tuple[list[Record], list[str]]:
    """Read and parse wtmp files given oldest first (e.g. wtmp.1, then wtmp).

    A missing, unreadable or empty file is a warning naming its path; so is every
    warning from parse_wtmp. Records stay in the order given, which pairing needs.
    """
    records: list[Record] = []
    warnings: list[str] = []
    for path in paths:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:
            warnings.append(f"{path}: no such file")
            continue
        except OSError as error:
            warnings.append(f"{path}: cannot read: {error.strerror or error}")
            continue
        if not data:
            warnings.append(f"{path}: empty, no login records")
            continue
        file_records, file_warnings = parse_wtmp(data)
        records.extend(file_records)
        warnings.extend(f"{path}: {warning}" for warning in file_warnings)
    return records, warnings


def _kind(record: Record) -> str | None:
    """What a record means for pairing: login, logout, boot, shutdown or nothing."""
    # The "~" line and the user names mark system records; `last` trusts them over
    # ut_type, because old programs did not always fill in the type.
    system = record.line.startswith("~")
    if record.type == BOOT_TIME or (system and record.user.startswith("reboot")):
        return "boot"
    if record.type == RUN_LVL or system:
        if record.user.startswith("shutdown"):
            return "shutdown"
        # sysvinit logs runlevel changes with the new level in the pid's low byte.
        if record.type == RUN_LVL and chr(record.pid & 0xFF) in "06":
            return "shutdown"
        return None
    if record.type == USER_PROCESS:
        return "login" if record.user else "logout"
    if record.type == DEAD_PROCESS:
        return "logout"
    return None


def pair_logins(records: Iterable[Record]) -> list[Login]:
    """Pair login records with their ends, in one pass (see the module docstring).

    Records must be in file order. Logins come back in the order they started in
    the file; sessions never ended have end None and end_reason "still logged in".
    """
    logins: list[Login | Record] = []  # a Record is a placeholder for an open login
    open_by_line: dict[str, int] = {}
    open_lineless: list[int] = []  # no line, so no logout can ever match them

    def close(index: int, end: datetime, reason: str) -> None:
        start = logins[index]
        assert isinstance(start, Record)
        logins[index] = Login(start.user, start.line, start.host, start.pid,
                              start.time, end, reason)

    for record in records:
        kind = _kind(record)
        if kind is None:
            continue
        if kind in ("boot", "shutdown"):
            for index in [*open_by_line.values(), *open_lineless]:
                close(index, record.time, kind)
            open_by_line.clear()
            open_lineless.clear()
            continue
        if not record.line:
            if kind == "login":
                open_lineless.append(len(logins))
                logins.append(record)
            continue
        previous = open_by_line.pop(record.line, None)
        if previous is not None:
            close(previous, record.time, "logout")
        if kind == "login":
            open_by_line[record.line] = len(logins)
            logins.append(record)

    return [
        item if isinstance(item, Login) else Login(
            item.user, item.line, item.host, item.pid, item.time, None, STILL_LOGGED_IN)
        for item in logins
    ]


def relevant_logins(logins: Iterable[Login], window: tuple[datetime, datetime],
                    change_times: Iterable[datetime]) -> list[Login]:
    """Logins that overlap the window [start, end] or were open at a change time.

    Times must be timezone-aware. Bounds are inclusive; a login still open overlaps
    everything from its start on. The result has no duplicates and is sorted by start.
    """
    window_start, window_end = window
    changes = sorted(change_times)
    found: dict[Login, None] = {}  # a dict keeps one copy of each, in a stable order
    for login in logins:
        end = login.end
        if login.start <= window_end and (end is None or end >= window_start):
            found[login] = None
            continue
        # The first change at or after the start decides: it is inside the session
        # unless it is after the end.
        index = bisect.bisect_left(changes, login.start)
        if index < len(changes) and (end is None or changes[index] <= end):
            found[login] = None
    return sorted(found, key=lambda login: login.start)


def _stamp(moment: datetime, tz: tzinfo | None) -> str:
    local = moment.astimezone(tz)  # tz None: the local time zone
    return local.strftime("%Y-%m-%d %H:%M:%S %Z")


def format_login(login: Login, tz: tzinfo | None = None) -> str:
    """One line for a report: "start - end user line@host", in tz (default: local).

    The end reads "still logged in" for an open session; "@host" is left out for a
    local login, which has no host.
    """
    end = STILL_LOGGED_IN if login.end is None else _stamp(login.end, tz)
    where = f"{login.line}@{login.host}" if login.host else login.line
    return f"{_stamp(login.start, tz)} - {end} {login.user} {where}"
