"""diff, print-report, list-reports and run end to end: real trees, the installed CLI."""

from __future__ import annotations

import os

import orjson

from conftest import Symlink, make_tree


def change_tree(tree) -> None:
    """One change of every kind: content, chmod, new, deleted, symlink retarget, rename."""
    (tree / "passwd").write_text("root:x:0:0\nmallory:x:0:0\n")
    os.chmod(tree / "script.sh", 0o4755)
    (tree / "new.txt").write_text("new\n")
    (tree / "gone.txt").unlink()
    (tree / "link").unlink()
    os.symlink("sub/keep.conf", tree / "link")
    os.rename(tree / "move-me.txt", tree / "sub" / "moved.txt")


def populate(host) -> None:
    make_tree(host.tree, {
        "passwd": "root:x:0:0\n", "script.sh": "#!/bin/sh\necho hi\n", "gone.txt": "bye\n",
        "link": Symlink("passwd"), "move-me.txt": "moving\n", "sub": {"keep.conf": "a=1\n"},
    })
    os.chmod(host.tree / "script.sh", 0o755)


def reports(host) -> list[tuple]:
    return host.query("SELECT uuid, is_empty, mail_state FROM reports ORDER BY created")


def test_diff_reports_every_kind_of_change(host):
    populate(host)
    host.run("collect")
    change_tree(host.tree)
    host.run("collect")
    result = host.run("diff", expect=1)
    (uuid,) = [row[0] for row in reports(host)]
    assert result.stdout == f"report {uuid} saved: 4 changed, 1 new, 1 lost, 1 renamed\n"
    text = host.run("print-report").stdout
    tree = f"file://{host.tree}"
    lines = text.splitlines()
    for expected in (
        f"lost old item   | {tree}/gone.txt",
        f"found new item  | {tree}/new.txt",
        f"renamed item    | {tree}/move-me.txt",
        f"renamed to      | {tree}/sub/moved.txt",
        f"changed item    | {tree}/passwd",
        f"changed item    | {tree}/script.sh",
        "mode            | 0755 rwxr-xr-x" + " " * 36 + " | 4755 rwsr-xr-x",
        f"changed item    | {tree}/link",
        "target          | passwd" + " " * 44 + " | sub/keep.conf",
        "size            | 11" + " " * 48 + " | 25",
        f"changed item    | {tree}/sub",  # its mtime: moved.txt arrived
    ):
        assert expected in lines, f"{expected!r} not in:\n{text}"
    assert lines[1].startswith("session         | old")
    # The blocks come in the original's order: lost, found, renamed, changed.
    order = [line.split(" | ")[0].strip() for line in lines if line.endswith(".txt")]
    assert order == ["lost old item", "found new item", "renamed item", "renamed to"]


def test_print_report_formats_and_choice(host):
    populate(host)
    host.run("collect")
    change_tree(host.tree)
    host.run("collect")
    host.run("diff", expect=1)
    (uuid,) = [row[0] for row in reports(host)]
    model = orjson.loads(host.run("print-report", "--format", "json").stdout)
    assert model["uuid"] == uuid and len(model["changes"]) == 7
    ndjson = host.run("print-report", "--format", "ndjson", "-r", uuid[:8]).stdout.splitlines()
    assert [orjson.loads(line)["kind"] for line in ndjson] == [c["kind"] for c in model["changes"]]
    for args in (["-t"], ["--format", "html"], ["--html", "-r", uuid]):
        page = host.run("print-report", *args).stdout
        assert page.startswith("<!DOCTYPE html>") and f"{host.tree}/new.txt" in page
    missing = host.run("print-report", "-r", "00000000", expect=4)
    assert missing.stderr == "syschangemon: error: no report with UUID 00000000\n"
    listed = host.run("list-reports").stdout.splitlines()
    assert len(listed) == 1 and listed[0].startswith(uuid)
    assert listed[0].endswith("4 changed, 1 new, 1 lost, 1 renamed; mail none")


def test_diff_needs_two_sessions_and_print_report_a_report(host):
    populate(host)
    assert "no database yet" in host.run("print-report", expect=4).stderr  # nothing stored
    host.run("collect")
    result = host.run("diff", expect=8)
    assert "only the baseline session" in result.stderr and "no report was made" in result.stderr
    assert host.run("print-report", expect=4).stderr == (
        "syschangemon: error: no report stored yet; run 'syschangemon diff' (or run) "
        "after two collects\n")
    assert host.run("list-reports").stdout == "no reports stored yet\n"


def test_diff_session_choice(host):
    populate(host)
    host.run("collect")
    (host.tree / "passwd").write_text("second\n")
    host.run("collect")
    host.run("collect")  # nothing changed since the second
    first, second, third = [row[0] for row in host.query("SELECT uuid FROM sessions ORDER BY id")]
    assert host.run("diff").stdout.endswith("no changes\n")  # second -> third
    assert "1 changed" in host.run("diff", "-o", first[:8], "-u", third, expect=1).stdout
    assert "1 changed" in host.run("diff", "-u", second, expect=1).stdout  # first -> second
    wrong = host.run("diff", "-o", third, "-u", first, expect=2)
    assert "is not older than the new session" in wrong.stderr
    assert host.run("diff", "-o", "deadbeef", expect=4).stderr == (
        "syschangemon: error: no session with UUID deadbeef\n")
    assert "no session is older than" in host.run("diff", "-u", first, expect=4).stderr


def test_run_is_silent_under_cron_unless_something_changed(host):
    populate(host)
    baseline = host.run("run", "-s")
    assert baseline.stdout.startswith("baseline session ") and "collected" in baseline.stdout
    assert reports(host) == []
    clean = host.run("run", "--skip-empty-mail")
    assert (clean.stdout, clean.stderr) == ("", "")
    clean = host.run("run", "-s")
    assert (clean.stdout, clean.stderr) == ("", "")
    change_tree(host.tree)
    changed = host.run("run", "-s", expect=1)
    assert f"found new item  | file://{host.tree}/new.txt" in changed.stdout
    assert changed.stderr == ""
    (host.tree / "new.txt").write_text("again\n")
    quiet = host.run("run", "--quiet", expect=1)
    assert (quiet.stdout, quiet.stderr) == ("", "")
    json_run = host.run("run", "--format", "json")  # no change: nothing printed
    assert json_run.stdout == ""
    assert [row[1] for row in reports(host)] == [True, True, False, False, True]


def test_run_reports_what_a_collect_without_report_saw(host):
    """A run killed after its collect (or a collect by hand) leaves a session that no
    report covers: the next run compares from the last reported session instead."""
    def sessions() -> list[str]:
        return [uuid for uuid, in host.query("SELECT uuid FROM sessions ORDER BY id")]

    def run_changes(old: str) -> set[str]:
        model = orjson.loads(host.run("run", "--format", "json", expect=1).stdout)
        assert model["sessions"]["old"]["uuid"] == old
        return {change["url"].rsplit("/", 1)[-1] for change in model["changes"]}

    populate(host)
    host.run("run")  # the baseline
    change_tree(host.tree)
    host.run("collect")  # what a run killed between its collect and its report leaves
    # No report yet: from the baseline.
    assert "new.txt" in run_changes(old=sessions()[0])
    (host.tree / "later.txt").write_text("later\n")
    host.run("collect")
    assert run_changes(old=sessions()[2]) == {"later.txt"}
    # A report made by hand on older sessions does not take the next run back there.
    host.run("diff", "-o", sessions()[0], "-u", sessions()[1], expect=1)
    assert host.run("run", "--format", "json").stdout == ""
    [(old,)] = host.query("SELECT old_session FROM reports ORDER BY created DESC LIMIT 1")
    assert old == host.query("SELECT max(id) - 1 FROM sessions")[0][0]
    # After a reset the reports name sessions that are gone: from the new baseline.
    host.run("reset")
    (host.tree / "after-reset.txt").write_text("x\n")
    assert run_changes(old=sessions()[0]) == {"after-reset.txt"}


def test_mail_state_follows_the_mail_configuration(host):
    populate(host)
    host.run("run")
    host.run("run")
    host.configure(main="[mail.smtp]\nto_addr = ops@example.com\n")
    host.run("run", "-s")  # an empty report under -s: skipped, nothing to send
    # Nothing listens on localhost:25 here: the reports stay pending (exit 6).
    host.run("run", expect=6)
    (host.tree / "passwd").write_text("changed\n")
    host.run("run", "-s", expect=6)
    # -s also marks the earlier empty report, still pending, as needing no mail.
    assert [row[2] for row in reports(host)] == ["none", "skipped", "skipped", "pending"]
    assert host.run("list-reports").stdout.splitlines()[1].endswith("no changes; mail skipped")


def test_report_exclude_and_ignore_attrs_from_the_configuration(host):
    populate(host)
    make_tree(host.tree, {"noisy": {"counter": "1"}})
    host.configure(main=f"report_exclude =\n    {host.tree}/noisy/**\n")
    host.run("collect")
    (host.tree / "noisy" / "counter").write_text("22")
    os.chown(host.tree / "passwd", os.getuid(), os.getgid())  # only ctime changes
    host.run("collect")
    result = host.run("diff")
    assert result.stdout.endswith(
        "saved: no changes; 2 suppressed (1 by ignore_attrs, 1 by report_exclude)\n")
    text = host.run("print-report").stdout
    assert "summary         | no changes; 2 suppressed" in text
    assert "note            | no difference" in text
    host.configure(main="report_exclude =\n    [broken\n")
    assert "report_exclude" in host.run("diff", expect=3).stderr


def test_template_dir_replaces_the_text_report(host, tmp_path):
    populate(host)
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "report.txt.j2").write_text("{{ summary(counts) }} on {{ host }}\n")
    host.configure(main=f"template_dir = {templates}\n")
    host.run("run")
    change_tree(host.tree)
    result = host.run("run", expect=1)
    assert result.stdout.startswith("4 changed, 1 new, 1 lost, 1 renamed on ")
    lines = result.stdout.splitlines()
    assert len(lines) == 2  # the user's one-line template, then the mail note
    assert lines[1] == "mail not configured ([mail.smtp] to_addr): nothing sent"
