"""Hostile trees: nothing a file system can hold stops or hangs a session."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import threading
import time

import blake3
import pytest

from conftest import SYSCHANGEMON, Symlink, make_tree
from scanner.hasher import detail_batch, init_worker
from scanner.paths import path_to_url


def current(host) -> dict[str, tuple]:
    return {url: (kind, error) for url, kind, error in
            host.query("SELECT url, type, error FROM versions WHERE until IS NULL")}


def test_special_files_are_recorded_and_never_opened(host):
    make_tree(host.tree, {"loop1": Symlink("loop2"), "loop2": Symlink("loop1"),
                          "self": Symlink("self"), "dangling": Symlink("/nonexistent")})
    os.mkfifo(host.tree / "fifo")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(host.tree / "sock"))
    if os.geteuid() == 0:
        os.mknod(host.tree / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.mknod(host.tree / "blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    host.run("collect", timeout=60)
    items = current(host)
    assert items[f"file://{host.tree}/fifo"] == ("fifo", None)
    assert items[f"file://{host.tree}/sock"] == ("socket", None)
    assert items[f"file://{host.tree}/loop1"] == ("symlink", None)
    assert items[f"file://{host.tree}/self"] == ("symlink", None)
    if os.geteuid() == 0:
        assert items[f"file://{host.tree}/null"] == ("chardev", None)
        assert items[f"file://{host.tree}/blk"] == ("blockdev", None)
    server.close()


def test_deep_directories_and_long_paths(host):
    deep = host.tree
    for _ in range(200):
        deep = deep / "d"
    os.makedirs(deep)
    (deep / "bottom").write_text("deep")
    # A path close to PATH_MAX (4096): components of 250 characters.
    long_dir = host.tree / "long"
    parts = ["x" * 250] * ((4000 - len(str(long_dir))) // 251)
    current_dir = str(long_dir)
    os.mkdir(current_dir)
    for part in parts:
        os.mkdir(part_path := os.path.join(current_dir, part))
        current_dir = part_path
    with open(os.path.join(current_dir, "f"), "w") as handle:
        handle.write("long")
    host.run("collect", timeout=120)
    items = current(host)
    assert items[path_to_url(str(deep / "bottom"))] == ("file", None)
    assert items[path_to_url(os.path.join(current_dir, "f"))] == ("file", None)


def test_ten_gigabyte_sparse_file_is_hashed(host):
    path = host.tree / "sparse"
    with open(path, "wb") as handle:
        handle.truncate(10 * 1024**3)
    host.run("collect", timeout=300)
    digest = host.query("SELECT lower(hex(hash)) FROM versions WHERE url = ?",
                        [f"file://{path}"])[0][0]
    expected = blake3.blake3(max_threads=blake3.blake3.AUTO)
    zeros = bytes(64 * 1024 * 1024)
    for _ in range(160):
        expected.update(zeros)
    assert digest == expected.hexdigest()


def test_hundred_thousand_files_in_one_directory(host):
    big = host.tree / "big"
    big.mkdir()
    for i in range(100_000):
        os.close(os.open(big / f"f{i:06d}", os.O_CREAT | os.O_WRONLY, 0o644))
    host.run("collect", timeout=300)
    assert host.query("SELECT item_count FROM sessions")[0][0] == 100_001


def test_bind_mount_looping_back_is_walked_once(host):
    if os.geteuid() != 0:
        pytest.skip("bind mounts need root")
    make_tree(host.tree, {"a": {"file": "x"}, "b": {}})
    done = subprocess.run(["mount", "--bind", str(host.tree), str(host.tree / "b")], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount: {done.stderr.decode().strip()}")
    try:
        host.configure(file_extra="one_filesystem = true\n")
        host.run("collect", timeout=60)
        urls = set(current(host))
        assert f"file://{host.tree}/a/file" in urls
        assert f"file://{host.tree}/b" in urls
        assert not any(url.startswith(f"file://{host.tree}/b/") for url in urls)
    finally:
        subprocess.run(["umount", "-l", str(host.tree / "b")])


def test_file_replaced_or_deleted_between_walk_and_hash(tmp_path):
    init_worker({"noatime": False, "algorithm": "blake3", "content": None})
    path = tmp_path / "f"
    path.write_text("one")
    walked = os.lstat(path)
    (tmp_path / "new").write_text("two")
    os.rename(tmp_path / "new", path)  # a new inode at the same path (the old one still existed)
    gone = tmp_path / "gone"
    gone.write_text("x")
    gone_stat = os.lstat(gone)
    os.unlink(gone)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # walked as a regular file, now a FIFO: must not hang
    columns, _ = detail_batch([
        (path_to_url(str(path)), walked.st_mode, walked.st_ino, walked.st_dev),
        (path_to_url(str(gone)), gone_stat.st_mode, gone_stat.st_ino, gone_stat.st_dev),
        (path_to_url(str(fifo)), stat.S_IFREG | 0o644, 1, 1),
    ])
    errors = columns[3]
    assert errors == ["replaced during scan", "vanished during scan", "replaced during scan"]
    assert columns[1] == [None, None, None]


def test_read_ahead_window_keeps_order_and_closes_every_file(tmp_path):
    """Files are opened a window ahead of hashing; results stay in task order, files that
    vanish inside the window are errors, and no descriptor outlives the batch."""
    init_worker({"noatime": False, "algorithm": "blake3", "content": None})
    tasks = []
    for index in range(200):
        path = tmp_path / f"f{index}"
        path.write_text(f"file {index}\n")
        info = os.lstat(path)
        tasks.append((path_to_url(str(path)), info.st_mode, info.st_ino, info.st_dev))
    for index in range(0, 200, 7):
        os.unlink(tmp_path / f"f{index}")
    before = len(os.listdir("/proc/self/fd"))
    columns, _ = detail_batch(tasks + [None])
    assert len(os.listdir("/proc/self/fd")) == before
    assert columns[0] == [task[0] for task in tasks] + [None]
    for index, (digest, error) in enumerate(zip(columns[1], columns[3])):
        if index == 200:
            assert (digest, error) == (None, None)
        elif index % 7 == 0:
            assert (digest, error) == (None, "vanished during scan")
        else:
            assert (digest, error) == (blake3.blake3(f"file {index}\n".encode()).digest(), None)


def test_file_growing_while_hashed_is_flagged(tmp_path):
    init_worker({"noatime": False, "algorithm": "blake3", "content": None})
    path = tmp_path / "growing"
    path.write_bytes(os.urandom(64 * 1024 * 1024))
    walked = os.lstat(path)
    stop = threading.Event()

    def grow() -> None:
        with open(path, "ab") as handle:
            while not stop.is_set():
                handle.write(b"x" * 65536)
                handle.flush()
                time.sleep(0.001)

    writer = threading.Thread(target=grow)
    writer.start()
    try:
        columns, _ = detail_batch([(path_to_url(str(path)), walked.st_mode, walked.st_ino, walked.st_dev)])
    finally:
        stop.set()
        writer.join()
    assert columns[3] == ["changed while being read"]
    assert columns[1] == [None]


def test_two_runs_at_once_the_second_exits_at_once(host):
    from test_command import only
    # The first run waits for a slow command before it commits, holding the lock.
    host.configure(plugins=only("command.slow = sleep 4\n"))
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(4096) for i in range(30)} for d in range(10)})
    first = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (host.storage / "lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        started = time.monotonic()
        second = host.run("collect", expect=None)
        elapsed = time.monotonic() - started
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert second.returncode == 5, second.stderr
    assert f"already running (pid {first.pid})" in second.stderr
    assert elapsed < 10  # it does not wait for the first run


def test_hostile_tree_as_nobody_reports_names_safely(open_host):
    """Unprivileged run over odd names and special files; text and HTML stay safe."""
    from conftest import run_as_nobody
    host = open_host
    odd = {b"new\nline": b"1", b"esc\x1b[31mred": b"2", b"bad\xffbyte": b"3", b"tab\there": b"4",
           b"<img src=x onerror=alert(1)>": b"5"}
    make_tree(host.tree, {"loop": Symlink("loop"), "locked": {"x": "1"}} | {
        os.fsdecode(name): data for name, data in odd.items()})
    os.mkfifo(host.tree / "fifo")
    os.chmod(host.tree / "locked", 0o700)  # nobody cannot list it
    for path in host.tree.rglob("*"):
        if not path.is_symlink() and path.name != "locked" and path.parent.name != "locked":
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
    os.chmod(host.tree, 0o777)  # nobody adds and removes entries below
    cli = [*SYSCHANGEMON, "-c", str(host.confdir)]
    first = run_as_nobody([*cli, "collect"], timeout=60)
    assert first.returncode == 0, first.stderr
    # The first session, too, stores the listing's error on the directory's row.
    assert dict(host.query("SELECT url, error FROM versions"))[f"file://{host.tree}/locked"] == \
        "cannot list directory: Permission denied"
    for name in odd:
        os.unlink(os.path.join(os.fsencode(host.tree), name))
    for name in (b"more\nlines", b"esc2\x1b]0;title\x07"):
        with open(os.path.join(os.fsencode(host.tree), name), "wb") as handle:
            handle.write(b"x")
    second = run_as_nobody([*cli, "run"], timeout=60)
    assert second.returncode == 1, second.stderr
    text = run_as_nobody([*cli, "print-report"], timeout=60).stdout
    html = run_as_nobody([*cli, "print-report", "--format", "html"], timeout=60).stdout
    assert "\x1b" not in text and "\x07" not in text and "\x1b" not in html
    assert "esc\\x1b[31mred" in text and "more\\x0alines" in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    current = dict(host.query("SELECT url, error FROM versions WHERE until IS NULL"))
    assert current[f"file://{host.tree}/locked"] == "cannot list directory: Permission denied"
