#!/usr/bin/env python3
"""Renders bench/clean-match/RESULTS.md from a run's measurements.

Usage: LOADAVG=... table.py DATA_DIR   (run.sh calls it)

Reads DATA_DIR/runs.jsonl (one line per contender and size), checks-SIZE.jsonl
(each peer's agreement with engage) and summary-SIZE.json (engage's counts),
and prints the markdown: one table per size with ratios to polars, then the
issue 14 targets, each met or missed.
"""
import glob
import json
import os
import platform
import subprocess
import sys


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "?"


def main() -> None:
    data = sys.argv[1]
    raw = [json.loads(l) for l in open(f"{data}/runs.jsonl") if l.strip()]
    # With REPEAT=N, each contender ran N times in a row at each size: its
    # row is the run with the median wall time (and the highest peak RSS of
    # the N), so one slow or fast outlier does not decide a ratio.
    runs, reps = [], {}
    for r in raw:
        key = (r["size_mb"], r["name"])
        if key not in reps:
            reps[key] = []
            runs.append(key)
        reps[key].append(r)
    def median(rs):
        rs = sorted(rs, key=lambda r: r["seconds"])
        m = dict(rs[(len(rs) - 1) // 2])
        m["rss_kb"] = max(r["rss_kb"] for r in rs)
        m["walls"] = [r["seconds"] for r in rs]
        return m
    runs = [median(reps[k]) for k in runs]
    sizes = sorted({r["size_mb"] for r in runs})
    import duckdb
    import pandas
    import polars
    cpu = "?"
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rev = version(["git", "-C", os.path.dirname(os.path.abspath(__file__)), "rev-parse", "--short", "HEAD"])
    out = []
    w = out.append
    w("# Clean + match benchmark\n")
    w("`bench/clean-match/run.sh` (sizes in MB; `BIG=1` adds 2000 and 5000): from the JSON Lines log and")
    w("the sessions CSV to a matched CSV, every contender in its own process on the same files")
    w("(`gen.py`: the shape of issue 14, ~260 bytes per response, 100 responses and 10 sessions per")
    w("learner). engage is `target/release/engage run --stop-after match` (clean with full validation,")
    w("response ids, dedup, then the streamed, partitioned match writing `matched.csv`); the peers read")
    w("the log, keep English responses, drop repeats, join each response to its learner's nearest")
    w("session within 5 minutes and write the rows sorted by learner and time (`peers.py`). jq does")
    w("the English filter only; `engage clean` is engage stopped after clean, for reference. Wall and")
    w("CPU time (user + system) and peak RSS from `/usr/bin/time -v`; MB/s = input MB per wall second.")
    w("Each peer's rows were checked against engage's before its timing was kept (`check.py`: the same")
    w("responses, each with the same session — pandas semantics, ties included; polars may pick an")
    w("equally near session, counted below). With `REPEAT=N` every contender runs N times in a row")
    w("and its row is the run with the median wall time (peak RSS: the highest of the N); the")
    w("walls of all N are listed under each table.\n")
    w(f"Machine: {os.cpu_count()} cores ({cpu}), shared with other work; load average "
      f"{os.environ.get('LOADAVG', '?')}. engage {rev}, polars {polars.__version__}, "
      f"pandas {pandas.__version__}, DuckDB {duckdb.__version__}, {version(['jq', '--version'])}, "
      f"Python {platform.python_version()}.\n")
    for size in sizes:
        rs = [r for r in runs if r["size_mb"] == size]
        pl_ = next((r for r in rs if r["name"] == "polars"), None)
        summary = {}
        if os.path.exists(f"{data}/summary-{size}.json"):
            summary = json.load(open(f"{data}/summary-{size}.json"))
        checks = {}
        if os.path.exists(f"{data}/checks-{size}.jsonl"):
            checks = {c["name"]: c for c in map(json.loads, open(f"{data}/checks-{size}.jsonl")) if c}
        nbytes = rs[0]["bytes"]
        act = summary.get("activity", {})
        if summary:
            w(f"## {nbytes / 1e6:,.0f} MB ({act.get('read', 0):,} log lines, {act.get('kept', 0):,} kept, "
              f"{summary.get('matched', 0):,} matched, {summary.get('learners', 0):,} learners, "
              f"{summary.get('sessions', {}).get('kept', 0):,} sessions)\n")
        else:
            w(f"## {nbytes / 1e6:,.0f} MB\n")
        w("| contender | wall s | CPU s | CPU % | peak RSS MB | MB/s | wall vs polars | RSS vs polars | rows checked |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rs:
            ratio_w = f"{r['seconds'] / pl_['seconds']:.2f}x" if pl_ else ""
            ratio_m = f"{r['rss_kb'] / pl_['rss_kb']:.2f}x" if pl_ else ""
            c = checks.get(r["name"])
            if r["name"] == "engage":
                checked = "reference"
            elif c:
                checked = f"{c['rows']:,} identical"
                if c.get("equally_near_other_session"):
                    checked = (f"{c['same_session']:,} same session, {c['equally_near_other_session']:,} "
                               f"an equally near one")
            else:
                checked = "clean only"
            w(f"| {r['name']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} | "
              f"{100 * r['cpu_seconds'] / max(r['seconds'], 1e-9):.0f}% | {r['rss_kb'] / 1024:,.0f} | "
              f"{nbytes / 1e6 / max(r['seconds'], 1e-9):,.0f} | {ratio_w} | {ratio_m} | {checked} |")
        w("")
        if any(len(r["walls"]) > 1 for r in rs):
            w("Walls of every repeat: " + "; ".join(
                f"{r['name']} " + ", ".join(f"{x:.2f}" for x in r["walls"]) for r in rs) + " s.\n")

    w("## Issue 14 targets\n")
    eng = {r["size_mb"]: r for r in runs if r["name"] == "engage"}
    pol = {r["size_mb"]: r for r in runs if r["name"] == "polars"}
    cln = {r["size_mb"]: r for r in runs if r["name"] == "engage clean"}
    ref = 530 if 530 in eng else max(eng)
    lines = []
    if ref in pol:
        e, p = eng[ref], pol[ref]
        lines.append((f"`engage run --stop-after match` at least 2x faster than polars (wall), {ref} MB",
                      e["seconds"] <= p["seconds"] / 2,
                      f"{e['seconds']:.2f} s vs {p['seconds']:.2f} s: {p['seconds'] / e['seconds']:.2f}x"))
        lines.append((f"peak RSS at most 1/10 of polars', {ref} MB", e["rss_kb"] * 10 <= p["rss_kb"],
                      f"{e['rss_kb'] / 1024:,.0f} MB vs {p['rss_kb'] / 1024:,.0f} MB: "
                      f"1/{p['rss_kb'] / e['rss_kb']:.1f}"))
    lines.append((f"peak RSS at most 200 MB, {ref} MB", eng[ref]["rss_kb"] <= 200 * 1024,
                  f"{eng[ref]['rss_kb'] / 1024:,.0f} MB"))
    lo, hi = min(eng), max(eng)
    if lo != hi:
        rss = [eng[s]["rss_kb"] for s in sorted(eng)]
        flat = max(rss) <= 2 * min(rss)
        tgt = "(target: 100 MB to 5 GB)" if hi < 5000 else ""
        lines.append((f"RSS flat (within 2x) from {lo} MB to {hi} MB of input {tgt}", flat,
                      ", ".join(f"{s} MB: {eng[s]['rss_kb'] / 1024:,.0f} MB" for s in sorted(eng))))
    for s in sorted(cln):
        c = cln[s]
        gbps = c["bytes"] / 1e9 / max(c["cpu_seconds"], 1e-9)
        lines.append((f"clean at least 0.5 GB/s per core, {s} MB", gbps >= 0.5,
                      f"{gbps:.2f} GB per CPU-second ({c['cpu_seconds']:.2f} CPU s, {c['seconds']:.2f} s wall)"))
    w("| target | met | measured |")
    w("|---|---|---|")
    for name, ok, got in lines:
        w(f"| {name} | {'yes' if ok else '**no**'} | {got} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
