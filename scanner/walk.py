"""Walk the include globs' base directories with os.scandir and lstat every entry.

The walker only walks: it yields batches of columns (lists, one per field), never one
object per file, and steers by the globs: a directory is entered only when an include
may match below it and no exclude covers it. Symlinks are never followed, /proc, /sys,
/dev and /run are entered only when an include names them, and a directory seen
twice (a bind mount looping back) is entered once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from scanner.globs import GlobSet
from scanner.paths import escape, path_to_url

#: Columns of a walk batch, in order (the staging table in store.py follows it).
WALK_FIELDS = ("url", "st_mode", "uid", "gid", "size", "mtime_ns", "ctime_ns", "inode",
               "device", "nlink", "target", "force", "error")
#: Pseudo-filesystems that are never walked unless an include's base lies inside them.
SPECIAL_ROOTS = ("/proc", "/sys", "/dev", "/run")

Batch = dict[str, list]


@dataclass(frozen=True)
class WalkSpec:
    """What to walk: include and exclude globs and the walk options."""

    include: GlobSet
    exclude: GlobSet
    assume_change: GlobSet = field(default_factory=lambda: GlobSet(()))
    one_filesystem: bool = False


def walk(spec: WalkSpec, warn: Callable[[str], None], batch_size: int = 16384) -> Iterator[Batch]:
    """Yield batches of walked entries; problems go to ``warn`` or an entry's ``error``."""
    walker = _Walker(spec, warn, batch_size)
    yield from walker.run()


class _Walker:
    def __init__(self, spec: WalkSpec, warn: Callable[[str], None], batch_size: int) -> None:
        self.spec = spec
        self.warn = warn
        self.batch_size = batch_size
        self.rows: list[tuple] = []
        self.seen_dirs: set[tuple[int, int]] = set()
        bases = spec.include.bases()
        self.special = tuple(root for root in SPECIAL_ROOTS
                             if not any(b == root or b.startswith(root + "/") for b in bases))

    def run(self) -> Iterator[Batch]:
        for base in self.spec.include.bases():
            try:
                info = os.lstat(base)
            except FileNotFoundError:
                self.warn(f"include base {base} does not exist")
                continue
            except OSError as error:
                self.warn(f"include base {base}: {error.strerror}")
                continue
            if self.spec.include.match(base) and not self.spec.exclude.match(base):
                self._add(base, info, None)
            if stat.S_ISDIR(info.st_mode) and self._may_enter(base, info, info.st_dev):
                yield from self._walk_tree(base, info.st_dev)
        if self.rows:
            yield self._take()

    def _may_enter(self, path: str, info: os.stat_result, root_dev: int) -> bool:
        spec = self.spec
        if path in self.special:
            return False
        if spec.one_filesystem and info.st_dev != root_dev:
            return False
        if spec.exclude and (spec.exclude.match(path) or spec.exclude.covers(path)):
            return False
        if not spec.include.may_contain(path):
            return False
        key = (info.st_dev, info.st_ino)
        if key in self.seen_dirs:
            return False
        self.seen_dirs.add(key)
        return True

    def _walk_tree(self, base: str, root_dev: int) -> Iterator[Batch]:
        include, exclude = self.spec.include, self.spec.exclude
        stack = [base]
        while stack:
            directory = stack.pop()
            all_included = include.covers(directory)
            try:
                with os.scandir(directory) as entries:
                    for entry in entries:
                        path = entry.path
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # vanished between readdir and lstat
                        if stat.S_ISDIR(info.st_mode) and self._may_enter(path, info, root_dev):
                            stack.append(path)
                        if (all_included or include.match(path)) and not exclude.match(path):
                            self._add(path, info, None)
                            if len(self.rows) >= self.batch_size:
                                yield self._take()
            except OSError as error:
                # Unreadable directory: its own item (added by its parent) gets the error.
                self._add_error(directory, error)

    def _add(self, path: str, info: os.stat_result, error: str | None) -> None:
        # One tuple per entry, transposed per batch: cheaper than 13 list appends.
        target = None
        if stat.S_ISLNK(info.st_mode):
            try:
                target = os.readlink(path)
                target = target if target.isprintable() and "\\" not in target else escape(target)
            except OSError as failure:
                error = f"readlink: {failure.strerror}"
        spec = self.spec
        self.rows.append((
            path_to_url(path), info.st_mode, info.st_uid, info.st_gid, info.st_size,
            info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev, info.st_nlink, target,
            bool(spec.assume_change) and spec.assume_change.match(path), error))

    def _add_error(self, directory: str, error: OSError) -> None:
        """Record an unreadable directory as a row carrying only the url and the error."""
        self.rows.append((path_to_url(directory),) + (None,) * (len(WALK_FIELDS) - 2)
                         + (f"cannot list directory: {error.strerror or error}",))

    def _take(self) -> Batch:
        """The rows gathered so far as a batch of columns."""
        batch = dict(zip(WALK_FIELDS, map(list, zip(*self.rows))))
        self.rows = []
        return batch
