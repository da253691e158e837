#!/usr/bin/env python3
"""Turns the match benchmark's runs (JSON lines) into the markdown of RESULTS.md.

Usage: table.py RUNS.jsonl N_RESPONSES N_SESSIONS [VERIFY.txt]

Per contender the fastest run is kept (best of REPEAT). Ratios are match time
divided by polars' and by pandas' match time: below 1 means faster.
"""

import datetime
import json
import os
import platform
import sys


def main() -> int:
    runs_path, n_resp, n_sess = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    verify = sys.argv[4] if len(sys.argv) > 4 else None
    best = {}
    count = {}
    with open(runs_path) as f:
        for line in f:
            d = json.loads(line)
            name = d["contender"]
            t = d.get("total_s", d.get("match_s"))
            d["time_s"] = t
            count[name] = count.get(name, 0) + 1
            if name not in best or t < best[name]["time_s"]:
                best[name] = d
    pl_t = best.get("polars", {}).get("time_s")
    pd_t = best.get("pandas", {}).get("time_s")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print("# Match benchmark\n")
    print(f"{n_resp:,} responses x {n_sess:,} sessions, `bench/match/run.sh {n_resp} {n_sess}`, "
          f"{datetime.date.today()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}; "
          f"load average {os.environ.get('LOADAVG', '?')} (the machine is shared: other work inflates times).\n")
    print("Timed: ours = `SessionIndex::build` + the match (release build; *records*: `match_records`, owned "
          "`MatchedRecord`s as the worker gets them; *positions*: `match_positions`, the join indexer, results "
          "as borrowed views; *shared (what-if)*: the indexer + records paired with a shared `Arc<SessionMatch>` "
          "instead of five cloned strings, a possible data-model change); pandas = stable sorts + "
          "`merge_asof(by=\"user_id\", direction=\"nearest\", tolerance=5min)`; polars = sorts + "
          "`join_asof(by=\"user_id\", strategy=\"nearest\", tolerance=\"5m\")`. Loading the CSVs is not timed "
          "(shown apart). Best of the runs per contender.\n")
    print("| contender | version | runs | load s | match s | ÷ polars | ÷ pandas | matched | peak RSS MiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in sorted(best, key=lambda n: (not n.startswith("engage"), n)):
        d = best[name]
        t = d["time_s"]
        detail = f" (build {d['build_s']:.3f} + match {d['match_s']:.3f})" if "build_s" in d else ""
        ratio = lambda ref: f"{t / ref:.2f}" if ref else "–"
        version = d.get("version", "this tree")
        print(f"| {name} | {version} | {count[name]} | {d['load_s']:.2f} | {t:.3f}{detail} | {ratio(pl_t)} | "
              f"{ratio(pd_t)} | {d['matched']:,} | {d['rss_mib']:,} |")
    if verify and os.path.exists(verify) and os.path.getsize(verify) > 0:
        print("\nAssignments compared row for row:\n")
        print(open(verify).read().rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
