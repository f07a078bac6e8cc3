"""``python -m bench [scaling] [options]``: time syschangemon against find, b3sum and AIDE.

Run it with the interpreter syschangemon is installed in (``/tmp/venv/bin/python -m bench``),
as root for --cold. Trees are built once under --workdir and reused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bench import report
from bench.runners import BenchError, byte_compile_product
from bench.scaling import ScalingOptions, run_scaling
from bench.scaling import table as scaling_table
from bench.suite import SuiteOptions, run_suite

DEFAULT_WORKDIR = Path("/var/tmp/syschangemon-bench")


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    """Options of the default run and of ``scaling``."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("suite", "scaling"), default="suite",
                        help="suite (default): side by side on one tree; scaling: 10k..1M items")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR,
                        help=f"trees, databases and peer outputs (default {DEFAULT_WORKDIR})")
    parser.add_argument("--json", type=Path, help="write results here (default bench/results/<mode>.json "
                        "and bench/results/latest.json)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions per command; medians are shown")
    parser.add_argument("--seed", type=int, default=2016, help="seed of the synthetic trees")
    parser.add_argument("--changes", type=int, default=1000, help="scripted changes (modify/chmod/add/remove)")
    suite = parser.add_argument_group("suite")
    suite.add_argument("--tree", type=Path, help="measure this tree instead of a synthetic one")
    suite.add_argument("--mutate", action="store_true",
                       help="with --tree: allow the scripted changes (reverted afterwards) in it")
    suite.add_argument("--files", type=int, default=60_000, help="files in the synthetic tree")
    suite.add_argument("--bytes", type=float, default=None,
                       help="total bytes of the synthetic tree (default 16,667 per file: 1 GB at 60k)")
    suite.add_argument("--cold", action="store_true", help="drop the page cache before every run (root)")
    suite.add_argument("--hash", choices=("blake3", "sha256"), default="blake3",
                       help="sha256: also a like-for-like SHA-256 baseline against sha256sum and AIDE")
    suite.add_argument("--no-aide", action="store_true", help="skip AIDE even when installed")
    suite.add_argument("--no-linearity", action="store_true", help="skip the 20,000 vs 10x2,000 entry check")
    scaling = parser.add_argument_group("scaling")
    scaling.add_argument("--sizes", type=_sizes, default=(10_000, 100_000, 1_000_000),
                         help="comma-separated tree sizes in files (default 10000,100000,1000000)")
    scaling.add_argument("--max", type=int, default=100_000, dest="max_files",
                         help="skip sizes above this (default 100000; --max 1000000 for the 1M run)")
    parser.add_argument("--sessions", type=int, default=10,
                        help="no-change sessions for the DB growth figure (the issue says 100)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the chosen mode, print the tables and the targets, write JSON."""
    args = build_parser().parse_args(argv)
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.monotonic()
    load_at_start = os.getloadavg()
    byte_compile_product()
    try:
        if args.mode == "scaling":
            payload = run_scaling(ScalingOptions(args.workdir, args.sizes, args.max_files, args.changes,
                                                 args.sessions, args.reps, args.seed), say)
            print(scaling_table(payload["sizes"]))
        else:
            total = int(args.bytes) if args.bytes is not None else args.files * 16_667
            payload = run_suite(SuiteOptions(
                args.workdir, args.tree, args.files, total, args.seed, args.reps, args.changes,
                args.cold, args.hash, not args.no_aide, not args.no_linearity, args.mutate, args.sessions), say)
            _print_suite(payload)
    except BenchError as error:
        print(f"bench: a measured command failed: {error}", file=sys.stderr)
        return 1
    print("\ntargets (issue 8):")
    for target in payload["targets"]:
        print(target.line())
    for note in payload.get("notes", []):
        print(f"note: {note}")
    payload.update({"machine": report.machine(), "loadavg_at_start": load_at_start, "argv": sys.argv,
                    "elapsed_s": time.monotonic() - started})
    for path in [args.json] if args.json else [report.RESULTS_DIR / f"{args.mode}.json",
                                               report.RESULTS_DIR / "latest.json"]:
        report.write_json(path, payload)
        print(f"results: {path}")
    return 0


def _print_suite(payload: dict) -> None:
    info = payload["tree"]
    print(f"\ntree {info.root}: {info.files} files, {info.dirs} dirs, {info.symlinks} symlinks, "
          f"{info.bytes / 1e9:.2f} GB ({info.big_files} files >= 1 MiB hold {info.big_bytes / 1e9:.2f} GB), "
          f"median {info.median_size} B, widest dirs {info.widest_dirs}; {payload['mode']} cache, "
          f"medians of {payload['reps']}")
    print(report.table(list(payload["rows"].values()), payload["find_s"], payload["find_plus_hash_s"]))
    print(f"x find = / find walk; x f+b3 = / (find walk + b3sum), the baseline target's base. "
          f"DB {payload['db_bytes_after_baseline'] / 1e6:.1f} MB after the baseline, "
          f"+{payload['db_growth_per_nochange_session'] / 1024:.1f} KiB per no-change session "
          f"(mean of {payload['nochange_sessions']}).")
    baseline = payload["rows"].get("baseline")
    if payload.get("find_plus_hash_cpu") and baseline is not None and baseline.cpu_median:
        # Whether the gap to the peers is work or waiting: see bench/README.md.
        print(f"CPU s = CPU time of the whole machine during the run. Baseline collect "
              f"{baseline.cpu_median:.2f} CPU-s against find + b3sum's {payload['find_plus_hash_cpu']:.2f} "
              f"= {baseline.cpu_median / payload['find_plus_hash_cpu']:.2f}x.")
    linearity = payload.get("linearity")
    if linearity:
        print("\nlinearity (same 20,000 files, one directory vs ten, timed in turn): median s, "
              "us/entry, median of the repetitions' ratios (their range)")
        for key in linearity["1x20000"]:
            flat, split = linearity["1x20000"][key], linearity["10x2000"][key]
            each = linearity.get("repetition_ratios", {}).get(key) or [linearity["ratio"][key]]
            print(f"  {key:<10} 1x20000 {flat['median_s']:.3f} s {flat['us_per_entry']:.1f} us   "
                  f"10x2000 {split['median_s']:.3f} s {split['us_per_entry']:.1f} us   "
                  f"ratio {linearity['ratio'][key]:.2f} ({min(each):.2f}-{max(each):.2f})")
        print("  (find's ratio is the filesystem's own; AIDE's shows its quadratic directory handling)")


if __name__ == "__main__":
    sys.exit(main())
