"""The sub-commands, one small module per group; COMMANDS is their registry (in help order)."""

from scanner.commands.collect import COLLECT, RESET
from scanner.commands.context import Command, Context
from scanner.commands.mail import EMAIL_REPORT
from scanner.commands.report import DIFF, LIST_REPORTS, PRINT_REPORT, RUN
from scanner.commands.sessions import CLEANUP, EXPORT, LIST_SESSIONS, VERIFY
from scanner.commands.sql import SQL

# The original's order.
COMMANDS: list[Command] = [COLLECT, DIFF, CLEANUP, PRINT_REPORT, EMAIL_REPORT, EXPORT,
                           LIST_SESSIONS, LIST_REPORTS, RESET, RUN, SQL, VERIFY]

__all__ = ["COMMANDS", "Command", "Context"]
