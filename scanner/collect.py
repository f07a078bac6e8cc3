"""The collect step: walk, hash what changed in a process pool, run the other
collectors, and commit everything as one session."""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import duckdb

from scanner.collectors import command, logins, sysinfo
from scanner.collectors.conffile import ContentSelector, content_selector
from scanner.chain import chain_key
from scanner.collectors.file import FileSettings, file_settings
from scanner.config import Config
from scanner.hasher import DETAIL_FIELDS, detail_batch, init_worker
from scanner.session import SessionBuilder
from scanner.store import SessionInfo, scalar, set_meta
from scanner.walk import walk

#: Files per task sent to a worker: big enough to amortize the IPC (1024 measured 6 % faster
#: than 256 on a 60k-file baseline), small enough to balance the last tasks.
CHUNK = 1024
#: Worker results are bulk-loaded once this many have accumulated.
FLUSH_ROWS = 16384
#: meta key of the settings stored digests and contents were made with (conffile, hash).
SELECTOR_KEY = "content_selector"


@dataclass
class Progress:
    """Counters a progress display reads; updated as the collect goes."""

    walked: int = 0
    detailed: int = 0
    queued: int = 0
    bytes_hashed: int = 0


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
    progress = Progress()
    if settings is not None:
        _collect_files(settings, selector, builder, progress, on_progress or (lambda p: None))
    elif config.enabled("conffile"):
        builder.warn("conffile: [file] is disabled, so no file content is stored")
    for name, run in _other_collectors():
        if config.enabled(name):
            try:
                run(config, builder)
            except OSError as error:
                # The host cannot serve this collector (no /proc, say): the session still counts.
                builder.warn(f"{name}: cannot collect: {error}")
    session = builder.commit(host=host)
    if reselect:
        # After the commit: a crash in between costs one more full re-read, nothing else.
        set_meta(con, {SELECTOR_KEY: fingerprint})
    return CollectResult(session, progress, builder.warnings)


def _other_collectors() -> list[tuple[str, Callable[[Config, SessionBuilder], None]]]:
    """Collectors beyond files, by section name, in the order they run."""
    return [("command", command.run), ("sysinfo", sysinfo.run), ("wtmp", logins.run)]


def _collect_files(settings: FileSettings, selector: ContentSelector | None,
                   builder: SessionBuilder, progress: Progress,
                   on_progress: Callable[[Progress], None]) -> None:
    options = {"noatime": os.geteuid() == 0, "algorithm": settings.algorithm, "content": selector}
    with _LazyPool(settings.workers, options, builder, progress) as pool:
        for batch in walk(settings.spec, builder.warn):
            builder.add_walk_batch(batch)
            progress.walked += len(batch["url"])
            if not builder.has_history:
                # First session: everything needs hashing, so hash while the walk goes on.
                pool.submit(_tasks_of(batch))
            pool.collect_ready()
            on_progress(progress)
        if builder.has_history:
            pool.submit(iter(builder.tasks_needing_detail()))
        pool.drain(lambda: on_progress(progress))
    builder.finish_files()


def _tasks_of(batch: dict[str, list]) -> Iterator[tuple[str, int, int, int]]:
    return ((url, mode, inode, device) for url, mode, inode, device in
            zip(batch["url"], batch["st_mode"], batch["inode"], batch["device"]) if mode is not None)


class _LazyPool:
    """A worker pool started on first use, so a collect with nothing to hash forks nothing."""

    def __init__(self, workers: int, options: dict, builder: SessionBuilder, progress: Progress) -> None:
        self.workers, self.options = workers, options
        self.builder, self.progress = builder, progress
        self.pool = None
        self.pending: deque = deque()
        self.results: tuple[list, ...] = tuple([] for _ in DETAIL_FIELDS)

    def __enter__(self) -> _LazyPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.terminate() if exc[0] else self.pool.close()
            self.pool.join()

    def submit(self, tasks: Iterator[tuple[str, int, int, int]]) -> None:
        chunk: list = []
        for task in tasks:
            chunk.append(task)
            if len(chunk) == CHUNK:
                self._send(chunk)
                chunk = []
        if chunk:
            self._send(chunk)

    def _send(self, chunk: list) -> None:
        if self.pool is None:
            context = multiprocessing.get_context("forkserver")
            # Workers import only the hasher: a fork of this process would inherit DuckDB's threads.
            context.set_forkserver_preload(["scanner.hasher"])
            self.pool = context.Pool(self.workers, initializer=init_worker, initargs=(self.options,))
        self.pending.append(self.pool.apply_async(detail_batch, (chunk,)))
        self.progress.queued += len(chunk)

    def collect_ready(self) -> None:
        while self.pending and self.pending[0].ready():
            self._take(self.pending.popleft().get())

    def drain(self, tick: Callable[[], None]) -> None:
        while self.pending:
            self._take(self.pending.popleft().get())
            tick()
        self._flush()

    def _take(self, columns: tuple[list, ...]) -> None:
        for target, values in zip(self.results, columns):
            target.extend(values)
        self.progress.detailed += len(columns[0])
        self.progress.bytes_hashed += sum(size for size, digest in zip(columns[4], columns[1])
                                          if size and digest)
        if len(self.results[0]) >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.results[0]:
            self.builder.add_details(self.results)
            self.results = tuple([] for _ in DETAIL_FIELDS)
