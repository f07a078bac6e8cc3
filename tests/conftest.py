"""Shared fixtures: real trees on disk described as data, a private configuration and
storage directory per test, and the installed CLI run in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest


def _cli_command() -> list[str]:
    """The installed console script, next to this interpreter (falls back to -m scanner)."""
    script = Path(sys.executable).with_name("syschangemon")
    if script.exists():
        return [str(script)]
    found = shutil.which("syschangemon")
    return [found] if found else [sys.executable, "-m", "scanner"]


SYSCHANGEMON = _cli_command()


@dataclass(frozen=True)
class Symlink:
    """A symlink entry in a tree description."""

    target: str


@dataclass(frozen=True)
class Fifo:
    """A named pipe entry in a tree description."""


def make_tree(root: Path, spec: dict, *, mode: dict[str, int] | None = None) -> None:
    """Create files (str or bytes), directories (dict), Symlink and Fifo entries under root.

    Names may be str or bytes (for names that are not UTF-8).
    """
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = os.path.join(os.fsencode(root), os.fsencode(name))
        if isinstance(value, dict):
            os.makedirs(path, exist_ok=True)
            make_tree(Path(os.fsdecode(path)), value)
        elif isinstance(value, Symlink):
            os.symlink(value.target, path)
        elif isinstance(value, Fifo):
            os.mkfifo(path)
        else:
            with open(path, "wb") as handle:
                handle.write(value.encode() if isinstance(value, str) else value)
    for name, bits in (mode or {}).items():
        os.chmod(root / name, bits)


@dataclass
class Host:
    """A test host: a tree to watch, a config directory and a storage directory."""

    base: Path

    @property
    def tree(self) -> Path:
        return self.base / "tree"

    @property
    def confdir(self) -> Path:
        return self.base / "etc"

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    def configure(self, *, include: list[str] | None = None, exclude: list[str] | None = None,
                  main: str = "", plugins: dict[str, str] | None = None, file_extra: str = "") -> None:
        """Write syschangemon.conf and plugins.d/*.conf watching the tree (by default all of it)."""
        include = include if include is not None else [f"{self.tree}/**"]
        exclude = exclude if exclude is not None else ["**.bak", "**~"]
        plugin_dir = self.confdir / "plugins.d"
        plugin_dir.mkdir(parents=True, exist_ok=True)
        (self.confdir / "syschangemon.conf").write_text(
            "[syschangemon]\n" + (textwrap.dedent(main) or "session_keep = 50\n")
            + f"\n[log.logging]\nfile = {self.base}/log/syschangemon.log\n")
        lines = lambda items: "".join(f"    {item}\n" for item in items)  # noqa: E731
        (plugin_dir / "file.conf").write_text(
            "[file]\nenable_plugin = true\n"
            f"include =\n{lines(include)}exclude =\n{lines(exclude)}"
            "assume_nochange = mtime, ctime, size, device, inode\n" + textwrap.dedent(file_extra))
        (plugin_dir / "storage.conf").write_text(
            f"[storage]\nenable_plugin = true\ndir = {self.storage}\n")
        for name, text in (plugins or {}).items():
            (plugin_dir / f"{name}.conf").write_text(textwrap.dedent(text))

    def run(self, *args: str, expect: int | None = 0, env: dict | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the installed CLI with this host's config; check the exit code unless expect is None."""
        result = subprocess.run([*SYSCHANGEMON, "-c", str(self.confdir), *args],
                                capture_output=True, text=True, timeout=timeout,
                                env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
        if expect is not None:
            assert result.returncode == expect, (
                f"exit {result.returncode} != {expect}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def db(self) -> duckdb.DuckDBPyConnection:
        """A read-only connection to this host's database (close it before the next run)."""
        return duckdb.connect(str(self.storage / "db.duckdb"), read_only=True)

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        """Run one query against the database and close it again."""
        con = self.db()
        try:
            return con.execute(sql, params or []).fetchall()
        finally:
            con.close()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A configured test host whose tree starts empty."""
    made = Host(tmp_path)
    made.tree.mkdir()
    made.configure()
    return made


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def run_as_nobody(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a command as user nobody (skips the test where nobody cannot run this Python)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to drop privileges")
    probe = subprocess.run([*NOBODY, *SYSCHANGEMON, "-V"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("user nobody cannot run this interpreter (install it outside /root)")
    kwargs["env"] = {**os.environ, "HOME": "/", **kwargs.get("env", {})}
    return subprocess.run([*NOBODY, *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, **kwargs)


@pytest.fixture
def open_host():
    """A host under a world-traversable directory, for runs as an unprivileged user."""
    import tempfile
    base = Path(tempfile.mkdtemp(prefix="scm-open-"))
    os.chmod(base, 0o755)
    made = Host(base)
    made.tree.mkdir()
    made.configure()
    for path in (made.confdir, made.confdir / "plugins.d"):
        os.chmod(path, 0o755)
    for conf in made.confdir.rglob("*.conf"):
        os.chmod(conf, 0o644)
    for private in (made.storage, made.base / "log"):
        private.mkdir(mode=0o700)
        os.chown(private, 65534, 65534)
    yield made
    shutil.rmtree(base, ignore_errors=True)
