"""SIGKILL at random moments never damages stored history."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from conftest import SYSCHANGEMON, make_tree

COMMANDS = [["collect", "--paranoid"], ["diff"], ["cleanup"], ["run"], ["email-report"]]


def test_fifty_kills_leave_history_intact_and_the_next_run_succeeds(host):
    host.configure(main="session_keep = 4\nreport_keep = 4\n")
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(4096) for i in range(300)} for d in range(6)})
    host.run("collect")
    host.run("collect")
    rng = random.Random(1234)
    available = [c for c in COMMANDS if c[0] in host.run("--help").stdout]
    for round_ in range(50):
        command = rng.choice(available)
        (host.tree / "d0" / f"f{round_ % 300}").write_bytes(os.urandom(4096))
        before_sessions = host.query("SELECT id, uuid, digest FROM sessions ORDER BY id")
        before_reports = host.query("SELECT uuid, model FROM reports ORDER BY created")
        process = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), *command],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        sessions = host.query("SELECT id, uuid, digest FROM sessions ORDER BY id")
        reports = host.query("SELECT uuid, model FROM reports ORDER BY created")
        # Nothing that was stored changed; at most the command's own result was added
        # (or, for cleanup, old entries dropped whole).
        if command[0] not in ("cleanup", "run"):
            assert set(before_sessions) <= set(sessions), command
        kept = {s[1] for s in sessions}
        for session in before_sessions:
            if session[1] in kept:
                assert session in sessions
        kept_reports = {r[0] for r in reports}
        for report in before_reports:
            if report[0] in kept_reports:
                assert report in reports
        host.run("verify")
    assert host.run("run", expect=None).returncode in (0, 1)
    host.run("verify")


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (children first), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def test_a_killed_worker_fails_the_run_at_once_and_stores_nothing(host):
    """The OOM killer taking a worker must not leave collect waiting forever (holding the
    lock): it fails with one line, and the next run works."""
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(32768) for i in range(400)} for d in range(25)})
    host.run("collect")
    run = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect", "--paranoid"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    workers: list[int] = []
    while time.monotonic() < deadline and not workers:
        workers = _forkserver_children(run.pid)
        time.sleep(0.01)
    assert workers, "no worker process seen"
    os.kill(workers[0], signal.SIGKILL)
    out, err = run.communicate(timeout=60)
    if run.returncode == 0:
        pytest.skip("the run finished before the worker was killed")
    assert run.returncode == 70, err
    assert "a worker process died" in err and err.count("\n") == 1 and "Traceback" not in err
    assert host.query("SELECT count(*) FROM sessions") == [(1,)]
    # The failed run took its staged scan data (names and attributes) along.
    assert not (host.storage / "staging").exists()
    host.run("collect")


def test_a_first_session_killed_after_its_walk_stores_nothing(host):
    """Killed after its walk, while it waits for a command, a first session leaves no
    session and no item behind, and the next run works."""
    from test_command import only
    host.configure(plugins=only("command.slow = exec sleep 60\n", "timeout = 90\n"))
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(4096) for i in range(300)} for d in range(10)})
    run = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    seen = False
    # The workers (the forkserver's children) end when the walk is done; the session
    # then waits for its command before it commits.
    while time.monotonic() < deadline:
        workers = _forkserver_children(run.pid)
        seen = seen or bool(workers)
        if seen and not workers:
            break
        time.sleep(0.005)
    assert seen and not workers and run.poll() is None, "the workers outlived the walk"
    command = _descendants(run.pid)
    run.send_signal(signal.SIGKILL)
    run.wait()
    for pid in command:  # the sleep, which outlives a SIGKILL-ed collect
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert host.query("SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM versions)") == [(0, 0)]
    host.configure(plugins=only(""))
    host.run("collect")
    assert host.query("SELECT count(*) FROM versions WHERE type = 'file'") == [(3000,)]
    host.run("verify")


def test_a_killed_collect_leaves_no_process_behind(host):
    """SIGKILL gives a collect no chance to stop its workers: they must notice and end,
    and the forkserver after them, or each killed cron run would leave three behind."""
    host.configure(file_extra="workers = 2\n")
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(32768) for i in range(400)} for d in range(25)})
    run = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    # The resource tracker and the forkserver are children of collect, the workers are
    # the forkserver's.
    while time.monotonic() < deadline and len(_descendants(run.pid)) < 4:
        time.sleep(0.01)
    helpers = _descendants(run.pid)
    assert len(helpers) >= 4, f"not every worker seen: {helpers}"
    run.send_signal(signal.SIGKILL)
    run.wait()
    deadline = time.monotonic() + 20
    while (alive := [pid for pid in helpers if _running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert alive == []


def _most_workers(run: subprocess.Popen) -> int:
    """The most worker processes (the forkserver's children) seen at once while ``run`` runs."""
    most = 0
    while run.poll() is None:
        most = max(most, len(_forkserver_children(run.pid)))
        time.sleep(0.005)
    return most


def test_workers_grow_to_two_per_core_only_while_reads_wait_on_the_disk(host):
    """One worker per core while the page cache holds the files; twice as many once
    reads wait on the disk, where more reads in flight pay."""
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(32768) for i in range(400)} for d in range(25)})
    cores = os.cpu_count() or 1
    argv = [*SYSCHANGEMON, "-c", str(host.confdir), "--quiet", "collect"]
    if not _evicted(host.tree):
        pytest.skip("this file system keeps the pages cached (cannot make a cold tree)")
    cold = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert _most_workers(cold) == 2 * cores
    assert cold.returncode == 0
    # The first session read every file: the cache holds them now.
    warm = subprocess.Popen([*argv, "--paranoid"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert 1 <= _most_workers(warm) <= cores
    assert warm.returncode == 0


def _evicted(tree) -> bool:
    """Drop the pages of every file under ``tree`` from the page cache; True when the
    kernel says they are gone (it may keep a file system's pages in RAM: tmpfs)."""
    files = sorted(path for path in tree.rglob("*") if path.is_file())
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # only clean pages can be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    fd = os.open(files[-1], os.O_RDONLY)
    try:
        os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie has ended; its parent will reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _forkserver_children(pid: int) -> list[int]:
    """The worker processes of collect ``pid``: its forkserver's children (the
    commands it runs are its children too, and have children of their own)."""
    for child in _children_of(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"forkserver" in handle.read():
                    return _children_of(child)
        except OSError:
            continue
    return []


def _children_of(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []
