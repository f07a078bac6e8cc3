"""Run and time commands: the syschangemon CLI with a generated configuration, and its peers.

Every command runs as a subprocess; its wall time, its peak RSS (``ru_maxrss`` from
``wait4``: the largest single process of its tree) and the CPU time the whole machine
spent meanwhile are recorded per repetition.
"""

from __future__ import annotations

import compileall
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

#: The stat walk the issue compares with: everything a no-change collect must read.
FIND_FORMAT = r"%p %s %T@ %C@ %i %m %U %G\n"
#: The AIDE rule of the issue: permissions, inode, links, owner, group, size, mtime, ctime, SHA-256.
AIDE_RULE = "p+i+n+u+g+s+m+c+sha256"


class BenchError(Exception):
    """A measured command failed: the benchmark's numbers would mean nothing."""


@dataclass
class Measurement:
    """One row of the results: a named command and its repetitions."""

    name: str
    command: str
    times: list[float] = field(default_factory=list)
    rss_kb: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    group: str = "syschangemon"
    note: str = ""
    skipped: bool = False

    @property
    def median(self) -> float | None:
        """Median wall time in seconds (None when skipped)."""
        return median(self.times) if self.times else None

    @property
    def cpu_median(self) -> float | None:
        """Median CPU seconds the machine spent per repetition (None when skipped)."""
        return median(self.cpu) if self.cpu else None

    @property
    def peak_rss_mb(self) -> float | None:
        """Largest peak RSS over the repetitions, in MiB."""
        return max(self.rss_kb) / 1024 if self.rss_kb else None


def skipped(name: str, note: str, group: str = "syschangemon") -> Measurement:
    """A row that says why it was not measured."""
    return Measurement(name, "", group=group, note=note, skipped=True)


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes; False when not permitted."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return True
    except OSError:
        return False


def machine_cpu() -> float:
    """CPU seconds all processors have spent busy since boot (/proc/stat: user, nice,
    system, irq, softirq; not idle, iowait or steal)."""
    with open("/proc/stat") as handle:
        fields = handle.readline().split()[1:8]
    user, nice, system, _idle, _iowait, irq, softirq = map(int, fields)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def run_once(argv: list[str], *, ok: tuple[int, ...] = (0,), stdout: str | None = None,
             timeout: float = 3600) -> tuple[float, int, int, float]:
    """Run ``argv``; return (wall seconds, peak RSS in KiB, exit code, machine CPU seconds).
    Raises BenchError when the exit code is not in ``ok``.

    The CPU figure counts every process on the machine, so it includes the command's
    whole tree (the workers are the forkserver's children, which ``wait4`` never
    sees) and whatever else ran. Next to the wall time it tells work from waiting:
    wall time cannot fall below CPU seconds over the cores.
    """
    with tempfile.TemporaryFile() as errors, \
            open(stdout or os.devnull, "wb") as out:
        started, cpu = time.perf_counter(), machine_cpu()
        process = subprocess.Popen(argv, stdout=out, stderr=errors, stdin=subprocess.DEVNULL)
        _, status, usage = _wait4(process.pid, timeout)
        elapsed, cpu = time.perf_counter() - started, machine_cpu() - cpu
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait
        if process.returncode not in ok:
            errors.seek(0)
            tail = errors.read()[-2000:].decode(errors="replace")
            raise BenchError(f"{shlex.join(argv)} exited {process.returncode}:\n{tail}")
    return elapsed, usage.ru_maxrss, process.returncode, cpu


def _wait4(pid: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        waited, status, usage = os.wait4(pid, os.WNOHANG)
        if waited:
            return waited, status, usage
        if time.monotonic() > deadline:
            os.kill(pid, 9)
        time.sleep(0.002)


def measure(name: str, argv: list[str], reps: int, *, group: str = "syschangemon",
            before: Callable[[int], None] | None = None, cold: bool = False,
            ok: tuple[int, ...] = (0,), note: str = "", stdout: str | None = None) -> Measurement:
    """Time ``argv`` ``reps`` times; ``before(rep)`` runs untimed ahead of each repetition."""
    row = new_row(name, argv, group, note)
    for rep in range(reps):
        _time_once(row, argv, rep, before=before, cold=cold, ok=ok, stdout=stdout)
    return row


def new_row(name: str, argv: list[str], group: str = "syschangemon", note: str = "") -> Measurement:
    """An empty row for ``argv``, for measure or measure_interleaved to fill."""
    return Measurement(name, _display(argv), group=group, note=note)


@dataclass
class Timed:
    """A command of an interleaved measurement: its row, its argv, what runs before it."""

    row: Measurement
    argv: list[str]
    before: Callable[[int], None] | None = None


def timed(name: str, argv: list[str], group: str = "syschangemon",
          before: Callable[[int], None] | None = None) -> Timed:
    """A command for measure_interleaved, with an empty row named ``name``."""
    return Timed(new_row(name, argv, group), argv, before)


def measure_interleaved(commands: list[Timed], reps: int, *, cold: bool = False) -> list[list[float]]:
    """Time the commands in turn, once each per repetition (A B C, A B C, ...), adding
    to their rows; returns each command's times of this call, in the order given.

    This VM's speed drifts by tens of percent within minutes. Timed one after the
    other, the peers can land in a fast minute and the product in a slow one; taken
    per repetition of an interleaved run, a ratio compares runs a few seconds apart.
    """
    times: list[list[float]] = [[] for _ in commands]
    for rep in range(reps):
        for command, mine in zip(commands, times):
            mine.append(_time_once(command.row, command.argv, rep, before=command.before, cold=cold))
    return times


def ratios(times: list[float], bases: list[float]) -> list[float]:
    """times[i] / bases[i]: ratios of runs made a few seconds apart (see measure_interleaved)."""
    return [t / b for t, b in zip(times, bases)] if bases and all(bases) else []


def paired_ratio(each: list[float]) -> float | None:
    """The median of ``ratios``: what a target compares with its limit."""
    return median(each) if each else None


def ratio_note(each: list[float]) -> str:
    """How a target's ratio was taken, with the spread of the repetitions' ratios: how
    near the limit the VM's faster and slower minutes came."""
    spread = f" ({min(each):.2f}-{max(each):.2f})" if each else ""
    return f"median of the ratios of each repetition{spread}, timed in turn"


def _time_once(row: Measurement, argv: list[str], rep: int, *, before: Callable[[int], None] | None,
               cold: bool, ok: tuple[int, ...] = (0,), stdout: str | None = None) -> float:
    """One timed run of ``argv``, recorded in ``row``; returns its wall time."""
    if before:
        before(rep)
    if cold:
        drop_caches()
    elapsed, rss, _, cpu = run_once(argv, ok=ok, stdout=stdout)
    row.times.append(elapsed)
    row.rss_kb.append(rss)
    row.cpu.append(cpu)
    return elapsed


def _display(argv: list[str]) -> str:
    if argv[:2] == ["sh", "-c"]:
        return argv[2]
    return shlex.join(argv)


def warm_cache(tree: Path) -> None:
    """Read every file once so warm runs do not pay for the first reads.

    Dirty pages of a tree just built are written back first: writeback running under
    a measurement slowed the first find walk threefold.
    """
    os.sync()
    subprocess.run(["sh", "-c", f"find {shlex.quote(str(tree))} -type f -print0 | "
                    "xargs -0 -P4 -n 2000 cat > /dev/null"], check=False)
    os.sync()


# --- peers -------------------------------------------------------------------------------

def find_walk(tree: Path, out: Path) -> list[str]:
    """find's stat walk (numeric ids, as a collect needs them), written to a file."""
    return ["sh", "-c", f"find {shlex.quote(str(tree))} -printf '{FIND_FORMAT}' > {shlex.quote(str(out))}"]


def hash_all(tree: Path, out: Path, processes: int, tool: str = "b3sum --num-threads 1") -> list[str]:
    """Hash every regular file with ``tool`` in ``processes`` parallel xargs batches of 2,000."""
    return ["sh", "-c", f"find {shlex.quote(str(tree))} -type f -print0 | "
            f"xargs -0 -P{processes} -n 2000 {tool} > {shlex.quote(str(out))}"]


def tool_version(argv: list[str]) -> str | None:
    """First line of a tool's version output, None when the tool is missing."""
    if not shutil.which(argv[0]):
        return None
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0] if text else argv[0]


@dataclass
class Aide:
    """AIDE with the issue's rule on one tree, its database under ``workdir``."""

    workdir: Path
    tree: Path
    workers: int

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = self.workdir / "aide.conf"
        # Selection lines are regular expressions: escape the tree's path.
        selection = re.sub(r"([^A-Za-z0-9/_-])", r"\\\1", str(self.tree))
        self.config.write_text(
            f"database_in=file:{self.workdir}/aide.db\n"
            f"database_out=file:{self.workdir}/aide.db.new\n"
            "gzip_dbout=no\nreport_url=stdout\n"
            f"BenchRule = {AIDE_RULE}\n{selection} BenchRule\n")

    def argv(self, command: str) -> list[str]:
        """``aide --init`` or ``aide --check`` with this configuration."""
        return ["aide", f"--config={self.config}", f"--workers={self.workers}", f"--{command}"]

    def promote(self) -> None:
        """Make the database written by --init the one --check reads."""
        os.replace(self.workdir / "aide.db.new", self.workdir / "aide.db")


#: aide --check exits 1..7 (bits: added, removed, changed) when it found differences.
AIDE_CHECK_OK = tuple(range(8))


# --- the product -------------------------------------------------------------------------

def product_cli() -> list[str]:
    """The installed syschangemon next to this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("syschangemon")
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("syschangemon")
    if found:
        return [found]
    return [sys.executable, "-m", "scanner"]


def byte_compile_product() -> None:
    """Byte-compile the product's packages where they are imported from, as installing
    them (pip, the .deb) does. A checkout run under PYTHONDONTWRITEBYTECODE=1 (this
    VM's default) otherwise compiled every module from source in every timed command:
    50 ms more a command, enough to tip a ratio. A location we cannot write is left
    as it is (an install there has its own .pyc)."""
    for package in ("scanner", "report"):
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(location, quiet=2)


#: [file] keys a product might use to choose the digest ("hash" since 2.0).
HASH_KEYS = ("hash", "hash_algorithm", "algorithm", "digest")


def product_hash_key() -> str | None:
    """The [file] key that selects the hash algorithm, if the product has one."""
    from scanner.config import KNOWN_KEYS
    return next((key for key in HASH_KEYS if key in KNOWN_KEYS.get("file", ())), None)


@dataclass
class Product:
    """syschangemon watching one tree, with its configuration and storage under ``workdir``."""

    workdir: Path
    tree: Path
    cli: list[str] = field(default_factory=product_cli)
    file_extra: str = ""

    def __post_init__(self) -> None:
        self.confdir = self.workdir / "conf"
        self.storage = self.workdir / "storage"
        plugins = self.confdir / "plugins.d"
        plugins.mkdir(parents=True, exist_ok=True)
        # As root the product refuses configuration that group or others could write.
        for directory in (self.workdir, self.confdir, plugins):
            os.chmod(directory, 0o755)
        files = {
            self.confdir / "syschangemon.conf": "[syschangemon]\nsession_keep = 1000\n",
            plugins / "file.conf": ("[file]\nenable_plugin = true\n"
                                    f"include =\n    {self.tree}/**\n"
                                    "exclude =\n    **.bak\n    **~\n" + self.file_extra),
            plugins / "storage.conf": f"[storage]\nenable_plugin = true\ndir = {self.storage}\n",
        }
        for path, text in files.items():
            path.write_text(text)
            os.chmod(path, 0o644)

    def argv(self, *args: str) -> list[str]:
        """The CLI with this configuration, quiet."""
        return [*self.cli, "-c", str(self.confdir), "--quiet", *args]

    def commands(self) -> set[str]:
        """Sub-commands the installed CLI offers (parsed from --help)."""
        text = subprocess.run([*self.cli, "--help"], capture_output=True, text=True).stdout
        section = text.split("commands:", 1)[-1].split("exit codes:", 1)[0]
        return set(re.findall(r"^\s{4}([a-z][a-z-]+)\b", section, re.MULTILINE))

    def fresh(self, _rep: int = 0) -> None:
        """Remove the storage: the next collect is a baseline."""
        shutil.rmtree(self.storage, ignore_errors=True)

    def save(self, name: str) -> None:
        """Keep a copy of the storage as it is now."""
        target = self.workdir / f"storage.{name}"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.storage, target)

    def restore(self, name: str) -> None:
        """Put back a copy made by save()."""
        self.fresh()
        shutil.copytree(self.workdir / f"storage.{name}", self.storage)

    def db_bytes(self) -> int:
        """Bytes of the database files (db.duckdb and any write-ahead log)."""
        return sum(p.stat().st_size for p in self.storage.iterdir() if p.name.startswith("db.duckdb"))

    def used_bytes(self) -> int:
        """Bytes of the database's used blocks (the file grows by whole blocks, and keeps
        freed ones, so its size alone hides what a session added)."""
        rows = self.query("SELECT used_blocks * block_size FROM pragma_database_size()")
        return int(rows[0][0])

    def query(self, sql: str) -> list[tuple]:
        """A read-only query against the database (no CLI run may be in progress)."""
        import duckdb
        con = duckdb.connect(str(self.storage / "db.duckdb"), read_only=True)
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()
