"""Hash a big file through a read-only mapping of its cached pages, where that is safe.

Reading copies every byte out of the page cache into our buffer; mapped, the hash
reads the cached pages where they lie, as b3sum does (but one CHUNK at a time, so
a worker never holds more than that of a huge file). On the bench tree (6.9 GB in
files of 1 MiB or more, warm) a baseline collect took 3.66-3.72 s mapped against
3.80-3.91 s read.

A mapped page that can no longer be had raises SIGBUS, which kills the worker and so
the session: a page past the end of a file truncated meanwhile, or a page the kernel
must read again from a disk that fails. So a file is mapped only when
- it lies on a local file system (LOCAL_FILESYSTEMS, by fstatfs of the open file, not
  by device number: a mount gone during the walk may leave its number to a FUSE one): a
  network or FUSE file system can change a file's size behind the kernel's back;
- this process holds a read lease on it (F_SETLEASE): nobody has it open for writing,
  and whoever opens it for writing or truncates it waits until we let go. The kernel
  tells us with SIGIO; we stop at the next chunk and the caller reads the rest;
- every page of the chunk is in the page cache (mincore), so no page needs a disk read.
  mincore tells the truth only to the file's owner or a process with CAP_FOWNER (to
  others it says every page is cached), so without CAP_FOWNER other users' files are read.
Otherwise the caller reads the file (or the rest of it) as before. Leases need the
file's owner or CAP_LEASE, so a collect that is not root reads other users' files.

Two windows are left, and neither opens to an unprivileged user: a page the kernel
evicts in the milliseconds between mincore and the hash, on a disk that then fails; and
a worker stopped (SIGSTOP, a cgroup freeze, a debugger) for longer than the kernel waits
for a lease (lease-break-time), after which a truncation goes ahead under the mapping.

The mapping and mincore go through ctypes: Python's mmap object neither tells its
address nor has mincore.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
from collections.abc import Callable

#: Bytes mapped and hashed at a time, between two looks at whether someone wants to
#: write (a few ms of work); a multiple of the page size.
CHUNK = 8 << 20
#: File systems whose files change only through this kernel, by statfs f_type (their
#: magic numbers, linux/magic.h; ext2, ext3 and ext4 share one).
LOCAL_FILESYSTEMS = {0xEF53: "ext2-4", 0x58465342: "xfs", 0x9123683E: "btrfs",
                     0xF2F52010: "f2fs", 0x01021994: "tmpfs"}
#: Seconds the kernel must wait for us before it takes a lease away by force
#: (/proc/sys/fs/lease-break-time, 45 by default): far more than one CHUNK takes.
MIN_LEASE_BREAK_TIME = 5

_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value
_PyBUF_READ = 0x100
_PAGE = os.sysconf("SC_PAGE_SIZE")
_CAP_FOWNER = 3
#: struct statfs, of which only the first field (f_type, a long on 64-bit Linux) is read.
_STATFS_SIZE = 256
#: mincore's byte per page: only its lowest bit (resident) is defined.
_RESIDENT = bytes(byte & 1 for byte in range(256))

_libc: ctypes.CDLL | None = None
#: Whether mincore tells this process the truth about files it does not own.
_sees_others_cache = False
#: Set by SIGIO: someone waits to write to or truncate the file we hold a lease on.
_lease_broken = False


def enable() -> bool:
    """Let this process (a worker, from its main thread) hash through mappings; False,
    and files are read, where the host cannot make it safe."""
    global _libc, _sees_others_cache
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return False  # mmap's offset and statfs's f_type are declared here as 64-bit Linux has them
    try:
        with open("/proc/sys/fs/lease-break-time") as handle:
            if int(handle.read()) < MIN_LEASE_BREAK_TIME:
                return False
        sees_others_cache = _has_capability(_CAP_FOWNER)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        libc.fstatfs.argtypes = [ctypes.c_int, ctypes.c_char_p]
        view = ctypes.pythonapi.PyMemoryView_FromMemory
        view.restype = ctypes.py_object
        view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
        # SIGIO would end the process: the handler must be in place before any lease.
        signal.signal(signal.SIGIO, _on_lease_break)
    except (OSError, ValueError, AttributeError):
        return False  # no /proc, no libc symbols, or not the main thread
    _libc, _sees_others_cache = libc, sees_others_cache
    return True


def _on_lease_break(_signum: int, _frame: object) -> None:
    global _lease_broken
    _lease_broken = True


def _has_capability(number: int) -> bool:
    """Whether this process's effective capabilities (/proc/self/status) hold ``number``."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> number & 1)
    return False


def on_local_filesystem(fd: int) -> bool:
    """Whether the open file ``fd`` lies on one of LOCAL_FILESYSTEMS (False before enable)."""
    if _libc is None:
        return False
    buffer = ctypes.create_string_buffer(_STATFS_SIZE)
    if _libc.fstatfs(fd, buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value in LOCAL_FILESYSTEMS


def feed(fd: int, size: int, update: Callable[[memoryview], object]) -> int:
    """Hand the first bytes of the open file ``fd`` (``size`` bytes by the caller's
    fstat) to ``update`` through a mapping, as far as that is safe. ``update`` must not
    keep the view it is given: the mapping goes when it returns.

    Returns how many bytes it handed over: 0 when the file cannot be mapped safely, less
    than ``size`` when someone asked to write meanwhile or a chunk is not all cached.
    The caller reads the rest.
    """
    global _lease_broken
    if _libc is None or size == 0 or not on_local_filesystem(fd):
        return 0
    _lease_broken = False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return 0  # open for writing somewhere, another user's file, or no leases here
    try:
        # Under the lease nobody can change the size: a change before it shows here.
        info = os.fstat(fd)
        if info.st_size != size or not (_sees_others_cache or info.st_uid == os.geteuid()):
            return 0
        done = 0
        # One chunk mapped at a time: the process holds no more than CHUNK of a huge
        # file, and a chunk the cache lacks ends the mapping there.
        while done < size and not _lease_broken:
            count = min(CHUNK, size - done)
            if not _feed_chunk(fd, done, count, update):
                break
            done += count
        return done
    finally:
        # Only now, with the pages no longer mapped, may a waiting writer go on.
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            # The kernel took the lease away (we were stopped for too long): the
            # caller's fstat after the read sees whatever changed meanwhile.
            pass


def _feed_chunk(fd: int, offset: int, count: int, update: Callable[[memoryview], object]) -> bool:
    """Map ``count`` bytes of ``fd`` from ``offset`` (page-aligned) and hand them to
    ``update`` if the page cache holds them all; whether it did."""
    assert _libc is not None
    address = _libc.mmap(None, count, _PROT_READ, _MAP_SHARED, fd, offset)
    if address in (None, _MAP_FAILED):
        return False
    unmap = True
    try:
        pages = ctypes.create_string_buffer((count + _PAGE - 1) // _PAGE)
        if _libc.mincore(address, count, pages) != 0 or 0 in pages.raw.translate(_RESIDENT):
            return False
        view = ctypes.pythonapi.PyMemoryView_FromMemory(address, count, _PyBUF_READ)
        try:
            update(view)
        finally:
            try:
                view.release()  # a view kept anyway now raises ValueError instead of reading freed memory
            except BufferError:
                unmap = False  # something holds a buffer of it: leak the mapping rather than crash
        return True
    finally:
        if unmap:
            _libc.munmap(address, count)
