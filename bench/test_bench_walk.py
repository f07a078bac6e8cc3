"""Micro-benchmark: the walk (scandir + lstat + glob steering + rows) over a /usr-like tree,
in one process (scanner.walk.Walker) and split across the worker pool (scanner.pool)."""

from __future__ import annotations

import os

import pytest

from bench.tree import TreeInfo, TreeShape, ensure_tree
from scanner.globs import GlobSet
from scanner.pool import WorkerPool
from scanner.walk import Walker, WalkSpec


@pytest.fixture(scope="module")
def usr_tree(tmp_path_factory) -> TreeInfo:
    """20,000 small files shaped like /usr (one directory of 6,666 entries), built once."""
    root = tmp_path_factory.mktemp("walk") / "usr"
    return ensure_tree(root, TreeShape.scaled(20_000, total_bytes=0, median=512, sigma=0.5))


def _spec(tree: TreeInfo) -> WalkSpec:
    return WalkSpec(GlobSet([f"{tree.root}/**"]), GlobSet(["**.bak", "**~"]))


def test_walk_one_process(benchmark, usr_tree: TreeInfo) -> None:
    walker = Walker(_spec(usr_tree))

    def run() -> int:
        start = walker.bases([str(usr_tree.root)])
        out = walker.walk(start.pending, budget=10**9)
        assert not out.pending and not out.warnings
        return len(start.rows) + len(out.rows)

    # Everything below the root (the glob root/** does not match the root itself).
    assert benchmark(run) == usr_tree.entries - 1


def test_walk_worker_pool(benchmark, usr_tree: TreeInfo, tmp_path) -> None:
    options = {"noatime": False, "algorithm": "blake3", "content": None, "staging": str(tmp_path)}
    with WorkerPool(os.cpu_count() or 1, options, _spec(usr_tree)) as pool:
        pool.start()

        def run() -> int:
            return sum(result.walked for result in pool.walk([str(usr_tree.root)], with_details=False))

        assert benchmark(run) == usr_tree.entries - 1


def test_instruction_count_walks_the_whole_tree(usr_tree: TreeInfo) -> None:
    # What python -m bench.instructions counts must be the whole walk, at every stage.
    from bench.instructions import STAGES, walk_like_workers

    for stage in STAGES:
        assert walk_like_workers(str(usr_tree.root), stage) == usr_tree.entries - 1
