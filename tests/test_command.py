"""command: real shell commands run by the installed CLI, their output in the database."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import time

import orjson
import pytest

from conftest import SYSCHANGEMON
from scanner.collectors.command import CommandSpec, run_commands
from scanner.config import embedded_config_dir


def default_names() -> list[str]:
    parser = configparser.RawConfigParser()
    parser.read(embedded_config_dir() / "plugins.d" / "command.conf")
    return [key.split(".")[1] for key in parser["command"] if key.count(".") == 1]


def only(commands: str, extra: str = "") -> dict[str, str]:
    """A [command] plugin running just ``commands`` (the shipped defaults switched off)."""
    off = "".join(f"command.{name} =\n" for name in default_names())
    return {"command": f"[command]\nenable_plugin = true\n{extra}{off}{commands}"}


def items(host) -> dict[str, dict]:
    rows = host.query("""
        SELECT v.url, o.data, e.data, v.exit_status, v.note, v.size FROM versions v
        LEFT JOIN contents o ON o.digest = v.content LEFT JOIN contents e ON e.digest = v.stderr
        WHERE v.until IS NULL AND v.type = 'command'""")
    return {url.removeprefix("command://"): dict(zip(
        ("stdout", "stderr", "exit_status", "note", "size"), rest)) for url, *rest in rows}


def warnings(host) -> list[str]:
    [(text,)] = host.query("SELECT warnings FROM sessions ORDER BY id DESC LIMIT 1")
    return orjson.loads(text) if text else []


def test_output_stderr_and_exit_status(host) -> None:
    host.configure(plugins=only("command.echo = echo hi\n"
                                "command.both = echo out; echo err >&2; exit 3\n"))
    host.run("collect")
    found = items(host)
    assert found["echo"] == {"stdout": b"hi\n", "stderr": None, "exit_status": 0,
                             "note": None, "size": 3}
    assert found["both"] == {"stdout": b"out\n", "stderr": b"err\n", "exit_status": 3,
                             "note": None, "size": 4}
    assert warnings(host) == []


def test_a_changed_output_is_a_new_version(host) -> None:
    state = host.base / "state"
    state.write_text("v1\n")
    host.configure(plugins=only(f"command.state = cat {state}\n"))
    host.run("collect")
    host.run("collect")
    state.write_text("v2\n")
    host.run("collect")
    rows = host.query("SELECT since, until, c.data FROM versions v JOIN contents c "
                      "ON c.digest = v.content WHERE url = 'command://state' ORDER BY since")
    assert rows == [(1, 3, b"v1\n"), (3, None, b"v2\n")]


def test_environment_is_clean(host) -> None:
    host.configure(plugins=only("command.env = env | sort\ncommand.cwd = pwd\n"))
    host.run("collect", env={"SECRET_FROM_PARENT": "leak", "LANG": "de_DE.UTF-8"})
    found = items(host)
    lines = found["env"]["stdout"].decode().splitlines()
    assert {"HOME=/", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"} <= set(lines)
    assert not any(line.startswith(("SECRET_FROM_PARENT", "LANG=")) for line in lines)
    assert found["cwd"]["stdout"] == b"/\n"


def test_stdin_is_closed_even_when_ours_is_an_open_pipe() -> None:
    read_end, write_end = os.pipe()
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        [output] = run_commands([CommandSpec("cat", "cat; echo end", timeout=5)], 1024)
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    # An inherited stdin would keep cat waiting for the writer until the timeout.
    assert (output.stdout, output.exit_status, output.notes) == (b"end\n", 0, ())


def test_database_handle_does_not_leak_into_commands(host) -> None:
    host.configure(plugins=only("command.fds = ls -l /proc/self/fd/\n"))
    host.run("collect")
    listing = items(host)["fds"]["stdout"].decode()
    assert "/proc/" in listing  # ls's own descriptor of the directory: the listing is real
    assert "db.duckdb" not in listing and str(host.storage) not in listing


def test_sort_and_scrub(host) -> None:
    host.configure(plugins=only(
        "command.ps = printf 'b pid=12 fd=3\\na pid=7 fd=4\\n'\n"
        "command.ps.sort = true\ncommand.ps.scrub = (?:pid|fd)=(\\d+)\n"
        "command.count = printf 'rx 123 packets\\n'\ncommand.count.scrub = \\d+\n"))
    host.run("collect")
    found = items(host)
    assert found["ps"]["stdout"] == b"a pid=* fd=*\nb pid=* fd=*\n"
    assert found["count"]["stdout"] == b"rx * packets\n"


def test_missing_binary_is_a_warning_not_a_failure(host) -> None:
    host.configure(plugins=only("command.nope = no-such-tool-xyz --list\n"))
    result = host.run("collect")
    found = items(host)["nope"]
    assert (found["exit_status"], found["note"]) == (127, "command not found (exit 127)")
    assert b"no-such-tool-xyz" in found["stderr"]
    [warning] = warnings(host)
    assert warning.startswith("command://nope: command not found (exit 127): ")
    assert "warning: command://nope: command not found" in result.stderr


def test_timeout_kills_the_whole_process_group(host) -> None:
    marker = unique_marker()
    host.configure(plugins=only(f"command.slow = echo started; sleep 7{marker} & sleep 8{marker}\n"
                                "command.slow.timeout = 0.5\n"))
    started = time.monotonic()
    host.run("collect")
    assert time.monotonic() - started < 10
    found = items(host)["slow"]
    assert found["exit_status"] is None
    assert found["note"] == "timed out after 0.5 s; process group killed"
    assert found["stdout"] == b"started\n"
    assert any("command://slow: timed out" in w for w in warnings(host))
    assert sleeping(marker) == []


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                               (signal.SIGTERM, 143, "terminated")])
def test_interrupted_collect_kills_the_commands_it_started(host, signum, code, word) -> None:
    marker = unique_marker()
    host.configure(plugins=only(f"command.slow = sleep 9{marker}\n", extra="timeout = 120\n"))
    process = start_collect(host, marker)
    process.send_signal(signum)
    # Waiting out the command (9,000 s or more; the 120 s timeout) would fail here.
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code
    assert stderr == f"syschangemon: {word}; what was under way is not stored\n"
    assert sleeping(marker) == []
    assert host.query("SELECT count(*) FROM sessions") == [(0,)]
    assert not (host.storage / "staging").exists()


def test_commands_of_a_killed_collect_still_end_at_their_timeout(host) -> None:
    # SIGKILL leaves no thread to time the command out: GNU timeout does it.
    marker = unique_marker()
    host.configure(plugins=only(f"command.slow = sleep 9{marker}\n", extra="timeout = 1\n"))
    process = start_collect(host, marker)
    process.kill()
    process.communicate()
    deadline = time.monotonic() + 30
    while sleeping(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sleeping(marker) == []


def unique_marker() -> str:
    """Digits that make this test's sleep commands (``sleep 9<marker>``: over 9,000 s) unique."""
    return f"{os.getpid() % 1000:03d}.{time.time_ns() % 997}"


def start_collect(host, marker: str) -> subprocess.Popen:
    """A collect whose ``sleep 9<marker>`` command has started; Ctrl-C works in it, as on
    a terminal (a shell's background job would otherwise inherit "ignore")."""
    process = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), "collect"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not sleeping(marker):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    return process


def sleeping(marker: str) -> list[bytes]:
    """Command lines of the processes still running ``sleep`` with this marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
        except OSError:
            continue
        if marker.encode() in cmdline and b"sleep" in cmdline:
            found.append(cmdline)
    return found


def test_output_is_capped_without_blocking_the_command(host) -> None:
    # 3 MB on stdout and stderr at once: a reader that took one stream at a time, or
    # stopped reading at the cap, would leave the command blocked until the timeout.
    host.configure(plugins=only(
        "command.flood = head -c 3000000 /dev/zero | tr '\\0' a; "
        "head -c 3000000 /dev/zero | tr '\\0' b >&2; echo done >&2\n",
        extra="max_output = 1k\ntimeout = 20\n"))
    started = time.monotonic()
    host.run("collect")
    assert time.monotonic() - started < 15
    found = items(host)["flood"]
    assert found["stdout"] == b"a" * 1024 and found["size"] == 1024
    assert found["stderr"] == b"b" * 1024
    assert found["exit_status"] == 0
    assert found["note"] == ("stdout cut at 1024 bytes (2998976 more dropped); "
                             "stderr cut at 1024 bytes (2998981 more dropped)")


def test_commands_run_in_parallel() -> None:
    specs = [CommandSpec(f"s{i}", "sleep 1; echo $$", timeout=10) for i in range(4)]
    started = time.monotonic()
    outputs = run_commands(specs, 1024)
    assert time.monotonic() - started < 3  # one after the other would take 4 s
    assert [o.exit_status for o in outputs] == [0] * 4
    assert len({o.stdout for o in outputs}) == 4  # four shells, results in spec order


def test_shipped_defaults_run(host) -> None:
    host.configure(plugins={"command": "[command]\nenable_plugin = true\n"})
    host.run("collect")
    found = items(host)
    assert set(found) == set(default_names())
    assert b"lo" in found["ip_addr"]["stdout"] and found["ip_addr"]["exit_status"] == 0
    # A tool that is missing here is a warning naming the item, never a failed collect.
    for warning in warnings(host):
        assert warning.startswith("command://") and "(exit 127)" in warning


@pytest.mark.parametrize("text, key", [
    ("command.x.sort = true\n", "command.x.sort"),
    ("command.x = true\ncommand.x.timeout = soon\n", "command.x.timeout"),
    ("command.x = true\ncommand.x.scrub = (\n", "command.x.scrub"),
    ("command.x = true\ncommand.x.sort = maybe\n", "command.x.sort"),
])
def test_bad_options_are_config_errors(host, text: str, key: str) -> None:
    host.configure(plugins=only(text))
    result = host.run("collect", expect=3)
    assert f"[command]: {key}:" in result.stderr
