"""command: run the configured shell commands and store their output as items.

Each ``command.<name> = <shell command>`` in [command] becomes the item
``command://<name>``: ``content`` is the digest of its stdout (stored in contents,
even when empty), ``stderr`` the digest of its stderr (None when empty),
``exit_status`` its exit status (negative: killed by that signal; None after a
timeout), ``size`` the length of the stored stdout and ``note`` what went wrong
(timeout, output cut, command not found).

How a command runs: ``/bin/sh -c`` in a new session (so its whole process group
can be killed), under GNU timeout where installed (a backstop should this process
be killed), stdin from /dev/null, working directory /, every inherited file
descriptor but 0-2 closed, and an environment of only
``PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C HOME=/`` so that output does not
depend on who ran syschangemon. stdout and stderr are read together as they come;
bytes past ``max_output`` are read and dropped, so a chatty command never blocks
and never costs more memory than the cap. At the timeout the process group is
killed with SIGKILL. A few commands run at a time, in threads, started before the
file walk (``start``) so that their waiting overlaps it; a collect that fails kills
the ones still running.

Before storing, output is decoded as UTF-8 (invalid bytes replaced), then
``command.<name>.scrub`` matches are replaced by ``*`` (see conffile.mask for how
groups work) and, with ``command.<name>.sort = true``, the lines are sorted.
"""

from __future__ import annotations

import functools
import os
import re
import selectors
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import blake3

from scanner.collectors.conffile import mask
from scanner.config import Config
from scanner.errors import ConfigError
from scanner.session import SessionBuilder
from scanner.values import parse_bool, parse_float, parse_size

#: The whole environment a command sees.
ENVIRONMENT = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "HOME": "/"}
#: Commands running at once: enough that slow ones overlap, few enough for a small host.
PARALLEL = 4
_CHUNK = 65536
#: After both streams end, how long a command may still take to exit past its deadline.
_EXIT_GRACE = 0.1
#: How soon a running command notices that the collect gave up on it.
_STOP_POLL = 0.25
#: GNU timeout's deadline is later than ours by this much: normally ours comes first.
_BACKSTOP = 5.0


@dataclass(frozen=True)
class CommandSpec:
    """One configured command."""

    name: str
    shell: str
    timeout: float
    sort: bool = False
    scrub: re.Pattern[str] | None = None


@dataclass(frozen=True)
class CommandOutput:
    """What a command printed and how it ended."""

    stdout: bytes
    stderr: bytes
    exit_status: int | None
    notes: tuple[str, ...] = ()


def command_specs(config: Config) -> tuple[list[CommandSpec], int]:
    """The [command] commands (sorted by name, empty ones left out) and max_output."""
    section = config.section("command")
    default_timeout = parse_float(section.get("timeout", ""), minimum=0.001,
                                  **section.where("timeout"))
    max_output = parse_size(section.get("max_output", ""), **section.where("max_output"))
    shells: dict[str, str] = {}
    options: dict[str, dict[str, str]] = {}
    for key, value in section.values.items():
        parts = key.split(".")
        if parts[0] != "command" or len(parts) < 2:
            continue
        if len(parts) == 2:
            shells[parts[1]] = value.strip()
        else:
            options.setdefault(parts[1], {})[parts[2]] = key
    for name, keys in options.items():
        if name not in shells:
            orphan = next(iter(keys.values()))
            raise ConfigError(f"option of an undefined command (no command.{name})",
                              **section.where(orphan))
    specs = []
    for name in sorted(shells):
        if not shells[name]:
            continue  # an empty value switches a default command off
        keys = options.get(name, {})
        values = {option: section.get(key) for option, key in keys.items()}
        timeout = default_timeout
        if "timeout" in keys:
            timeout = parse_float(values["timeout"], minimum=0.001, **section.where(keys["timeout"]))
        sort = "sort" in keys and parse_bool(values["sort"], **section.where(keys["sort"]))
        scrub = None
        if values.get("scrub", "").strip():
            try:
                scrub = re.compile(values["scrub"].strip(), re.MULTILINE)
            except re.error as error:
                raise ConfigError(f"invalid regular expression: {error}",
                                  **section.where(keys["scrub"])) from None
        specs.append(CommandSpec(name, shells[name], timeout, sort, scrub))
    return specs, max_output


def run_command(spec: CommandSpec, max_output: int, stop: threading.Event) -> CommandOutput:
    """Run one command as described in the module docstring; never raises for its failure.

    Setting ``stop`` ends it early, as a timeout would.
    """
    try:
        process = subprocess.Popen(
            _argv(spec), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=ENVIRONMENT, cwd="/", close_fds=True,
            start_new_session=True)
    except OSError as error:
        return CommandOutput(b"", b"", None, (f"cannot start /bin/sh: {error.strerror}",))
    deadline = time.monotonic() + spec.timeout
    (out, out_dropped), (err, err_dropped), finished = _read_both(process, deadline, max_output, stop)
    # A command that closed its output but keeps running counts as timed out.
    finished = finished and _exited(process, deadline, stop)
    notes = []
    if not finished:
        # Not reaped yet, so the group id cannot have been reused by now.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        notes.append(f"timed out after {spec.timeout:g} s; process group killed")
    for stream, dropped in (("stdout", out_dropped), ("stderr", err_dropped)):
        if dropped:
            notes.append(f"{stream} cut at {max_output} bytes ({dropped} more dropped)")
    status = process.returncode if finished else None
    if status == 127:
        notes.append("command not found (exit 127)")
    elif status == 126:
        notes.append("command not executable (exit 126)")
    return CommandOutput(bytes(out), bytes(err), status, tuple(notes))


def _argv(spec: CommandSpec) -> list[str]:
    """``sh -c``, under GNU timeout where it is installed.

    The command runs in a session of its own, and this process enforces its timeout.
    If this process is killed (SIGKILL, the OOM killer), nothing would: timeout kills
    the command's group a little after the deadline instead (while the shell lives:
    what a command left running in the background after it ended is not covered).
    """
    shell = ["/bin/sh", "-c", spec.shell]
    timeout = _gnu_timeout()
    return [timeout, "-s", "KILL", f"{spec.timeout + _BACKSTOP:.3f}s", *shell] if timeout else shell


@functools.cache
def _gnu_timeout() -> str | None:
    """The path of GNU coreutils' timeout, None when missing (busybox's kills no group)."""
    path = shutil.which("timeout", path=ENVIRONMENT["PATH"])
    if path is None:
        return None
    try:
        version = subprocess.run([path, "--version"], capture_output=True, timeout=5,
                                 env=ENVIRONMENT, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return path if b"coreutils" in version else None


def _read_both(process: subprocess.Popen, deadline: float, cap: int,
               stop: threading.Event) -> tuple[tuple[bytearray, int], tuple[bytearray, int], bool]:
    """Read stdout and stderr until both end, the deadline passes or ``stop`` is set; keep
    ``cap`` bytes each.

    Returns (stdout, dropped), (stderr, dropped) and whether both streams ended.
    """
    kept = {process.stdout: bytearray(), process.stderr: bytearray()}
    dropped = dict.fromkeys(kept, 0)
    with selectors.DefaultSelector() as selector:
        for stream in kept:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = _wait_step(deadline, stop)
            if remaining <= 0:
                break
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _CHUNK)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = kept[key.fileobj]
                room = max(cap - len(buffer), 0)
                buffer += chunk[:room]
                dropped[key.fileobj] += len(chunk) - min(room, len(chunk))
        finished = not selector.get_map()
    for stream in kept:
        stream.close()
    return ((kept[process.stdout], dropped[process.stdout]),
            (kept[process.stderr], dropped[process.stderr]), finished)


def _exited(process: subprocess.Popen, deadline: float, stop: threading.Event) -> bool:
    """Wait for the exit until the deadline (at least a short grace) or until ``stop``."""
    deadline = max(deadline, time.monotonic() + _EXIT_GRACE)
    while (step := _wait_step(deadline, stop)) > 0:
        try:
            process.wait(timeout=step)
            return True
        except subprocess.TimeoutExpired:
            pass
    return process.poll() is not None


def _wait_step(deadline: float, stop: threading.Event) -> float:
    """How long to wait next: until the deadline, in short steps so that ``stop`` is
    seen; 0 to give up."""
    return 0.0 if stop.is_set() else min(deadline - time.monotonic(), _STOP_POLL)


def normalize(spec: CommandSpec, output: bytes) -> bytes:
    """stdout as stored: UTF-8, scrubbed, and sorted when the spec says so."""
    text = output.decode("utf-8", errors="replace")
    if spec.scrub is not None:
        text, _ = mask(spec.scrub, text, "*")
    if spec.sort:
        lines = sorted(text.splitlines())
        text = "\n".join(lines) + ("\n" if lines and text.endswith("\n") else "")
    return text.encode("utf-8")


class RunningCommands:
    """Configured commands running in threads, PARALLEL at a time, while the collect goes on."""

    def __init__(self, specs: list[CommandSpec], max_output: int) -> None:
        self.specs = specs
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(min(PARALLEL, len(specs)), 1),
                                        thread_name_prefix="command")
        self._futures = []
        try:
            for spec in specs:
                self._futures.append(self._pool.submit(run_command, spec, max_output, self._stop))
        except BaseException:  # Ctrl-C halfway: the caller has no object to abandon yet
            self.abandon()
            raise

    def outputs(self) -> list[CommandOutput]:
        """Wait for every command; the outputs in the order of the specs.

        When the wait is interrupted (Ctrl-C), the commands keep running until abandon().
        """
        outputs = [future.result() for future in self._futures]
        self._pool.shutdown()
        return outputs

    def abandon(self) -> None:
        """Kill the commands still running and drop those not started (the collect failed)."""
        self._stop.set()
        self._pool.shutdown(cancel_futures=True)


def run_commands(specs: list[CommandSpec], max_output: int) -> list[CommandOutput]:
    """Run the commands, PARALLEL at a time; results in the order of ``specs``."""
    return RunningCommands(specs, max_output).outputs()


def start(config: Config) -> RunningCommands:
    """Start every command of [command] (ConfigError first if one is badly set)."""
    specs, max_output = command_specs(config)
    return RunningCommands(specs, max_output)


def stage(running: RunningCommands, builder: SessionBuilder) -> None:
    """Wait for the started commands and stage their items."""
    rows = []
    for spec, output in zip(running.specs, running.outputs()):
        url = f"command://{spec.name}"
        stdout = normalize(spec, output.stdout)
        stderr = output.stderr.decode("utf-8", errors="replace").encode("utf-8")
        if output.exit_status in (126, 127) or output.exit_status is None:
            detail = stderr.decode().strip().splitlines()
            builder.warn(f"{url}: {'; '.join(output.notes)}"
                         + (f": {detail[-1]}" if detail else ""))
        rows.append({"url": url, "type": "command", "size": len(stdout),
                     "content": _store(builder, stdout),
                     "stderr": _store(builder, stderr) if stderr else None,
                     "exit_status": output.exit_status, "note": "; ".join(output.notes) or None})
    builder.add_items(rows)


def _store(builder: SessionBuilder, data: bytes) -> bytes:
    digest = blake3.blake3(data).digest()
    builder.add_content(digest, data)
    return digest
