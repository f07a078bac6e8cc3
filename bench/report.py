"""Present results: a plain-text table with ratios, the issue-8 targets, and a JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.runners import Measurement, tool_version

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Target:
    """One issue-8 target: what was measured against what limit, and whether it was met."""

    name: str
    measured: float | None
    limit: float
    unit: str
    note: str = ""
    at_least: bool = False

    @property
    def met(self) -> bool | None:
        """True/False, or None when it could not be measured."""
        if self.measured is None:
            return None
        return self.measured >= self.limit if self.at_least else self.measured <= self.limit

    def line(self) -> str:
        """``MET``/``MISSED``/``n/a``, the figures, and by how much it was missed."""
        if self.measured is None:
            return f"  n/a     {self.name}: {self.note}"
        verdict = "MET   " if self.met else "MISSED"
        factor = self.limit / self.measured if self.at_least else self.measured / self.limit
        over = "" if self.met else f"  (missed by {factor:.2f}x)"
        note = f"  [{self.note}]" if self.note else ""
        sign = ">=" if self.at_least else "<="
        return (f"  {verdict}  {self.name}: {_number(self.measured)}{self.unit} {sign} "
                f"{self.limit:g}{self.unit}{over}{note}")


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def ratio(row: Measurement | None, base: float | None) -> float | None:
    """row's median over ``base``, None when either is missing."""
    if row is None or row.median is None or not base:
        return None
    return row.median / base


def table(rows: list[Measurement], find_s: float | None, limit_s: float | None) -> str:
    """The side-by-side table: median, spread, ratios to the find walk and to find+hash."""
    header = (f"{'what':<44} {'median s':>9} {'min-max s':>13} {'x find':>7} {'x f+b3':>7} "
              f"{'CPU s':>6} {'RSS MB':>7}  note")
    lines = [header, "-" * len(header)]
    group = None
    order = {"peers": 0, "syschangemon": 1}
    for row in sorted(rows, key=lambda r: order.get(r.group, 2)):
        if row.group != group:
            group = row.group
            lines.append(f"[{group}]")
        if row.skipped or row.median is None:
            lines.append(f"  {row.name:<42} {'-':>9} {'':>13} {'':>7} {'':>7} {'':>6} {'':>7}  {row.note}")
            continue
        spread = f"{min(row.times):.2f}-{max(row.times):.2f}"
        cells = [_fmt(ratio(row, find_s), "x"), _fmt(ratio(row, limit_s), "x")]
        rss = f"{row.peak_rss_mb:.0f}" if row.peak_rss_mb else ""
        cpu = f"{row.cpu_median:.2f}" if row.cpu_median is not None else ""
        lines.append(f"  {row.name:<42} {row.median:>9.3f} {spread:>13} {cells[0]:>7} {cells[1]:>7} "
                     f"{cpu:>6} {rss:>7}  {row.note}")
    return "\n".join(lines)


def _fmt(value: float | None, suffix: str) -> str:
    return "" if value is None else f"{value:.2f}{suffix}"


def machine() -> dict:
    """Where the numbers come from: they only compare within one run on one machine."""
    import blake3
    import duckdb
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpus": os.cpu_count(), "cpu": model, "kernel": platform.release(),
        "python": platform.python_version(), "duckdb": duckdb.__version__,
        "blake3": getattr(blake3, "__version__", "?"), "git": commit,
        "b3sum": tool_version(["b3sum", "--version"]), "aide": tool_version(["aide", "--version"]),
        "find": tool_version(["find", "--version"]),
        # Other work on the machine skews every figure: look here when numbers jump.
        "loadavg_at_end": os.getloadavg(),
    }


def write_json(path: Path, payload: dict) -> None:
    """Write the results (rows as dicts with their medians) as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(payload), indent=2, default=str) + "\n")


def _plain(value):
    if isinstance(value, Measurement):
        return {**asdict(value), "median": value.median, "cpu_median": value.cpu_median,
                "peak_rss_mb": value.peak_rss_mb}
    if isinstance(value, Target):
        return {**asdict(value), "met": value.met}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
