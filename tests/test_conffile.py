"""conffile: which file texts are stored, decided in the hash workers; secrets never reach the DB."""

from __future__ import annotations

import codecs
import pickle
import re

import blake3
import pytest

from conftest import make_tree
from scanner.collectors.conffile import ContentSelector, content_selector, decode_text, mask
from scanner.config import load_config
from scanner.errors import ConfigError
from scanner.globs import GlobSet

PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\n"


# --- text detection ------------------------------------------------------------------

def test_empty_is_text() -> None:
    assert decode_text(b"") == ""


def test_utf8_is_text() -> None:
    assert decode_text("Grüße\n".encode()) == "Grüße\n"


def test_latin1_is_text() -> None:
    assert decode_text("Grüße, café\n".encode("latin-1")) == "Grüße, café\n"


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be"])
def test_utf16_with_bom_is_text(codec: str) -> None:
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE}.get(codec, b"")
    data = bom + "key = wert ß\r\n".encode(codec)
    assert b"\0" in data
    assert decode_text(data) == "key = wert ß\r\n"


def test_utf16_without_bom_is_binary() -> None:
    assert decode_text("plain".encode("utf-16-le")) is None


def test_nul_byte_is_binary() -> None:
    assert decode_text(b"\x7fELF\x02\x01\x01\x00\x00\x00") is None


def test_control_heavy_8bit_data_is_binary() -> None:
    noise = bytes(range(1, 256)) * 4  # no NUL, not UTF-8, many control bytes
    assert decode_text(noise) is None
    # A few stray control bytes in Latin-1 text are still text.
    assert decode_text(b"caf\xe9 " * 30 + b"\x1b") is not None


def test_mask_replaces_groups_or_whole_matches() -> None:
    pattern = re.compile(r"password\s*=\s*(\S+)|token", re.MULTILINE)
    assert mask(pattern, "password = hunter2\ntoken x\n", "***") == (
        "password = ***\n*** x\n", 2)
    assert mask(re.compile(r"\d+"), "pid 12 fd 3", "*") == ("pid * fd *", 2)


# --- the selector ----------------------------------------------------------------------

def selector(**overrides) -> ContentSelector:
    values = dict(include=GlobSet(["/etc/**"]), exclude=GlobSet(["/etc/shadow*", "**.key"]),
                  size_limit=100, redact=(re.compile(r"pw=(\S+)", re.MULTILINE),))
    return ContentSelector(**{**values, **overrides})


def test_selector_decisions() -> None:
    choose = selector()
    assert choose("/usr/bin/ls", b"text") == (None, None)  # hashed, not stored
    assert choose("/etc/shadow", b"root:$6$x:") == (None, "secret: matches exclude")
    assert choose("/etc/ssl/a.key", b"x") == (None, "secret: matches exclude")
    assert choose("/etc/big", b"x" * 101) == (None, "larger than size_limit")
    assert choose("/etc/huge", None) == (None, "larger than size_limit")
    assert choose("/etc/bin", b"\0\1\2") == (None, "binary")
    assert choose("/etc/id", PEM.encode()) == (None, "secret: holds a private key")
    assert choose("/etc/app.conf", b"user=a pw=s3cret\n") == (b"user=a pw=***\n", "redacted")
    assert choose("/etc/latin1", "café\n".encode("latin-1")) == ("café\n".encode(), None)
    assert choose("/etc/empty", b"") == (b"", None)


def test_selector_survives_pickling_as_pool_workers_get_it() -> None:
    choose = pickle.loads(pickle.dumps(selector()))
    assert choose("/etc/shadow", b"x") == (None, "secret: matches exclude")
    assert choose("/etc/app.conf", b"pw=1\n") == (b"pw=***\n", "redacted")
    assert choose.fingerprint() == selector().fingerprint()


def test_shipped_defaults_keep_secrets_and_store_sudoers(tmp_path) -> None:
    conf = tmp_path / "plugins.d"
    conf.mkdir()
    (conf / "conffile.conf").write_text("[conffile]\nenable_plugin = true\n")
    choose = content_selector(load_config(str(tmp_path), is_root=False))
    assert choose("/etc/sudoers", b"root ALL=(ALL:ALL) ALL\n") == (b"root ALL=(ALL:ALL) ALL\n", None)
    for secret in ("/etc/shadow", "/etc/gshadow-", "/etc/ssh/ssh_host_ed25519_key",
                   "/etc/ssl/private/snakeoil.pem", "/etc/app/tls.key", "/etc/x.secret"):
        assert choose(secret, b"data") == (None, "secret: matches exclude"), secret
    assert choose("/etc/ssh/ssh_host_ed25519_key.pub", b"ssh-ed25519 AAAA\n")[1] is None
    assert choose("/etc/mysql/debian.cnf", b"user = debian\npassword = s3cret\n") == (
        b"user = debian\npassword = ***\n", "redacted")
    assert choose("/etc/nsswitch.conf", b"passwd: files\n") == (b"passwd: files\n", None)
    assert choose("/usr/bin/ls", b"\x7fELF") == (None, None)


def test_bad_settings_name_the_key(tmp_path) -> None:
    conf = tmp_path / "plugins.d"
    conf.mkdir()
    for line, key in (("size_limit = 2M", "size_limit"), ("redact = (unclosed", "redact"),
                      ("include = /etc/[", "include")):
        (conf / "conffile.conf").write_text(f"[conffile]\nenable_plugin = true\n{line}\n")
        with pytest.raises(ConfigError) as caught:
            content_selector(load_config(str(tmp_path), is_root=False))
        assert f"[conffile]: {key}:" in str(caught.value)


# --- end to end: the installed CLI and the database file --------------------------------

def conffile_plugin(host, *, exclude: list[str], redact: str = r"password\s*=\s*(\S+)",
                    size_limit: str = "4k") -> dict[str, str]:
    lines = "".join(f"    {item}\n" for item in exclude)
    return {"conffile": f"[conffile]\nenable_plugin = true\ninclude =\n    {host.tree}/etc/**\n"
                        f"exclude =\n{lines}size_limit = {size_limit}\nredact = {redact}\n"}


def current(host) -> dict[str, tuple]:
    rows = host.query("SELECT v.url, v.note, c.data FROM versions v "
                      "LEFT JOIN contents c ON c.digest = v.content WHERE v.until IS NULL")
    return {url.rsplit("/", 1)[-1]: (note, data) for url, note, data in rows}


def raw_database(host) -> bytes:
    """The database file and its write-ahead log, as bytes on disk."""
    return b"".join(path.read_bytes() for path in host.storage.glob("db.duckdb*"))


def test_collect_stores_text_withholds_secrets_and_masks(host) -> None:
    make_tree(host.tree, {
        "etc": {
            "sudoers": "root ALL=(ALL) ALL # SUDOERS-VISIBLE-MARKER\n",
            "shadow": "root:SHADOW-SECRET-MARKER:19000::::::\n",
            "id_ed25519": "comment\n" + PEM.replace("b3Bl", "PEM-SECRET-MARKER"),
            "app.conf": "user = a\npassword = REDACTED-SECRET-MARKER\n",
            "latin1.conf": "name = caf\xe9\n".encode("latin-1"),
            "utf16.conf": codecs.BOM_UTF16_LE + "a = 1\n".encode("utf-16-le"),
            "blob.bin": b"\0\1\2\3",
            "big.conf": "x" * 5000,
            "empty": "",
        },
        "bin": {"tool": "#!/bin/sh\necho NOT-STORED-MARKER\n"},
    })
    host.configure(plugins=conffile_plugin(host, exclude=["**/shadow*"]))
    host.run("collect")
    items = current(host)
    assert items["sudoers"] == (None, b"root ALL=(ALL) ALL # SUDOERS-VISIBLE-MARKER\n")
    assert items["shadow"] == ("secret: matches exclude", None)
    assert items["id_ed25519"] == ("secret: holds a private key", None)
    assert items["app.conf"] == ("redacted", b"user = a\npassword = ***\n")
    assert items["latin1.conf"] == (None, "name = café\n".encode())
    assert items["utf16.conf"] == (None, b"a = 1\n")
    assert items["blob.bin"] == ("binary", None)
    assert items["big.conf"] == ("larger than size_limit", None)
    assert items["empty"] == (None, b"")
    assert items["tool"] == (None, None)  # under [file], not under conffile include
    # Digests name the stored text.
    digest = host.query("SELECT content FROM versions WHERE url LIKE '%/sudoers'")[0][0]
    assert digest == blake3.blake3(items["sudoers"][1]).digest()
    raw = raw_database(host)
    assert b"SUDOERS-VISIBLE-MARKER" in raw  # stored text is findable, so the check below can fail
    for secret in (b"SHADOW-SECRET-MARKER", b"PEM-SECRET-MARKER", b"REDACTED-SECRET-MARKER",
                   b"NOT-STORED-MARKER"):
        assert secret not in raw, secret


def test_a_text_flipping_between_two_versions_costs_two_blobs(host) -> None:
    make_tree(host.tree, {"etc": {"a.conf": "one\n"}})
    host.configure(plugins=conffile_plugin(host, exclude=[]))
    for text in ("two\n", "one\n", "two\n", "one\n"):
        host.run("collect")
        (host.tree / "etc" / "a.conf").write_text(text)
    assert host.query("SELECT count(*) FROM contents")[0][0] == 2
    assert host.query("SELECT count(*) FROM versions WHERE url LIKE '%a.conf'")[0][0] == 4


def test_new_exclude_withholds_the_text_of_an_unchanged_file(host) -> None:
    make_tree(host.tree, {"etc": {"token.conf": "token = abc\n", "other.conf": "x\n"}})
    host.configure(plugins=conffile_plugin(host, exclude=[]))
    host.run("collect")
    assert current(host)["token.conf"] == (None, b"token = abc\n")
    host.configure(plugins=conffile_plugin(host, exclude=["**/token.conf"]))
    host.run("collect")
    assert current(host)["token.conf"] == ("secret: matches exclude", None)
    assert current(host)["other.conf"] == (None, b"x\n")
    # The settings are unchanged now: the next collect re-reads nothing.
    assert "0 read" in host.run("collect").stdout
