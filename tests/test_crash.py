"""SIGKILL at random moments never damages stored history."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

from conftest import SYSCHANGEMON, make_tree

COMMANDS = [["collect", "--paranoid"], ["diff"], ["cleanup"], ["run"], ["email-report"]]


def test_fifty_kills_leave_history_intact_and_the_next_run_succeeds(host):
    host.configure(main="session_keep = 4\nreport_keep = 4\n")
    make_tree(host.tree, {f"d{d}": {f"f{i}": os.urandom(4096) for i in range(300)} for d in range(6)})
    host.run("collect")
    host.run("collect")
    rng = random.Random(1234)
    available = [c for c in COMMANDS if c[0] in host.run("--help").stdout]
    for round_ in range(50):
        command = rng.choice(available)
        (host.tree / "d0" / f"f{round_ % 300}").write_bytes(os.urandom(4096))
        before_sessions = host.query("SELECT id, uuid, digest FROM sessions ORDER BY id")
        before_reports = host.query("SELECT uuid, model FROM reports ORDER BY created")
        process = subprocess.Popen([*SYSCHANGEMON, "-c", str(host.confdir), *command],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait()
        sessions = host.query("SELECT id, uuid, digest FROM sessions ORDER BY id")
        reports = host.query("SELECT uuid, model FROM reports ORDER BY created")
        # Nothing that was stored changed; at most the command's own result was added
        # (or, for cleanup, old entries dropped whole).
        if command[0] not in ("cleanup", "run"):
            assert set(before_sessions) <= set(sessions), command
        kept = {s[1] for s in sessions}
        for session in before_sessions:
            if session[1] in kept:
                assert session in sessions
        kept_reports = {r[0] for r in reports}
        for report in before_reports:
            if report[0] in kept_reports:
                assert report in reports
        host.run("verify")
    assert host.run("run", expect=None).returncode in (0, 1)
    host.run("verify")
