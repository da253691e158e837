#!/usr/bin/env python3
"""Turns the match benchmark's runs (JSON lines) into bench/match/RESULTS.md.

Usage: table.py RUNS.jsonl N_RESPONSES N_SESSIONS [VERIFY.txt]

Per contender the fastest run is kept (best of REPEAT). Ratios are time
divided by polars' and by pandas' time: below 1 means faster. RESULTS.md keeps
one section per data size: this run's section replaces the previous one of the
same size, other sizes are kept. The markdown is also printed.
"""

import datetime
import json
import os
import platform
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "RESULTS.md")

PREAMBLE = """# Match benchmark

`bench/match/run.sh [N_RESPONSES N_SESSIONS]` generates data once (`gen.py`:
~10 sessions per learner over 30 days, 2% same-instant sessions, responses
within +-7 min of a random session, 2% from learners without sessions), then
runs each contender in its own process on the same CSVs. Timed: ours =
`SessionIndex::build` + the match (release build); pandas = the stable sorts
`merge_asof` needs + `merge_asof(by="user_id", direction="nearest",
tolerance=5min)`; polars = sorts + `join_asof(by="user_id",
strategy="nearest", tolerance="5m")`. Loading the CSVs is not timed (shown
apart). Our three modes:

- **records**: `match_records`, owned `MatchedRecord`s, what the match worker
  and `engage run` use;
- **positions**: `match_positions`, the join indexer: each response's session
  position in the index, the join result as borrowed views (what pandas and
  polars compute before gathering columns);
- **shared (what-if)**: the indexer, then each record paired with a shared
  `Arc<SessionMatch>` (built once per session, timed) instead of five cloned
  strings: what a `MatchedRecord.session: Option<Arc<SessionMatch>>` data
  model would cost.

How to read it: the search itself is fast (positions beats polars); building
owned `MatchedRecord`s is dominated by fresh memory (a 320-byte struct plus
five small string allocations per response, ~4.3 GB at 10M), and page faults
on this VM are expensive, so records mode is several times slower than
polars. Polars shares the left columns zero-copy and gathers 16-byte string
views for the right ones. Matching in the pipeline is per learner (a few
hundred records per job), where none of this shows.

Tie rules: with the pandas rule our assignments equal pandas' row for row;
with the last-in-file rule they equal polars' row for row. pandas and polars
differ exactly on a response *before* several sessions sharing one
`created_at`: pandas takes the first of them in file order, polars the last.

The machine is shared by several engineers' builds (2 cores): the load average
is recorded per run; absolute times vary 2-3x with it, ratios less.
"""


def section(runs_path, n_resp, n_sess, verify):
    best, count = {}, {}
    with open(runs_path) as f:
        for line in f:
            d = json.loads(line)
            name = d["contender"]
            d["time_s"] = d.get("total_s", d.get("match_s"))
            count[name] = count.get(name, 0) + 1
            if name not in best or d["time_s"] < best[name]["time_s"]:
                best[name] = d
    pl_t = best.get("polars", {}).get("time_s")
    pd_t = best.get("pandas", {}).get("time_s")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out = [f"## {n_resp:,} responses x {n_sess:,} sessions\n",
           f"`bench/match/run.sh {n_resp} {n_sess}`, {datetime.date.today()}, {os.cpu_count()} cores ({cpu}), "
           f"Python {platform.python_version()}; load average {os.environ.get('LOADAVG', '?')}.\n",
           "| contender | version | runs | load s | match s | ÷ polars | ÷ pandas | matched | peak RSS MiB |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in sorted(best, key=lambda n: (not n.startswith("engage"), n)):
        d = best[name]
        t = d["time_s"]
        detail = f" (build {d['build_s']:.3f} + match {d['match_s']:.3f})" if "build_s" in d else ""
        ratio = lambda ref: f"{t / ref:.2f}" if ref else "–"
        out.append(f"| {name} | {d.get('version', 'this tree')} | {count[name]} | {d['load_s']:.2f} | "
                   f"{t:.3f}{detail} | {ratio(pl_t)} | {ratio(pd_t)} | {d['matched']:,} | {d['rss_mib']:,} |")
    if verify and os.path.exists(verify) and os.path.getsize(verify) > 0:
        out += ["", "Assignments compared row for row:", "", open(verify).read().rstrip()]
    return "\n".join(out) + "\n"


def main() -> int:
    runs_path, n_resp, n_sess = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    verify = sys.argv[4] if len(sys.argv) > 4 else None
    new = section(runs_path, n_resp, n_sess, verify)
    sections = {}
    if os.path.exists(RESULTS):
        text = open(RESULTS).read()
        for m in re.finditer(r"^## ([\d,]+) responses x ([\d,]+) sessions\n.*?(?=^## |\Z)", text, re.S | re.M):
            key = (int(m.group(1).replace(",", "")), int(m.group(2).replace(",", "")))
            sections[key] = m.group(0).rstrip() + "\n"
    sections[(n_resp, n_sess)] = new
    with open(RESULTS, "w") as f:
        f.write(PREAMBLE)
        for key in sorted(sections, reverse=True):
            f.write("\n" + sections[key])
    print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
