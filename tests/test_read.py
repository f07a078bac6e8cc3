"""Reading files: the page-cache path and the disk path give the same rows, and the
walk reads each file it finds through the directory it holds open."""

from __future__ import annotations

import os
import stat
import time

import blake3
import pytest

from scanner import hasher
from scanner.globs import GlobSet
from scanner.hasher import Reader, detail_batch, init_worker
from scanner.paths import path_to_url
from scanner.walk import Walker, WalkSpec

#: Sizes around the edges that matter: empty, a page, the 1 MiB big-file threshold.
SIZES = (0, 1, 4095, 4096, 70_000, hasher.BIG_FILE - 1, hasher.BIG_FILE, 3 * hasher.BIG_FILE + 5)


def _evict(path) -> bool:
    """Drop a file's pages from the page cache; True when none is left cached."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        for _ in range(20):  # pages still on their way to the LRU lists may stay a moment
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            try:
                os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
            except BlockingIOError:
                return True
            time.sleep(0.05)
        return False
    finally:
        os.close(fd)


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def plain_options():
    init_worker({"noatime": False, "algorithm": "blake3", "content": None})


def test_files_read_from_cache_and_from_disk_get_the_same_rows(tmp_path):
    contents = {f"f{size}": os.urandom(size) for size in SIZES}
    tasks = []
    for name, data in contents.items():
        path = tmp_path / name
        path.write_bytes(data)
        info = os.lstat(path)
        tasks.append((path_to_url(str(path)), info.st_mode, info.st_ino, info.st_dev))
    warm, warm_waited = detail_batch(tasks)
    evicted = [_evict(tmp_path / name) for name, data in contents.items() if data]
    if not all(evicted):
        pytest.skip("this file system keeps the pages cached (cannot test the disk path)")
    before = _open_fds()
    cold, cold_waited = detail_batch(tasks)
    assert _open_fds() == before
    assert cold == warm
    # What tells the pool the cache is cold: small files that had to wait. (Not all of
    # them: the probe that checked a file's eviction has the kernel read ahead in it.)
    assert warm_waited == 0 and cold_waited > 0
    expected = [blake3.blake3(data).digest() for data in contents.values()]
    assert warm[1] == expected
    assert warm[3] == [None] * len(SIZES)           # no errors
    assert warm[4] == [len(data) for data in contents.values()]


def test_walk_reads_what_it_finds_and_only_regular_files(tmp_path):
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner").write_bytes(b"inner\n")
    (tmp_path / "file").write_bytes(b"file\n")
    (tmp_path / "big").write_bytes(b"x" * (hasher.BIG_FILE + 1))
    os.symlink("file", tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")  # opening it for reading would block without a writer
    os.chmod(tmp_path / "dir", 0o755)
    spec = WalkSpec(GlobSet([f"{tmp_path}/**"]), GlobSet(["**/big"]))
    walker = Walker(spec)
    before = _open_fds()
    with Reader() as reader:
        base = walker.bases([str(tmp_path)], reader)
        reader.columns(len(base.rows))
    with Reader() as reader:
        out = walker.walk(base.pending, 4096, reader)  # the whole (small) tree in one task
        columns = reader.columns(len(out.rows))
    assert _open_fds() == before
    assert not out.pending and not out.warnings
    by_url = {row[0]: (row, digest, error) for row, digest, error in zip(out.rows, columns[0], columns[2])}
    root = path_to_url(str(tmp_path))
    assert set(by_url) == {f"{root}/dir", f"{root}/dir/inner", f"{root}/file", f"{root}/link",
                           f"{root}/fifo"}  # big is excluded
    row, digest, error = by_url[f"{root}/file"]
    assert (digest, error) == (blake3.blake3(b"file\n").digest(), None)
    assert row[4] == 5 and stat.S_ISREG(row[1])  # the row's stat is the opened file's
    assert by_url[f"{root}/dir/inner"][1:] == (blake3.blake3(b"inner\n").digest(), None)
    row, digest, error = by_url[f"{root}/link"]
    assert (row[10], digest, error) == ("file", None, None)
    row, digest, error = by_url[f"{root}/fifo"]
    assert stat.S_ISFIFO(row[1]) and (digest, error) == (None, None)
    assert by_url[f"{root}/dir"][1:] == (None, None)
