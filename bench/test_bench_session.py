"""Micro-benchmark: the bulk load and the versioned merge of SessionBuilder (100,000 files).

Synthetic walk batches and worker results (bench/synthetic.py) stand in for the walk and
the pool, so only the Arrow load, the SQL merge and the commit are measured.
"""

from __future__ import annotations

import itertools

import pytest

from bench.synthetic import commit_session, details_for, new_db, walk_batches

FILES = 100_000


@pytest.fixture(scope="module")
def batches():
    """Walk batches of FILES files and their worker results, built once."""
    walked = walk_batches(range(FILES))
    return walked, details_for(walked)


@pytest.fixture
def fresh_dbs(tmp_path):
    """A factory of empty databases; every connection is closed afterwards."""
    opened = []
    counter = itertools.count()

    def make():
        con = new_db(tmp_path / f"db{next(counter)}")
        opened.append(con)
        return con

    yield make
    for con in opened:
        con.close()


def test_baseline_session(benchmark, batches, fresh_dbs) -> None:
    """First session: every file new, every detail loaded."""
    walked, details = batches
    info = benchmark.pedantic(commit_session, setup=lambda: ((fresh_dbs(), walked, details), {}),
                              rounds=5, iterations=1)
    assert info.item_count == FILES


def test_nochange_session(benchmark, batches, fresh_dbs) -> None:
    """A session where nothing changed: the stat keys match, nothing is re-hashed or inserted."""
    walked, details = batches
    con = fresh_dbs()
    commit_session(con, walked, details)
    info = benchmark.pedantic(commit_session, args=(con, walked, None), rounds=5, iterations=1)
    assert info.item_count == FILES
    # No new versions: the baseline's are still current.
    assert con.execute("SELECT count(*) FROM versions").fetchall()[0][0] == FILES


def test_session_with_1000_changes(benchmark, batches, fresh_dbs) -> None:
    """1,000 files with a new size and mtime among FILES: only those get new versions."""
    walked, details = batches
    bumped = walk_batches(range(FILES), version={i: 1 for i in range(0, FILES, FILES // 1000)})

    def setup():
        con = fresh_dbs()
        commit_session(con, walked, details)
        return (con, bumped, None), {}

    info = benchmark.pedantic(commit_session, setup=setup, rounds=3, iterations=1)
    assert info.item_count == FILES
