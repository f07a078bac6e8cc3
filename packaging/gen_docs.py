"""Generate the syschangemon(1) man page and the bash completion from the live parser.

Run at wheel build time by syschangemon_build.BuildPy (``python gen_docs.py --man
OUT.1 --bash OUT``) with the source tree on PYTHONPATH, and imported by the tests.
Nothing here lists commands, options, exit codes or configuration keys by hand:
commands and options come from ``scanner.cli.build_parser()``, exit codes from
``scanner.errors.ExitCode`` and the texts of ``scanner.cli.EXIT_CODES_HELP``, the
configuration keys from ``scanner.config.KNOWN_KEYS`` with their defaults and the
comments above them in the shipped conf/ files.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from scanner import __version__
from scanner.cli import EXIT_CODES_HELP, build_parser
from scanner.commands.context import ROOT_STORAGE_DIR
from scanner.config import (KNOWN_KEYS, MAIN_FILE, PLUGIN_DIR, SYSTEM_CONFIG_DIR,
                            embedded_config_dir, load_config)
from scanner.errors import ExitCode
from scanner.logsetup import ROOT_LOG_FILE
from scanner.store import DB_FILE

PROG = "syschangemon"
SEE_ALSO = ("cron(8)", "crontab(5)", "systemd.timer(5)", "systemd.service(5)", "sendmail(8)",
            "duckdb(1)")
# Metavars whose values are paths: the completion offers file names for them.
_PATH_METAVARS = {"PATH", "FILE", "DIR"}


def roff(text: str) -> str:
    """Escape ``text`` for a roff text line (backslashes, hyphens, leading dots)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def exit_status_section(help_text: str = EXIT_CODES_HELP) -> str:
    """EXIT STATUS: one entry per ExitCode, with the text --help shows for it.

    Raises ValueError when ``help_text`` does not describe every ExitCode.
    """
    texts = {int(m[1]): m[2] for m in re.finditer(r"^\s+(\d+)\s+(.+)$", help_text, re.M)}
    missing = [code.name for code in ExitCode if code.value not in texts]
    if missing:
        raise ValueError(f"scanner.cli.EXIT_CODES_HELP does not describe {', '.join(missing)}")
    return "\n".join(f".TP\n.B {code.value}\n{roff(texts[code.value])}" for code in ExitCode)


def _comment_docs(file: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The comment block above each section header and each key (active or commented out).

    A commented-out key (``# dir = /var/lib/...``) ends the block above it, as an
    active key does; indented comment lines right after a key are its commented-out
    continuation lines (example globs), not documentation.
    """
    sections: dict[str, list[str]] = {}
    keys: dict[str, list[str]] = {}
    section, block, after_key = None, [], False
    for line in file.read_text(encoding="utf-8").splitlines():
        header = re.fullmatch(r"\[([^\]]+)\]\s*", line)
        comment = re.fullmatch(r"[#;] ?(.*)", line)
        key = re.fullmatch(r"(?:[#;]\s*)?([a-z0-9_.-]+)\s*=.*", line)
        if header:
            section = header[1]
            sections[section] = block
            block, after_key = [], False
        elif key and section and (key[1] in KNOWN_KEYS.get(section, ()) or not comment):
            keys.setdefault(f"{section}.{key[1]}", block)
            block, after_key = [], True
        elif comment and not (after_key and comment[1][:1].isspace()):
            block.append(comment[1])
            after_key = False
        elif not line.strip():
            block += [""] if block else []
            after_key = False
    return sections, keys


def _paragraphs(lines: list[str], paragraph: str = ".PP") -> str:
    """Comment lines as roff: empty lines start paragraphs, indented lines stay lines.

    ``paragraph`` is the macro between paragraphs: ".IP" keeps a key's indentation.
    """
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    return "\n".join(paragraph if not line.strip() else roff(line) for line in lines)


def configuration_section() -> str:
    """CONFIGURATION: every section and key of KNOWN_KEYS, its default and its comment."""
    defaults_dir = embedded_config_dir()
    defaults = load_config(str(defaults_dir), is_root=False)
    section_docs: dict[str, list[str]] = {}
    key_docs: dict[str, list[str]] = {}
    for file in sorted(defaults_dir.rglob("*.conf")):
        sections, keys = _comment_docs(file)
        section_docs.update(sections)
        key_docs.update(keys)
    out = [roff(f"Read from {SYSTEM_CONFIG_DIR}/{MAIN_FILE}, then every {PLUGIN_DIR}/*.conf "
                "in name order (or from the file or directory given with -c). The files are "
                "INI; a value may continue on indented lines (glob lists). A key your files "
                "leave out takes the built-in default shown here, which is the value in the "
                "sample files shipped with the program; a collector section runs only when "
                "it has enable_plugin = true. Unknown sections and keys are errors.")]
    for name, known in KNOWN_KEYS.items():
        section = defaults.section(name)
        source = next(iter(section.sources.values()), None)
        where = f" ({Path(source).relative_to(defaults_dir)})" if source else ""
        out.append(f".SS {roff(f'[{name}]{where}')}")
        intro = section_docs.get(name, [])
        if intro:
            out.append(_paragraphs(intro))
        dynamic = sorted(k for k in section.values if k not in known)
        for key in sorted(known) + dynamic:
            out.append(f".TP\n.B {roff(key)}")
            doc = key_docs.get(f"{name}.{key}", [])
            if doc:
                out.append(_paragraphs(doc, ".IP"))
            value = section.get(key)
            if value is None:
                out.append(".br\nDefault: not set.")
            elif "\n" in value.strip():
                lines = [line.strip() for line in value.strip().splitlines()]
                out.append(".br\nDefault:\n.RS\n.nf\n" + "\n".join(map(roff, lines)) + "\n.fi\n.RE")
            else:
                out.append(f".br\nDefault: {roff(value.strip()) or '(empty)'}")
    return "\n".join(out)


def files_section() -> str:
    """FILES: the paths a packaged installation uses."""
    entries = (
        (f"{SYSTEM_CONFIG_DIR}/{MAIN_FILE}", "main configuration file"),
        (f"{SYSTEM_CONFIG_DIR}/{PLUGIN_DIR}/*.conf", "collector configuration, read in name order"),
        (f"{ROOT_STORAGE_DIR}/{DB_FILE}", "the database (mode 0600, in a 0700 directory); "
         "as a normal user $XDG_STATE_HOME/syschangemon (~/.local/state/syschangemon)"),
        (ROOT_LOG_FILE, "the log file as root (see [log.logging])"),
        ("/etc/cron.d/syschangemon", "the hourly run (enabled by the Debian package)"),
        ("/lib/systemd/system/syschangemon.timer",
         "the hourly run as a systemd timer (disabled; enable it and remove the cron line)"),
        ("/lib/systemd/system/syschangemon.service", "the service the timer starts"),
    )
    return "\n".join(f".TP\n.I {roff(path)}\n{roff(text)}" for path, text in entries)


def manpage(parser: argparse.ArgumentParser | None = None) -> str:
    """The syschangemon(1) page in roff, built from ``parser`` (default: the live one)."""
    from argparse_manpage.manpage import Manpage  # a build-time tool, not a runtime one

    parser = parser or build_parser()
    # The exit codes get their own EXIT STATUS section instead of a COMMENTS one.
    parser.epilog = None
    page = Manpage(parser, _data={
        "project_name": PROG, "version": __version__, "manual_section": 1,
        "manual_title": "syschangemon manual", "description": "system change monitor",
    })
    page.add_section("exit status", "=", exit_status_section())
    page.add_section("configuration", "=", configuration_section())
    page.add_section("files", "=", files_section())
    page.add_section("see also", "=", ", ".join(
        f"\\fB{roff(ref.split('(')[0])}\\fR({ref.split('(')[1]}" for ref in SEE_ALSO))
    return str(page)


def bash_completion(parser: argparse.ArgumentParser | None = None) -> str:
    """A bash completion script for ``parser`` (default: the live one), made by shtab."""
    import shtab  # a build-time tool, not a runtime one

    parser = parser or build_parser()
    for each in _parsers(parser):
        for action in each._actions:
            if action.option_strings and action.metavar in _PATH_METAVARS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell="bash")


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """``parser`` and its sub-command parsers."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found.extend(_parsers(child))
    return found


def main(argv: list[str] | None = None) -> int:
    """Write the man page and/or the bash completion to the given paths."""
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--man", metavar="PATH", help="write the man page here")
    cli.add_argument("--bash", metavar="PATH", help="write the bash completion here")
    args = cli.parse_args(argv)
    for path, make in ((args.man, manpage), (args.bash, bash_completion)):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(make(), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
