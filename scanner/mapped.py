"""Hash a big file through a read-only mapping of its cached pages, where that is safe.

Reading copies every byte out of the page cache into our buffer; mapped, the hash
reads the cached pages where they lie, as b3sum does (but one CHUNK at a time, so
a worker never holds more than that of a huge file). On the bench tree (6.9 GB in
files of 1 MiB or more, warm) a baseline collect took 3.66-3.72 s mapped against
3.80-3.91 s read.

A mapped page that can no longer be had raises SIGBUS, which kills the worker and so
the session: a page past the end of a file truncated meanwhile, or a page the kernel
must read again from a disk that fails. So a file is mapped only when
- it lies on a local file system (LOCAL_FILESYSTEMS): a network or FUSE file system
  can change a file's size behind the kernel's back;
- this process holds a read lease on it (F_SETLEASE): nobody has it open for writing,
  and whoever opens it for writing or truncates it waits until we let go. The kernel
  tells us with SIGIO; we stop at the next chunk and the caller reads the rest;
- every page of the chunk is in the page cache (mincore), so no page needs a disk read
  (unless the kernel evicts one in the milliseconds between, and the disk then fails).
Otherwise the caller reads the file (or the rest of it) as before. Leases need the
file's owner or CAP_LEASE, so a collect that is not root reads other users' files.

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
#: File systems whose files change only through this kernel.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs"})
#: Seconds the kernel must wait for us before it takes a lease away by force
#: (/proc/sys/fs/lease-break-time, 45 by default): far more than one CHUNK takes.
MIN_LEASE_BREAK_TIME = 5

_PROT_READ = 0x1
_MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value
_PyBUF_READ = 0x100
_PAGE = os.sysconf("SC_PAGE_SIZE")

_libc: ctypes.CDLL | None = None
_local_devices: frozenset[int] = frozenset()
#: Set by SIGIO: someone waits to write to or truncate the file we hold a lease on.
_lease_broken = False


def enable() -> bool:
    """Let this process (a worker, from its main thread) hash through mappings; False,
    and files are read, where the host cannot make it safe."""
    global _libc, _local_devices
    try:
        with open("/proc/sys/fs/lease-break-time") as handle:
            if int(handle.read()) < MIN_LEASE_BREAK_TIME:
                return False
        devices = _local_filesystem_devices()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_int64]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        view = ctypes.pythonapi.PyMemoryView_FromMemory
        view.restype = ctypes.py_object
        view.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int]
        # SIGIO would end the process: the handler must be in place before any lease.
        signal.signal(signal.SIGIO, _on_lease_break)
    except (OSError, ValueError, AttributeError):
        return False  # no /proc, no libc symbols, or not the main thread
    _libc, _local_devices = libc, devices
    return True


def _on_lease_break(_signum: int, _frame: object) -> None:
    global _lease_broken
    _lease_broken = True


def _local_filesystem_devices() -> frozenset[int]:
    """st_dev of every mounted local file system, from /proc/self/mountinfo."""
    devices = set()
    with open("/proc/self/mountinfo") as handle:
        for line in handle:
            fields, _, rest = line.partition(" - ")
            numbers = fields.split()[2].split(":")
            if rest.split(" ", 1)[0] in LOCAL_FILESYSTEMS:
                devices.add(os.makedev(int(numbers[0]), int(numbers[1])))
    return frozenset(devices)


def feed(fd: int, size: int, device: int, update: Callable[[memoryview], object]) -> int:
    """Hand the first bytes of the open file ``fd`` (``size`` bytes by the caller's
    fstat, on ``device``) to ``update`` through a mapping, as far as that is safe.

    Returns how many bytes it handed over: 0 when the file cannot be mapped safely, less
    than ``size`` when someone asked to write meanwhile or a chunk is not all cached.
    The caller reads the rest.
    """
    global _lease_broken
    if _libc is None or device not in _local_devices or size == 0:
        return 0
    _lease_broken = False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError:
        return 0  # open for writing somewhere, another user's file, or no leases here
    try:
        # Under the lease nobody can change the size: a change before it shows here.
        if os.fstat(fd).st_size != size:
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
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)


def _feed_chunk(fd: int, offset: int, count: int, update: Callable[[memoryview], object]) -> bool:
    """Map ``count`` bytes of ``fd`` from ``offset`` (page-aligned) and hand them to
    ``update`` if the page cache holds them all; whether it did."""
    assert _libc is not None
    address = _libc.mmap(None, count, _PROT_READ, _MAP_SHARED, fd, offset)
    if address in (None, _MAP_FAILED):
        return False
    try:
        pages = ctypes.create_string_buffer((count + _PAGE - 1) // _PAGE)
        if _libc.mincore(address, count, pages) != 0 or 0 in pages.raw:  # a byte per page, 1: cached
            return False
        # A view that nothing keeps once update returns: none outlives the mapping.
        update(ctypes.pythonapi.PyMemoryView_FromMemory(address, count, _PyBUF_READ))
        return True
    finally:
        _libc.munmap(address, count)
