"""conffile: which hashed files also have their text stored, and in what form.

The decision is made inside the hash workers, on the bytes they already read, so a
configuration file is read once. ``ContentSelector`` is the picklable callable the
workers receive (``hasher._options["content"]``); for each regular file it returns
``(text to store as UTF-8 bytes, None)`` or ``(None, note)``:

1. a path outside the conffile ``include`` globs: ``(None, None)``, hashed only;
2. a path matching ``exclude``: note ``secret: matches exclude``;
3. more than ``size_limit`` bytes: note ``larger than size_limit``;
4. not text (rule below): note ``binary``;
5. text holding a PEM private key block (``-----BEGIN ... PRIVATE KEY-----``): note
   ``secret: holds a private key``;
6. otherwise the text, with every ``redact`` match masked as ``***`` (note
   ``redacted`` when something was masked), re-encoded as UTF-8.

Text detection, from the content alone:

- empty is text;
- a UTF-16 byte order mark (FF FE or FE FF) means UTF-16: text if it decodes and
  holds no NUL character, else binary;
- any other NUL byte means binary;
- valid UTF-8 is text;
- otherwise 8-bit text (decoded as Latin-1) if at most 1 byte in 100 is a control
  character other than tab, newline, carriage return, form feed and backspace
  (random binary data has about 11 in 100), else binary.

A masking regex (``redact`` here, ``scrub`` for commands) is applied with ``^``
and ``$`` matching at every line. When it has groups, only the groups that took
part in a match are masked (``password\\s*=\\s*(\\S+)`` keeps ``password = ``);
otherwise the whole match is.
"""

from __future__ import annotations

import codecs
import os
import re
from dataclasses import dataclass

from scanner.config import Config, Section
from scanner.errors import ConfigError
from scanner.globs import GlobSet
from scanner.hasher import BIG_FILE
from scanner.values import parse_lines, parse_size

SECRET_EXCLUDED = "secret: matches exclude"
SECRET_KEY = "secret: holds a private key"
TOO_LARGE = "larger than size_limit"
BINARY = "binary"
REDACTED = "redacted"
MASK = "***"

_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Control bytes that plain text does not hold: all of C0 and DEL but \t \n \r \f \b.
_CONTROL_BYTES = bytes(b for b in [*range(32), 127] if b not in b"\t\n\r\f\b")


def decode_text(data: bytes) -> str | None:
    """The text of ``data``, or None when it is binary (rule in the module docstring)."""
    if not data:
        return ""
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return None
        return None if "\0" in text else text
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    controls = len(data) - len(data.translate(None, _CONTROL_BYTES))
    return None if controls * 100 > len(data) else data.decode("latin-1")


def mask(pattern: re.Pattern[str], text: str, replacement: str) -> tuple[str, int]:
    """``text`` with the matches of ``pattern`` (or their groups) replaced; and the count.

    With groups, only the groups that took part in a match are replaced; a match in
    which none did (another branch of an alternation) is replaced whole.
    """
    if not pattern.groups:
        return pattern.subn(replacement, text)

    def replace(match: re.Match[str]) -> str:
        spans = [match.span(i) for i in range(1, pattern.groups + 1)]
        spans = [(start, end) for start, end in spans if start >= 0]
        if not spans:
            return replacement
        out, position = [], match.start()
        for start, end in sorted(spans):
            if start < position:
                continue  # a group nested in one already masked
            out += [match.string[position:start], replacement]
            position = end
        out.append(match.string[position:match.end()])
        return "".join(out)

    return pattern.subn(replace, text)


@dataclass(frozen=True)
class ContentSelector:
    """Decides, in a hash worker, what of a file's bytes is stored (module docstring)."""

    include: GlobSet
    exclude: GlobSet
    size_limit: int
    redact: tuple[re.Pattern[str], ...] = ()

    def __reduce__(self) -> tuple:
        # GlobSet holds generated functions, which do not pickle: send the patterns.
        return (_rebuild, (self.include.patterns, self.include.cwd, self.exclude.patterns,
                           self.exclude.cwd, self.size_limit,
                           tuple(p.pattern for p in self.redact)))

    def __call__(self, path: str, data: bytes | None) -> tuple[bytes | None, str | None]:
        """(UTF-8 text to store, None) or (None, why not); data None means too big to hold."""
        if not self.include.match(path):
            return None, None
        if self.exclude.match(path):
            return None, SECRET_EXCLUDED
        if data is None or len(data) > self.size_limit:
            return None, TOO_LARGE
        text = decode_text(data)
        if text is None:
            return None, BINARY
        if _PRIVATE_KEY.search(text):
            return None, SECRET_KEY
        masked = 0
        for pattern in self.redact:
            text, count = mask(pattern, text, MASK)
            masked += count
        return text.encode("utf-8"), REDACTED if masked else None

    def fingerprint(self) -> str:
        """A string that changes whenever the settings would store other content."""
        return repr((self.include.patterns, self.include.cwd, self.exclude.patterns,
                     self.exclude.cwd, self.size_limit, [p.pattern for p in self.redact]))


def _rebuild(include: tuple[str, ...], include_cwd: str, exclude: tuple[str, ...],
             exclude_cwd: str, size_limit: int, redact: tuple[str, ...]) -> ContentSelector:
    return ContentSelector(GlobSet(include, include_cwd), GlobSet(exclude, exclude_cwd),
                           size_limit, tuple(re.compile(r, re.MULTILINE) for r in redact))


def content_selector(config: Config) -> ContentSelector | None:
    """The [conffile] settings as a selector, or None when the collector is disabled."""
    if not config.enabled("conffile"):
        return None
    section = config.section("conffile")
    size_limit = parse_size(section.get("size_limit", ""), **section.where("size_limit"))
    if size_limit > BIG_FILE:
        # Bigger files are hashed through a buffer and never held whole in memory.
        raise ConfigError(f"at most {BIG_FILE} (1M), got {size_limit}",
                          **section.where("size_limit"))
    redact = []
    for expression in parse_lines(section.get("redact", "")):
        try:
            redact.append(re.compile(expression, re.MULTILINE))
        except re.error as error:
            raise ConfigError(f"invalid regular expression {expression!r}: {error}",
                              **section.where("redact")) from None
    return ContentSelector(_globs(section, "include"), _globs(section, "exclude"),
                           size_limit, tuple(redact))


def _globs(section: Section, key: str) -> GlobSet:
    try:
        return GlobSet(parse_lines(section.get(key, "")), cwd=os.getcwd())
    except ValueError as error:
        raise ConfigError(str(error), **section.where(key)) from None
