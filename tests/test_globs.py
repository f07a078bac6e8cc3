"""The glob matcher: the documented syntax, pruning answers, and properties against references."""

from __future__ import annotations

import functools
import re

import pytest
from hypothesis import given, settings, strategies as st

from scanner.globs import GlobSet, is_literal, literal_base, translate

MATCH_CASES = [
    # literal
    ("/etc/passwd", "/etc/passwd", True),
    ("/etc/passwd", "/etc/passwd-", False),
    ("/etc/passwd", "/etc", False),
    ("/etc/passwd", "/var/etc/passwd", False),
    # ?
    ("/etc/?asswd", "/etc/passwd", True),
    ("/etc/?asswd", "/etc/asswd", False),
    ("/etc?passwd", "/etc/passwd", False),
    # *
    ("/etc/*", "/etc/passwd", True),
    ("/etc/*", "/etc/ssh/sshd_config", False),
    ("/etc/*", "/etc", False),
    ("/etc/*.conf", "/etc/.conf", True),
    ("/etc/*.conf", "/etc/a.conf.bak", False),
    ("/home/*/.ssh/**", "/home/joe/.ssh/id_ed25519", True),
    ("/home/*/.ssh/**", "/home/joe/x/.ssh/id_ed25519", False),
    # **
    ("/etc/**", "/etc", False),
    ("/etc/**", "/etc/passwd", True),
    ("/etc/**", "/etc/ssh/sshd_config", True),
    ("/etc/**", "/etcetera/x", False),
    ("**.bak", "/x.bak", True),
    ("**.bak", "/.bak", True),
    ("**.bak", "/a/b/c.bak", True),
    ("**.bak", "/a/b/c.bak/d", False),
    ("**.bak", "/a/bak", False),
    ("**~", "/home/u/.bashrc~", True),
    ("**~", "/home/u/~x", False),
    ("**", "/", True),
    ("**", "/any/thing/at/all", True),
    ("/usr/lib**", "/usr/lib", True),
    ("/usr/lib**", "/usr/lib64/libc.so", True),
    ("/usr/lib**", "/usr/li", False),
    ("**/.git/**", "/src/p/.git/HEAD", True),
    ("**/.git/**", "/src/p/.gitignore", False),
    # '/**/' is zero or more directories
    ("/usr/**/bin/*", "/usr/bin/ls", True),
    ("/usr/**/bin/*", "/usr/local/bin/ls", True),
    ("/usr/**/bin/*", "/usr/a/b/bin/ls", True),
    ("/usr/**/bin/*", "/usr/local/sbin/ls", False),
    ("/usr/**/bin/*", "/usrbin/ls", False),
    # classes
    ("/var/log/syslog.[0-9]", "/var/log/syslog.1", True),
    ("/var/log/syslog.[0-9]", "/var/log/syslog.a", False),
    ("/var/log/syslog.[0-9]", "/var/log/syslog.10", False),
    ("/x/[ab]", "/x/b", True),
    ("/x/[!a]", "/x/b", True),
    ("/x/[!a]", "/x/a", False),
    ("/x/[^a]", "/x/a", False),
    ("/x[!a]y", "/x/y", False),
    ("/x[/]y", "/x/y", False),
    ("/x[.-0]y", "/x/y", False),
    ("/x/[]]", "/x/]", True),
    ("/x/[!]]", "/x/]", False),
    ("/x/[!]]", "/x/a", True),
    ("/x/[a-]", "/x/-", True),
    ("/x/[\\]]", "/x/]", True),
    ("/x/[*?]", "/x/?", True),
    ("/x/[*?]", "/x/a", False),
    # escapes
    ("/x/\\*", "/x/*", True),
    ("/x/\\*", "/x/a", False),
    ("/x/\\?", "/x/?", True),
    ("/x/\\[a]", "/x/[a]", True),
    ("/x/a\\\\b", "/x/a\\b", True),
    ("/x/\\**", "/x/*y", True),
    ("/x/\\**", "/x/*y/z", False),
    ("/x/\\**", "/x/y", False),
    # regular-expression characters are literal
    ("/x/a+b(c)|$", "/x/a+b(c)|$", True),
    ("/x/a.b", "/x/axb", False),
    ("/x/{a,b}", "/x/{a,b}", True),
    ("/x/{a,b}", "/x/a", False),
    # names that are not text: newlines and undecodable bytes (surrogate escapes)
    ("/x/*", "/x/a\nb", True),
    ("/x/a?b", "/x/a\nb", True),
    ("**.bak", "/x/a\n.bak", True),
    ("/x/*", "/x/\udcff", True),
    ("/x/?", "/x/\udcff", True),
    ("/x/[!a]", "/x/\udce9", True),
    ("**.bak", "/x/\udcff.bak", True),
    ("/x/\udcff*", "/x/\udcffa", True),
    ("/x/\udcff", "/x/\udcff", True),
    # written like paths
    ("/etc//passwd", "/etc/passwd", True),
    ("/etc/./passwd", "/etc/passwd", True),
    ("/etc/ssh/../passwd", "/etc/passwd", True),
    ("/etc/", "/etc/passwd", True),
    ("/etc/", "/etc", False),
    ("/", "/bin", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCH_CASES)
def test_match(pattern: str, path: str, expected: bool) -> None:
    assert GlobSet([pattern]).match(path) is expected
    assert bool(re.fullmatch(translate(pattern), path)) is expected


@pytest.mark.parametrize(("pattern", "cwd", "path", "expected"), [
    ("*.conf", "/etc", "/etc/a.conf", True),
    ("*.conf", "/etc", "/a.conf", False),
    ("*.conf", "/etc/", "/etc/a.conf", True),
    ("ssh/**", "/etc", "/etc/ssh/moduli", True),
    ("ssh/**", "/etc", "/ssh/moduli", False),
    ("../passwd", "/etc/ssh", "/etc/passwd", True),
    ("./x", "/tmp", "/tmp/x", True),
    ("**.bak", "/etc", "/var/x.bak", True),  # '**' at the start is not tied to cwd
    ("/var/*", "/etc", "/var/x", True),
    ("[a]", "/d[x]", "/d[x]/a", True),  # the cwd is literal, never a glob
    ("[a]", "/d[x]", "/dx/a", False),
])
def test_relative_globs_resolve_against_cwd(pattern: str, cwd: str, path: str,
                                            expected: bool) -> None:
    assert GlobSet([pattern], cwd=cwd).match(path) is expected


def test_many_globs_match_if_any_does() -> None:
    globs = GlobSet(["/etc/mtab", "**.bak", "/proc/**", "/usr/*/bin/x", "/srv/[ab]*"])
    assert [globs.match(p) for p in (
        "/etc/mtab", "/a/b.bak", "/proc/1/stat", "/usr/local/bin/x", "/srv/bz",
        "/etc/fstab", "/proc", "/usr/local/bin/y", "/srv/cz",
    )] == [True] * 5 + [False] * 4


@pytest.mark.parametrize(("patterns", "directory", "expected"), [
    (["/etc/**"], "/", True),
    (["/etc/**"], "/etc", True),
    (["/etc/**"], "/etc/ssh", True),
    (["/etc/**"], "/var", False),
    (["/etc/**"], "/etcx", False),
    (["/etc/passwd"], "/", True),
    (["/etc/passwd"], "/etc", True),
    (["/etc/passwd"], "/etc/passwd", False),
    (["/etc/passwd"], "/etc/ssh", False),
    (["/usr/*/bin/x"], "/usr", True),
    (["/usr/*/bin/x"], "/usr/local", True),
    (["/usr/*/bin/x"], "/usr/local/bin", True),
    (["/usr/*/bin/x"], "/usr/local/lib", False),
    (["/usr/*/bin/x"], "/usr/local/bin/x", False),
    (["/x/[!a]/y"], "/x/b", True),
    (["/x/[!a]/y"], "/x/a", False),
    (["/a/b**"], "/a", True),
    (["/a/b**"], "/a/bc", True),
    (["/a/b**"], "/a/b/c/d", True),
    (["/a/b**"], "/a/c", False),
    (["/a/**/b"], "/a/x/y", True),
    (["/a/**/b"], "/b", False),
    (["**.bak"], "/any/where", True),
    (["/"], "/", True),
    (["/var/log/**", "/etc/*"], "/etc", True),
    (["/var/log/**", "/etc/*"], "/etc/ssh", False),
    ([], "/", False),
])
def test_may_contain(patterns: list[str], directory: str, expected: bool) -> None:
    assert GlobSet(patterns).may_contain(directory) is expected


@pytest.mark.parametrize(("patterns", "directory", "expected"), [
    (["/proc/**"], "/proc", True),
    (["/proc/**"], "/proc/1", True),
    (["/proc/**"], "/proc/1/task/2", True),
    (["/proc/**"], "/", False),
    (["/proc/**"], "/procx", False),
    (["/proc/"], "/proc", True),
    (["/proc**"], "/procx", True),
    (["/proc**"], "/pro", False),
    (["**"], "/", True),
    (["**"], "/any/thing", True),
    (["/"], "/", True),
    (["/proc/*"], "/proc", False),
    (["/proc"], "/proc", False),
    (["**.bak"], "/x", False),
    (["/home/*/.cache/**"], "/home/joe/.cache", True),
    (["/home/*/.cache/**"], "/home/joe/.cache/x", True),
    (["/home/*/.cache/**"], "/home/joe", False),
    (["/a/**/**"], "/a", True),
    (["**/.git/**"], "/src/p/.git", True),
    (["**/.git/**"], "/src/p", False),
    (["/etc/mtab", "/sys/**"], "/sys/kernel", True),
    ([], "/", False),
])
def test_covers(patterns: list[str], directory: str, expected: bool) -> None:
    assert GlobSet(patterns).covers(directory) is expected


@pytest.mark.parametrize(("pattern", "base"), [
    ("/etc/**", "/etc"),
    ("/usr/*/bin/**", "/usr"),
    ("**.bak", "/"),
    ("/etc/passwd", "/etc/passwd"),
    ("/*/bin", "/"),
    ("/var/log/syslog.[0-9]", "/var/log"),
    ("/opt/a\\*b/**", "/opt/a*b"),
    ("/etc/", "/etc"),
    ("/", "/"),
])
def test_literal_base(pattern: str, base: str) -> None:
    assert literal_base(pattern) == base


def test_literal_base_of_a_relative_glob() -> None:
    assert literal_base("ssh/*", cwd="/etc") == "/etc/ssh"


@pytest.mark.parametrize(("pattern", "expected"), [
    ("/etc/passwd", True),
    ("/etc/pass\\*", True),
    ("/etc/\\[x]", True),
    ("/etc/*", False),
    ("/etc/?", False),
    ("/etc/[x]", False),
    ("/etc/", False),
    ("**", False),
])
def test_is_literal(pattern: str, expected: bool) -> None:
    assert is_literal(pattern) is expected


@pytest.mark.parametrize(("patterns", "bases"), [
    (["/etc/**", "/etc/ssh/**", "/usr/*/bin/**", "/var/log/syslog"],
     ["/etc", "/usr", "/var/log/syslog"]),
    (["/etc/**", "**.bak"], ["/"]),
    (["/a/b/c", "/a-b/**", "/a/**"], ["/a", "/a-b"]),
    (["/x/**", "/x/**"], ["/x"]),
    ([], []),
])
def test_bases(patterns: list[str], bases: list[str]) -> None:
    assert GlobSet(patterns).bases() == bases


@pytest.mark.parametrize(("pattern", "why"), [
    ("/etc/[abc", "unclosed '['"),
    ("/etc/[]", "unclosed '['"),
    ("/etc/[!]", "unclosed '['"),
    ("/etc/x\\", "escape"),
    ("/etc/[z-a]", "reversed range"),
    ("/etc/*/../x", "'..'"),
    ("", "empty"),
])
def test_invalid_globs_are_named(pattern: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(pattern)) + ".*" + re.escape(why)):
        GlobSet(["/ok/**", pattern])


def test_relative_cwd_is_refused() -> None:
    with pytest.raises(ValueError, match="absolute"):
        GlobSet(["*.conf"], cwd="etc")


def test_globset_is_immutable_and_falsy_when_empty() -> None:
    globs = GlobSet(iter(["/a/**", "**~"]))
    assert globs.patterns == ("/a/**", "**~")
    assert globs and not GlobSet([])
    with pytest.raises(AttributeError):
        globs.patterns = ()  # type: ignore[misc]


# --- properties -------------------------------------------------------------

NAME_CHARS = ["a", "b", "A", ".", "*", "\n", "\udcff"]
ATOMS = ["a", "b", ".", "?", "*", "**", "[ab]", "[!a]", "[a-b]", "\\*", "\udcff"]
names = st.lists(st.sampled_from(NAME_CHARS), min_size=1, max_size=3).map("".join).filter(
    lambda name: name not in (".", ".."))


def normalize(path: str) -> str:
    """Make a path look like one os.scandir produces."""
    return "/" + "/".join(n for n in path.split("/") if n not in ("", ".", ".."))


def escape(literal: str) -> str:
    return re.sub(r"([*?\[\\])", r"\\\1", literal)


@st.composite
def glob_and_path(draw: st.DrawFn, tail: str = "") -> tuple[str, str]:
    """A glob and a path made by filling in its wildcards (often, not always, a match)."""
    comps = draw(st.lists(st.lists(st.sampled_from(ATOMS), min_size=1, max_size=3),
                          min_size=1, max_size=4))
    comps = [c if "".join(c) not in (".", "..") else ["a"] for c in comps]
    lead = draw(st.sampled_from(["/", "/", "**/", "**"]))

    def fill(atom: str) -> str:
        if atom == "**":
            return draw(st.sampled_from(["", "a", "/", "a/b", "b/", "/a.b/"]))
        if atom == "*":
            return "".join(draw(st.lists(st.sampled_from(NAME_CHARS), max_size=2)))
        if atom in ("?", "[ab]", "[!a]", "[a-b]"):
            return draw(st.sampled_from(NAME_CHARS))
        return atom.replace("\\", "")

    pattern = lead + "/".join("".join(c) for c in comps) + tail
    path = "/".join("".join(map(fill, c)) for c in comps)
    if lead != "/":
        path = fill("**") + ("/" if lead == "**/" else "") + path
    if tail:
        path += fill("**")
    return pattern, normalize(path)


def naive_match(pattern: str, path: str) -> bool:
    """The documented syntax, matched by plain backtracking (slow, for reference)."""
    @functools.cache
    def at(i: int, j: int) -> bool:
        if i == len(pattern):
            return j == len(path)
        c = pattern[i]
        leading = re.match(r"\*\*+/", pattern) if i == 0 else None
        if leading:
            # a leading '**/' is zero or more directories too: nothing, or anything up to a '/'
            k = leading.end()
            return at(k, j) or any(at(k, e) for e in range(j + 1, len(path) + 1)
                                   if path[e - 1] == "/")
        if c == "*":
            end = i
            while end < len(pattern) and pattern[end] == "*":
                end += 1
            spans = range(j, len(path) + 1)
            if end - i == 1:
                return any(at(end, e) for e in spans if "/" not in path[j:e])
            return any(at(end, e) for e in spans)
        if c == "/" and re.match(r"/\*\*+/", pattern[i:]):
            # '/**/' is zero or more directories: '/**' takes nothing or '/' and anything
            rest = pattern.index("/", i + 1)
            return at(rest, j) or j < len(path) and path[j] == "/" and any(
                at(rest, e) for e in range(j + 1, len(path) + 1))
        if j == len(path):
            return False
        if c == "?":
            return path[j] != "/" and at(i + 1, j + 1)
        if c == "[":
            close = pattern.index("]", i + 2)
            body = pattern[i + 1:close]
            negate = body[0] in "!^"
            body = body[negate:]
            hit = path[j] in body if "-" not in body else body[0] <= path[j] <= body[2]
            return path[j] != "/" and hit != negate and at(close + 1, j + 1)
        if c == "\\":
            i += 1
        return path[j] == pattern[i] and at(i + 1, j + 1)
    return at(0, 0)


@settings(max_examples=400)
@given(glob_and_path(), names)
def test_translate_agrees_with_naive_matcher(case: tuple[str, str], name: str) -> None:
    pattern, path = case
    regex = re.compile(translate(pattern), re.DOTALL)
    for candidate in (path, normalize(path + "/" + name)):
        assert bool(regex.fullmatch(candidate)) == naive_match(pattern, candidate), candidate


@st.composite
def fast_path_globs(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    """Globs in every fast-path shape plus general ones, and paths that hit them."""
    patterns: list[str] = []
    paths: list[str] = []
    for _ in range(draw(st.integers(1, 5))):
        shape = draw(st.sampled_from(["literal", "suffix", "prefix", "prefix-dir", "general"]))
        glob, path = draw(glob_and_path())
        parts = path.split("/")
        if shape == "literal":
            glob = escape(path)
        elif shape == "suffix":
            glob = "**" + escape(parts[-1][-2:])
        elif shape == "prefix":
            glob = escape(path[: draw(st.integers(1, len(path)))]) + "**"
        elif shape == "prefix-dir":
            glob = escape("/".join(parts[:-1])) + "/**"
        patterns.append(glob)
        paths += [path, normalize(path + "/a"), normalize("/".join(parts[:-1]))]
    return patterns, paths


@settings(max_examples=300)
@given(fast_path_globs())
def test_fast_paths_agree_with_the_combined_regex(case: tuple[list[str], list[str]]) -> None:
    patterns, paths = case
    reference = re.compile("|".join(f"(?:{translate(p)})" for p in patterns), re.DOTALL)
    globs = GlobSet(patterns)
    for path in paths:
        assert globs.match(path) == bool(reference.fullmatch(path)), (patterns, path)


def ancestors(path: str) -> list[str]:
    """Every directory strictly above the path, "/" first."""
    names_ = path.split("/")[1:]
    return ["/" + "/".join(names_[:k]) for k in range(len(names_))]


@given(st.lists(st.sampled_from(["**", "/**"]).flatmap(lambda t: glob_and_path(tail=t)),
                min_size=1, max_size=3), st.lists(names, min_size=1, max_size=3))
def test_a_glob_ending_in_double_star_matches_everything_deeper(
        cases: list[tuple[str, str]], deeper: list[str]) -> None:
    globs = GlobSet(pattern for pattern, _ in cases)
    for _, path in cases:
        if globs.match(path):
            for k in range(1, len(deeper) + 1):
                assert globs.match(normalize(path + "/" + "/".join(deeper[:k])))


@st.composite
def globs_and_paths(draw: st.DrawFn) -> tuple[list[str], list[str]]:
    tails = st.sampled_from(["", "", "**", "/**"])
    cases = draw(st.lists(tails.flatmap(lambda t: glob_and_path(tail=t)), min_size=1, max_size=4))
    return [g for g, _ in cases], [p for _, p in cases] + draw(st.lists(
        st.lists(names, max_size=5).map(lambda ns: "/" + "/".join(ns)), max_size=3))


@settings(max_examples=300)
@given(globs_and_paths())
def test_may_contain_is_never_wrongly_false(case: tuple[list[str], list[str]]) -> None:
    patterns, paths = case
    globs = GlobSet(patterns)
    for path in paths:
        if globs.match(path):
            assert all(globs.may_contain(d) for d in ancestors(path)), (patterns, path)


@settings(max_examples=300)
@given(globs_and_paths())
def test_covers_is_never_wrongly_true(case: tuple[list[str], list[str]]) -> None:
    patterns, paths = case
    globs = GlobSet(patterns)
    for path in paths:
        if any(globs.covers(d) for d in ancestors(path)):
            assert globs.match(path), (patterns, path)
