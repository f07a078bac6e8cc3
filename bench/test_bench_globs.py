"""Micro-benchmark: the default excludes against a /usr-like tree (match runs per entry)."""

from __future__ import annotations

import random

from scanner.globs import GlobSet

DEFAULT_EXCLUDES = ["/etc/mtab", "/etc/ld.so.cache", "/etc/printcap", "**.bak", "**~"]


def usr_like_paths(count: int = 10_000) -> list[str]:
    """Paths shaped like a Debian /usr (deterministic), with a few backups among them."""
    rng = random.Random(2016)
    tops = ["bin", "lib", "lib/x86_64-linux-gnu", "share/doc", "share/man/man1",
            "share/locale/de/LC_MESSAGES", "include/linux", "lib/python3/dist-packages/pkg"]
    suffixes = ["", ".so.6", ".h", ".py", ".gz", ".mo", ".conf", ".bak", "~"]
    weights = [30, 15, 15, 15, 10, 8, 5, 1, 1]
    return [f"/usr/{rng.choice(tops)}/f{i:05d}{rng.choices(suffixes, weights)[0]}"
            for i in range(count)]


def test_default_excludes_match(benchmark) -> None:
    globs = GlobSet(DEFAULT_EXCLUDES)
    paths = usr_like_paths()

    def run() -> int:
        match = globs.match
        return sum(1 for path in paths if match(path))

    matched = benchmark(run)
    assert matched == sum(1 for p in paths if p.endswith((".bak", "~")))
