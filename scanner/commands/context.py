"""What a command runs with: parsed arguments, output streams, configuration, storage."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import duckdb

from scanner.config import Config, load_config
from scanner.errors import StorageError
from scanner.logsetup import LOGGER, default_log_file, setup_logging
from scanner.store import DB_FILE, connect, run_lock

#: DuckDB errors that come from the storage, not from a bug in a query.
STORAGE_FAILURES = (duckdb.IOException, duckdb.FatalException, duckdb.OutOfMemoryException,
                    duckdb.PermissionException, duckdb.TransactionException)

ROOT_STORAGE_DIR = "/var/lib/syschangemon/storage"


def default_storage_dir(is_root: bool) -> Path:
    """/var/lib/syschangemon/storage as root, else $XDG_STATE_HOME/syschangemon."""
    if is_root:
        return Path(ROOT_STORAGE_DIR)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "syschangemon"


def storage_dir(config: Config) -> Path:
    """The configured [storage] dir, or the default for this user."""
    value = config.section("storage").get("dir")
    return Path(value) if value else default_storage_dir(config.is_root)


@dataclass
class Context:
    """The environment of one command: swapped wholesale by tests, never patched."""

    args: argparse.Namespace
    stdout: TextIO
    stderr: TextIO
    _config: Config | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        """The configuration, loaded on first use."""
        if self._config is None:
            self._config = load_config(self.args.config)
        return self._config

    @property
    def storage(self) -> Path:
        """The storage directory."""
        return storage_dir(self.config)

    def start_logging(self) -> None:
        """Open the log file of [log.logging] (--debug also logs to stderr)."""
        setup_logging(self.config, debug=self.args.debug,
                      default_file=default_log_file(self.config, default_storage_dir(False)))

    def say(self, text: str = "") -> None:
        """Normal output: silenced by --quiet."""
        if not self.args.quiet:
            print(text, file=self.stdout)

    def warn(self, text: str) -> None:
        """A warning on stderr (silenced by --quiet), and in the log."""
        logging.getLogger(LOGGER).warning(text)
        if not self.args.quiet:
            print(f"syschangemon: warning: {text}", file=self.stderr)

    def error(self, text: str) -> None:
        """An error line on stderr (even under --quiet), and in the log, for a failure
        that does not end the command; the CLI prints the one that does."""
        logging.getLogger(LOGGER).error(text)
        print(f"syschangemon: error: {text}", file=self.stderr)

    @contextmanager
    def writing(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the run lock and a read-write connection."""
        with self.locked(), self.connected() as con:
            yield con

    @contextmanager
    def reading(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for a command that only reads.

        DuckDB lets one process at a time hold the file, so readers take the run lock
        too and get the clear "already running" message instead of a DuckDB lock error.
        """
        with self.locked(), self.connected(read_only=True) as con:
            yield con

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the run lock (of the storage directory) without a connection yet."""
        with run_lock(self.storage):
            yield

    @contextmanager
    def connected(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection to the database, for a command inside ``locked``."""
        con = connect(self.storage, read_only=read_only)
        try:
            yield con
        except STORAGE_FAILURES as error:
            # Disk full, I/O errors: the transaction was rolled back, nothing stored is lost.
            raise StorageError(f"{self.storage / DB_FILE}: {type(error).__name__}: "
                               f"{' '.join(str(error).split())[:300]}") from error
        finally:
            con.close()


@dataclass(frozen=True)
class Command:
    """A sub-command: its name, its handler (whose docstring is the help) and its options."""

    name: str
    run: Callable[[Context], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] = lambda parser: None
