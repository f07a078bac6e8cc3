"""``python -m bench.instructions TREE``: instructions a worker spends walking TREE.

Wall and CPU times on this VM drift by tens of percent within minutes, so a change of
a few percent in the walk cannot be told from noise without dozens of runs. The number
of instructions executed can: cachegrind (valgrind) counts them, the same from run to
run. This runs, in one process under cachegrind, what the worker tasks of a later
session do with TREE (scanner.walk: scandir, lstat, globs, rows; scanner.worker: the
Arrow table and the Parquet file), in tasks split as the pool splits them, and prints
the instructions per entry, less those of the same process walking an empty directory
(interpreter and imports). The globs are the bench's (TREE/**, excluding **.bak and
**~), with the embedded defaults' assume_change globs.

Kernel time (the lstat system calls themselves) is not counted, and pyarrow picks
other code paths under valgrind: compare a change against its parent with the same
``--stage``, not against wall times. Needs ``apt-get install valgrind``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: What is counted: the walk alone, with the Arrow table, or with the Parquet file too.
STAGES = ("walk", "table", "all")
_WORKERS = 2  # as on the 2-core VM the targets are set for: it decides the task sizes
_ASSUME_CHANGE = ("/etc/passwd", "/etc/shadow")  # conf/plugins.d/file.conf


def walk_like_workers(tree: str, stage: str) -> int:
    """Walk ``tree`` in tasks cut as scanner.pool cuts them, one after the other;
    returns the entries found."""
    from scanner import worker
    from scanner.globs import GlobSet
    from scanner.pool import FIRST_BUDGET, WALK_BUDGET
    from scanner.staging import write_table
    from scanner.walk import Walker, WalkSpec

    walker = Walker(WalkSpec(GlobSet([f"{tree}/**"]), GlobSet(["**.bak", "**~"]), GlobSet(_ASSUME_CHANGE)))
    staging = tempfile.mkdtemp(prefix="bench-instructions-")
    try:
        todo = list(walker.bases([tree]).pending)
        found = 0
        while todo:
            share = max(1, len(todo) // (2 * _WORKERS))
            batch = [todo.pop() for _ in range(min(share, len(todo)))]
            out = walker.walk(batch, WALK_BUDGET if len(todo) >= _WORKERS else FIRST_BUDGET)
            todo.extend(out.pending)
            found += len(out.rows)
            if stage != "walk" and out.rows:
                table = worker.entry_table(out.rows, None)
                if stage == "all":
                    write_table(staging, "walk", table)
        return found
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def count(tree: str, stage: str) -> tuple[int, int]:
    """(instructions, entries) of walk_like_workers(tree) in a process under cachegrind."""
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.instructions: valgrind is not installed (apt-get install valgrind)")
    result = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-m", "bench.instructions", "--inner", "--stage", stage, tree],
        capture_output=True, text=True, check=False)
    found = re.search(r"I\s+refs:\s+([\d,]+)", result.stderr)
    entries = re.search(r"^entries (\d+)$", result.stdout, re.MULTILINE)
    if result.returncode != 0 or not found or not entries:
        raise SystemExit(f"bench.instructions: the run under valgrind failed: {result.stderr[-500:]}")
    return int(found.group(1).replace(",", "")), int(entries.group(1))


def main(argv: list[str] | None = None) -> int:
    """Print the instructions per walked entry of TREE (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path, help="directory to walk (it is only read)")
    parser.add_argument("--stage", choices=STAGES, default="all",
                        help="walk: scandir, lstat and rows; table: and the Arrow table; "
                             "all (default): and the Parquet file")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tree = os.path.abspath(args.tree)
    if args.inner:
        print(f"entries {walk_like_workers(tree, args.stage)}")
        return 0
    if not os.path.isdir(tree):
        raise SystemExit(f"bench.instructions: {tree}: not a directory")
    with tempfile.TemporaryDirectory() as empty:
        fixed, _ = count(empty, args.stage)
    total, entries = count(tree, args.stage)
    net = total - fixed
    print(f"{tree}: {entries} entries, stage {args.stage}: {net / 1e9:.3f} G instructions "
          f"({net / max(entries, 1):,.0f} per entry; {fixed / 1e9:.3f} G more for the "
          f"interpreter and imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
