"""Configuration: trust checks as root, and any input gives a result or a clear error."""

from __future__ import annotations

import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_tree
from scanner.config import load_config
from scanner.errors import ConfigError


@pytest.mark.skipif(os.geteuid() != 0, reason="the trust check applies to root")
@pytest.mark.parametrize("target, mode, owner", [
    ("plugins.d/file.conf", 0o666, 0),   # world-writable file
    ("plugins.d/file.conf", 0o664, 0),   # group-writable file
    ("plugins.d", 0o777, 0),             # writable directory
    ("plugins.d/file.conf", 0o644, 65534),  # not owned by root
])
def test_root_refuses_config_others_could_have_written(host, target, mode, owner):
    make_tree(host.tree, {"a": "1"})
    path = host.confdir / target
    os.chmod(path, mode)
    os.chown(path, owner, -1)
    result = host.run("collect", expect=3)
    assert str(path) in result.stderr
    assert "refusing it, since it names commands that run as root" in result.stderr
    assert not (host.storage / "db.duckdb").exists()


INI_TEXT = st.text(alphabet=string.printable + "äß\x00\x1b[]=:#;", max_size=300)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=INI_TEXT)
def test_any_file_loads_or_fails_with_a_config_error(tmp_path, text):
    conf = tmp_path / "syschangemon.conf"
    try:
        conf.write_text(text, encoding="utf-8", errors="surrogateescape")
    except ValueError:
        return
    try:
        config = load_config(str(conf), is_root=False)
    except ConfigError as error:
        assert "\n" not in str(error).strip()
        assert str(conf) in str(error) or "[" in str(error)
        return
    assert config.section("syschangemon").get("session_keep")  # defaults filled in


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(max_size=40))
def test_any_value_of_a_typed_key_is_accepted_or_named(host, value):
    from scanner.collectors.file import file_settings
    value = value.replace("\r", " ").replace("\n", " ")
    (host.confdir / "plugins.d" / "file.conf").write_text(
        f"[file]\nenable_plugin = true\nworkers = {value}\none_filesystem = {value}\n")
    try:
        file_settings(load_config(str(host.confdir), is_root=False))
    except ConfigError as error:
        assert "[file]" in str(error) and ("workers" in str(error) or "one_filesystem" in str(error))
