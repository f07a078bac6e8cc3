"""One exception hierarchy, caught only at the CLI; each error carries its exit code.

The exit codes follow diff(1) where they overlap (0 nothing changed, 1 changes found,
2 trouble with the command line) and are distinct for everything a script may want to
tell apart.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Documented process exit statuses (README, man page and --help list them)."""

    OK = 0  #: success; for diff and run: no changes
    CHANGES = 1  #: diff or run found changes (a report was stored)
    USAGE = 2  #: bad command line (argparse's own code)
    CONFIG = 3  #: a configuration file, section, key or value is wrong
    NOT_FOUND = 4  #: an unknown session or report UUID, or nothing stored yet
    LOCKED = 5  #: another syschangemon run holds the lock
    DELIVERY = 6  #: a report could not be mailed (queued, or refused while others went out)
    STORAGE = 7  #: the database cannot be opened or written (corrupt, foreign, disk full)
    NO_BASELINE = 8  #: diff needs two sessions and only a baseline exists
    TAMPERED = 9  #: verify found stored history that no longer matches its digests
    INTERNAL = 70  #: a bug: EX_SOFTWARE from sysexits.h
    INTERRUPTED = 130  #: Ctrl-C (128 + SIGINT); what was under way is not stored
    TERMINATED = 143  #: SIGTERM (128 + SIGTERM); likewise


class SysChangeMonError(Exception):
    """Base of every error the CLI turns into a one-line message and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL


class UsageError(SysChangeMonError):
    """Options that do not fit together."""

    exit_code = ExitCode.USAGE


class ConfigError(SysChangeMonError):
    """A configuration problem, located by file, section and key where known."""

    exit_code = ExitCode.CONFIG

    def __init__(self, message: str, *, file: str | None = None,
                 section: str | None = None, key: str | None = None) -> None:
        where = ": ".join(part for part in (
            file,
            f"[{section}]" if section else None,
            key,
        ) if part)
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.section, self.key = file, section, key


class NotFoundError(SysChangeMonError):
    """A session or report that the user named (or that a command needs) does not exist."""

    exit_code = ExitCode.NOT_FOUND


class LockedError(SysChangeMonError):
    """Another run holds the storage lock."""

    exit_code = ExitCode.LOCKED


class StorageError(SysChangeMonError):
    """The database cannot be opened, read or written."""

    exit_code = ExitCode.STORAGE


class DeliveryError(SysChangeMonError):
    """A report could not be delivered; it stays queued for the next run."""

    exit_code = ExitCode.DELIVERY


class RefusedError(DeliveryError):
    """The server refused the message itself (a 5xx reply to its data or size)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message  #: what the server said, without the report's UUID


class TamperedError(SysChangeMonError):
    """Stored history no longer matches its hash chain."""

    exit_code = ExitCode.TAMPERED


class NoBaselineError(SysChangeMonError):
    """Only one session exists, so there is nothing to compare it with."""

    exit_code = ExitCode.NO_BASELINE


class Terminated(BaseException):
    """SIGTERM arrived (systemd stopping the unit, kill, a timeout wrapper).

    A BaseException like KeyboardInterrupt, so that no ``except Exception`` takes it
    for an error of its own: the command unwinds as it does on Ctrl-C (the transaction
    under way rolled back, staged rows removed, running commands and workers stopped,
    the lock released).
    """
