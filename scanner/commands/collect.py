"""collect and reset."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import duckdb

from scanner.collect import CollectResult, FileScan, Progress, collect, file_scan
from scanner.commands.context import Command, Context
from scanner.errors import ExitCode
from scanner.logsetup import LOGGER
from scanner.forkserver import prestart
from scanner.retention import reset
from scanner.store import list_sessions
from scanner.timefmt import local_time


def add_collect_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of collect, reset and run."""
    parser.add_argument("--paranoid", action="store_true",
                        help="re-hash every file, even those whose attributes are unchanged")


@contextmanager
def collecting(context: Context, *, reset: bool = False
               ) -> Iterator[tuple[duckdb.DuckDBPyConnection, FileScan | None]]:
    """The run lock, the walk of the files (started first: the workers walk while the
    database opens) and a read-write connection, for a command that collects."""
    prestart()
    with context.locked(), \
            (file_scan(context.config, context.storage, paranoid=context.args.paranoid or reset)
             or nullcontext()) as scan, \
            context.connected() as con:
        yield con, scan


def collect_session(context: Context, con: duckdb.DuckDBPyConnection,
                    scan: FileScan | None) -> CollectResult:
    """Collect one session with a progress line on a terminal; print what was saved."""
    show = _ProgressLine(context) if context.stderr.isatty() and not context.args.quiet else None
    result = collect(context.config, con, scan, paranoid=context.args.paranoid,
                     on_progress=show.update if show else None)
    if show:
        show.clear()
    info, progress = result.session, result.progress
    context.say(f"session {info.uuid} saved")
    logging.getLogger(LOGGER).info(
        "session %s saved: %d items, %d read, %d bytes hashed", info.uuid, info.item_count,
        progress.detailed, progress.bytes_hashed)
    context.say(f"{info.item_count} items, {progress.detailed} read, "
                f"{progress.bytes_hashed / 1e6:.1f} MB hashed, "
                f"{(info.end_time - info.start_time).total_seconds():.1f} s")
    for warning in result.warnings:
        context.warn(warning)
    return result


def run_collect(context: Context) -> int:
    """Collect a session: store the current system state in the database.

    Walks the [file] include globs, hashes new and changed files in parallel, runs
    the enabled collectors and stores everything as one session. Prints
    "session <uuid> saved" and counts.
    """
    with collecting(context) as (con, scan):
        collect_session(context, con, scan)
    return ExitCode.OK


def run_reset(context: Context) -> int:
    """Reset the database: drop all sessions, then collect a new baseline.

    Reports are kept.
    """
    with collecting(context, reset=True) as (con, scan):
        dropped = reset(con)
        context.say(f"dropped {dropped} sessions")
        collect_session(context, con, scan)
        context.say("database reset done, new session collected:")
        for session in list_sessions(con):
            context.say(f"{session.uuid} {local_time(session.start_time)}")
    return ExitCode.OK


class _ProgressLine:
    """Entries walked, files read, bytes hashed, rate and ETA, redrawn on one terminal line."""

    def __init__(self, context: Context) -> None:
        self.stream = context.stderr
        self.started = time.monotonic()
        self.phase_start: tuple[float, int] | None = None  # (when, files read) when reading began
        self.last = 0.0

    def update(self, progress: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 or not progress.walked:
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        rate = progress.bytes_hashed / elapsed / 1e6
        line = f"walked {progress.walked} entries, read {progress.detailed}"
        eta = None
        if progress.queued:
            # Reading what changed: the remaining files at the rate of this phase.
            if self.phase_start is None:
                self.phase_start = (now, progress.detailed)
            line += f"/{progress.queued}"
            since, done = self.phase_start
            if progress.detailed > done and now > since:
                eta = (progress.queued - progress.detailed) / ((progress.detailed - done) / (now - since))
        elif progress.expected and progress.walked:
            # Walking: about as many entries as the last session held.
            eta = max(progress.expected - progress.walked, 0) / (progress.walked / elapsed)
        line += f" files, {progress.bytes_hashed / 1e6:.0f} MB at {rate:.0f} MB/s"
        if eta is not None:
            line += f", about {_duration(eta)} left"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()

    def clear(self) -> None:
        self.stream.write("\r\x1b[K")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


COLLECT = Command("collect", run_collect, add_collect_arguments)
RESET = Command("reset", run_reset, add_collect_arguments)
