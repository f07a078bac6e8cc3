"""The collect step: walk, hash what changed in a process pool, run the other
collectors, and commit everything as one session."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb

from scanner.collectors import command, logins, sysinfo
from scanner.collectors.conffile import ContentSelector, content_selector
from scanner.chain import chain_key
from scanner.collectors.file import FileSettings, file_settings
from scanner.config import Config
from scanner.session import SessionBuilder
from scanner.store import SessionInfo, scalar, set_meta
from scanner.pool import WorkerPool
from scanner.worker import TaskResult

#: meta key of the settings stored digests and contents were made with (conffile, hash).
SELECTOR_KEY = "content_selector"


@dataclass
class Progress:
    """Counters a progress display reads; updated as the collect goes."""

    walked: int = 0
    detailed: int = 0
    queued: int = 0         # files to read after the walk (0 while walking)
    bytes_hashed: int = 0
    expected: int = 0       # items in the last session: about what the walk will find


@dataclass
class CollectResult:
    """What a collect did: the new session and its counters."""

    session: SessionInfo
    progress: Progress
    warnings: list[str] = field(default_factory=list)


def collect(config: Config, con: duckdb.DuckDBPyConnection, *, paranoid: bool = False,
            on_progress: Callable[[Progress], None] | None = None,
            host: str | None = None) -> CollectResult:
    """Take one snapshot of the host as configured and store it as a new session."""
    settings = file_settings(config)
    selector = content_selector(config) if settings is not None else None
    # The digest algorithm is part of it: digests of two algorithms must never mix.
    fingerprint = (selector.fingerprint() if selector else "") + \
        (f";hash={settings.algorithm}" if settings and settings.algorithm != "blake3" else "")
    # Stored contents follow the conffile settings of their time: when these changed
    # (a new exclude, say), re-read every file rather than keep what they now forbid.
    reselect = scalar(con, "SELECT value FROM meta WHERE key = ?", [SELECTOR_KEY]) != fingerprint
    builder = SessionBuilder(con, stat_key=settings.stat_key if settings else (),
                             paranoid=paranoid or reselect, chain_key=chain_key(config))
    # The last session's size: what the walk will likely find, for an ETA.
    progress = Progress(expected=scalar(con, "SELECT item_count FROM sessions ORDER BY id DESC LIMIT 1") or 0)
    commands = None
    try:
        # Commands mostly wait (on systemctl, say): they run while the files are walked.
        commands = command.start(config) if config.enabled("command") else None
        if settings is not None:
            _collect_files(settings, selector, builder, progress, on_progress or (lambda p: None))
        elif config.enabled("conffile"):
            builder.warn("conffile: [file] is disabled, so no file content is stored")
        for name, run in _other_collectors(commands):
            if config.enabled(name):
                try:
                    run(config, builder)
                except OSError as error:
                    # The host cannot serve this collector (no /proc, say): the session still counts.
                    builder.warn(f"{name}: cannot collect: {error}")
    except BaseException:
        # Both, even when a second Ctrl-C comes while one of them is under way.
        try:
            builder.discard()  # no staged scan data outlives a failed run
        finally:
            if commands is not None:
                commands.abandon()
        raise
    session = builder.commit(host=host)
    if reselect:
        # After the commit: a crash in between costs one more full re-read, nothing else.
        set_meta(con, {SELECTOR_KEY: fingerprint})
    return CollectResult(session, progress, builder.warnings)


def _other_collectors(commands: command.RunningCommands | None
                      ) -> list[tuple[str, Callable[[Config, SessionBuilder], None]]]:
    """Collectors beyond files, by section name, in the order they are staged (the
    commands, started before the walk when [command] is enabled, are only waited for)."""
    staged: list[tuple[str, Callable[[Config, SessionBuilder], None]]] = []
    if commands is not None:
        staged.append(("command", lambda _config, builder: command.stage(commands, builder)))
    return staged + [("sysinfo", sysinfo.run), ("wtmp", logins.run)]


def _collect_files(settings: FileSettings, selector: ContentSelector | None,
                   builder: SessionBuilder, progress: Progress,
                   on_progress: Callable[[Progress], None]) -> None:
    options = {"noatime": os.geteuid() == 0, "algorithm": settings.algorithm, "content": selector,
               "staging": str(builder.staging.directory)}
    # A first session (or --paranoid) reads every file: read them where they are walked.
    read_all = not builder.has_history or builder.paranoid
    with WorkerPool(settings.workers, options, settings.spec, readers=settings.readers) as pool:
        for result in pool.walk(settings.spec.include.bases(), with_details=read_all):
            _take(result, builder, progress)
            on_progress(progress)
        builder.finish_walk()
        if not read_all:
            tasks = builder.tasks_needing_detail()
            progress.queued = tasks.num_rows
            for result in pool.details(tasks):
                _take(result, builder, progress)
                on_progress(progress)
    builder.finish_files()


def _take(result: TaskResult, builder: SessionBuilder, progress: Progress) -> None:
    """Count one task's files into the session (they are in its staging directory already)."""
    for warning in result.warnings:
        builder.warn(warning)
    builder.add_walked(result.walked, result.unlisted)
    progress.walked += result.walked
    if result.contents is not None:
        builder.add_contents(result.contents)
    progress.detailed += result.read
    progress.bytes_hashed += result.bytes_hashed
