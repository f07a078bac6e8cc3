"""sysinfo: one item, ``sysinfo://``, describing the machine and its operating system.

Its ``content`` is a text of ``key: value`` lines sorted by key, so a report's
content diff names what changed. Only facts that stay put between runs are kept
(nothing like uptime or load), and nothing that can hang (no DNS lookup):

- ``hostname``: socket.gethostname();
- ``kernel_release``, ``kernel_version``, ``architecture``: os.uname();
- ``os_name``, ``os_version_id``, ``os_pretty_name``: NAME, VERSION_ID and
  PRETTY_NAME of /etc/os-release (or /usr/lib/os-release);
- ``boot_time``: btime of /proc/stat in UTC, rounded to the minute because the
  kernel derives it from the clock and it jitters by a second;
- ``cpu_count``: CPUs online (os.cpu_count());
- ``memory_total``: MemTotal of /proc/meminfo, as written there (kB).

A fact that cannot be read is left out, with a warning in the session.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Callable
from datetime import datetime, timezone

import blake3

from scanner.config import Config
from scanner.session import SessionBuilder

URL = "sysinfo://"
OS_RELEASE_FILES = ("/etc/os-release", "/usr/lib/os-release")
Warn = Callable[[str], None]
_OS_KEYS = {"NAME": "os_name", "VERSION_ID": "os_version_id", "PRETTY_NAME": "os_pretty_name"}


def system_facts(warn: Warn) -> dict[str, str]:
    """The facts listed in the module docstring; ``warn(text)`` hears about missing ones."""
    uname = os.uname()
    facts = {"hostname": socket.gethostname(), "kernel_release": uname.release,
             "kernel_version": uname.version, "architecture": uname.machine,
             "cpu_count": str(os.cpu_count() or "unknown")}
    facts.update(_os_release(warn))
    stat = _fields("/proc/stat", warn)
    if "btime" in stat:
        boot = round(int(stat["btime"]) / 60) * 60
        facts["boot_time"] = datetime.fromtimestamp(boot, timezone.utc).strftime(
            "%Y-%m-%d %H:%M UTC")
    else:
        warn("sysinfo: no btime in /proc/stat, boot time left out")
    memory = _fields("/proc/meminfo", warn, separator=":")
    if "MemTotal" in memory:
        facts["memory_total"] = memory["MemTotal"]
    else:
        warn("sysinfo: no MemTotal in /proc/meminfo, memory total left out")
    return facts


def render(facts: dict[str, str]) -> str:
    """The stored text: one ``key: value`` line per fact, sorted by key."""
    return "".join(f"{key}: {facts[key]}\n" for key in sorted(facts))


def _fields(path: str, warn: Warn, separator: str | None = None) -> dict[str, str]:
    """First word (or text before ``separator``) to the rest, for each line of a file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            lines = file.read().splitlines()
    except OSError as error:
        warn(f"sysinfo: cannot read {path}: {error.strerror}")
        return {}
    fields = {}
    for line in lines:
        key, _, value = line.partition(separator or " ")
        fields[key.strip()] = " ".join(value.split())
    return fields


def _os_release(warn: Warn) -> dict[str, str]:
    for path in OS_RELEASE_FILES:
        try:
            with open(path, encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            continue
        found = {}
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() in _OS_KEYS:
                try:
                    words = shlex.split(value)
                except ValueError:
                    words = [value.strip()]  # an unbalanced quote: keep it as written
                found[_OS_KEYS[key.strip()]] = " ".join(words)
        return found
    warn(f"sysinfo: no {' or '.join(OS_RELEASE_FILES)}, OS release left out")
    return {}


def run(config: Config, builder: SessionBuilder) -> None:
    """Collector entry point: stage the sysinfo:// item and its text."""
    data = render(system_facts(builder.warn)).encode("utf-8")
    digest = blake3.blake3(data).digest()
    builder.add_content(digest, data)
    builder.add_items([{"url": URL, "type": "sysinfo", "size": len(data), "content": digest}])
