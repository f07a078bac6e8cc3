"""The syschangemon(1) man page: generated from the live parser, complete, installed.

The page is made by packaging/gen_docs.py at wheel build time; here it is generated
from the same parser the CLI uses, so a command or option added without reaching the
page fails a test.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scanner.cli import EXIT_CODES_HELP, build_parser
from scanner.commands import COMMANDS
from scanner.config import KNOWN_KEYS
from scanner.errors import ExitCode

REPO = Path(__file__).resolve().parent.parent


def load_gen_docs():
    """packaging/gen_docs.py as a module (packaging/ is not a package)."""
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "packaging" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_docs = load_gen_docs()


def plain(roff: str) -> str:
    """The roff source with font changes and escapes removed: the words a reader sees."""
    return re.sub(r"\\f[BIRP]|\\/|\\,|\\&", "", roff).replace("\\-", "-").replace("\\e", "\\")


def sections(roff: str) -> dict[str, str]:
    """Top-level .SH sections of a page, keyed by heading (in plain text)."""
    found: dict[str, str] = {}
    heading, body = None, []
    lines = plain(roff).splitlines()
    for index, line in enumerate(lines):
        if line.startswith(".SH"):
            if heading is not None:
                found[heading] = "\n".join(body)
            # argparse-manpage puts some headings on the line after a bare .SH
            heading = line[3:].strip() or lines[index + 1].strip()
            body = []
        else:
            body.append(line)
    if heading is not None:
        found[heading] = "\n".join(body)
    return found


@pytest.fixture(scope="module")
def page() -> str:
    return gen_docs.manpage()


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_command_has_its_section(page):
    names = [command.name for command in COMMANDS]
    assert names, "no commands registered"
    found = sections(page)
    for name in names:
        assert f"COMMAND 'syschangemon {name}'" in found, f"{name} missing from the man page"
    # ...and the page lists no command the parser does not have.
    listed = re.findall(r"^\.SH COMMAND 'syschangemon (\S+)'", plain(page), re.M)
    assert listed == list(subcommands(build_parser()))


def test_every_option_of_every_command_is_documented_under_it(page):
    found = sections(page)
    for name, child in subcommands(build_parser()).items():
        text = "\n".join(body for heading, body in found.items()
                         if heading.endswith(f"'syschangemon {name}'"))
        for action in child._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            words = action.option_strings or [action.metavar or action.dest]
            for word in words:
                assert word in text, f"{name}: {word} missing from the man page"


def test_every_top_level_option_is_documented(page):
    found = sections(page)
    text = found["OPTIONS"] + found["COMMON OPTIONS"]
    for action in build_parser()._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert option in text, f"{option} missing from the man page"


def test_exit_status_lists_every_exit_code_with_its_help_text(page):
    text = sections(page)["EXIT STATUS"]
    for code in ExitCode:
        line = next(line for line in EXIT_CODES_HELP.splitlines()
                    if line.split()[:1] == [str(code.value)])
        meaning = line.split(None, 1)[1]
        assert re.search(rf"^\.B {code.value}\n{re.escape(meaning)}$", text, re.M), code


def test_an_undescribed_exit_code_stops_the_build():
    without_nine = "\n".join(line for line in EXIT_CODES_HELP.splitlines()
                             if not line.strip().startswith("9 "))
    with pytest.raises(ValueError, match="TAMPERED"):
        gen_docs.exit_status_section(without_nine)


def test_configuration_lists_every_section_and_key_with_defaults(page):
    text = sections(page)["CONFIGURATION"]
    for section, keys in KNOWN_KEYS.items():
        assert re.search(rf"^\.SS \[{re.escape(section)}\]", text, re.M), section
        body = text.split(f".SS [{section}]", 1)[1].split(".SS ", 1)[0]
        for key in keys:
            assert f"\n.B {key}\n" in body, f"[{section}] {key} missing from the man page"
    # Defaults come from the shipped conf/ files, comments included.
    assert "Default: 168" in text
    assert "Worker processes; 0 means one per core, growing to two per core once reads wait on" in text


def test_files_and_see_also(page):
    found = sections(page)
    for path in ("/etc/syschangemon/syschangemon.conf", "/etc/syschangemon/plugins.d/*.conf",
                 "/var/lib/syschangemon/storage/db.duckdb", "/etc/cron.d/syschangemon"):
        assert path in found["FILES"]
    assert "crontab(5)" in found["SEE ALSO"]


def test_header_names_the_page_and_version(page):
    from scanner import __version__

    assert page.startswith('.TH SYSCHANGEMON "1" ')
    assert f"syschangemon {__version__}" in plain(page.splitlines()[0])
    assert "syschangemon - system change monitor" in sections(page)["NAME"]


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed")
def test_groff_formats_it_without_warnings(page, tmp_path):
    source = tmp_path / "syschangemon.1"
    source.write_text(page, encoding="utf-8")
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(source)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stderr == ""


def test_the_installed_package_carries_the_page():
    import scanner

    if Path(scanner.__file__).resolve().parent == REPO / "scanner":
        pytest.skip("running from the source tree (editable install): no data files installed")
    installed = Path(sys.prefix, "share", "man", "man1", "syschangemon.1")
    assert installed.is_file(), f"{installed} missing"
    text = sections(installed.read_text(encoding="utf-8"))
    for command in COMMANDS:
        assert f"COMMAND 'syschangemon {command.name}'" in text
