"""Settings of the file collector ([file] in plugins.d/file.conf)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from scanner.config import Config
from scanner.errors import ConfigError
from scanner.globs import GlobSet
from scanner.hasher import ALGORITHMS
from scanner.session import STAT_KEY_COLUMNS
from scanner.values import parse_bool, parse_csv, parse_int, parse_lines
from scanner.walk import WalkSpec


@dataclass(frozen=True)
class FileSettings:
    """What the file collector walks and how it decides to re-hash."""

    spec: WalkSpec
    stat_key: tuple[str, ...]
    #: worker processes a session starts with
    workers: int
    #: worker processes once reads wait on the disk (a cold cache)
    readers: int
    algorithm: str = "blake3"


def file_settings(config: Config) -> FileSettings | None:
    """The [file] settings, or None when the collector is disabled."""
    if not config.enabled("file"):
        return None
    section = config.section("file")
    include = _globs(section, "include")
    exclude = _globs(section, "exclude")
    change_key = "assume_change" if "assume_change" in section else "no_assume_nochange"
    assume_change = _globs(section, change_key)
    stat_key = tuple(parse_csv(section.get("assume_nochange", "")))
    for name in stat_key:
        if name not in STAT_KEY_COLUMNS:
            raise ConfigError(f"unknown attribute {name!r} (choose from "
                              f"{', '.join(STAT_KEY_COLUMNS)})", **section.where("assume_nochange"))
    one_fs = parse_bool(section.get("one_filesystem", "false"), **section.where("one_filesystem"))
    workers = parse_int(section.get("workers", "0"), minimum=0, **section.where("workers"))
    algorithm = section.get("hash", "blake3").strip().lower()
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"unknown digest {algorithm!r} (choose from {', '.join(ALGORITHMS)})",
                          **section.where("hash"))
    cores = os.cpu_count() or 1
    # One worker per core is quickest while the cache holds what is read; once reads
    # wait on the disk, twice as many keep more of them in flight (a cold 1 GB baseline
    # on 2 cores: 4.4-4.9 s with 2 workers, 3.7-4.0 s with 4; b3sum -P8 3.2-3.5 s).
    # The pool (scanner/pool.py) grows from one to the other when it sees the wait.
    return FileSettings(WalkSpec(include, exclude, assume_change, one_fs), stat_key,
                        workers or cores, workers or 2 * cores, algorithm)


def _globs(section, key: str) -> GlobSet:
    try:
        return GlobSet(parse_lines(section.get(key, "")), cwd=os.getcwd())
    except ValueError as error:
        raise ConfigError(str(error), **section.where(key)) from None
