"""Times as users read them: local time zone, seconds, zone name."""

from __future__ import annotations

from datetime import datetime, timezone


def local_time(moment: datetime, *, tz=None) -> str:
    """``2026-11-25 10:00:01 CET`` in the local time zone (or ``tz``)."""
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def from_ns(ns: int | None, *, tz=None) -> str | None:
    """A nanosecond epoch timestamp in local time, with fractional seconds."""
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).astimezone(tz)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + f".{ns % 1_000_000_000:09d} " + moment.strftime("%Z")
