"""Micro-benchmark: the hash worker (scanner.hasher.detail_batch) on small and on large files.

Runs in this process, as one pool worker would; the pool and its IPC are not measured.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import blake3
import pytest

from scanner import hasher
from scanner.hasher import detail_batch, init_worker
from scanner.paths import path_to_url


def _files(root: Path, count: int, size: int, seed: int) -> list[tuple[str, int, int, int]]:
    rng = random.Random(seed)
    root.mkdir()
    tasks = []
    for index in range(count):
        path = root / f"f{index}"
        path.write_bytes(rng.randbytes(size))
        info = os.lstat(path)
        tasks.append((path_to_url(str(path)), info.st_mode, info.st_ino, info.st_dev))
    return tasks


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> list[tuple[str, int, int, int]]:
    """2,000 files of 2 KiB: the median /usr file; per-file system calls dominate."""
    return _files(tmp_path_factory.mktemp("hash") / "small", 2000, 2048, 1)


@pytest.fixture(scope="module")
def large_files(tmp_path_factory) -> list[tuple[str, int, int, int]]:
    """4 files of 16 MiB: read through the reusable 1 MiB buffer; the hash dominates."""
    return _files(tmp_path_factory.mktemp("hash") / "large", 4, 16 << 20, 2)


@pytest.fixture(params=["blake3", "sha256"])
def algorithm(request):
    """Each benchmark once with BLAKE3 (the product's) and once with SHA-256 (AIDE's)."""
    saved = dict(hasher._options)
    init_worker({"noatime": False, "algorithm": request.param, "content": None})
    yield request.param
    hasher._options.clear()
    hasher._options.update(saved)


def _expected(algorithm: str, path: str) -> bytes:
    data = Path(path).read_bytes()
    return (blake3.blake3(data) if algorithm == "blake3" else hashlib.sha256(data)).digest()


@pytest.mark.parametrize("kind", ["small", "large"])
def test_detail_batch(benchmark, algorithm: str, kind: str, request) -> None:
    tasks = request.getfixturevalue(f"{kind}_files")
    benchmark.extra_info["bytes"] = sum(os.path.getsize(t[0][len("file://"):]) for t in tasks)
    columns, _ = benchmark(detail_batch, tasks)
    assert columns[3] == [None] * len(tasks)  # no errors
    assert columns[1][0] == _expected(algorithm, tasks[0][0][len("file://"):])
