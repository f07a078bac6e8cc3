"""Tamper-evident history: verify recomputes the hash chain and names what was changed."""

from __future__ import annotations

import os

import duckdb
import pytest

from conftest import make_tree


@pytest.fixture
def history(host):
    """Three sessions with changes between them."""
    make_tree(host.tree, {"passwd": "root\n", "sudoers": "root ALL\n", "bin": {"ls": "elf"}})
    host.run("collect")
    (host.tree / "passwd").write_text("root\nmallory\n")
    host.run("collect")
    (host.tree / "bin" / "ls").write_text("trojan")
    (host.tree / "new").write_text("new")
    host.run("collect")
    return host


def tamper(host, sql: str, params: list | None = None) -> None:
    con = duckdb.connect(str(host.storage / "db.duckdb"))
    con.execute(sql, params or [])
    con.close()


def test_untouched_history_verifies_and_prints_the_head(history):
    result = history.run("verify")
    head = history.query("SELECT lower(hex(digest)) FROM sessions ORDER BY id DESC LIMIT 1")[0][0]
    assert result.stdout.strip() == f"chain intact: 3 sessions, head {head}"
    links = history.query("SELECT digest, prev_digest FROM sessions ORDER BY id")
    assert links[0][1] is None and links[1][1] == links[0][0] and links[2][1] == links[1][0]


@pytest.mark.parametrize("sql, session_index", [
    # an edited digest of an old version: the session that wrote it is named
    ("UPDATE versions SET hash = sha256('x')::BLOB WHERE url LIKE '%/passwd' AND until IS NOT NULL", 0),
    # a deleted version
    ("DELETE FROM versions WHERE url LIKE '%/new'", 2),
    # a version re-opened so the change disappears
    ("UPDATE versions SET until = NULL WHERE url LIKE '%/bin/ls' AND until IS NOT NULL", 2),
])
def test_edited_or_deleted_versions_are_found(history, sql, session_index):
    uuid = history.query("SELECT uuid FROM sessions ORDER BY id")[session_index][0]
    tamper(history, sql)
    result = history.run("verify", expect=9)
    assert f"session {uuid}" in result.stderr


def test_inserted_version_is_found(history):
    tamper(history, "INSERT INTO versions (since, until, url, type) VALUES (99, NULL, 'file:///evil', 'file')")
    assert "belong to no stored session" in history.run("verify", expect=9).stderr
    tamper(history, "DELETE FROM versions WHERE url = 'file:///evil'")
    tamper(history, "INSERT INTO versions (since, until, url, type) VALUES (2, NULL, 'file:///evil', 'file')")
    uuid = history.query("SELECT uuid FROM sessions WHERE id = 2")[0][0]
    assert f"session {uuid}" in history.run("verify", expect=9).stderr


def test_edited_content_blob_is_found(history):
    tamper(history, "INSERT INTO contents VALUES (sha256('a')::BLOB, 'b'::BLOB, 1)")
    assert "contents no longer match" in history.run("verify", expect=9).stderr


def test_after_cleanup_the_anchor_covers_rows_of_dropped_sessions(history):
    history.configure(main="session_keep = 2\n")
    history.run("cleanup")
    assert history.run("verify").stdout.startswith("chain intact: 2 sessions")
    # sudoers' only version was written by a dropped session: the anchor still covers it.
    tamper(history, "UPDATE versions SET size = 1 WHERE url LIKE '%/sudoers'")
    assert "oldest kept" in history.run("verify", expect=9).stderr


def test_keyed_chain_needs_the_key(host, tmp_path):
    key = tmp_path / "chain.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    host.configure()
    storage = host.confdir / "plugins.d" / "storage.conf"
    storage.write_text(storage.read_text() + f"chain_key_file = {key}\n")
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    host.run("collect")
    host.run("verify")
    key.write_bytes(os.urandom(32))
    assert "no longer match" in host.run("verify", expect=9).stderr
    os.chmod(key, 0o644)
    assert "must be private to root" in host.run("verify", expect=3).stderr


def test_sessions_from_before_the_chain_are_skipped_but_a_wiped_digest_is_not(history):
    # A database from before sessions were sealed: no digests at all.
    tamper(history, "UPDATE sessions SET digest = NULL, prev_digest = NULL")
    history.run("collect")
    assert history.run("verify").stdout.startswith("chain intact: 4 sessions")
    history.run("collect")
    fourth = history.query("SELECT uuid FROM sessions ORDER BY id")[3][0]
    tamper(history, "UPDATE sessions SET digest = NULL WHERE uuid = ?", [fourth])
    assert "link to the previous session broken" in history.run("verify", expect=9).stderr
