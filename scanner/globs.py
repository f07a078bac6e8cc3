r"""Ant-style globs, matched against whole absolute paths and compiled once.

The syntax is the original syschangemon's, so old configurations keep working:

=========  ===============================================================
``?``      one character other than ``/``
``*``      any run of characters without ``/`` (the empty run too)
``**``     any run of characters, ``/`` included: ``**.bak`` is every path
           ending in ``.bak``, ``/etc/**`` everything below /etc (not /etc)
``/**/``   zero or more directories: ``/home/**/.ssh`` matches /home/.ssh
           and /home/joe/.ssh
``[...]``  one character of a class: ``[abc]``, ``[a-z]``; ``[!...]`` or
           ``[^...]`` negates it; a ``]`` right after the opening ``[`` (or
           ``[!``) is a member; a class never matches ``/``
``\``      takes the next character literally: ``\*``, ``\[``, ``\\``
=========  ===============================================================

Everything else is literal. A glob matches a path only as a whole: ``/etc/*``
matches /etc/passwd, not /etc/ssh/sshd_config.

- A glob starting with ``/`` is absolute. One starting with ``**`` matches
  anywhere. Any other glob is relative to the working directory given with it.
- A glob ending in ``/`` means everything below: ``/var/cache/`` is
  ``/var/cache/**`` (as in Ant).
- ``.`` and ``..`` components and doubled slashes are resolved as in paths;
  ``..`` after a component with a wildcard is an error.

Examples: ``/etc/**`` (everything under /etc), ``/etc/*.conf`` (.conf files
directly in /etc), ``**~`` (editor backups anywhere), ``/home/*/.ssh/**``
(every user's .ssh), ``/var/log/syslog.[0-9]`` (rotated logs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# A token is (kind, value): ("L", text) literal, ("?", "") , ("*", ""),
# ("**", ""), ("[", class regex), ("/", "/") separator.
Token = tuple[str, str]
Component = tuple[Token, ...]
_DSTAR: Component = (("**", ""),)
_WILD = frozenset("?*[")


def _bad(pattern: str, why: str) -> ValueError:
    return ValueError(f"invalid glob {pattern!r}: {why}")


def _parse_class(pattern: str, start: int) -> tuple[str, int]:
    """Translate the class opening at ``pattern[start]``; return (regex, index after ``]``)."""
    i, n = start + 1, len(pattern)
    negate = i < n and pattern[i] in "!^"
    i += negate
    items: list[str] = []

    def char() -> str:
        nonlocal i
        if pattern[i] == "\\":
            if i + 1 == n:
                raise _bad(pattern, f"unclosed '[' at position {start}")
            i += 2
            return pattern[i - 1]
        i += 1
        return pattern[i - 1]

    while True:
        if i >= n:
            raise _bad(pattern, f"unclosed '[' at position {start}")
        if pattern[i] == "]" and items:
            break
        low = char()
        if i + 1 < n and pattern[i] == "-" and pattern[i + 1] != "]":
            i += 1
            high = char()
            if high < low:
                raise _bad(pattern, f"reversed range {low}-{high} in class at position {start}")
            items.append(f"{re.escape(low)}-{re.escape(high)}")
        else:
            items.append(re.escape(low))
    body = "".join(items)
    # A class must stay inside one path component, whatever its members say.
    return (f"[^{body}/]" if negate else f"(?!/)[{body}]"), i + 1


def _tokenize(pattern: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 == n:
                raise _bad(pattern, "ends with an unfinished '\\' escape")
            c = pattern[i + 1]
            tokens.append(("/", "/") if c == "/" else ("L", c))
            i += 2
        elif c == "*":
            j = i
            while j < n and pattern[j] == "*":
                j += 1
            tokens.append(("**" if j - i > 1 else "*", ""))
            i = j
        elif c == "[":
            regex, i = _parse_class(pattern, i)
            tokens.append(("[", regex))
        else:
            tokens.append(("/", "/") if c == "/" else (c, "") if c == "?" else ("L", c))
            i += 1
    return tokens


def _merge(tokens: list[Token]) -> Component:
    """Join adjacent literal tokens so that a literal component is one token."""
    out: list[Token] = []
    for kind, value in tokens:
        if kind == "L" and out and out[-1][0] == "L":
            out[-1] = ("L", out[-1][1] + value)
        else:
            out.append((kind, value))
    return tuple(out)


def _literal(comp: Component) -> str | None:
    """The text of a wildcard-free component, or None."""
    if all(kind == "L" for kind, _ in comp):
        return "".join(value for _, value in comp)
    return None


class _Glob:
    """One parsed glob: anchored at / (or matching anywhere) and its components."""

    __slots__ = ("anchored", "comps")

    def __init__(self, pattern: str, cwd: str) -> None:
        if not pattern:
            raise _bad(pattern, "is empty")
        tokens = _tokenize(pattern)
        self.anchored = tokens[0][0] != "**"
        if self.anchored and tokens[0][0] != "/":
            tokens = [("/", "/") if c == "/" else ("L", c) for c in cwd] + [("/", "/")] + tokens
        parts: list[list[Token]] = [[]]
        for token in tokens:
            if token[0] == "/":
                parts.append([])
            else:
                parts[-1].append(token)
        if self.anchored:
            del parts[0]  # the empty name before the leading '/'
        if not parts[-1]:
            parts[-1] = list(_DSTAR)  # Ant: a trailing '/' means everything below
        comps: list[Component] = []
        for comp in map(_merge, parts):
            text = _literal(comp)
            if text in ("", "."):
                continue
            if text == "..":
                if comps and _literal(comps[-1]) is None:
                    raise _bad(pattern, "'..' follows a component with a wildcard")
                if comps:
                    comps.pop()
                continue
            comps.append(comp)
        self.comps = tuple(comps)

    def pieces(self) -> list[str]:
        """Regex fragments whose concatenation matches exactly the paths the glob does."""
        out: list[str] = []
        consumed = False
        last = len(self.comps) - 1
        for k, comp in enumerate(self.comps):
            if (k or self.anchored) and not consumed:
                out.append("/")
            consumed = False
            if comp == _DSTAR and k < last:
                out.append("(?:.*/)?")  # '/**/' also matches a single '/'
                consumed = True
                continue
            out.extend(_piece(t) for t in comp)
        return out or ["/"]

    def may_contain_regex(self) -> str | None:
        """Regex that fully matches ``directory + "/"`` when a path below may match."""
        def nest(k: int) -> str:
            comp = self.comps[k]
            if ("**", "") in comp:
                head = comp[:comp.index(("**", ""))]
                return "(?:" + "".join(map(_piece, head)) + ".*)?"
            if k == len(self.comps) - 1:
                return ""  # the last component lies strictly below the directory
            return "(?:" + "".join(map(_piece, comp)) + "/" + nest(k + 1) + ")?"
        if not self.comps:
            return None  # "/" itself is below nothing
        return ("/" if self.anchored else "") + nest(0)

    def base(self) -> str:
        """The leading wildcard-free directory, unescaped."""
        if not self.anchored:
            return "/"
        names: list[str] = []
        for comp in self.comps:
            text = _literal(comp)
            if text is None:
                break
            names.append(text)
        return "/" + "/".join(names)


def _piece(token: Token) -> str:
    kind, value = token
    if kind == "L":
        return re.escape(value)
    return {"?": "[^/]", "*": "[^/]*", "**": ".*"}.get(kind, value)


def _check_cwd(cwd: str) -> None:
    if not cwd.startswith("/"):
        raise ValueError(f"the working directory for relative globs must be absolute, not {cwd!r}")


def translate(pattern: str, cwd: str = "/") -> str:
    """Return the regular expression of one glob, to be used with ``re.fullmatch``."""
    _check_cwd(cwd)
    return "(?s:" + "".join(_Glob(pattern, cwd).pieces()) + ")"


def literal_base(pattern: str, cwd: str = "/") -> str:
    """Return the directory made of the glob's leading wildcard-free components.

    ``/etc/**`` gives /etc, ``/usr/*/bin`` gives /usr, ``**.bak`` gives /, and a
    glob without wildcards gives its whole path. A walk that starts there sees
    every path the glob can match.
    """
    _check_cwd(cwd)
    return _Glob(pattern, cwd).base()


def is_literal(pattern: str) -> bool:
    """Tell whether the glob names one path (no wildcard once escapes are undone)."""
    glob = _Glob(pattern, "/")
    return glob.anchored and all(_literal(c) is not None for c in glob.comps)


def _fast_path(glob: _Glob) -> tuple[str, str]:
    """Classify a glob as ("literal", path), ("suffix", s), ("prefix", p) or ("regex", "")."""
    if not glob.anchored:
        rest = _literal(glob.comps[0][1:])  # after the leading '**'
        if len(glob.comps) == 1 and rest is not None:
            return "suffix", rest
        return "regex", ""
    texts = [text for text in map(_literal, glob.comps) if text is not None]
    if len(texts) == len(glob.comps):
        return "literal", "/" + "/".join(texts)
    last = glob.comps[-1]
    head = _literal(last[:-1])
    if last[-1] == ("**", "") and head is not None and len(texts) == len(glob.comps) - 1:
        return "prefix", "/" + "/".join(texts + [head])
    return "regex", ""


def _matcher(literals: frozenset[str], suffixes: tuple[str, ...], prefixes: tuple[str, ...],
             regex: Callable[[str], object] | None) -> Callable[[str], bool]:
    """Build ``match(path)`` from only the checks these globs need.

    It runs once per walked entry: skipping empty checks and the method call
    takes a third off its cost (bench/test_bench_globs.py), hence the generated code.
    """
    checks = [check for check, needed in (
        ("path.endswith(suffixes)", suffixes),
        ("path in literals", literals),
        ("path.startswith(prefixes)", prefixes),
        ("regex(path) is not None", regex),
    ) if needed]
    source = ("def make(literals, suffixes, prefixes, regex):\n"
              "    def match(path):\n"
              f"        return {' or '.join(checks) or 'False'}\n"
              "    return match\n")
    namespace: dict[str, Callable[..., Callable[[str], bool]]] = {}
    exec(source, namespace)  # noqa: S102 - fixed source, values passed as arguments
    match = namespace["make"](literals, suffixes, prefixes, regex)
    match.__doc__ = "Tell whether some glob matches the whole (absolute, normalized) path."
    return match


def _compile(regexes: list[str]) -> re.Pattern[str] | None:
    if not regexes:
        return None
    return re.compile("|".join(f"(?:{r})" for r in regexes), re.DOTALL)


class GlobSet:
    """An immutable set of globs: does a path match, and can a directory be pruned?

    ``GlobSet(patterns, cwd="/")`` raises ValueError naming the first invalid glob;
    relative globs are resolved against ``cwd``. ``match(path) -> bool`` tells
    whether some glob matches the whole path. It runs for every walked entry, so
    the common shapes skip the regex: literal paths are a set lookup, ``**<suffix>``
    an ``endswith`` and ``<prefix>**`` a ``startswith``; only the other globs form
    one combined regex.
    """

    __slots__ = ("patterns", "cwd", "match", "_anywhere", "_may", "_cover", "_bases")

    patterns: tuple[str, ...]
    #: ``match(path) -> bool``: does some glob match the whole (absolute, normalized)
    #: path? An attribute, not a method, so that a call costs no more than its checks.
    match: Callable[[str], bool]

    def __init__(self, patterns: Iterable[str], cwd: str = "/") -> None:
        _check_cwd(cwd)
        setattr_ = object.__setattr__
        setattr_(self, "patterns", tuple(patterns))
        setattr_(self, "cwd", cwd)
        literals: set[str] = set()
        suffixes: list[str] = []
        prefixes: list[str] = []
        regexes: list[str] = []
        may: list[str] = []
        cover: list[str] = []
        bases: set[str] = set()
        anywhere = False
        for pattern in self.patterns:
            glob = _Glob(pattern, cwd)
            pieces = glob.pieces()
            bases.add(glob.base())
            if pieces[-1] == ".*":
                cover.append("".join(pieces[:-1]))
            if (regex := glob.may_contain_regex()) is not None:
                may.append(regex)
            kind, text = _fast_path(glob)
            if kind == "literal":
                literals.add(text)
            elif kind == "suffix":
                suffixes.append(text)
            elif kind == "prefix":
                prefixes.append(text)
            else:
                regexes.append("".join(pieces))
            anywhere = anywhere or not glob.anchored
        compiled = _compile(regexes)
        setattr_(self, "match", _matcher(frozenset(literals), tuple(suffixes), tuple(prefixes),
                                         compiled.fullmatch if compiled else None))
        setattr_(self, "_anywhere", anywhere)
        compiled = _compile(may)
        setattr_(self, "_may", compiled.fullmatch if compiled else None)
        compiled = _compile(cover)
        setattr_(self, "_cover", compiled.match if compiled else None)
        kept: list[str] = []
        for base in sorted(bases):
            if not any(base.startswith(k.rstrip("/") + "/") for k in kept):
                kept.append(base)
        setattr_(self, "_bases", kept)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("GlobSet is immutable")

    def __repr__(self) -> str:
        return f"GlobSet({list(self.patterns)!r}, cwd={self.cwd!r})"

    def __reduce__(self) -> tuple:
        # Pickled as its patterns (for the worker processes): the matcher is generated code.
        return GlobSet, (self.patterns, self.cwd)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def may_contain(self, directory: str) -> bool:
        """Tell whether some glob could match a path strictly below ``directory``.

        Never False wrongly; exact for globs without ``**``. A walk need not
        enter a directory for which this is False.
        """
        if self._anywhere:
            return True
        may = self._may
        return may is not None and may(_below(directory)) is not None

    def covers(self, directory: str) -> bool:
        """Tell whether some glob matches every path strictly below ``directory``.

        True for ``/proc/**`` and /proc or /proc/1, for ``**`` and anything; never
        True wrongly. A walk may skip a directory that the excludes cover.
        """
        cover = self._cover
        return cover is not None and cover(_below(directory)) is not None

    def bases(self) -> list[str]:
        """The globs' literal bases, sorted, without those that lie below another."""
        return list(self._bases)


def _below(directory: str) -> str:
    return directory if directory.endswith("/") else directory + "/"
