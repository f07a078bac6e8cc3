"""Micro-benchmark: the diff of two sessions (report.diff.compute_diff), 1,000 changes.

Its cost must follow the number of changes, not the tree: the same 1,000 changes are
diffed in a database of 10,000 and of 200,000 files.
"""

from __future__ import annotations

import pytest

from bench.synthetic import commit_session, details_for, new_db, walk_batches

diff = pytest.importorskip("report.diff", reason="report/diff.py is not written yet")
CHANGES = 1000


@pytest.fixture(scope="module", params=[10_000, 200_000])
def two_sessions(request, tmp_path_factory):
    """A baseline of N files, then a session with 400 modified, 200 removed, 400 added."""
    files = request.param
    con = new_db(tmp_path_factory.mktemp(f"diff{files}"))
    walked = walk_batches(range(files))
    old = commit_session(con, walked, details_for(walked))
    step = files // 1000
    modified = {i: 1 for i in range(0, files, step)[:400]}
    removed = set(range(1, files, step)[:200])
    added = range(files, files + 400)
    present = [i for i in range(files) if i not in removed] + list(added)
    new = commit_session(con, walk_batches(present, version=modified), None)
    yield con, old, new
    con.close()


def test_compute_diff(benchmark, two_sessions) -> None:
    con, old, new = two_sessions
    result = benchmark(diff.compute_diff, con, old, new)
    kinds = {}
    for change in result.changes:
        kinds[change.kind] = kinds.get(change.kind, 0) + 1
    assert kinds == {"changed": 400, "removed": 200, "added": 400}
