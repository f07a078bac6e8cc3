"""Logging as the original's [log.logging] section: a rotating file, optionally the console.

Under cron nothing is printed for a clean run, so the log file is where a run leaves
its trace: the command, the session or report it stored, warnings and errors.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

from scanner.config import Config
from scanner.errors import ConfigError
from scanner.values import parse_bool, parse_int, parse_size

ROOT_LOG_FILE = "/var/log/syschangemon/syschangemon.log"
LOGGER = "syschangemon"
# Until setup_logging runs (a config error comes first), records go nowhere rather
# than to Python's last-resort handler on stderr.
logging.getLogger(LOGGER).addHandler(logging.NullHandler())
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "warn": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def default_log_file(config: Config, state_dir: Path) -> str:
    """/var/log/syschangemon/syschangemon.log as root, else next to the database."""
    return ROOT_LOG_FILE if config.is_root else str(state_dir / "syschangemon.log")


def setup_logging(config: Config, *, default_file: str, debug: bool = False) -> logging.Logger:
    """Configure the ``syschangemon`` logger from [log.logging]; returns it."""
    section = config.section("log.logging")
    level_name = section.get("level", "info").strip().lower()
    if level_name not in _LEVELS:
        raise ConfigError(f"unknown level {level_name!r} (choose from {', '.join(_LEVELS)})",
                          **section.where("level"))
    to_console = parse_bool(section.get("to_console", "false"), **section.where("to_console"))
    rotate = parse_bool(section.get("rotate", "true"), **section.where("rotate"))
    max_bytes = parse_size(section.get("max_bytes", "512000"), **section.where("max_bytes"))
    max_files = parse_int(section.get("max_files", "4"), minimum=0, **section.where("max_files"))
    path = section.get("file") or default_file
    logger = logging.getLogger(LOGGER)
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else _LEVELS[level_name])
    formatter = logging.Formatter("%(asctime)s %(levelname)s [%(process)d] %(message)s")
    try:
        os.makedirs(os.path.dirname(path) or ".", mode=0o750, exist_ok=True)
        handler: logging.Handler = (
            logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=max_files)
            if rotate else logging.FileHandler(path))
    except OSError as error:
        raise ConfigError(f"{path}: cannot open log file: {error.strerror}",
                          **section.where("file")) from None
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    if to_console or debug:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("syschangemon: %(levelname)s: %(message)s"))
        logger.addHandler(console)
    return logger
