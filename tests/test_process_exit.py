"""How a command's process ends: the console script skips the interpreter's teardown
(scanner.launch.exit_now), so what an exit must still do is checked here on the
installed CLI: output flushed whole, exit handlers run (log, temporary files), a reader
that leaves early, a stdout that was never open."""

from __future__ import annotations

import os
import subprocess

from conftest import SYSCHANGEMON, make_tree

ROWS = 300_000  # far more than the pipe and the stream buffers hold


def _buffered() -> dict[str, str]:
    """The environment without PYTHONUNBUFFERED (cron does not set it): stdout buffers."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}


def _sql(host, query: str) -> list[str]:
    return [*SYSCHANGEMON, "-c", str(host.confdir), "sql", query, "--format", "csv"]


def test_output_through_a_pipe_arrives_whole(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    result = subprocess.run(_sql(host, f"SELECT range FROM range({ROWS})"), capture_output=True,
                            text=True, stdin=subprocess.DEVNULL, env=_buffered(), timeout=120)
    lines = result.stdout.splitlines()
    assert result.returncode == 0 and result.stderr == ""
    assert lines[0] == "range" and len(lines) == ROWS + 1 and lines[-1] == str(ROWS - 1)


def test_collect_and_run_leave_no_temporary_files(host, tmp_path):
    # multiprocessing keeps its forkserver's socket in a pymp-* directory that only its
    # exit handler removes: a run every hour must not leave one behind each time.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    make_tree(host.tree, {"a": "1", "etc": {"b": "2"}})
    host.run("collect", env={"TMPDIR": str(scratch)})
    (host.tree / "a").write_text("changed")
    host.run("run", expect=1, env={"TMPDIR": str(scratch)})
    assert list(scratch.iterdir()) == []
    assert "run finished: exit 1" in (host.base / "log" / "syschangemon.log").read_text()


def test_a_reader_that_leaves_early_ends_the_command_quietly(host):
    make_tree(host.tree, {"a": "1"})
    host.run("collect")
    with subprocess.Popen(_sql(host, f"SELECT range FROM range({ROWS})"), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=_buffered()) as process:
        assert process.stdout.readline().rstrip() == b"range"
        process.stdout.close()  # as `| head -1` does
        stderr = process.stderr.read()
        assert process.wait(timeout=60) == 0
    assert stderr == b""


def test_a_command_started_with_stdout_closed_succeeds(host):
    # cron or a wrapper may start it with the descriptor closed (>&-): Python then has no
    # sys.stdout at all, and the command must still end with its own status.
    make_tree(host.tree, {"a": "1"})
    result = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", *SYSCHANGEMON, "-c", str(host.confdir),
                             "collect"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                            env=_buffered(), timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    assert host.query("SELECT count(*) FROM sessions") == [(1,)]
