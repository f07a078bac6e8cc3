"""A synthetic tree shaped like a real /usr, deterministic from a seed, and scripted changes.

Shape (from the /usr copy measured in shared/PERF.md): file sizes log-normal around a
median of about 2 KB, a few files over 1 MiB that hold most of the bytes, about one
directory per 7.5 files, about 4.5 % symlinks, a few files owned by other users, and
two wide directories: one of ``big_dir`` entries (AIDE is quadratic in directory size)
and one of ``mid_dir`` entries to compare it with.

A built tree is reused by later runs: a stamp file next to it records its shape, and a
tree whose changes were not reverted (a crashed run) is rebuilt.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path

MIB = 1 << 20
#: Random bytes every file is cut from (a file starts with its own name, so no two match).
_POOL_SIZE = 8 * MIB
_EXTENSIONS = ["", ".so.1", ".h", ".py", ".gz", ".mo", ".png", ".conf", ".txt", ".pm", ".js"]
_EXT_WEIGHTS = [14, 10, 14, 14, 12, 8, 8, 3, 7, 5, 5]
_TOPS = ["lib", "lib/x86_64-linux-gnu", "lib/python3/dist-packages", "libexec", "include",
         "share", "share/doc", "share/locale", "share/icons", "sbin"]


@dataclass(frozen=True)
class TreeShape:
    """What to build. ``total_bytes`` 0 means small files only (no big-file share)."""

    files: int = 60_000
    total_bytes: int = 1_000_000_000
    seed: int = 2016
    median: int = 2048
    sigma: float = 1.4
    big_dir: int = 20_000
    mid_dir: int = 2_000
    symlink_share: float = 0.045
    files_per_dir: float = 7.5

    @staticmethod
    def scaled(files: int, **overrides) -> TreeShape:
        """A shape of ``files`` files whose wide directories shrink with small trees."""
        kwargs = {"files": files, "big_dir": min(20_000, files // 3),
                  "mid_dir": min(2_000, files // 30)}
        kwargs.update(overrides)
        return TreeShape(**kwargs)


@dataclass
class TreeInfo:
    """What was built: counts a report shows next to the timings."""

    root: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    big_files: int = 0
    big_bytes: int = 0
    median_size: int = 0
    widest_dirs: list[int] = field(default_factory=list)
    shape: dict = field(default_factory=dict)

    @property
    def entries(self) -> int:
        """Entries a walk sees (the root included)."""
        return self.files + self.dirs + self.symlinks + 1


@dataclass(frozen=True)
class WideShape:
    """For the linearity check: ``dirs`` directories of ``per_dir`` small files each."""

    dirs: int
    per_dir: int
    seed: int = 2016
    median: int = 2048


def ensure_tree(root: Path, shape: TreeShape | WideShape) -> TreeInfo:
    """The tree at ``root``: reused when its stamp matches ``shape`` and it is clean, else rebuilt."""
    stamp = _stamp_path(root)
    if stamp.is_file() and root.is_dir():
        saved = json.loads(stamp.read_text())
        if saved.get("shape") == asdict(shape) and not saved.get("dirty"):
            saved.pop("dirty", None)
            return TreeInfo(**saved)
    stamp.unlink(missing_ok=True)
    if root.exists():
        shutil.rmtree(root)
    info = build_tree(root, shape) if isinstance(shape, TreeShape) else build_wide(root, shape)
    stamp.write_text(json.dumps(asdict(info)))
    return info


def _stamp_path(root: Path) -> Path:
    return root.parent / (root.name + ".json")


def build_tree(root: Path, shape: TreeShape) -> TreeInfo:
    """Write the tree described by ``shape`` under ``root`` (which must not exist)."""
    rng = random.Random(shape.seed)
    pool = rng.randbytes(_POOL_SIZE)
    sizes = _sizes(rng, shape)
    dirs, homes = _layout(rng, shape)
    root.mkdir(parents=True)
    for directory in dirs:
        (root / directory).mkdir(parents=True, exist_ok=True)
    info = TreeInfo(root=str(root), shape=asdict(shape))
    written: list[str] = []
    for index, (home, size) in enumerate(zip(homes, sizes)):
        name = _file_name(rng, index, home)
        relative = f"{home}/{name}"
        _write_file(root / relative, size, relative.encode(), pool, rng)
        mode = 0o755 if home in ("bin", "sbin", "libexec") else 0o644
        os.chmod(root / relative, mode)
        owner = rng.random()
        if owner < 0.01:
            os.lchown(root / relative, 1000, 1000)  # an id without a name on most hosts
        elif owner < 0.02:
            os.lchown(root / relative, 1, 1)
        written.append(relative)
        info.bytes += size
        if size >= MIB:
            info.big_files += 1
            info.big_bytes += size
    info.files = len(written)
    info.symlinks = _add_symlinks(rng, root, shape, dirs, written)
    info.dirs = len({parent for d in dirs for parent in _self_and_parents(d)})
    info.median_size = sorted(sizes)[len(sizes) // 2] if sizes else 0
    counts: dict[str, int] = {}
    for home in homes:
        counts[home] = counts.get(home, 0) + 1
    info.widest_dirs = sorted(counts.values(), reverse=True)[:3]
    return info


def build_wide(root: Path, shape: WideShape) -> TreeInfo:
    """Write ``shape.dirs`` directories of ``shape.per_dir`` files (log-normal, at most 64 KiB)."""
    rng = random.Random(shape.seed)
    pool = rng.randbytes(_POOL_SIZE)
    info = TreeInfo(root=str(root), dirs=shape.dirs, shape=asdict(shape),
                    widest_dirs=[shape.per_dir] * min(shape.dirs, 3))
    root.mkdir(parents=True)
    sizes = []
    for number in range(shape.dirs):
        directory = root / f"d{number}"
        directory.mkdir()
        for index in range(shape.per_dir):
            size = min(int(rng.lognormvariate(math.log(shape.median), 1.0)), 65536)
            _write_file(directory / f"f{index}.gz", size, b"d%d/f%d\n" % (number, index), pool, rng)
            sizes.append(size)
    info.files, info.bytes = len(sizes), sum(sizes)
    info.median_size = sorted(sizes)[len(sizes) // 2]
    return info


def _self_and_parents(directory: str) -> list[str]:
    parts = directory.split("/")
    return ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]


def _sizes(rng: random.Random, shape: TreeShape) -> list[int]:
    """Log-normal small files, then enough big ones (>= 1 MiB) to reach total_bytes."""
    mu = math.log(shape.median)
    sizes = [min(int(rng.lognormvariate(mu, shape.sigma)), MIB - 1) for _ in range(shape.files)]
    remaining = shape.total_bytes - sum(sizes)
    big_count = max(1, shape.files // 450) if shape.total_bytes else 0
    if big_count and remaining > big_count * MIB:
        # Log-uniform between 1 MiB and 64 MiB, then scaled so the total comes out right.
        raw = [MIB * 2 ** rng.uniform(0, 6) for _ in range(big_count)]
        extra = (remaining - big_count * MIB) / sum(r - MIB for r in raw)
        for slot, value in zip(rng.sample(range(shape.files), big_count), raw):
            sizes[slot] = MIB + int((value - MIB) * extra)
    return sizes


def _layout(rng: random.Random, shape: TreeShape) -> tuple[list[str], list[str]]:
    """Directories (parents first) and the directory of every file."""
    wide = {"share/man/man3": shape.big_dir, "bin": shape.mid_dir}
    rest = max(0, shape.files - sum(wide.values()))
    grown: list[str] = []
    for index in range(max(1, int(rest / shape.files_per_dir))):
        # A random recursive tree: depth grows like log(n), as package trees do.
        parent = rng.choice(_TOPS) if index < 50 or rng.random() < 0.1 else rng.choice(grown)
        if parent.count("/") >= 7:
            parent = rng.choice(_TOPS)
        grown.append(f"{parent}/{rng.choice(['pkg', 'lib', 'mod', 'data', 'x'])}{index}")
    narrow = list(_TOPS) + grown
    # Heavy-tailed directory sizes: most hold a few files, some hundreds.
    weights = [rng.lognormvariate(0, 1.2) for _ in narrow]
    homes = [home for home, count in wide.items() for _ in range(count)]
    homes += rng.choices(narrow, weights, k=rest)
    homes = homes[:shape.files]
    rng.shuffle(homes)
    return list(wide) + narrow, homes


def _file_name(rng: random.Random, index: int, home: str) -> str:
    if home == "share/man/man3":
        return f"func{index}.3.gz"
    if home == "bin":
        return f"tool{index}"
    stem = "lib" if home.startswith("lib") else rng.choice(["f", "data", "mod", "README"])
    odd = " copy" if index % 997 == 0 else ("-ü" if index % 1499 == 0 else "")
    return f"{stem}{index}{odd}{rng.choices(_EXTENSIONS, _EXT_WEIGHTS)[0]}"


def _write_file(path: Path, size: int, header: bytes, pool: bytes, rng: random.Random) -> None:
    start = rng.randrange(_POOL_SIZE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        head = header[:size]
        os.write(fd, head)
        left = size - len(head)
        view = memoryview(pool)
        while left > 0:
            count = min(left, _POOL_SIZE - start)
            os.write(fd, view[start:start + count])
            left -= count
            start = 0
    finally:
        os.close(fd)


def _add_symlinks(rng: random.Random, root: Path, shape: TreeShape, dirs: list[str],
                  files: list[str]) -> int:
    count = int(shape.files * shape.symlink_share)
    made = 0
    for index in range(count):
        # Library symlinks (libfoo.so -> libfoo.so.1) are the most common kind; a few dangle.
        home = "lib/x86_64-linux-gnu" if index % 5 == 0 else rng.choice(dirs)
        target = rng.choice(files) if index % 50 else "missing/target"
        link = root / home / f"link{index}"
        os.symlink(os.path.relpath(root / target, root / home), link)
        made += 1
    return made


@dataclass
class ChangeSet:
    """A scripted set of changes to a tree that can be reverted (contents restored)."""

    root: Path
    modified: dict[str, bytes] = field(default_factory=dict)
    chmodded: dict[str, int] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)
    removed: dict[str, tuple[bytes, int]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Items changed."""
        return len(self.modified) + len(self.chmodded) + len(self.added) + len(self.removed)


def regular_files(root: Path) -> list[str]:
    """Relative paths of the regular files under ``root``, sorted (a stable base for choices)."""
    found: list[str] = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            if stat.S_ISREG(os.lstat(path).st_mode):
                found.append(os.path.relpath(path, root))
    return sorted(found)


def apply_changes(root: Path, count: int, seed: int = 8) -> ChangeSet:
    """Change ``count`` items: 40 % content, 20 % mode, 20 % added, 20 % removed files.

    The tree's stamp is marked dirty until ``revert`` ran, so a crash forces a rebuild.
    """
    _mark(root, dirty=True)
    rng = random.Random(seed)
    files = regular_files(root)
    modify, chmod, add = int(count * 0.4), int(count * 0.2), int(count * 0.2)
    remove = count - modify - chmod - add
    chosen = rng.sample(files, min(len(files), modify + chmod + remove))
    changes = ChangeSet(root)
    for relative in chosen[:modify]:
        path = root / relative
        changes.modified[relative] = path.read_bytes()
        with open(path, "r+b") as handle:
            handle.write(b"changed by bench " + str(rng.random()).encode())
    for relative in chosen[modify:modify + chmod]:
        path = root / relative
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        changes.chmodded[relative] = mode
        os.chmod(path, mode ^ 0o020)
    for relative in chosen[modify + chmod:]:
        path = root / relative
        changes.removed[relative] = (path.read_bytes(), stat.S_IMODE(os.lstat(path).st_mode))
        path.unlink()
    for index in range(add):
        relative = f"{os.path.dirname(rng.choice(files))}/added-by-bench-{index}.txt"
        (root / relative).write_bytes(b"new file %d\n" % index * rng.randrange(1, 200))
        changes.added.append(relative)
    return changes


def revert(changes: ChangeSet) -> None:
    """Put the tree's contents and modes back as they were before ``apply_changes``."""
    root = changes.root
    for relative, data in changes.modified.items():
        (root / relative).write_bytes(data)
    for relative, mode in changes.chmodded.items():
        os.chmod(root / relative, mode)
    for relative in changes.added:
        (root / relative).unlink(missing_ok=True)
    for relative, (data, mode) in changes.removed.items():
        (root / relative).write_bytes(data)
        os.chmod(root / relative, mode)
    _mark(root, dirty=False)


def _mark(root: Path, *, dirty: bool) -> None:
    stamp = _stamp_path(root)
    if stamp.is_file():
        saved = json.loads(stamp.read_text())
        saved["dirty"] = dirty
        stamp.write_text(json.dumps(saved))
