"""sysinfo: one stable item describing the machine, checked against the system's own tools."""

from __future__ import annotations

import platform
import socket
import subprocess
from datetime import datetime, timezone

from scanner.collectors.sysinfo import render, system_facts


def facts_in_db(host) -> dict[str, str]:
    [(data, size)] = host.query("SELECT c.data, v.size FROM versions v JOIN contents c "
                                "ON c.digest = v.content WHERE v.url = 'sysinfo://' AND v.until IS NULL")
    assert size == len(data)
    lines = data.decode().splitlines()
    assert lines == sorted(lines)
    return dict(line.split(": ", 1) for line in lines)


def command(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()


def os_release() -> dict[str, str]:
    values = {}
    for line in open("/etc/os-release", encoding="utf-8"):
        key, _, value = line.strip().partition("=")
        values[key] = value.strip('"')
    return values


def test_sysinfo_item_matches_the_system(host) -> None:
    host.configure(plugins={"sysinfo": "[sysinfo]\nenable_plugin = true\n"})
    host.run("collect")
    facts = facts_in_db(host)
    assert facts["hostname"] == socket.gethostname() == command("uname", "-n")
    assert facts["kernel_release"] == command("uname", "-r")
    assert facts["kernel_version"] == command("uname", "-v")
    assert facts["architecture"] == command("uname", "-m") == platform.machine()
    assert facts["cpu_count"] == command("getconf", "_NPROCESSORS_ONLN")
    release = os_release()
    assert facts["os_name"] == release["NAME"]
    assert facts["os_version_id"] == release.get("VERSION_ID")
    assert facts["os_pretty_name"] == release["PRETTY_NAME"]
    meminfo = dict(line.split(":", 1) for line in open("/proc/meminfo"))
    assert facts["memory_total"] == meminfo["MemTotal"].strip()
    btime = next(int(line.split()[1]) for line in open("/proc/stat") if line.startswith("btime "))
    boot = datetime.strptime(facts["boot_time"], "%Y-%m-%d %H:%M UTC").replace(tzinfo=timezone.utc)
    assert boot.second == 0 and abs(boot.timestamp() - btime) <= 30
    assert set(facts) == {"hostname", "kernel_release", "kernel_version", "architecture",
                          "cpu_count", "os_name", "os_version_id", "os_pretty_name",
                          "memory_total", "boot_time"}


def test_sysinfo_is_stable_between_runs(host) -> None:
    host.configure(plugins={"sysinfo": "[sysinfo]\nenable_plugin = true\n"})
    for _ in range(3):
        host.run("collect")
    assert host.query("SELECT since, until FROM versions WHERE url = 'sysinfo://'") == [(1, None)]
    assert host.query("SELECT count(*) FROM versions WHERE type = 'sysinfo'") == [(1,)]


def test_render_is_sorted_key_value_lines() -> None:
    assert render({"b": "2", "a": "x y"}) == "a: x y\nb: 2\n"
    warnings: list[str] = []
    facts = system_facts(warnings.append)
    assert warnings == []
    assert render(facts) == render(dict(reversed(list(facts.items()))))
