"""Item keys (urls) for paths, and back.

A path may hold any byte but NUL and '/': newlines, terminal escapes, bytes that are
not UTF-8. DuckDB stores UTF-8 text and reports go to terminals and mail, so a url
writes a backslash as ``\\\\`` and every byte of a character that is not printable (or
not UTF-8) as ``\\xNN``. The mapping is one-to-one: ``url_to_path`` gives back the exact
bytes, so export round-trips, and the common path costs one ``isprintable`` check.
"""

from __future__ import annotations

import os
import re

FILE_SCHEME = "file://"
_ESCAPE = re.compile(rb"\\(\\|x[0-9a-f]{2})")


def path_to_url(path: str) -> str:
    """The url of a path given as str (non-UTF-8 bytes as surrogate escapes, as os.scandir gives)."""
    if path.isprintable() and "\\" not in path:
        return FILE_SCHEME + path
    return FILE_SCHEME + escape(path)


def escape(text: str) -> str:
    """Write ``text`` with only printable characters, reversibly (see the module docstring)."""
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not char.isprintable() or 0xD800 <= code <= 0xDFFF:
            out.append("".join(f"\\x{b:02x}" for b in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return "".join(out)


def unescape(text: str) -> bytes:
    """The exact bytes that ``escape`` wrote as ``text``."""
    raw = text.encode("utf-8")
    if b"\\" not in raw:
        return raw
    return _ESCAPE.sub(lambda m: b"\\" if m.group(1) == b"\\" else bytes([int(m.group(1)[1:], 16)]), raw)


def url_to_path(url: str) -> str:
    """The filesystem path (str with surrogate escapes, ready for os calls) of a file:// url."""
    rest = url[len(FILE_SCHEME):]
    if "\\" not in rest:
        return rest
    return os.fsdecode(unescape(rest))
