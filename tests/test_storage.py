"""The database file: schema as defined, private modes, and bad or full storage."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

from conftest import SYSCHANGEMON, make_tree, run_as_nobody
from scanner.schema import TABLES
from scanner.session import ROW_GROUP_ROWS, _insert_threads


def test_live_tables_match_the_schema_definition(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    for table, columns in TABLES.items():
        live = host.query("SELECT column_name, data_type FROM information_schema.columns "
                          "WHERE table_name = ? ORDER BY ordinal_position", [table])
        assert [name for name, _ in live] == [c.name for c in columns], table
        spelled = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
        assert [kind for _, kind in live] == [spelled.get(c.sql, c.sql) for c in columns], table
    assert dict(host.query("SELECT key, value FROM meta"))["schema_version"] == "1"
    # Columns the schema gives a compression are written with it, in a real collect.
    stored = dict(host.query("SELECT column_name, compression FROM pragma_storage_info('versions') "
                             "WHERE segment_type <> 'VALIDITY'"))
    forced = {c.name: c.compression.upper() for c in TABLES["versions"] if c.compression}
    assert forced and {name: stored[name] for name in forced} == forced


def test_corrupt_database_is_a_clear_error_and_is_left_alone(host):
    # The walk starts before the database opens: what it staged goes when the open fails.
    make_tree(host.tree, {f"d{d}": {f"f{i}": str(i) for i in range(500)} for d in range(20)})
    host.storage.mkdir(mode=0o700)
    garbage = b"this is not a database\n" * 1000
    (host.storage / "db.duckdb").write_bytes(garbage)
    result = host.run("collect", expect=7)
    assert f"{host.storage}/db.duckdb" in result.stderr
    assert result.stderr.count("\n") == 1
    assert (host.storage / "db.duckdb").read_bytes() == garbage  # never a silent reset
    assert sorted(os.listdir(host.storage)) == ["db.duckdb", "lock"]


def test_foreign_duckdb_file_is_refused(host):
    host.storage.mkdir(mode=0o700)
    con = duckdb.connect(str(host.storage / "db.duckdb"))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.close()
    result = host.run("collect", expect=7)
    assert "not a syschangemon database" in result.stderr
    con = duckdb.connect(str(host.storage / "db.duckdb"), read_only=True)
    assert con.execute("SELECT table_name FROM information_schema.tables").fetchall() == [("invoices",)]
    con.close()


def test_non_root_default_storage_is_under_xdg_state_home(open_host):
    host = open_host
    (host.confdir / "plugins.d" / "storage.conf").write_text("[storage]\nenable_plugin = true\n")
    os.chmod(host.confdir / "plugins.d" / "storage.conf", 0o644)
    make_tree(host.tree, {"a": "1"})
    os.chmod(host.tree, 0o755)
    state = host.base / "state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    result = run_as_nobody([*SYSCHANGEMON, "-c", str(host.confdir), "collect"],
                           env={"XDG_STATE_HOME": str(state)}, timeout=60)
    assert result.returncode == 0, result.stderr
    db = state / "syschangemon" / "db.duckdb"
    assert db.exists()
    assert (db.stat().st_mode & 0o777) == 0o600
    assert ((state / "syschangemon").stat().st_mode & 0o777) == 0o700


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs for the storage directory (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_disk_full_is_a_clear_error_and_the_next_run_after_space_returns_succeeds(host, small_disk):
    storage = small_disk / "storage"
    (host.confdir / "plugins.d" / "storage.conf").write_text(
        f"[storage]\nenable_plugin = true\ndir = {storage}\n")
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    con = duckdb.connect(str(storage / "db.duckdb"), read_only=True)
    before = con.execute("SELECT uuid FROM sessions").fetchall()
    con.close()
    # Many new items with long names: the next session no longer fits in 4 MiB.
    make_tree(host.tree, {f"d{d}": {f"{'n' * 120}{i}": "x" for i in range(2000)} for d in range(8)})
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
                                - 64 * 1024))
    result = host.run("collect", expect=None)
    assert result.returncode == 7, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    # The database or the scan's staging files, whichever hit the full disk first.
    assert f"{storage}/" in result.stderr and "No space left on device" in result.stderr, result.stderr
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    host.run("collect")
    con = duckdb.connect(str(storage / "db.duckdb"), read_only=True)
    after = con.execute("SELECT uuid FROM sessions ORDER BY id").fetchall()
    con.close()
    assert after[: len(before)] == before and len(after) == len(before) + 1


@pytest.mark.parametrize(("rows", "inside"), [(0, 4), (1_000, 4), (ROW_GROUP_ROWS, 1), (3 * ROW_GROUP_ROWS, 3),
                                              (10 * ROW_GROUP_ROWS, 4)])
def test_a_merge_runs_on_no_more_threads_than_it_fills_row_groups(tmp_path, rows, inside):
    con = duckdb.connect(str(tmp_path / "db.duckdb"))
    con.execute("SET threads = 4")
    with _insert_threads(con, rows):
        assert con.execute("SELECT current_setting('threads')").fetchall() == [(inside,)]
    with pytest.raises(duckdb.Error), _insert_threads(con, rows):
        con.execute("SELECT * FROM no_such_table")
    assert con.execute("SELECT current_setting('threads')").fetchall() == [(4,)]  # put back
    con.close()
