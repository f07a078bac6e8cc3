"""``python -m bench scaling``: the same number of changes on trees of growing size.

Per size: a baseline collect, then the find walk and no-change collects in turn (time
and peak RSS; their ratio is the median of each repetition's, as in the suite), the
database size after the baseline and after ``sessions`` no-change sessions, then a
collect after the scripted changes and ``diff`` of it (when the CLI has diff).
A no-change collect should grow like the walk; diff like the number of changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.report import Target
from bench.runners import (Product, find_walk, measure, measure_interleaved, paired_ratio, ratio_note,
                           ratios, run_once, timed, warm_cache)
from bench.tree import TreeShape, apply_changes, ensure_tree, revert

#: Scaling trees hold small files only (median 1 KiB): the walk and the merge are measured,
#: not the disk. Their wide directories shrink with them (TreeShape.scaled).
SCALING_BYTES = {"total_bytes": 0, "median": 1024, "sigma": 1.0}


@dataclass
class ScalingOptions:
    """What ``python -m bench scaling`` was asked to do."""

    workdir: Path
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    max_files: int = 100_000
    changes: int = 1_000
    sessions: int = 10
    reps: int = 3
    seed: int = 2016


def run_scaling(opts: ScalingOptions, say: Callable[[str], None]) -> dict:
    """Measure every size up to ``max_files``; return the rows and the targets."""
    results = []
    for files in [size for size in opts.sizes if size <= opts.max_files]:
        results.append(_one_size(opts, files, say))
    return {"sizes": results, "targets": _targets(results)}


def _one_size(opts: ScalingOptions, files: int, say: Callable[[str], None]) -> dict:
    root = opts.workdir / f"scale-{files}-{opts.seed}"
    say(f"{files} files: building/reusing {root} ...")
    info = ensure_tree(root, TreeShape.scaled(files, seed=opts.seed, **SCALING_BYTES))
    warm_cache(root)
    product = Product(opts.workdir / f"product-scale-{files}", root)
    commands = product.commands()
    row: dict = {"files": info.files, "entries": info.entries, "bytes": info.bytes,
                 "widest_dirs": info.widest_dirs}
    baseline = measure("baseline", product.argv("collect"), 1, before=product.fresh)
    row["db_bytes_baseline"], row["db_used_baseline"] = product.db_bytes(), product.used_bytes()
    find_argv, collect = find_walk(root, opts.workdir / "scale-find.txt"), product.argv("collect")
    find_timed, nochange_timed = timed("find", find_argv), timed("no change", collect)
    find_times, nochange_times = measure_interleaved([find_timed, nochange_timed], opts.reps)
    find, nochange = find_timed.row, nochange_timed.row
    row["nochange_ratios"] = ratios(nochange_times, find_times)
    for _ in range(max(0, opts.sessions - opts.reps)):
        run_once(product.argv("collect"))
    sessions = max(opts.sessions, opts.reps)
    row["db_bytes_after_nochange"], row["db_used_after_nochange"] = product.db_bytes(), product.used_bytes()
    row["nochange_sessions"] = sessions
    row["db_growth_per_session"] = (row["db_bytes_after_nochange"] - row["db_bytes_baseline"]) / sessions
    row["db_used_growth_per_session"] = (row["db_used_after_nochange"] - row["db_used_baseline"]) / sessions
    row["version_rows"] = product.query("SELECT count(*) FROM versions")[0][0]
    changes = apply_changes(root, opts.changes, opts.seed)
    try:
        changed = measure("changed", product.argv("collect"), 1)
        diff = measure("diff", product.argv("diff"), opts.reps, ok=(0, 1)) if "diff" in commands else None
    finally:
        revert(changes)
    row.update({
        "find_s": find.median, "baseline_s": baseline.median, "baseline_rss_mb": baseline.peak_rss_mb,
        "nochange_s": nochange.median, "nochange_rss_mb": nochange.peak_rss_mb,
        "nochange_x_find": paired_ratio(row["nochange_ratios"]), "changed_s": changed.median,
        "changed_rss_mb": changed.peak_rss_mb, "changes": changes.count,
        "diff_s": diff.median if diff else None,
        "diff_note": None if diff else "no diff command in the installed CLI",
    })
    say(f"  find {find.median:.2f} s, baseline {baseline.median:.2f} s "
        f"({baseline.peak_rss_mb:.0f} MB), no change {nochange.median:.2f} s "
        f"({row['nochange_x_find']:.2f}x find, {nochange.peak_rss_mb:.0f} MB), after changes "
        f"{changed.median:.2f} s, diff {f'{diff.median:.3f} s' if diff else 'n/a'}, "
        f"DB {row['db_bytes_baseline'] / 1e6:.1f} MB, file +{row['db_growth_per_session'] / 1024:.1f} "
        f"KiB/session, used blocks +{row['db_used_growth_per_session'] / 1024:.1f} KiB/session")
    return row


def table(results: list[dict]) -> str:
    """One line per size."""
    header = (f"{'files':>9} {'entries':>9} {'find s':>7} {'base s':>7} {'base MB':>8} {'noch s':>7} "
              f"{'x find':>7} {'noch MB':>8} {'chg s':>7} {'diff s':>7} {'DB MB':>7} {'KiB/sess':>9} {'used':>7}")
    lines = [header, "-" * len(header)]
    note = ("KiB/sess: growth of the database files per no-change session; used: of its "
                  "used blocks (DuckDB grows files by whole blocks and reuses freed ones)")
    for r in results:
        diff = f"{r['diff_s']:.3f}" if r["diff_s"] is not None else "n/a"
        lines.append(
            f"{r['files']:>9} {r['entries']:>9} {r['find_s']:>7.3f} {r['baseline_s']:>7.2f} "
            f"{r['baseline_rss_mb']:>8.0f} {r['nochange_s']:>7.3f} {r['nochange_x_find']:>7.2f} "
            f"{r['nochange_rss_mb']:>8.0f} {r['changed_s']:>7.2f} {diff:>7} "
            f"{r['db_bytes_baseline'] / 1e6:>7.1f} {r['db_growth_per_session'] / 1024:>9.1f} "
            f"{r['db_used_growth_per_session'] / 1024:>7.1f}")
    return "\n".join(lines + [note])


def _targets(results: list[dict]) -> list[Target]:
    targets = []
    for r in results:
        size = f"{r['files']:,} files"
        targets.append(Target(f"no-change collect / find walk, {size}", r["nochange_x_find"], 1.5, "x",
                              ratio_note(r["nochange_ratios"])))
        targets.append(Target(f"DB growth per no-change session, {size}",
                              max(r["db_growth_per_session"], r["db_used_growth_per_session"]) / 1024,
                              64, " KiB", f"mean of {r['nochange_sessions']} sessions; larger of file "
                              "and used-block growth"))
        if r["diff_s"] is not None:
            targets.append(Target(f"diff of {r['changes']} changes, {size}", r["diff_s"], 1.0, " s",
                                  "issue target is at 1M"))
        else:
            targets.append(Target(f"diff of {r['changes']} changes, {size}", None, 1.0, " s",
                                  "no diff command in the installed CLI yet"))
        targets.append(Target(f"peak RSS of collect, {size}",
                              max(r["baseline_rss_mb"], r["nochange_rss_mb"], r["changed_rss_mb"]),
                              500, " MB", "issue target is at 1M"))
    return targets
