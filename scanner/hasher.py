"""Hash worker: top-level functions run in a pool of processes, fed batches of paths.

Each file is opened with O_NOFOLLOW|O_NONBLOCK (O_NOATIME as root), checked with
fstat to still be the regular file that was walked, and read into memory (small
files in one read, big ones through a reusable buffer). Whatever goes wrong becomes
an ``error`` value in the result: a worker never raises for a bad file.

Results come back as columns and, through ``detail_table``, as one Arrow table: the
worker pays for the conversion, not the parent that loads the tables into DuckDB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import deque
from contextlib import suppress
from typing import Any

import blake3
import orjson
import pyarrow as pa

from scanner.paths import url_to_path

#: Files of at least this size are read through a reusable buffer (PERF.md).
BIG_FILE = 1 << 20
#: What reading an entry found, as the parent receives it (``detail_tables``).
DETAIL_SCHEMA = pa.schema([
    ("url", pa.string()), ("hash", pa.binary()), ("xattrs", pa.string()), ("error", pa.string()),
    ("size", pa.int64()), ("mtime_ns", pa.int64()), ("ctime_ns", pa.int64()),
    ("content", pa.binary()), ("note", pa.string()),
])
#: Stored texts (a config file's), one row per distinct digest.
CONTENT_SCHEMA = pa.schema([("digest", pa.binary()), ("data", pa.binary()), ("size", pa.int64())])
#: Columns of a ``detail_batch`` result: DETAIL_SCHEMA's, then the stored text itself.
DETAIL_FIELDS = tuple(DETAIL_SCHEMA.names) + ("data",)
_NOTHING = (None,) * (len(DETAIL_FIELDS) - 1)

#: Digests the file collector can compute ([file] hash).
ALGORITHMS = ("blake3", "sha256")
_options: dict[str, Any] = {"noatime": False, "algorithm": "blake3", "content": None}
_buffer: bytearray | None = None


def init_worker(options: dict[str, Any]) -> None:
    """Pool initializer: remember the options for every later batch in this process."""
    _options.update(options)


def _new_hasher() -> Any:
    if _options["algorithm"] == "sha256":
        return hashlib.sha256()
    # AUTO, never N: blake3-py builds a new thread pool per hasher for N > 1 (PERF.md).
    return blake3.blake3(max_threads=blake3.blake3.AUTO)


def _read_all(fd: int, size: int) -> tuple[Any, bytes | None, bool]:
    """Hash a file's bytes; returns (hasher, bytes if small, whether the size moved)."""
    global _buffer
    hasher = _new_hasher()
    if size < BIG_FILE:
        # One read of size + 1: a longer answer means the file grew while we looked.
        data = os.read(fd, size + 1)
        hasher.update(data)
        return hasher, data, len(data) != size
    if _buffer is None:
        _buffer = bytearray(BIG_FILE)
    view = memoryview(_buffer)
    total = 0
    with os.fdopen(os.dup(fd), "rb", buffering=0) as handle:
        while count := handle.readinto(view):
            hasher.update(view[:count])
            total += count
    return hasher, None, total != size


def xattrs_json(target: int | str, *, follow: bool = False) -> str | None:
    """Extended attributes of an open fd or a path as a JSON object, None when there are none."""
    try:
        names = os.listxattr(target, follow_symlinks=follow) if isinstance(target, str) \
            else os.listxattr(target)
    except OSError as error:
        if error.errno in (errno.ENOTSUP, errno.ENODATA):
            return None
        raise
    if not names:
        return None
    found: dict[str, str] = {}
    for name in sorted(names):
        try:
            value = os.getxattr(target, name, follow_symlinks=follow) if isinstance(target, str) \
                else os.getxattr(target, name)
        except OSError:
            continue  # removed between listing and reading
        try:
            text = value.decode("utf-8")
            found[name] = text if text.isprintable() else "0x" + value.hex()
        except UnicodeDecodeError:
            found[name] = "0x" + value.hex()
    return orjson.dumps(found, option=orjson.OPT_SORT_KEYS).decode() if found else None


def _detail_file(path: str, fd: int, inode: int, device: int) -> tuple:
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or before.st_ino != inode or before.st_dev != device:
            return (None, None, "replaced during scan") + _NOTHING[3:]
        hasher, data, moved = _read_all(fd, before.st_size)
        after = os.fstat(fd)
        xattrs = xattrs_json(fd)
    finally:
        os.close(fd)
    if moved or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        return None, xattrs, "changed while being read", after.st_size, after.st_mtime_ns, \
            after.st_ctime_ns, None, None, None
    stored, note = _content_of(path, data)
    return hasher.digest(), xattrs, None, before.st_size, before.st_mtime_ns, \
        before.st_ctime_ns, blake3.blake3(stored).digest() if stored is not None else None, \
        note, stored


def _content_of(path: str, data: bytes | None) -> tuple[bytes | None, str | None]:
    """The text to store for a file (None for none) and a note saying why it was withheld.

    The selector (set by the conffile collector) decides; without one nothing is kept.
    It gets data None for a file too big to hold (BIG_FILE), so it can note why.
    """
    selector = _options.get("content")
    if selector is None:
        return None, None
    return selector(path, data)


def detail_batch(tasks: list[tuple[str, int, int, int] | None]) -> tuple[list, ...]:
    """Digest and xattrs for a batch of (url, st_mode, inode, device); returns DETAIL_FIELDS
    columns, a row of NULLs for a task that is None."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    if _options["noatime"]:
        flags |= os.O_NOATIME
    columns: tuple[list, ...] = tuple([] for _ in DETAIL_FIELDS)
    ahead = _ReadAhead(tasks, flags)
    for task, opened in ahead:
        if task is None:  # a placeholder that keeps the caller's rows aligned
            for column in columns:
                column.append(None)
            continue
        url, mode, inode, device = task
        path = url_to_path(url)
        try:
            if isinstance(opened, OSError):
                raise opened
            if opened is not None:
                row = _detail_file(path, opened, inode, device)
            else:
                # FIFOs, sockets and devices are never opened: their xattrs are read by path.
                row = (None, xattrs_json(path)) + _NOTHING[2:]
        except OSError as error:
            row = (None, None, _describe(error)) + _NOTHING[3:]
        columns[0].append(url)
        for column, value in zip(columns[1:], row):
            column.append(value)
    return columns


class _ReadAhead:
    """Yields (task, fd, an OSError, or None when not a regular file), having opened the
    next WINDOW regular files and asked the kernel to start reading them.

    On a cold cache the number of reads in flight decides the speed (PERF.md: 8 readers
    took half the time of 2), and a worker reads one file at a time: the hints keep a
    window of files loading meanwhile. Warm, a hint costs one cheap system call.
    """

    WINDOW = 16
    #: Bytes hinted per file: enough for the small files that dominate; a big file is
    #: read at the disk's pace anyway, and hinting all of it could evict the window.
    HINT = 1 << 20

    def __init__(self, tasks: list, flags: int) -> None:
        self.tasks = iter(tasks)
        self.flags = flags
        self.window: deque = deque()

    def __iter__(self):
        try:
            self._fill()
            while self.window:
                yield self.window.popleft()
                self._fill()
        finally:
            for _, opened in self.window:
                if isinstance(opened, int):
                    os.close(opened)

    def _fill(self) -> None:
        while len(self.window) < self.WINDOW:
            task = next(self.tasks, _END)
            if task is _END:
                return
            opened: int | OSError | None = None
            if task is not None and stat.S_ISREG(task[1]):
                try:
                    opened = os.open(url_to_path(task[0]), self.flags)
                except OSError as error:
                    opened = error
                else:
                    with suppress(OSError):  # only a hint: the read still works without it
                        os.posix_fadvise(opened, 0, self.HINT, os.POSIX_FADV_WILLNEED)
            self.window.append((task, opened))


_END = object()


def detail_tables(columns: tuple[list, ...]) -> tuple[pa.Table, pa.Table | None]:
    """``detail_batch`` columns as Arrow: the details (DETAIL_SCHEMA) and the stored
    texts (CONTENT_SCHEMA, None when there are none)."""
    details = pa.Table.from_arrays([pa.array(values, f.type) for values, f in zip(columns, DETAIL_SCHEMA)],
                                   schema=DETAIL_SCHEMA)
    return details, content_table(columns[7], columns[9])


def content_table(digests: list, texts: list) -> pa.Table | None:
    """The stored texts among ``texts`` with their digests (CONTENT_SCHEMA), None if none."""
    kept = [(digest, data) for digest, data in zip(digests, texts) if data is not None]
    if not kept:
        return None
    return pa.table([pa.array([d for d, _ in kept], pa.binary()), pa.array([t for _, t in kept], pa.binary()),
                     pa.array([len(t) for _, t in kept], pa.int64())], schema=CONTENT_SCHEMA)


def bytes_hashed(columns: tuple[list, ...]) -> int:
    """How many bytes the files of a ``detail_batch`` result held (those that got a digest)."""
    return sum(size for size, digest in zip(columns[4], columns[1]) if size and digest)


def _describe(error: OSError) -> str:
    if error.errno == errno.ENOENT:
        return "vanished during scan"
    if error.errno == errno.ELOOP:
        return "replaced by a symlink during scan"
    return error.strerror or str(error)
