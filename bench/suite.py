"""The default run: syschangemon side by side with find, b3sum and AIDE on one tree."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.report import Target
from bench.runners import (AIDE_CHECK_OK, Aide, Measurement, Product, Timed, drop_caches, find_walk,
                           hash_all, measure, measure_interleaved, paired_ratio, product_hash_key,
                           ratio_note, ratios, run_once, skipped, timed, warm_cache)
from bench.tree import TreeInfo, TreeShape, WideShape, apply_changes, ensure_tree, revert

AIDE_GROUP = "AIDE (p+i+n+u+g+s+m+c+sha256)"


@dataclass
class SuiteOptions:
    """What ``python -m bench`` was asked to do."""

    workdir: Path
    tree: Path | None = None
    files: int = 60_000
    total_bytes: int = 1_000_000_000
    seed: int = 2016
    reps: int = 3
    changes: int = 1_000
    cold: bool = False
    hash: str = "blake3"
    aide: bool = True
    linearity: bool = True
    mutate: bool = False
    sessions: int = 10


def run_suite(opts: SuiteOptions, say: Callable[[str], None]) -> dict:
    """Measure everything; return the payload the report prints and writes as JSON."""
    cores = os.cpu_count() or 1
    notes: list[str] = []
    opts.workdir.mkdir(parents=True, exist_ok=True)
    if opts.tree:
        tree, info = opts.tree.resolve(), _describe(opts.tree.resolve())
    else:
        tree = opts.workdir / f"tree-{opts.files}-{opts.total_bytes}-{opts.seed}"
        say(f"building/reusing tree {tree} ...")
        info = ensure_tree(tree, TreeShape.scaled(opts.files, total_bytes=opts.total_bytes, seed=opts.seed))
    say(f"tree: {info.files} files, {info.dirs} dirs, {info.symlinks} symlinks, "
        f"{info.bytes / 1e9:.2f} GB, widest dirs {info.widest_dirs}")
    cold = opts.cold
    if cold and not drop_caches():
        notes.append("--cold: cannot write /proc/sys/vm/drop_caches (needs root): ran warm")
        cold = False
    if not cold:
        warm_cache(tree)
    out = opts.workdir / "out"
    out.mkdir(exist_ok=True)
    reps = opts.reps
    rows: dict[str, Measurement] = {}

    def add(key: str, row: Measurement) -> Measurement:
        say(f"  {row.name}: " + (f"{row.median:.3f} s" if row.median is not None else row.note))
        rows[key] = row
        return row

    # The baseline's target is a ratio to find + b3sum, the no-change one to find: each
    # is timed in turn with its peers, and the targets take the median of the ratios of
    # each repetition (see measure_interleaved).
    say("peers and syschangemon, in turn ...")
    product = Product(opts.workdir / "product", tree)
    commands = product.commands()
    startup = measure("list-sessions (startup, empty db)", product.argv("list-sessions"), reps,
                      before=product.fresh, ok=(0, 4), note="interpreter + imports + open db")
    find_argv = find_walk(tree, out / "find.txt")
    commands_timed = {"find": timed("find -printf stat walk", find_argv, "peers")}
    if shutil.which("b3sum"):
        for key, processes, label in (("b3sum", cores, " (hash limit)"), ("b3sum8", 8, "")):
            argv = hash_all(tree, out / f"{key}.txt", processes)
            commands_timed[key] = timed(f"find | xargs -P{processes} b3sum{label}", argv, "peers")
    collect = product.argv("collect")
    commands_timed["baseline"] = timed("collect, baseline (all hashed)", collect, before=product.fresh)
    times = dict(zip(commands_timed, measure_interleaved(list(commands_timed.values()), reps, cold=cold)))
    for key in ("find", "b3sum", "b3sum8"):
        if key in commands_timed:
            add(key, commands_timed[key].row)
    if "b3sum" not in commands_timed:
        add("b3sum", skipped("find | xargs b3sum", "b3sum not installed (apt-get install b3sum)", "peers"))
    if opts.hash == "sha256":
        add("sha256sum", measure(f"find | xargs -P{cores} sha256sum", hash_all(
            tree, out / "sha256.txt", cores, "sha256sum"), reps, group="peers", cold=cold))
    add("startup", startup)
    add("baseline", commands_timed["baseline"].row)
    db_baseline, used_baseline = product.db_bytes(), product.used_bytes()
    product.save("baseline")
    nochange = timed("collect, no change", collect)
    find_again, nochange_times = measure_interleaved([commands_timed["find"], nochange], reps, cold=cold)
    add("nochange", nochange.row)
    limits = [f + b for f, b in zip(times["find"], times["b3sum"])] if "b3sum" in times else []
    each = {"nochange": ratios(nochange_times, find_again), "baseline": ratios(times["baseline"], limits),
            "baseline_cold": ratios(times["baseline"], times.get("b3sum8", []))}
    paired = {key: paired_ratio(values) for key, values in each.items()}
    for _ in range(opts.sessions - reps):
        run_once(product.argv("collect"))
    sessions = max(reps, opts.sessions)
    db_growth = max(product.db_bytes() - db_baseline, product.used_bytes() - used_baseline) / sessions
    product.save("nochange")
    if "diff" in commands:
        add("diff0", measure("diff, no change", product.argv("diff"), reps, ok=(0, 1)))
    if opts.hash == "sha256":
        add("sha256", _sha256_baseline(opts.workdir, tree, reps, cold, notes))

    aide = Aide(opts.workdir / "aide", tree, cores) if opts.aide and shutil.which("aide") else None
    if aide:
        say("aide ...")
        add("aide_init", measure(f"aide --init ({aide.config.name}, -W{cores})", aide.argv("init"),
                                 reps, group=AIDE_GROUP, cold=cold))
        aide.promote()
        add("aide_check", measure("aide --check, no change", aide.argv("check"), reps,
                                  group=AIDE_GROUP, cold=cold, ok=AIDE_CHECK_OK))
    else:
        add("aide_init", skipped("aide", "aide not installed or --no-aide", AIDE_GROUP))

    if opts.tree and not opts.mutate:
        add("changed", skipped(f"collect after {opts.changes} changes",
                               "--tree given: not changing it without --mutate"))
    else:
        say(f"{opts.changes} scripted changes ...")
        changes = apply_changes(tree, opts.changes, opts.seed)
        try:
            add("changed", measure(f"collect after {changes.count} changes", product.argv("collect"),
                                   reps, before=lambda rep: product.restore("nochange"), cold=cold))
            _after_changes(product, commands, reps, changes.count, add)
            if aide:
                add("aide_check_changed", measure(
                    f"aide --check after {changes.count} changes", aide.argv("check"), reps,
                    group=AIDE_GROUP, cold=cold, ok=AIDE_CHECK_OK))
        finally:
            revert(changes)
    for command in ("diff", "print-report"):
        if command not in commands:
            notes.append(f"`{command}` is not a command of the installed CLI yet: not timed")

    linearity = _linearity(opts, aide is not None, say) if opts.linearity else None
    find_s = rows["find"].median
    limit_s = (find_s + rows["b3sum"].median) if rows["b3sum"].median and find_s else None
    limit_cpu = rows["find"].cpu_median + rows["b3sum"].cpu_median if rows["b3sum"].cpu else None
    return {
        "mode": "cold" if cold else "warm", "reps": reps, "tree": info, "rows": rows,
        "find_s": find_s, "find_plus_hash_s": limit_s, "find_plus_hash_cpu": limit_cpu,
        "db_bytes_after_baseline": db_baseline,
        "db_growth_per_nochange_session": db_growth, "nochange_sessions": sessions, "linearity": linearity,
        "paired_ratios": paired, "repetition_ratios": each,
        "targets": _targets(rows, each, cold, db_growth, linearity), "notes": notes,
    }


def _after_changes(product: Product, commands: set[str], reps: int, count: int, add) -> None:
    if "diff" in commands:
        add("diff", measure(f"diff, {count} changes", product.argv("diff"), reps, ok=(0, 1)))
    if "print-report" in commands:
        for fmt in ("text", "html"):
            add(f"report_{fmt}", measure(f"print-report --format {fmt}",
                                         product.argv("print-report", "--format", fmt), reps, ok=(0, 1)))


def _sha256_baseline(workdir: Path, tree: Path, reps: int, cold: bool, notes: list[str]) -> Measurement:
    key = product_hash_key()
    name = "collect, baseline, SHA-256"
    if key:
        product = Product(workdir / "product-sha256", tree, file_extra=f"{key} = sha256\n")
        note = f"[file] {key} = sha256"
    else:
        return skipped(name, "the installed product has no [file] key choosing the digest")
    return measure(name, product.argv("collect"), reps, before=product.fresh, cold=cold, note=note)


def _linearity(opts: SuiteOptions, with_aide: bool, say) -> dict:
    """Per-entry cost in one directory of 20,000 files against ten of 2,000 (same total).

    Each command runs on the two trees in turn (as measure_interleaved does), and a
    ratio is the median of the repetitions' ratios: a single run takes half a second,
    most of it fixed costs, so timing one shape's repetitions a minute apart from the
    other's compared the VM's speed in two minutes, not the two shapes.
    """
    say("linearity: 1 dir x 20,000 files against 10 dirs x 2,000 ...")
    labels = ("1x20000", "10x2000")
    products: dict[str, Product] = {}
    entries: dict[str, int] = {}
    for label, shape in zip(labels, (WideShape(1, 20_000, opts.seed), WideShape(10, 2_000, opts.seed))):
        root = opts.workdir / f"wide-{label}-{opts.seed}"
        info = ensure_tree(root, shape)
        warm_cache(root)
        products[label] = Product(opts.workdir / f"product-{label}", root)
        entries[label] = info.files + info.dirs
    commands: dict[str, dict[str, Timed]] = {"find": {}, "baseline": {}, "nochange": {}}
    for label, product in products.items():
        collect = product.argv("collect")
        find = find_walk(product.tree, opts.workdir / "out" / f"wide-{label}.txt")
        commands["find"][label] = timed("find", find)
        commands["baseline"][label] = timed("baseline", collect, before=product.fresh)
        commands["nochange"][label] = timed("no change", collect)
        if with_aide:
            aide = Aide(opts.workdir / f"aide-{label}", product.tree, os.cpu_count() or 1)
            commands.setdefault("aide_init", {})[label] = timed("aide --init", aide.argv("init"))
    result: dict = {label: {} for label in labels}
    result["ratio"], result["repetition_ratios"] = {}, {}
    for key, by_label in commands.items():
        wide, narrow = measure_interleaved([by_label[label] for label in labels], opts.reps)
        if key == "baseline":
            for product in products.values():
                product.save("baseline")  # the no-change collects start from it
        for label in labels:
            seconds = by_label[label].row.median
            result[label][key] = {"median_s": seconds, "us_per_entry": seconds / entries[label] * 1e6}
        each = ratios(wide, narrow)
        result["ratio"][key], result["repetition_ratios"][key] = paired_ratio(each), each
    for label in labels:
        say(f"  {label}: " + ", ".join(f"{k} {v['median_s']:.3f} s" for k, v in result[label].items()))
    return result


def _targets(rows: dict[str, Measurement], each: dict[str, list[float]], cold: bool,
             db_growth: float, linearity: dict | None) -> list[Target]:
    """``each``: the ratios of each repetition (suite's ``ratios``), by target."""
    nochange = rows.get("nochange")
    targets = []
    if cold:
        targets.append(Target("baseline collect / b3sum -P8, cold", paired_ratio(each["baseline_cold"]), 1.25,
                              "x", ratio_note(each["baseline_cold"]) if each["baseline_cold"]
                              else "b3sum not installed"))
    else:
        targets.append(Target("baseline collect / (find walk + b3sum -Pcores), warm",
                              paired_ratio(each["baseline"]), 1.2, "x",
                              f"{ratio_note(each['baseline'])}; aim beyond: 1.0x"))
    targets.append(Target("no-change collect / find walk", paired_ratio(each["nochange"]), 1.5, "x",
                          ratio_note(each["nochange"])))
    check = rows.get("aide_check")
    speedup = (check.median / nochange.median) if check and check.median and nochange else None
    targets.append(Target("aide --check / no-change collect (speed-up)", speedup, 40, "x",
                          "" if speedup else "aide not measured", at_least=True))
    targets.append(Target("DB growth per no-change session", db_growth / 1024, 64, " KiB",
                          "larger of file and used-block growth; DuckDB blocks are 256 KiB"))
    if linearity:
        find_ratio = linearity["ratio"]["find"]
        for key, value in linearity["ratio"].items():
            if key not in ("aide_init", "find"):
                targets.append(Target(f"linearity: 1x20000 / 10x2000 dirs, {key}", value, 1.10, "x",
                                      f"same entry count, 1.0 is linear; find's own ratio {find_ratio:.2f}; "
                                      + ratio_note(linearity["repetition_ratios"][key])))
    return targets


def _describe(tree: Path) -> TreeInfo:
    """Counts of a tree the bench did not build."""
    info = TreeInfo(root=str(tree), shape={"given": str(tree)})
    widest: list[int] = []
    for directory, dirs, files in os.walk(tree):
        info.dirs += len(dirs)
        widest.append(len(dirs) + len(files))
        for name in files:
            path = os.path.join(directory, name)
            stat = os.lstat(path)
            if os.path.islink(path):
                info.symlinks += 1
            else:
                info.files += 1
                info.bytes += stat.st_size
    info.widest_dirs = sorted(widest, reverse=True)[:3]
    return info
