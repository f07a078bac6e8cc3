"""Render a report model as text, HTML (Jinja2 templates), JSON or NDJSON (orjson).

Templates are ``report.txt.j2`` and ``report.html.j2`` in ``report/templates``. A
``template_dir`` ([syschangemon]) is searched first, so a file there replaces the
built-in template of the same name; the built-ins stay reachable as
``builtin/<name>`` (``{% extends "builtin/report.html.j2" %}``). HTML templates
(``*.html.j2``) are autoescaped, text templates are not: the model's strings are
already terminal-safe. Templates run sandboxed and see the model's keys as variables,
plus ``row``, ``span``, ``summary`` and ``kinds``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import jinja2
import orjson
from jinja2.sandbox import SandboxedEnvironment

from report.model import FORMATS, KINDS, summary
from scanner.errors import ConfigError

TEMPLATES = {"text": "report.txt.j2", "html": "report.html.j2"}
BUILTIN_DIR = Path(__file__).parent / "templates"
#: Column widths of the text report (as the original's table: 15 | 50 | 50).
LABEL_WIDTH = 15
VALUE_WIDTH = 50


def _wrap(value: object) -> list[str]:
    lines: list[str] = []
    for line in ("" if value is None else str(value)).split("\n"):
        lines.extend(textwrap.wrap(line, VALUE_WIDTH, break_on_hyphens=False) or [""])
    return lines


def row(label: str, old: object = "", new: object = "") -> str:
    """``label | old | new`` lines of the text table, values wrapped at VALUE_WIDTH."""
    left, right = _wrap(old), _wrap(new)
    height = max(len(left), len(right))
    left += [""] * (height - len(left))
    right += [""] * (height - len(right))
    return "\n".join(f"{label if i == 0 else '':<{LABEL_WIDTH}} | {o:<{VALUE_WIDTH}} | {n}".rstrip()
                     for i, (o, n) in enumerate(zip(left, right)))


def span(label: str, value: object) -> str:
    """``label | value`` lines spanning both value columns, one per line, never wrapped
    (urls and diff lines stay whole for copying)."""
    lines = value if isinstance(value, list) else str(value).split("\n")
    return "\n".join(f"{label if i == 0 else '':<{LABEL_WIDTH}} | {line}"
                     for i, line in enumerate(lines or [""]))


def environment(template_dir: str | Path | None = None) -> jinja2.Environment:
    """The template environment: ``template_dir`` first, then the built-in templates."""
    builtin = jinja2.FileSystemLoader(BUILTIN_DIR)
    loaders: list[jinja2.BaseLoader] = [builtin, jinja2.PrefixLoader({"builtin": builtin})]
    if template_dir:
        loaders.insert(0, jinja2.FileSystemLoader(str(template_dir)))
    env = SandboxedEnvironment(
        loader=jinja2.ChoiceLoader(loaders),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2", "html", "htm"),
                                            default_for_string=False, default=False),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
        keep_trailing_newline=True)
    env.globals.update(row=row, span=span, summary=summary, kinds=KINDS)
    return env


def render(model: dict, fmt: str = "text", *, template_dir: str | Path | None = None) -> str:
    """The report in ``fmt`` (one of FORMATS); ConfigError for a broken user template."""
    if fmt == "json":
        return orjson.dumps(model, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
    if fmt == "ndjson":
        return render_ndjson(model)
    if fmt not in TEMPLATES:
        raise ValueError(f"unknown report format {fmt!r} (choose from {', '.join(FORMATS)})")
    if template_dir and not Path(template_dir).is_dir():
        raise ConfigError(f"{template_dir}: no such directory", section="syschangemon",
                          key="template_dir")
    env = environment(template_dir)
    name = TEMPLATES[fmt]
    try:
        template = env.get_template(name)
        return template.render(model)
    except jinja2.TemplateError as error:
        if template_dir and (Path(template_dir) / name).exists():
            raise ConfigError(f"{Path(template_dir) / name}: {error}", section="syschangemon",
                              key="template_dir") from None
        raise


def render_ndjson(model: dict) -> str:
    """One JSON object per change and line (for log shippers); nothing for an empty report."""
    head = {"report": model["uuid"], "created": model["created_utc"], "host": model["host"],
            "old_session": model["sessions"]["old"]["uuid"],
            "new_session": model["sessions"]["new"]["uuid"]}
    return "".join(orjson.dumps({**head, **change}).decode() + "\n" for change in model["changes"])
