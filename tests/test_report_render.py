"""Rendering: golden files for text, HTML and JSON, NDJSON, escaping, template overrides.

The golden files in tests/golden/ are the reports of test_diff.build_history (sessions 1
to 3, fixed UUIDs and times, TZ=UTC). After an intended change of the model or the
templates, regenerate them and review the diff:

    cd /work/main && /tmp/venv/bin/python -c "import sys; sys.path.insert(0, 'tests'); import test_report_render as t; t.write_golden()"
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import orjson
import pytest

from report.render import render
from scanner.errors import ConfigError
from scanner.store import connect
from test_diff import build_history, golden_model, history, utc  # noqa: F401 - fixtures

GOLDEN = Path(__file__).parent / "golden"
FILES = {"text": "report.txt", "html": "report.html", "json": "report.json"}


def write_golden() -> None:
    """Rewrite tests/golden/ from the current code (see the module docstring)."""
    os.environ["TZ"] = "UTC"
    time.tzset()
    with tempfile.TemporaryDirectory() as directory:
        con = connect(Path(directory))
        build_history(con)
        model = golden_model(con)
        con.close()
    GOLDEN.mkdir(exist_ok=True)
    for fmt, name in FILES.items():
        (GOLDEN / name).write_text(render(model, fmt), encoding="utf-8")


@pytest.fixture
def model(history, utc):
    """The golden report's model (history and utc come from test_diff)."""
    return golden_model(history)


@pytest.mark.parametrize("fmt", FILES)
def test_golden(model, fmt):
    expected = (GOLDEN / FILES[fmt]).read_text(encoding="utf-8")
    assert render(model, fmt) == expected


def test_text_keeps_the_original_column_table(model):
    lines = render(model, "text").splitlines()
    assert lines[1].split(" | ") == ["session        ", "old" + " " * 47, "new"]
    assert "changed item    | file:///usr/bin/sudo" in lines
    assert "mode            | 0755 rwxr-xr-x" + " " * 36 + " | 4755 rwsr-xr-x" in lines
    for line in lines:
        assert line.replace("\t", " ").isprintable(), line  # terminal-safe


def test_html_escapes_names_and_content(model):
    page = render(model, "html")
    assert "<script" not in page
    assert "file:///tmp/&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "key = &lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "\x1b" not in page


def test_json_is_the_model_and_ndjson_one_change_per_line(model):
    assert orjson.loads(render(model, "json")) == model
    lines = render(model, "ndjson").splitlines()
    assert len(lines) == len(model["changes"])
    first = orjson.loads(lines[0])
    assert first["report"] == model["uuid"] and first["host"] == "web01.example"
    assert first["new_session"] == model["sessions"]["new"]["uuid"]
    assert {orjson.loads(line)["url"] for line in lines} == {c["url"] for c in model["changes"]}


def test_empty_report_says_no_difference(model):
    empty = {**model, "changes": [], "is_empty": True, "logins": [], "warnings": [],
             "counts": {key: 0 for key in model["counts"]}}
    assert "note            | no difference" in render(empty, "text")
    assert "No difference" in render(empty, "html")
    assert render(empty, "ndjson") == ""


def test_template_dir_replaces_builtin_templates_by_name(model, tmp_path):
    (tmp_path / "report.txt.j2").write_text(
        "{{ host }}: {{ summary(counts) }}\n{% for c in changes %}{{ c.kind }} {{ c.url }}\n{% endfor %}")
    text = render(model, "text", template_dir=tmp_path)
    assert text.startswith("web01.example: 9 changed, 3 new, 1 lost, 1 renamed;")
    assert "added file:///tmp/<script>alert(1)</script>\n" in text
    # The HTML template is not in the directory: the built-in one is used.
    assert render(model, "html", template_dir=tmp_path) == render(model, "html")
    # A user template can extend the built-in one.
    (tmp_path / "report.html.j2").write_text(
        '{% extends "builtin/report.html.j2" %}')
    assert render(model, "html", template_dir=tmp_path) == render(model, "html")


def test_user_html_template_is_autoescaped_and_errors_name_the_file(model, tmp_path):
    (tmp_path / "report.html.j2").write_text("{% for c in changes %}{{ c.url }}{% endfor %}")
    assert "<script>" not in render(model, "html", template_dir=tmp_path)
    (tmp_path / "report.txt.j2").write_text("{{ no_such_key }}")
    with pytest.raises(ConfigError, match=r"report\.txt\.j2: 'no_such_key' is undefined"):
        render(model, "text", template_dir=tmp_path)
    with pytest.raises(ConfigError, match="no such directory"):
        render(model, "text", template_dir=tmp_path / "missing")
