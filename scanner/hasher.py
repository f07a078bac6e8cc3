"""Reading files in the worker processes: digest, xattrs and stat of each one.

``Reader`` does the reading, for the walk (files opened by name in the directory it
holds open) and for hash tasks (``detail_batch``, files opened by path). Each file is
opened with O_NOFOLLOW|O_NONBLOCK (O_NOATIME as root), checked with fstat to be a
regular file (the one walked), and read: small files in one read, big ones mapped
where scanner/mapped.py finds that safe, else through a reusable buffer. Whatever goes
wrong becomes an ``error`` value in the result: a worker never raises for a bad file.

Results come back as columns and, through ``detail_tables``, as Arrow tables: the
worker pays for the conversion, not the parent that loads the tables into DuckDB.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections import deque
from typing import Any

import blake3
import orjson
import pyarrow as pa

from scanner import mapped
from scanner.paths import url_to_path

#: Files of at least this size are mapped or read through a reusable buffer (PERF.md).
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
    mapped.enable()


def _new_hasher() -> Any:
    if _options["algorithm"] == "sha256":
        return hashlib.sha256()
    # One thread: the workers keep every core busy already. blake3's own threads
    # (max_threads=AUTO) made inputs of 128 KiB to 1 MiB, the most of our reads, 2-2.5x
    # slower on a 2-core host (and hold both cores meanwhile); they only pay off for
    # single updates of several MiB, which the 1 MiB buffer never makes.
    return blake3.blake3()


def _read_all(fd: int, size: int, view: memoryview) -> tuple[Any, bytes | None, bool]:
    """Hash a file's bytes (a big one mapped or through ``view``, BIG_FILE bytes);
    returns (hasher, bytes if small, whether the size moved)."""
    hasher = _new_hasher()
    if size < BIG_FILE:
        # One read of size + 1: a longer answer means the file grew while we looked.
        data = os.read(fd, size + 1)
        hasher.update(data)
        return hasher, data, len(data) != size
    # Mapped where scanner/mapped.py can keep a truncation from killing the worker,
    # read for the rest: the copy out of the page cache is a fifth of a warm baseline.
    total = mapped.feed(fd, size, hasher.update)
    while count := os.preadv(fd, [view], total):
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


def _file_row(path: str, fd: int, before: os.stat_result, hasher: Any, data: Any,
              moved: bool) -> tuple:
    """The detail row of a regular file read whole (``data``: its bytes if small)."""
    xattrs = xattrs_json(fd)
    if moved:
        return (None, xattrs, "changed while being read", before.st_size, before.st_mtime_ns,
                before.st_ctime_ns, None, None, None)
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
    return selector(path, bytes(data) if isinstance(data, memoryview) else data)


def detail_batch(tasks: list[tuple[str, int, int, int] | None]) -> tuple[tuple[list, ...], int]:
    """Digest and xattrs for a batch of (url, st_mode, inode, device): DETAIL_FIELDS
    columns (a row of NULLs for a task that is None), and how many of the files read
    waited on the disk (``Reader.waited``)."""
    with Reader() as reader:
        for index, task in enumerate(tasks):
            if task is not None:
                url, mode, inode, device = task
                reader.add(index, url_to_path(url), mode, inode, device)
        columns = reader.columns(len(tasks))
    return ([task[0] if task is not None else None for task in tasks],) + columns, reader.waited


class Reader:
    """Reads the entries it is given: digest, xattrs and stat of each regular file, the
    xattrs of anything else; rows come back by the index each entry was given.

    A file is opened, checked with fstat to still be the regular file that was walked,
    and, when small, read at once if the page cache holds it all (RWF_NOWAIT: the read
    fails rather than wait for the disk). Warm, that is all: open, fstat, read,
    flistxattr, close. Otherwise the kernel is asked to start reading it and the file
    waits in a window of WINDOW opened files; on a cold cache the number of reads in
    flight decides the speed (PERF.md: 8 readers took half the time of 2), and a worker
    reads one file at a time. Big files always take the window (then mapped or read).
    The walk hands entries over while it holds their directory open, so a file is opened
    by its name in that directory and a path swapped meanwhile is not followed.
    Whatever goes wrong becomes an ``error`` value in the entry's row; a descriptor
    never outlives the reader.
    """

    WINDOW = 16
    #: Bytes hinted per file: enough for the small files that dominate; a big file is
    #: read at the disk's pace anyway, and hinting all of it could evict the window.
    HINT = 1 << 20

    def __init__(self) -> None:
        global _buffer
        self.flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        if _options["noatime"]:
            self.flags |= os.O_NOATIME
        self.window: deque = deque()
        self.rows: dict[int, tuple] = {}
        #: Small files the page cache did not hold whole: the pool's sign of a cold cache.
        self.waited = 0
        self.nowait = getattr(os, "RWF_NOWAIT", 0)
        if _buffer is None:
            _buffer = bytearray(BIG_FILE + 1)
        self.view = memoryview(_buffer)

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, index: int, path: str, mode: int, inode: int, device: int,
            dir_fd: int | None = None, name: str | None = None) -> None:
        """Read entry number ``index`` (walked with ``mode``, ``inode`` and ``device``),
        now or once WINDOW more files have been opened: a regular file is opened as
        ``name`` in the open directory ``dir_fd`` when given, else by ``path``."""
        if not stat.S_ISREG(mode):
            self.rows[index] = _special_row(path)
            return
        opened = self._open(path if dir_fd is None else name, dir_fd)
        if isinstance(opened, OSError):
            self.rows[index] = _error_row(opened)
        elif opened is None or (opened[1].st_ino, opened[1].st_dev) != (inode, device):
            if opened is not None:
                os.close(opened[0])
            self.rows[index] = _REPLACED
        else:
            self.take(index, path, *opened)

    def open(self, name: str, dir_fd: int) -> tuple[int, os.stat_result] | None:
        """Open ``name`` in the open directory ``dir_fd`` for ``take``: the fd and its
        fstat, or None (closed again) when that is not a regular file that opens."""
        opened = self._open(name, dir_fd)
        return None if isinstance(opened, OSError) else opened

    def _open(self, target: str, dir_fd: int | None) -> tuple[int, os.stat_result] | OSError | None:
        """Open and fstat ``target``: (fd, fstat) of a regular file, None (closed again)
        for anything else, or the OSError that stopped it."""
        try:
            fd = os.open(target, self.flags, dir_fd=dir_fd)
        except OSError as error:
            return error
        try:
            info = os.fstat(fd)
        except OSError as error:
            os.close(fd)
            return error
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            return None
        return fd, info

    def take(self, index: int, path: str, fd: int, before: os.stat_result) -> None:
        """Read the regular file open as ``fd`` (its fstat ``before``) as entry ``index``,
        now or from the window; the reader closes ``fd``."""
        try:
            if (got := self._read_cached(fd, before.st_size)) >= 0:
                hasher = _new_hasher()
                data = self.view[:got]
                hasher.update(data)
                # One read of size + 1: a longer answer means the file grew meanwhile.
                row = _file_row(path, fd, before, hasher, data, got != before.st_size)
            else:
                try:
                    os.posix_fadvise(fd, 0, self.HINT, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass  # only a hint: the read still works without it
                self.window.append((index, path, fd, before))
                fd = -1
                if len(self.window) > self.WINDOW:
                    self._read(*self.window.popleft())
                return
        except OSError as error:
            row = _error_row(error)
        finally:
            if fd >= 0:
                os.close(fd)
        self.rows[index] = row

    def columns(self, count: int) -> tuple[list, ...]:
        """Read what is left; the rows of entries 0 .. count-1 as DETAIL_FIELDS columns
        after the url (NULLs for an index never added)."""
        while self.window:
            self._read(*self.window.popleft())
        rows = self.rows
        return tuple(map(list, zip(*(rows.get(index, _NOTHING) for index in range(count))))) \
            if count else tuple([] for _ in _NOTHING)

    def close(self) -> None:
        """Close the files opened and not read yet (when giving up)."""
        while self.window:
            os.close(self.window.popleft()[2])

    def _read_cached(self, fd: int, size: int) -> int:
        """Read a small file whole into the buffer if the page cache holds all of it: the
        byte count (size + 1 when it grew), or -1 when it must wait for the disk."""
        if size >= BIG_FILE or not self.nowait:
            return -1
        try:
            got = os.preadv(fd, [self.view[:size + 1]], 0, self.nowait)
        except BlockingIOError:
            self.waited += 1
            return -1
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            self.nowait = 0  # a filesystem that cannot say: read the ordinary way
            return -1
        # Fewer bytes than the size: only part is cached (or the file shrank, which the
        # ordinary read will tell).
        if got < size:
            self.waited += 1
            return -1
        return got

    def _read(self, index: int, path: str, fd: int, before: os.stat_result) -> None:
        try:
            hasher, data, moved = _read_all(fd, before.st_size, self.view[:BIG_FILE])
            if not moved and before.st_size >= BIG_FILE:
                # A long read: a file rewritten in place meanwhile keeps its size.
                after = os.fstat(fd)
                moved = (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns)
            row = _file_row(path, fd, before, hasher, data, moved)
        except OSError as error:
            row = _error_row(error)
        finally:
            os.close(fd)
        self.rows[index] = row


def _special_row(path: str) -> tuple:
    """FIFOs, sockets, devices, directories and symlinks are never opened: their xattrs
    are read by path."""
    try:
        return (None, xattrs_json(path)) + _NOTHING[2:]
    except OSError as error:
        return _error_row(error)


def _error_row(error: OSError) -> tuple:
    return (None, None, _describe(error)) + _NOTHING[3:]


_REPLACED = (None, None, "replaced during scan") + _NOTHING[3:]


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
