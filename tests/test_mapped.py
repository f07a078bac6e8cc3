"""Big files hashed through a mapping: the same digests, and never a SIGBUS.

Real files, a real lease and a real truncate from another process: a mapped page cut
off by a truncation would kill this very process, so each test surviving is part of
what it checks.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from conftest import SYSCHANGEMON, run_as_nobody
from scanner import mapped

SIZE = 3 * mapped.CHUNK + 12345


@pytest.fixture
def big(tmp_path: Path) -> tuple[Path, bytes]:
    """A cached file of three chunks and a bit, on a file system mapped.feed maps."""
    assert mapped.enable(), "cannot map here: /proc/sys/fs/lease-break-time or libc"
    path = tmp_path / "big"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    if not _on_local_filesystem(path):
        pytest.skip(f"{tmp_path} is not on a local file system "
                    f"({', '.join(sorted(mapped.LOCAL_FILESYSTEMS.values()))})")
    with open(path, "rb") as handle:
        try:
            fcntl.fcntl(handle, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        except OSError as error:
            pytest.skip(f"no read lease here ({error.strerror}): files are read, never mapped")
    return path, data


def _on_local_filesystem(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        return mapped.on_local_filesystem(fd)
    finally:
        os.close(fd)


def _feed(path: Path, update=None) -> tuple[int, blake3.blake3]:
    hasher = blake3.blake3()
    fd = os.open(path, os.O_RDONLY)
    try:
        return mapped.feed(fd, os.fstat(fd).st_size, update or hasher.update), hasher
    finally:
        os.close(fd)


def test_a_cached_big_file_is_hashed_whole_through_the_mapping(big):
    path, data = big
    fed, hasher = _feed(path)
    assert fed == SIZE
    assert hasher.digest() == blake3.blake3(data).digest()


def test_a_view_kept_past_update_cannot_reach_the_unmapped_pages(big):
    path, _ = big
    kept = []
    assert _feed(path, kept.append)[0] == SIZE
    # Released before the unmap: a read through it is an error, not a crash.
    with pytest.raises(ValueError):
        bytes(kept[0][:1])


def _lease_state(path: Path) -> str | None:
    """The state /proc/locks shows for a lease on ``path`` (ACTIVE, BREAKING), or None."""
    info = os.stat(path)
    inode = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}"
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "LEASE" in fields and inode in fields:
            return fields[fields.index("LEASE") + 1]
    return None


def test_a_truncation_waits_for_the_mapping_which_stops_at_the_next_chunk(big):
    path, _ = big
    truncate = None
    chunks = []

    def update(chunk: memoryview) -> None:
        nonlocal truncate
        chunks.append(len(chunk))
        if truncate is None:
            # Another process cuts the file while its first chunk is mapped: that would
            # raise SIGBUS on the next page. Its truncate must wait for our lease.
            truncate = subprocess.Popen([sys.executable, "-c", "import os, sys; os.truncate(sys.argv[1], 0)",
                                         str(path)])
            deadline = time.monotonic() + 20
            while _lease_state(path) != "BREAKING" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _lease_state(path) == "BREAKING"
            time.sleep(0.1)
            assert truncate.poll() is None, "the truncate did not wait for the lease"

    fed, _ = _feed(path, update)
    assert truncate is not None and truncate.wait(timeout=20) == 0
    assert (fed, chunks) == (mapped.CHUNK, [mapped.CHUNK])
    assert path.stat().st_size == 0
    assert _lease_state(path) is None


def test_a_file_open_for_writing_elsewhere_is_not_mapped(big):
    path, _ = big
    with open(path, "ab"):
        assert _feed(path)[0] == 0
    assert _feed(path)[0] == SIZE


def test_chunks_not_all_in_the_page_cache_are_not_mapped(big):
    path, _ = big
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, SIZE // 2, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(fd, [bytearray(1)], SIZE - 1, os.RWF_NOWAIT)
            pytest.skip("this file system keeps the pages cached (tmpfs)")
        except BlockingIOError:
            pass  # the second half is out of the cache: a mapped read would wait on the disk
    finally:
        os.close(fd)
    # The whole chunks before the evicted half are mapped; the caller reads the rest.
    assert _feed(path)[0] == SIZE // 2 // mapped.CHUNK * mapped.CHUNK
    path.read_bytes()
    assert _feed(path)[0] == SIZE


def test_a_file_system_mounted_where_a_local_one_was_is_judged_by_itself(big, tmp_path):
    """A mount that goes away during a collect leaves its device number to the next one
    (here a tmpfs, then a ramfs, which is not on the list and stands in for a FUSE one):
    the file system of the open file decides whether it is mapped."""
    _, data = big
    before, after = tmp_path / "tmpfs", tmp_path / "ramfs"
    before.mkdir()
    after.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(before)], capture_output=True).returncode:
        pytest.skip("cannot mount here")
    device = os.stat(before).st_dev
    assert mapped.enable()
    subprocess.run(["umount", str(before)], check=True)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(after)], check=True)
    try:
        if os.stat(after).st_dev != device:
            pytest.skip("the kernel gave the ramfs another device number")
        (after / "big").write_bytes(data)
        assert _feed(after / "big")[0] == 0
    finally:
        subprocess.run(["umount", str(after)], check=True)


def test_without_cap_fowner_only_the_processs_own_files_are_mapped(big, tmp_path):
    """To a process without CAP_FOWNER, mincore says every page of another user's file
    is cached, so such a process reads those files rather than map pages it cannot see."""
    path, _ = big
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop a capability")
    theirs = tmp_path / "theirs"
    shutil.copyfile(path, theirs)
    os.chown(theirs, 65534, 65534)
    assert _feed(theirs)[0] == SIZE  # root with every capability maps it
    script = ("import os, sys\n"
              "from scanner import mapped\n"
              "assert mapped.enable()\n"
              "for name in sys.argv[1:]:\n"
              "    fd = os.open(name, os.O_RDONLY)\n"
              "    print(mapped.feed(fd, os.fstat(fd).st_size, lambda view: None))\n")
    result = subprocess.run(["setpriv", "--inh-caps=-fowner", "--bounding-set=-fowner", "--",
                             sys.executable, "-c", script, str(theirs), str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(SIZE)]


def test_a_lease_the_kernel_takes_away_ends_the_mapping_without_an_error(big):
    """A worker stopped for longer than lease-break-time loses its lease to the kernel;
    the file is then fed no further, and letting go of the lost lease is no error."""
    path, _ = big
    setting = Path("/proc/sys/fs/lease-break-time")
    saved = setting.read_text()
    try:
        setting.write_text("1")
    except OSError:
        pytest.skip(f"cannot set {setting}")
    truncate = None

    def update(chunk: memoryview) -> None:
        nonlocal truncate
        if truncate is None:
            # As if this worker were stopped here: after a second the kernel takes the
            # lease away and the truncation goes ahead (the chunk is not touched again).
            truncate = subprocess.run([sys.executable, "-c", "import os, sys; os.truncate(sys.argv[1], 0)",
                                       str(path)], timeout=20)
    try:
        fed, _ = _feed(path, update)
    finally:
        setting.write_text(saved)
    assert truncate is not None and truncate.returncode == 0
    assert fed == mapped.CHUNK
    assert path.stat().st_size == 0


def _mapped_now(paths: set[str]) -> set[str]:
    """Which of ``paths`` some process has mapped at this moment (/proc/PID/maps)."""
    found = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:
            continue  # the process is gone
        found.update(line.split(None, 5)[5] for line in text.splitlines() if line.endswith(tuple(paths)))
    return found & paths


def test_big_files_truncated_while_mapped_never_stop_a_collect(host):
    """Whatever file a worker has mapped is cut short at once, again and again, by
    another process: every session is stored, and each file has a digest or says it
    changed while being read. Without the lease, the first cut kills the worker."""
    files = [host.tree / f"big{index:02d}" for index in range(16)]
    if not mapped.enable() or not _on_local_filesystem(host.tree):
        pytest.skip(f"{host.tree}: workers cannot map files here")
    cut = 0
    for run in range(3):
        for path in files:
            path.write_bytes(os.urandom(32 << 20))
        collect = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect", "--paranoid"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while collect.poll() is None:
            # By path, holding no descriptor: the truncation a lease holds back.
            for path in _mapped_now({str(path) for path in files}):
                os.truncate(path, 4096)
                cut += 1
        _, err = collect.communicate()
        assert collect.returncode == 0, err
        rows = host.query("SELECT url, hash, error FROM versions WHERE until IS NULL AND url LIKE '%/big%'")
        assert len(rows) == len(files)
        for url, digest, error in rows:
            assert (digest is None) == (error == "changed while being read"), (url, error)
    assert cut, "no file was mapped while the collects ran"


def test_other_users_files_are_read_by_a_collect_that_is_not_root(open_host):
    host = open_host
    data = os.urandom(2 * mapped.CHUNK)
    (host.tree / "big").write_bytes(data)
    os.chmod(host.tree, 0o755)
    os.chmod(host.tree / "big", 0o644)
    # Only its owner (or root) may take a lease: nobody reads root's file instead.
    result = run_as_nobody([*SYSCHANGEMON, "-c", str(host.confdir), "collect"], timeout=60)
    assert result.returncode == 0, result.stderr
    assert host.query("SELECT hash, error FROM versions WHERE url LIKE '%/big'") == \
        [(blake3.blake3(data).digest(), None)]
