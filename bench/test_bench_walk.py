"""Micro-benchmark: the walk (scandir + lstat + glob steering + columns) over a /usr-like tree."""

from __future__ import annotations

import pytest

from bench.tree import TreeInfo, TreeShape, ensure_tree
from scanner.globs import GlobSet
from scanner.walk import WalkSpec, walk


@pytest.fixture(scope="module")
def usr_tree(tmp_path_factory) -> TreeInfo:
    """20,000 small files shaped like /usr (one directory of 6,666 entries), built once."""
    root = tmp_path_factory.mktemp("walk") / "usr"
    return ensure_tree(root, TreeShape.scaled(20_000, total_bytes=0, median=512, sigma=0.5))


def test_walk_usr_like(benchmark, usr_tree: TreeInfo) -> None:
    spec = WalkSpec(GlobSet([f"{usr_tree.root}/**"]), GlobSet(["**.bak", "**~"]))
    warnings: list[str] = []

    def run() -> int:
        return sum(len(batch["url"]) for batch in walk(spec, warnings.append))

    walked = benchmark(run)
    # Everything below the root (the glob root/** does not match the root itself).
    assert walked == usr_tree.entries - 1
    assert warnings == []
