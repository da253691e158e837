#!/usr/bin/env python3
"""Prints the markdown table of one clean benchmark size from its runs file.

Usage: table.py RUNS_JSONL SIZE_MB
The first run is "ours" (all threads); ratios are peer time / our time
(how many times faster ours is) and peer RSS / our RSS.
"""
import json
import sys


def main():
    runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    size = sys.argv[2]
    ours = runs[0]
    print(f"\n### {size} MB input ({ours['bytes'] / 1e6:.0f} MB, JSON Lines)\n")
    print("| contender | wall s | MB/s | CPU s | MB/s per CPU-s | peak RSS MiB | records out | time vs ours | RSS vs ours |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        mbps = r["bytes"] / 1e6 / r["seconds"] if r["seconds"] > 0 else float("inf")
        print(
            f"| {r['name']} | {r['seconds']:.2f} | {mbps:.0f} | {r['cpu_seconds']:.2f} | "
            f"{r['bytes'] / 1e6 / max(r['cpu_seconds'], 1e-9):.0f} | {r['rss_kb'] / 1024:.0f} | "
            f"{r['out_records']:,} | {r['seconds'] / ours['seconds']:.1f}x | "
            f"{r['rss_kb'] / ours['rss_kb']:.1f}x |"
        )


if __name__ == "__main__":
    main()
