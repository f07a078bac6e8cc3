"""sql over history, and export in every format, for one host and for a fleet."""

from __future__ import annotations

import csv
import io
import json
import os

import duckdb
import pytest

from conftest import Host, make_tree


@pytest.fixture
def changed(host):
    make_tree(host.tree, {"sudoers": "root ALL\n", "bin": {"tool": "v1"}, "old": "o"})
    host.run("collect")
    (host.tree / "sudoers").write_text("root ALL\nmallory ALL\n")
    os.chmod(host.tree / "bin" / "tool", 0o4755)
    (host.tree / "old").unlink()
    (host.tree / "new").write_text("n")
    host.run("collect")
    return host


def test_sql_views_answer_questions_about_history(changed):
    host = changed
    out = host.run("sql", "SELECT path, mode_octal FROM items WHERE mode & 2048 > 0",
                   "--format", "csv").stdout
    assert list(csv.reader(io.StringIO(out))) == [["path", "mode_octal"],
                                                  [f"{host.tree}/bin/tool", "4755"]]
    first = host.query("SELECT uuid FROM sessions ORDER BY id")[0][0]
    out = host.run("sql", f"SELECT count(*) AS n FROM items_at('{first[:8]}')", "--format", "json").stdout
    assert json.loads(out) == [{"n": 4}]  # bin, bin/tool, old, sudoers
    out = host.run("sql", "SELECT kind, url FROM changes ORDER BY url", "--format", "json").stdout
    kinds = {row["url"].rsplit("/", 1)[1]: row["kind"] for row in json.loads(out)}
    assert kinds == {"tool": "changed", "new": "added", "old": "removed", "sudoers": "changed"}
    table = host.run("sql", "SELECT uuid FROM sessions").stdout
    assert table.splitlines()[0].strip() == "uuid" and table.rstrip().endswith("(2 rows)")


def test_sql_errors_and_read_only(changed):
    assert "query:" in changed.run("sql", "SELECT nope FROM items", expect=2).stderr
    result = changed.run("sql", "DELETE FROM versions", expect=2)
    assert "read-only" in result.stderr.lower()


def test_export_formats_carry_host_and_session(changed, tmp_path):
    host = changed
    uuid = host.query("SELECT uuid FROM sessions ORDER BY id DESC LIMIT 1")[0][0]
    lines = host.run("export", "--format", "jsonl").stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert {row["session_uuid"] for row in rows} == {uuid}
    assert {row["url"].rsplit("/", 1)[1] for row in rows} == {"bin", "tool", "new", "sudoers"}
    out = host.run("export", "--changes", "--format", "csv").stdout
    kinds = {row["url"].rsplit("/", 1)[1]: row["kind"] for row in csv.DictReader(io.StringIO(out))}
    assert kinds == {"tool": "changed", "new": "added", "old": "removed", "sudoers": "changed"}
    assert "needs --output" in host.run("export", "--format", "parquet", expect=2).stderr


def test_fleet_parquet_files_query_as_one_table(tmp_path):
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for name in ("web1", "web2"):
        host = Host(tmp_path / name)
        host.tree.mkdir(parents=True)
        host.configure()
        make_tree(host.tree, {"passwd": f"{name}\n", "common": "same"})
        host.run("collect")
        (host.tree / "passwd").write_text(f"{name} changed\n")
        host.run("collect")
        host.run("export", "--format", "parquet", "--output", str(fleet / f"{name}-items.parquet"))
        host.run("export", "--changes", "--format", "parquet",
                 "--output", str(fleet / f"{name}-changes.parquet"))
    con = duckdb.connect()
    items = con.execute(f"SELECT count(DISTINCT session_uuid), count(*) "
                        f"FROM read_parquet('{fleet}/*-items.parquet')").fetchall()
    assert items == [(2, 4)]
    changes = con.execute(f"SELECT kind, count(*) FROM read_parquet('{fleet}/*-changes.parquet') "
                          "GROUP BY kind").fetchall()
    assert changes == [("changed", 2)]


def test_log_file_records_the_run(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    uuid = host.query("SELECT uuid FROM sessions")[0][0]
    log = (host.base / "log" / "syschangemon.log").read_text()
    assert "collect started" in log and f"session {uuid} saved" in log
    assert (os.stat(host.base / "log" / "syschangemon.log").st_mode & 0o777) == 0o600
    host.run("export", "-u", "no-such-uuid", expect=4)
    assert "export failed: no session with UUID no-such-uuid" in \
        (host.base / "log" / "syschangemon.log").read_text()
