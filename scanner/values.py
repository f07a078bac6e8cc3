"""Typed readers for INI values; each raises ConfigError naming file, section and key."""

from __future__ import annotations

import re

from scanner.errors import ConfigError

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_SIZE = re.compile(r"\s*(\d+)\s*([kmgt]i?b?|b)?\s*", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_bool(value: str, *, file: str | None = None, section: str | None = None,
               key: str | None = None) -> bool:
    """Read true/false/yes/no/on/off/1/0 (any case)."""
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ConfigError(f"expected true/false/yes/no/on/off/1/0, got {value!r}",
                      file=file, section=section, key=key)


def parse_int(value: str, *, minimum: int | None = None, file: str | None = None,
              section: str | None = None, key: str | None = None) -> int:
    """Read a decimal integer, optionally bounded below."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"expected an integer, got {value!r}",
                          file=file, section=section, key=key) from None
    if minimum is not None and number < minimum:
        raise ConfigError(f"must be at least {minimum}, got {number}",
                          file=file, section=section, key=key)
    return number


def parse_float(value: str, *, minimum: float | None = None, file: str | None = None,
                section: str | None = None, key: str | None = None) -> float:
    """Read a decimal number (seconds, for example), optionally bounded below."""
    try:
        number = float(value.strip())
    except ValueError:
        raise ConfigError(f"expected a number, got {value!r}",
                          file=file, section=section, key=key) from None
    if number != number or (minimum is not None and number < minimum):
        raise ConfigError(f"must be a number of at least {minimum}, got {value!r}",
                          file=file, section=section, key=key)
    return number


def parse_size(value: str, *, file: str | None = None, section: str | None = None,
               key: str | None = None) -> int:
    """Read a byte count such as 262144, 256k, 256KiB or 1M (binary multiples)."""
    found = _SIZE.fullmatch(value)
    if not found:
        raise ConfigError(f"expected a size such as 262144, 256k or 1M, got {value!r}",
                          file=file, section=section, key=key)
    unit = (found.group(2) or "").lower()[:1]
    return int(found.group(1)) * _SIZE_FACTORS[unit]


def parse_lines(value: str) -> list[str]:
    """Split a multi-line value (one item per line) into stripped, non-blank items.

    Lines starting with '#' are comments, as in the original's sample configs where
    an include line was commented out inside the list.
    """
    return [line.strip() for line in value.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def parse_csv(value: str) -> list[str]:
    """Split a comma-separated (or newline-separated) value into stripped items."""
    return [item.strip() for item in re.split(r"[,\n]", value) if item.strip()]
