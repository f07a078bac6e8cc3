"""The command line: parse, call one core function per command, map errors to exit codes.

Options are accepted before or after the command (``syschangemon -s run`` and
``syschangemon run -s``), as the original allowed.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
import traceback
from collections.abc import Sequence

import duckdb

from scanner import __version__
from scanner.commands import COMMANDS, Context
from scanner.errors import ExitCode, SysChangeMonError, Terminated
from scanner.logsetup import LOGGER

EXIT_CODES_HELP = "exit codes:\n" + "\n".join(
    f"  {code.value:<3} {code.name.lower().replace('_', ' ')}: {_doc}" for code, _doc in (
        (ExitCode.OK, "success; diff and run found no changes"),
        (ExitCode.CHANGES, "diff or run found changes and stored a report"),
        (ExitCode.USAGE, "bad command line"),
        (ExitCode.CONFIG, "bad configuration file, section, key or value"),
        (ExitCode.NOT_FOUND, "unknown session or report UUID, or nothing stored yet"),
        (ExitCode.LOCKED, "another syschangemon run is in progress"),
        (ExitCode.DELIVERY, "a report could not be mailed (it stays queued, unless refused while others went out)"),
        (ExitCode.STORAGE, "the database cannot be opened or written"),
        (ExitCode.NO_BASELINE, "diff: only one session exists"),
        (ExitCode.TAMPERED, "verify: stored history no longer matches its hash chain"),
        (ExitCode.INTERNAL, "internal error (a bug: please report it with --debug output)"),
        (ExitCode.INTERRUPTED, "interrupted (Ctrl-C); what was under way is not stored"),
        (ExitCode.TERMINATED, "terminated (SIGTERM); what was under way is not stored"),
    ))


def _add_common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Options valid before and after the command; below the top they must not reset defaults."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    group = parser.add_argument_group("common options")
    group.add_argument("-c", "--config", metavar="PATH", default=default(None),
                       help="configuration file or directory (default: /etc/syschangemon, "
                            "else the built-in defaults)")
    group.add_argument("--debug", action="store_true", default=default(False),
                       help="verbose output and tracebacks on errors")
    group.add_argument("--quiet", action="store_true", default=default(False),
                       help="print nothing but errors")
    group.add_argument("-s", "--skip-empty-mail", action="store_true", default=default(False),
                       help="do not mail reports that contain no differences")
    group.add_argument("-t", "--html", action="store_true", default=default(False),
                       help="print-report: print the HTML report (same as --format html)")
    group.add_argument("-r", "--report-uuid", metavar="UUID", default=default(None),
                       help="choose a report by UUID (default: the newest)")
    group.add_argument("-o", "--old-session-uuid", metavar="UUID", default=default(None),
                       help="diff: the older session (default: the one before the newer)")
    group.add_argument("-u", "--session-uuid", metavar="UUID", default=default(None),
                       help="the (newer) session for diff and export (default: the newest)")


def build_parser() -> argparse.ArgumentParser:
    """The whole argument parser (also the source of the man page)."""
    parser = argparse.ArgumentParser(
        prog="syschangemon",
        description="System change monitor: snapshots files, config text, command output and "
                    "logins, diffs snapshots and reports the changes.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version",
                        version=f"syschangemon version {__version__}")
    _add_common(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for command in COMMANDS:
        doc = inspect.cleandoc(command.run.__doc__ or "")
        summary = doc.splitlines()[0] if doc else command.name
        child = sub.add_parser(command.name, help=summary, description=doc, epilog=EXIT_CODES_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(child, top=False)
        command.add_arguments(child)
        child.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``syschangemon`` console script."""
    # Before anything is written: the database, its WAL and reports are private.
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_usage(sys.stderr)
        return ExitCode.USAGE
    context = Context(args=args, stdout=sys.stdout, stderr=sys.stderr)
    previous = _catch_stop_signals()
    try:
        return _run(args, context, logging.getLogger(LOGGER))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _run(args: argparse.Namespace, context: Context, log: logging.Logger) -> int:
    """Run the command; whatever ends it becomes one line and an exit code."""
    try:
        context.start_logging()
        log.info("%s started", args.command)
        code = int(args.handler(context))
        log.info("%s finished: exit %d", args.command, code)
        return code
    except BaseException as error:
        # DuckDB turns a signal that arrives during a query into an error of its own.
        if _stop_signal is not None or isinstance(error, (KeyboardInterrupt, Terminated)):
            return _stopped(args.command, log)
        return _failed(error, args, log)


def _failed(error: BaseException, args: argparse.Namespace, log: logging.Logger) -> int:
    """The message and exit code of an error (called while it is being handled)."""
    if isinstance(error, BrokenPipeError):
        sys.stderr.close()
        return ExitCode.OK
    if not isinstance(error, Exception):
        raise error  # SystemExit and the like go on
    if args.debug:
        traceback.print_exc()
    if isinstance(error, SysChangeMonError):
        log.error("%s failed: %s", args.command, error)
        print(f"syschangemon: error: {error}", file=sys.stderr)
        return error.exit_code
    if isinstance(error, duckdb.Error):
        log.error("%s failed: database: %s", args.command, _one_line(error))
        print(f"syschangemon: error: database: {_one_line(error)}", file=sys.stderr)
        return ExitCode.STORAGE
    log.exception("%s: internal error", args.command)
    print(f"syschangemon: internal error: {type(error).__name__}: {_one_line(error)} "
          "(run with --debug for details)", file=sys.stderr)
    return ExitCode.INTERNAL


#: SIGINT or SIGTERM, once one of them asked this process to stop.
_stop_signal: int | None = None


def _on_stop_signal(signum: int, _frame: object) -> None:
    # Python's default for SIGTERM is to die on the spot: no rollback message, staged
    # rows and running commands left behind. Unwind as on Ctrl-C instead, and remember
    # the signal: the exception may not survive a DuckDB query it interrupts.
    global _stop_signal
    _stop_signal = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _catch_stop_signals() -> dict[int, object]:
    """Install the SIGTERM and SIGINT handlers; returns the ones they replace."""
    global _stop_signal
    _stop_signal = None
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _on_stop_signal)}
    # A SIGINT ignored from the start (a shell's background job) stays ignored.
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, _on_stop_signal)
    return previous


def _stopped(command: str, log: logging.Logger) -> int:
    terminated = _stop_signal == signal.SIGTERM
    word = "terminated" if terminated else "interrupted"
    log.warning("%s %s", command, word)
    print(f"syschangemon: {word}; what was under way is not stored", file=sys.stderr)
    return ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:500]


if __name__ == "__main__":
    sys.exit(main())
