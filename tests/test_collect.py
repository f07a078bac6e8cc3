"""collect end to end: real trees, the installed CLI, the real DuckDB file."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import sys
import subprocess
import time

import blake3
import pytest

from conftest import SYSCHANGEMON, Fifo, Symlink, make_tree, run_as_nobody
from scanner.paths import unescape


def export_rows(host, *args: str) -> dict[str, dict[str, str]]:
    """export as {url: row}."""
    out = host.run("export", *args).stdout
    return {row["url"]: row for row in csv.DictReader(io.StringIO(out))}


def test_collect_twice_with_changes_records_versions_and_export(host):
    make_tree(host.tree, {
        "passwd": "root:x:0:0\n",
        "script.sh": "#!/bin/sh\necho hi\n",
        "gone.txt": "bye\n",
        "link": Symlink("passwd"),
        "sub": {"keep.conf": "a=1\n"},
    })
    first = host.run("collect")
    assert first.stdout.startswith("session ") and " saved" in first.stdout
    rows = export_rows(host)
    url = f"file://{host.tree}/passwd"
    assert rows[url]["hash"] == blake3.blake3(b"root:x:0:0\n").hexdigest()
    assert rows[url]["type"] == "file" and rows[url]["size"] == "11"
    assert rows[f"file://{host.tree}/link"]["target"] == "passwd"
    assert rows[f"file://{host.tree}/sub"]["type"] == "dir"

    (host.tree / "passwd").write_text("root:x:0:0\nmallory:x:0:0\n")
    os.chmod(host.tree / "script.sh", 0o4755)
    (host.tree / "new.txt").write_text("new\n")
    (host.tree / "gone.txt").unlink()
    (host.tree / "link").unlink()
    os.symlink("sub/keep.conf", host.tree / "link")
    host.run("collect")

    rows = export_rows(host)
    assert rows[url]["hash"] == blake3.blake3(b"root:x:0:0\nmallory:x:0:0\n").hexdigest()
    assert int(rows[f"file://{host.tree}/script.sh"]["mode"]) == 0o4755
    assert f"file://{host.tree}/new.txt" in rows
    assert f"file://{host.tree}/gone.txt" not in rows
    assert rows[f"file://{host.tree}/link"]["target"] == "sub/keep.conf"

    sessions = host.query("SELECT id, uuid FROM sessions ORDER BY id")
    assert len(sessions) == 2
    # The first session is still exported as it was.
    old = export_rows(host, "-u", sessions[0][1])
    assert old[url]["hash"] == blake3.blake3(b"root:x:0:0\n").hexdigest()
    assert f"file://{host.tree}/gone.txt" in old and f"file://{host.tree}/new.txt" not in old
    # Versions: passwd has a closed and a current version; keep.conf only one.
    passwd = host.query("SELECT since, until FROM versions WHERE url = ? ORDER BY since", [url])
    assert passwd == [(sessions[0][0], sessions[1][0]), (sessions[1][0], None)]
    keep = host.query("SELECT since, until FROM versions WHERE url = ?",
                      [f"file://{host.tree}/sub/keep.conf"])
    assert keep == [(sessions[0][0], None)]


def test_no_change_collect_adds_no_version_rows_and_reuses_digests(host):
    make_tree(host.tree, {f"f{i}.txt": f"content {i}\n" for i in range(50)} | {"d": {"x": "1"}})
    host.run("collect")
    before = host.query("SELECT count(*) FROM versions")[0][0]
    second = host.run("collect")
    assert "0 read" in second.stdout  # nothing re-hashed
    assert host.query("SELECT count(*) FROM versions")[0][0] == before
    assert host.query("SELECT count(*) FROM sessions")[0][0] == 2


def test_assume_change_and_paranoid_rehash(host):
    make_tree(host.tree, {"passwd": "x\n", "other": "y\n", "third": "z\n",
                          "etc": {"shadow": "s\n", "group": "g\n"}, "var": {"log": {"shadow": "l\n"}}})
    host.configure(file_extra=f"assume_change =\n    {host.tree}/passwd\n    {host.tree}/etc/shadow\n")
    host.run("collect")
    assert "2 read" in host.run("collect").stdout  # passwd and etc/shadow, not var/log/shadow
    assert "9 read" in host.run("collect", "--paranoid").stdout  # 6 files, 3 directories


def test_excludes_win_and_excluded_directories_are_pruned(host):
    make_tree(host.tree, {"a.conf": "1", "a.conf.bak": "2", "a.conf~": "3",
                          "cache": {"deep": {"f": "4"}}, "keep": {"g": "5"}})
    host.configure(exclude=["**.bak", "**~", f"{host.tree}/cache"])
    host.run("collect")
    urls = set(export_rows(host))
    assert f"file://{host.tree}/a.conf" in urls
    assert not any(u.endswith((".bak", "~")) for u in urls)
    assert not any("/cache" in u for u in urls)
    assert f"file://{host.tree}/keep/g" in urls


def test_a_walk_without_reading_finds_what_a_walk_that_reads_finds(host):
    # The first collect reads every file where it walks it; later ones only walk (a loop
    # of their own in scanner/walk.py). Both must apply the globs and record entries alike.
    tree = {"etc": {"a.conf": "1", "a.conf.bak": "2", "cache": {"f": "3"}, "link": Symlink("a.conf"),
                    b"odd\xffname": "4", "sub": {"x": "5"}},
            "opt": {"only.conf": "6", "other": "7", "deeper": {"x.conf": "8", "y.txt": "9"}}}
    make_tree(host.tree, tree)
    host.configure(include=[f"{host.tree}/etc/**", f"{host.tree}/opt/*.conf", f"{host.tree}/opt/*/x.conf"],
                   exclude=["**.bak", f"{host.tree}/etc/cache"])
    host.run("collect")
    first = export_rows(host)
    # Remove everything and make it again: new inodes and times, so the second collect
    # walks entries that all changed, and only walks (it reads them afterwards).
    shutil.rmtree(host.tree / "etc")
    shutil.rmtree(host.tree / "opt")
    make_tree(host.tree, tree)
    host.run("collect")
    second = export_rows(host)
    assert set(second) == set(first)
    assert {f"file://{host.tree}/etc/link", f"file://{host.tree}/etc/odd\\xffname",
            f"file://{host.tree}/opt/only.conf", f"file://{host.tree}/opt/deeper/x.conf",
            f"file://{host.tree}/etc/sub/x"} <= set(second)
    assert not any(u.endswith((".bak", "/other", "/y.txt")) or "/cache" in u for u in second)
    made_anew = ("session_uuid", "inode", "mtime_ns", "ctime_ns")
    for url, row in second.items():
        assert {k: v for k, v in row.items() if k not in made_anew} == \
            {k: v for k, v in first[url].items() if k not in made_anew}, url
    assert second[f"file://{host.tree}/etc/link"]["target"] == "a.conf"


def test_literal_include_and_overlapping_includes_give_each_item_once(host):
    make_tree(host.tree, {"etc": {"passwd": "p", "ssh": {"sshd_config": "s"}}})
    host.configure(include=[f"{host.tree}/etc/**", f"{host.tree}/etc/ssh/**",
                            f"{host.tree}/etc/passwd", f"{host.tree}/missing/**"])
    result = host.run("collect")
    assert "missing does not exist" in result.stderr
    urls = list(export_rows(host))
    assert len(urls) == len(set(urls)) == 3  # passwd, ssh, ssh/sshd_config


def test_special_files_do_not_hang_and_names_that_are_not_utf8_round_trip(host):
    odd = [b"bad\xff\xfename", b"new\nline", b"tab\there", b"esc\x1b[31mred", b"back\\slash"]
    make_tree(host.tree, {"fifo": Fifo()} | {name: b"data" for name in odd})
    host.run("collect", timeout=60)
    rows = export_rows(host)
    assert rows[f"file://{host.tree}/fifo"]["type"] == "fifo"
    assert rows[f"file://{host.tree}/fifo"]["hash"] == ""
    exported = {unescape(url[len("file://"):]) for url in rows}
    for name in odd:
        assert os.fsencode(host.tree) + b"/" + name in exported
    for url in rows:
        assert url.isprintable()  # safe on a terminal


def test_unreadable_file_is_an_item_with_an_error(open_host):
    host = open_host
    make_tree(host.tree, {"secret": "s", "fine": "f"})
    os.chmod(host.tree / "secret", 0)
    os.chmod(host.tree, 0o755)
    # Root reads anything: run as nobody to meet the error.
    result = run_as_nobody([*SYSCHANGEMON, "-c", str(host.confdir), "collect"], timeout=60)
    assert result.returncode == 0, result.stderr
    errors = dict(host.query("SELECT url, error FROM versions"))
    assert errors[f"file://{host.tree}/secret"] == "Permission denied"
    assert errors[f"file://{host.tree}/fine"] is None


def test_storage_is_private(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    assert (host.storage.stat().st_mode & 0o777) == 0o700
    for entry in host.storage.iterdir():
        assert (entry.stat().st_mode & 0o777) == 0o600, entry


def test_sigkill_during_collect_leaves_earlier_sessions_intact(host):
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(2048) for i in range(400)} for d in range(10)})
    host.run("collect")
    baseline = host.query("SELECT uuid FROM sessions")
    for delay in (0.05, 0.2, 0.4, 0.7):
        (host.tree / "d0" / "f0").write_bytes(os.urandom(100))
        process = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect", "--paranoid"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        sessions = host.query("SELECT uuid FROM sessions ORDER BY id")
        assert sessions[: len(baseline)] == baseline
        # No partial session: every session has exactly the tree's item count.
        counts = host.query("SELECT DISTINCT item_count FROM sessions")
        assert counts == [(4010,)]
        baseline = sessions
    host.run("collect")
    assert host.query("SELECT count(*) FROM versions WHERE until IS NULL")[0][0] == 4010


def test_second_run_while_locked_exits_with_already_running(host):
    import fcntl
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    with open(host.storage / "lock", "r+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        lock.write("4242\n")
        lock.flush()
        result = host.run("collect", expect=5)
    assert "already running (pid 4242)" in result.stderr
    host.run("collect")  # the lock is free again


@pytest.mark.parametrize("text, where", [
    ("[file]\nenable_plugin = true\nincloode = /x\n", "file.conf: [file]: incloode: unknown key"),
    ("[file]\nenable_plugin = maybe\n", "file.conf: [file]: enable_plugin: expected true/false"),
    ("[file]\nenable_plugin = true\nworkers = many\n", "[file]: workers: expected an integer"),
    ("[file]\nenable_plugin = true\nassume_nochange = colour\n", "assume_nochange: unknown attribute"),
    ("[file]\nenable_plugin = true\ninclude =\n    /x/[abc\n", "[file]: include:"),
    ("[nonsense]\nkey = 1\n", "[nonsense]: unknown section"),
    ("not an ini file\n", "file.conf: File contains no section headers"),
])
def test_bad_config_is_one_line_naming_file_section_and_key(host, text, where):
    (host.confdir / "plugins.d" / "file.conf").write_text(text)
    result = host.run("collect", expect=3)
    assert where in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unknown_session_uuid_is_an_error(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    result = host.run("export", "-u", "00000000-dead-beef-0000-000000000000", expect=4)
    assert "no session with UUID 00000000-dead-beef" in result.stderr


def test_cleanup_keeps_newest_sessions_and_their_state(host):
    host.configure(main="session_keep = 2\n")
    make_tree(host.tree, {"a": "0", "b": "stable"})
    for round_ in range(1, 5):
        host.run("collect")
        (host.tree / "a").write_text(str(round_))
    kept = host.query("SELECT uuid FROM sessions ORDER BY id")[-2:]
    result = host.run("cleanup")
    assert "removed 2 sessions" in result.stdout
    assert host.query("SELECT uuid FROM sessions ORDER BY id") == kept
    # b's single version (since session 1) is still visible to the kept sessions.
    for (uuid,) in kept:
        rows = export_rows(host, "-u", uuid)
        assert rows[f"file://{host.tree}/b"]["hash"] == blake3.blake3(b"stable").hexdigest()
    assert export_rows(host)[f"file://{host.tree}/a"]["hash"] == blake3.blake3(b"3").hexdigest()
    # Versions no kept session can see are gone.
    assert host.query("SELECT count(*) FROM versions WHERE url LIKE '%/a'")[0][0] == 2


def test_reset_drops_sessions_and_collects_a_new_baseline(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    host.run("collect")
    result = host.run("reset")
    assert "database reset done, new session collected:" in result.stdout
    assert host.query("SELECT count(*) FROM sessions")[0][0] == 1


def test_version_and_help():
    out = subprocess.run([*SYSCHANGEMON, "-V"], capture_output=True, text=True).stdout
    assert out.startswith("syschangemon version ")
    helptext = subprocess.run([*SYSCHANGEMON, "--help"], capture_output=True, text=True).stdout
    for command in ("collect", "cleanup", "export", "list-sessions", "reset"):
        assert command in helptext
    assert "exit codes:" in helptext


def test_embedded_defaults_are_found_from_the_installed_package(tmp_path):
    """Run from a directory outside the checkout: the installed wheel's conf/ must be used."""
    code = ("from scanner.config import embedded_config_dir, load_config;"
            "d = embedded_config_dir(); c = load_config(str(d));"
            "print(d); print(c.enabled('file')); print(c.section('file').get('include').split()[0])")
    python = SYSCHANGEMON[0] if SYSCHANGEMON[0].endswith("python") else \
        os.path.join(os.path.dirname(SYSCHANGEMON[0]), "python")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         check=True).stdout.split("\n")
    assert out[1] == "True" and out[2] == "/etc/**"
    assert (os.path.isfile(os.path.join(out[0], "syschangemon.conf")))


def test_directory_that_became_unreadable_keeps_its_items(open_host):
    host = open_host
    make_tree(host.tree, {"locked": {"inside.conf": "x"}, "open.conf": "y"})
    for path in (host.tree, host.tree / "locked"):
        os.chmod(path, 0o755)
    os.chmod(host.tree / "locked" / "inside.conf", 0o644)
    command = [*SYSCHANGEMON, "-c", str(host.confdir), "collect"]
    assert run_as_nobody(command, timeout=60).returncode == 0
    os.chmod(host.tree / "locked", 0o700)  # nobody can no longer list it
    result = run_as_nobody(command, timeout=60)
    assert result.returncode == 0, result.stderr
    current = dict(host.query("SELECT url, error FROM versions WHERE until IS NULL"))
    assert current[f"file://{host.tree}/locked"] == "cannot list directory: Permission denied"
    # Not reported as removed: the item below keeps its version.
    assert f"file://{host.tree}/locked/inside.conf" in current


def test_first_collect_into_a_database_without_sessions_reads_every_file(host):
    """cleanup makes the database before any session: the walk, started before the
    database opens, does not read files then, and the collect reads them after it."""
    files = {f"f{i}": os.urandom(100 + i) for i in range(20)}
    make_tree(host.tree, {"d": files})
    host.run("cleanup")
    assert (host.storage / "db.duckdb").exists()
    host.run("collect")
    stored = dict(host.query("SELECT url, hash FROM versions WHERE type = 'file'"))
    assert stored == {f"file://{host.tree}/d/{name}": blake3.blake3(data).digest()
                      for name, data in files.items()}
    host.run("verify")


def test_sha256_digest_option(host):
    import hashlib
    make_tree(host.tree, {"passwd": "root:x:0:0\n"})
    host.run("collect")  # BLAKE3 first: switching must re-hash the unchanged file
    host.configure(file_extra="hash = sha256\n")
    host.run("collect")
    assert export_rows(host)[f"file://{host.tree}/passwd"]["hash"] == \
        hashlib.sha256(b"root:x:0:0\n").hexdigest()
    host.configure(file_extra="hash = md5\n")
    assert "[file]: hash: unknown digest 'md5'" in host.run("collect", expect=3).stderr


def test_stat_key_of_mode_alone_still_reuses_digests(host):
    make_tree(host.tree, {"a": "1", "b": "2"})
    conf = host.confdir / "plugins.d" / "file.conf"
    conf.write_text(conf.read_text().replace(
        "assume_nochange = mtime, ctime, size, device, inode", "assume_nochange = mode"))
    host.run("collect")
    assert "0 read" in host.run("collect").stdout


def test_tree_walked_in_parallel_tasks_is_exactly_the_tree(host):
    """Enough entries that the walk is split into many worker tasks: every entry is an item
    once, with the digest of its bytes, in the first (read while walking) and a later session."""
    make_tree(host.tree, {f"d{d}": {f"e{e}": {f"f{f}": f"{d}/{e}/{f}\n" for f in range(60)}
                                     for e in range(8)} for d in range(25)}
              | {"loose.txt": "x\n", "ln": Symlink("d0"),
                 # One directory bigger than a task's share of names: its lstat calls are split.
                 "wide": {f"w{i}": f"{i}\n" for i in range(5000)} | {"sub": {"deep": "d\n"}}})
    expected = {f"file://{host.tree}/{path.relative_to(host.tree)}"
                for path in host.tree.rglob("*")}
    assert len(expected) > 17_000  # more than a walk task's share, so the tree is split
    for _ in range(2):
        host.run("collect")
        rows = export_rows(host)
        assert set(rows) == expected
        assert rows[f"file://{host.tree}/d24/e7/f59"]["hash"] == blake3.blake3(b"24/7/59\n").hexdigest()
        assert rows[f"file://{host.tree}/ln"]["type"] == "symlink"
        assert rows[f"file://{host.tree}/wide/w4999"]["hash"] == blake3.blake3(b"4999\n").hexdigest()
    # The second session found nothing new: no version was added.
    assert host.query("SELECT count(*) FROM versions") == [(len(expected),)]
    # The staged scan data is gone once the session is stored.
    assert sorted(p.name for p in host.storage.iterdir()) == ["db.duckdb", "lock"]


def test_workers_do_not_run_the_main_script_again(host, tmp_path):
    """multiprocessing would have each worker import the main script; ours must not, or a
    script gone missing during an upgrade would make the pool restart workers forever."""
    make_tree(host.tree, {"a": "1", "b": {"c": "2"}})
    marker = tmp_path / "imported"
    script = tmp_path / "entry.py"
    script.write_text("import sys\n"
                      f"open({str(marker)!r}, 'a').write('x')\n"
                      "from scanner.cli import main\n"
                      "if __name__ == '__main__':\n"
                      "    sys.exit(main())\n")
    done = subprocess.run([sys.executable, str(script), "-c", str(host.confdir), "collect"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "x"


def _collect_on_a_terminal(host, *args: str) -> str:
    """Run collect with stderr on a pseudo-terminal; return what the terminal showed."""
    import pty
    controller, terminal = pty.openpty()
    try:
        done = subprocess.run([*SYSCHANGEMON, "-c", str(host.confdir), *args, "collect"],
                              stdout=subprocess.PIPE, stderr=terminal, timeout=120)
        assert done.returncode == 0
        os.close(terminal)
        shown = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed and drained
                break
            if not chunk:
                break
            shown += chunk
        return shown.decode()
    finally:
        os.close(controller)


def test_progress_line_on_a_terminal_with_eta_and_silent_when_quiet(host):
    make_tree(host.tree, {f"d{d}": {f"f{f}": "x" * f for f in range(50)} for d in range(20)})
    first = _collect_on_a_terminal(host)
    assert "walked " in first and " MB at " in first and "\x1b[K" in first
    # Later sessions know about how many entries to expect: the line gives a time left.
    second = _collect_on_a_terminal(host)
    assert "left" in second, second
    assert _collect_on_a_terminal(host, "--quiet") == ""


def _free_id(taken) -> int:
    """An id in the system range that neither passwd nor group uses."""
    return next(i for i in range(59000, 60000) if i not in taken)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("useradd"), reason="needs root and useradd")
def test_owner_renamed_between_sessions_gives_its_items_new_versions(host):
    """A no-change session merges only entries whose attributes moved: an owner or group
    that got a name (or was renamed) between sessions must still show on its items."""
    import grp
    import pwd
    uid = _free_id({u.pw_uid for u in pwd.getpwall()})
    gid = _free_id({g.gr_gid for g in grp.getgrall()})
    make_tree(host.tree, {"owned": "x", "other": "y"})
    os.chown(host.tree / "owned", uid, gid)
    host.run("collect")
    owned, other = f"file://{host.tree}/owned", f"file://{host.tree}/other"
    assert host.query("SELECT user_name, group_name FROM versions WHERE url = ?", [owned]) == [(None, None)]
    user, group = f"scm-user{uid}", f"scm-group{gid}"
    subprocess.run(["groupadd", "-g", str(gid), group], check=True)
    try:
        subprocess.run(["useradd", "-M", "-N", "-u", str(uid), "-g", str(gid), user], check=True)
        try:
            assert "0 read" in host.run("collect").stdout  # the digest is reused all the same
        finally:
            subprocess.run(["userdel", user], check=True)
    finally:
        subprocess.run(["groupdel", group], check=True)
    current = host.query("SELECT url, user_name, group_name FROM versions WHERE until IS NULL "
                         "AND url IN (?, ?) ORDER BY url", [other, owned])
    assert current == [(other, "root", "root"), (owned, user, group)]
    assert host.query("SELECT count(*) FROM versions WHERE url = ?", [other]) == [(1,)]
    assert host.run("diff", expect=1).stdout.endswith("saved: 1 changed\n")
    report = host.run("print-report").stdout
    assert f"{host.tree}/owned" in report and user in report and f"{host.tree}/other" not in report


def test_file_that_could_not_be_read_is_read_again_while_its_stat_stands(open_host):
    """A version with an error is never reused: once the file can be read (here: nobody
    joins its group, nothing about the file changes), the next session has its digest."""
    host = open_host
    make_tree(host.tree, {"grouped": "secret\n"})
    os.chown(host.tree / "grouped", 0, 4)  # group adm
    os.chmod(host.tree / "grouped", 0o640)
    os.chmod(host.tree, 0o755)
    command = [*SYSCHANGEMON, "-c", str(host.confdir), "collect"]
    assert run_as_nobody(command, timeout=60).returncode == 0
    url = f"file://{host.tree}/grouped"
    assert host.query("SELECT error, hash FROM versions WHERE url = ?", [url]) == \
        [("Permission denied", None)]
    with_group = ["setpriv", "--reuid=65534", "--regid=65534", "--groups=4", *command]
    result = subprocess.run(with_group, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOME": "/"}, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert host.query("SELECT error, hash FROM versions WHERE url = ? AND until IS NULL", [url]) == \
        [(None, blake3.blake3(b"secret\n").digest())]
