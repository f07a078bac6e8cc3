"""The sub-commands, one small module per group; COMMANDS is their registry (in help order)."""

from scanner.commands.collect import COLLECT, RESET
from scanner.commands.context import Command, Context
from scanner.commands.sessions import CLEANUP, EXPORT, LIST_SESSIONS

COMMANDS: list[Command] = [COLLECT, CLEANUP, EXPORT, LIST_SESSIONS, RESET]

__all__ = ["COMMANDS", "Command", "Context"]
