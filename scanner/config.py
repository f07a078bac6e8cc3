"""Load the INI configuration: the main file, then every plugins.d/*.conf.

The files under conf/ are the embedded defaults. A key missing from the active
configuration takes its value from them, so there is one copy of every default. A
collector section runs only when the active configuration has it with
``enable_plugin = true``; removing a plugin file turns that collector off.

As root, a configuration file or directory that is not owned by root or that group
or others can write is refused: the configuration names commands that run as root.
"""

from __future__ import annotations

import configparser
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from scanner.errors import ConfigError
from scanner.values import parse_bool

SYSTEM_CONFIG_DIR = "/etc/syschangemon"
MAIN_FILE = "syschangemon.conf"
PLUGIN_DIR = "plugins.d"

# Accepted keys per section. Typed parsing is done where a value is used; this table
# only catches typos, which would otherwise silently drop an exclude or a recipient.
KNOWN_KEYS: dict[str, frozenset[str]] = {
    "syschangemon": frozenset({
        "session_keep", "report_keep", "mail_handler", "template_dir",
        "plugin_config_dir", "report_exclude", "ignore_attrs",
        # read by the original, kept so that its files load unchanged
        "debug", "plugin_dir",
    }),
    "mail.smtp": frozenset({
        "to_addr", "from", "cc", "bcc", "subject", "subject_prefix", "host", "port",
        "timeout", "ssl", "tls", "auth", "username", "password", "password_file",
        "sendmail", "max_size", "verify_tls", "cafile",
    }),
    "log.logging": frozenset({"file", "level", "to_console", "rotate", "max_bytes",
                              "max_files"}),
    "storage": frozenset({"enable_plugin", "dir", "chain_key_file"}),
    "file": frozenset({"enable_plugin", "include", "exclude", "assume_nochange",
                       "assume_change", "no_assume_nochange", "one_filesystem",
                       "workers", "ignore_attrs", "report_exclude", "hash"}),
    "conffile": frozenset({"enable_plugin", "include", "exclude", "size_limit", "redact",
                           "ignore_attrs", "report_exclude"}),
    "command": frozenset({"enable_plugin", "timeout", "max_output", "ignore_attrs",
                          "report_exclude"}),
    "sysinfo": frozenset({"enable_plugin", "ignore_attrs"}),
    "wtmp": frozenset({"enable_plugin", "wtmp_path"}),
}
# [command] names its commands as command.<name>[.<option>] keys.
_DYNAMIC_KEYS = {"command": re.compile(r"command\.[a-z0-9_-]+(\.(sort|scrub|timeout))?")}
# Sections that are always configured (from the defaults when the active files lack them).
CORE_SECTIONS = ("syschangemon", "mail.smtp", "log.logging", "storage")


@dataclass(frozen=True)
class Section:
    """One section's raw values, with the file each value came from."""

    name: str
    values: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def get(self, key: str, default: str | None = None) -> str | None:
        """The raw value of ``key``, or ``default``."""
        return self.values.get(key, default)

    def where(self, key: str) -> dict[str, str | None]:
        """Keyword arguments for ConfigError locating ``key``."""
        return {"file": self.sources.get(key), "section": self.name, "key": key}

    def is_default(self, key: str) -> bool:
        """True when ``key`` came from the embedded defaults, not the user's files."""
        return self.sources.get(key, "").startswith(str(embedded_config_dir()))


@dataclass(frozen=True)
class Config:
    """The merged configuration, ready for the collectors and commands."""

    sections: dict[str, Section]
    files: tuple[str, ...]
    is_root: bool

    def section(self, name: str) -> Section:
        """The named section, empty when absent."""
        return self.sections.get(name) or Section(name)

    def enabled(self, name: str) -> bool:
        """Whether the plugin section ``name`` is present and enabled."""
        section = self.sections.get(name)
        if section is None or "enable_plugin" not in section.values:
            return False
        return parse_bool(section.values["enable_plugin"], **section.where("enable_plugin"))


def embedded_config_dir() -> Path:
    """The conf/ directory of a source checkout, or its copy inside the installed wheel."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / MAIN_FILE).is_file():
        return checkout
    # The wheel installs conf/ as the data package scanner/conf (no __init__.py).
    return Path(__file__).resolve().parent / "conf"


def config_files(directory: Path, main: Path | None = None) -> list[Path]:
    """The main file and the plugin files of a configuration directory, in reading order."""
    main = main or directory / MAIN_FILE
    files = [main] if main.is_file() else []
    plugins = directory / PLUGIN_DIR
    if plugins.is_dir():
        files.extend(sorted(p for p in plugins.glob("*.conf") if p.is_file()))
    return files


def load_config(path: str | None = None, *, is_root: bool | None = None) -> Config:
    """Load ``path`` (a file or a directory), /etc/syschangemon, or the embedded defaults.

    Raises ConfigError naming the file, section and key of the first problem.
    """
    try:
        return _load(path, is_root)
    except OSError as error:
        raise ConfigError(f"{error.filename or path}: cannot read: {error.strerror}") from None


def _load(path: str | None, is_root: bool | None) -> Config:
    is_root = os.geteuid() == 0 if is_root is None else is_root
    defaults_dir = embedded_config_dir()
    if path is not None:
        target = Path(path)
        if target.is_dir():
            active = config_files(target)
        elif target.is_file():
            active = config_files(target.parent, main=target)
        else:
            raise ConfigError(f"{path}: no such configuration file or directory")
        if not active:
            raise ConfigError(f"{path}: no {MAIN_FILE} and no {PLUGIN_DIR}/*.conf in it")
    elif Path(SYSTEM_CONFIG_DIR, MAIN_FILE).is_file():
        active = config_files(Path(SYSTEM_CONFIG_DIR))
    else:
        active = config_files(defaults_dir)
    active_sections = _read_files(active, is_root=is_root)
    extra = active_sections.get("syschangemon", Section("syschangemon")).get("plugin_config_dir")
    if extra and Path(extra).is_dir():
        more = sorted(p for p in Path(extra).glob("*.conf") if p.is_file() and p not in active)
        active_sections = _merge(active_sections, _read_files(more, is_root=is_root))
        active = active + more
    defaults = _read_files(config_files(defaults_dir), is_root=False)
    sections: dict[str, Section] = {}
    for name, section in active_sections.items():
        base = defaults.get(name, Section(name))
        sections[name] = Section(name, {**base.values, **section.values},
                                 {**base.sources, **section.sources})
    for name in CORE_SECTIONS:
        sections.setdefault(name, defaults.get(name, Section(name)))
    return Config(sections, tuple(str(f) for f in active), is_root)


def _read_files(files: list[Path], *, is_root: bool) -> dict[str, Section]:
    sections: dict[str, Section] = {}
    for file in files:
        if is_root:
            check_trusted(file)
        sections = _merge(sections, _read_one(file))
    return sections


def _merge(first: dict[str, Section], second: dict[str, Section]) -> dict[str, Section]:
    merged = dict(first)
    for name, section in second.items():
        base = merged.get(name, Section(name))
        merged[name] = Section(name, {**base.values, **section.values},
                               {**base.sources, **section.sources})
    return merged


def _read_one(file: Path) -> dict[str, Section]:
    parser = configparser.RawConfigParser(interpolation=None, strict=True,
                                          comment_prefixes=("#", ";"),
                                          inline_comment_prefixes=None)
    try:
        with open(file, encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", file=str(file)) from None
    except UnicodeDecodeError:
        raise ConfigError("not valid UTF-8 text", file=str(file)) from None
    except configparser.Error as error:
        # configparser repeats the file name ("While reading from '...' [line 3]: ...").
        message = re.sub(r"^While reading from .*?\[line\s*(\d+)\]:", r"line \1:",
                         " ".join(str(error).split()))
        raise ConfigError(message, file=str(file)) from None
    sections: dict[str, Section] = {}
    for name in parser.sections():
        known = KNOWN_KEYS.get(name)
        if known is None:
            raise ConfigError(f"unknown section (known: {', '.join(sorted(KNOWN_KEYS))})",
                              file=str(file), section=name)
        values = dict(parser.items(name))
        dynamic = _DYNAMIC_KEYS.get(name)
        for key in values:
            if key not in known and not (dynamic and dynamic.fullmatch(key)):
                raise ConfigError("unknown key", file=str(file), section=name, key=key)
        sections[name] = Section(name, values, {key: str(file) for key in values})
    return sections


def check_trusted(path: Path) -> None:
    """Refuse a file (or its directory) that someone other than root could have written."""
    for target in (path, path.parent):
        try:
            info = os.stat(target)
        except OSError as error:
            raise ConfigError(f"cannot stat: {error.strerror}", file=str(target)) from None
        if info.st_uid != 0:
            raise ConfigError("not owned by root; refusing it, since it names commands "
                              "that run as root", file=str(target))
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ConfigError(f"writable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                              "refusing it, since it names commands that run as root",
                              file=str(target))
