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
        (ExitCode.DELIVERY, "a report could not be mailed (queued, or refused for good)"),
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
    log = logging.getLogger(LOGGER)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        context.start_logging()
        log.info("%s started", args.command)
        code = int(args.handler(context))
        log.info("%s finished: exit %d", args.command, code)
        return code
    except SysChangeMonError as error:
        if args.debug:
            traceback.print_exc()
        log.error("%s failed: %s", args.command, error)
        print(f"syschangemon: error: {error}", file=sys.stderr)
        return error.exit_code
    except duckdb.Error as error:
        if args.debug:
            traceback.print_exc()
        print(f"syschangemon: error: database: {_one_line(error)}", file=sys.stderr)
        return ExitCode.STORAGE
    except KeyboardInterrupt:
        print("syschangemon: interrupted; what was under way is not stored", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Terminated:
        print("syschangemon: terminated; what was under way is not stored", file=sys.stderr)
        return ExitCode.TERMINATED
    except BrokenPipeError:
        sys.stderr.close()
        return ExitCode.OK
    except Exception as error:  # noqa: BLE001 - the last resort: one line, not a traceback
        if args.debug:
            traceback.print_exc()
        log.exception("%s: internal error", args.command)
        print(f"syschangemon: internal error: {type(error).__name__}: {_one_line(error)} "
              "(run with --debug for details)", file=sys.stderr)
        return ExitCode.INTERNAL


def _terminate(_signum: int, _frame: object) -> None:
    # Python's default for SIGTERM is to die on the spot: no rollback message, staged
    # rows and running commands left behind. Unwind as on Ctrl-C instead.
    raise Terminated()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:500]


if __name__ == "__main__":
    sys.exit(main())
