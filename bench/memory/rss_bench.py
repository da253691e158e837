#!/usr/bin/env python3
"""Peak RSS of one download and one analyze worker under a mix of audio sizes.

Runs the shipped fleet (release binaries: one worker per stage) on a batch
whose audio links point at WAV files of 100 KB to 200 MB (48 kHz stereo
16-bit noise, every file distinct so nothing is deduplicated), at each
concurrency asked for, with the audio memory budget at its default, at a
smaller setting, and effectively off (`ENGAGE_AUDIO_MEMORY_BYTES` = 4 TiB:
what the workers did before the budget existed), and reads each worker's peak resident
set (`VmHWM` in /proc/PID/status, tracked by the kernel) when the batch is
complete. Prints a table with the ratio off/on and rewrites the generated
block of RESULTS.md.

    rss_bench.py --bins target/release --work DIR [--concurrency 32,200]
                 [--budgets 1610612736,536870912] [--results RESULTS.md]

Uses the RabbitMQ and Redis on 127.0.0.1 (unique namespace per run, deleted
afterwards).
"""
import argparse
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "pipeline"))
from fleet_bench import fleet_env  # noqa: E402
from tiny_audio import audio_links  # noqa: E402

STAGES = ["clean", "match", "download", "analyze", "aggregate"]
# The size mix, cycled over the batch's audio links (bytes).
SIZES = [100_000, 300_000, 1_000_000, 3_000_000, 10_000_000, 30_000_000,
         100_000_000, 200_000_000]
RATE, CHANNELS = 48_000, 2


def wav(path: Path, size: int, seed: int):
    """A 48 kHz stereo 16-bit WAV of exactly `size` bytes of random noise."""
    data = size - 44
    data -= data % (2 * CHANNELS)
    hdr = b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
    hdr += b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, RATE, RATE * 2 * CHANNELS,
                                 2 * CHANNELS, 16)
    hdr += b"data" + struct.pack("<I", data)
    rnd = random.Random(seed)
    # 64 KiB of quiet noise (within ±1/8 full scale: speech-like levels, never
    # silent), distinct per file, repeated to the size.
    block = b"".join(struct.pack("<h", rnd.randint(-4096, 4096)) for _ in range(32768))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(hdr)
        left = data
        while left:
            n = min(len(block), left)
            f.write(block[:n])
            left -= n


def make_data(bins: Path, data: Path, learners: int, responses: int) -> dict:
    if (data / "audio.json").exists():
        return json.loads((data / "audio.json").read_text())
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([str(bins / "engage"), "gen-data", "--learners", str(learners), "--responses",
                    str(responses), "--seed", "11", "--no-audio", "--out", str(data)],
                   check=True, stdout=subprocess.DEVNULL)
    targets, _, _ = audio_links(str(data / "activity.jsonl"), {"learner-audio"})
    sizes = {}
    for i, (bucket, key) in enumerate(targets):
        size = SIZES[i % len(SIZES)]
        wav(data / "s3" / bucket / Path(*key.split("/")), size, i)
        sizes[f"{bucket}/{key}"] = size
    info = {"objects": len(sizes), "bytes": sum(sizes.values()),
            "by_size": {str(s): list(sizes.values()).count(s) for s in SIZES}}
    (data / "audio.json").write_text(json.dumps(info))
    return info


def hwm_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run(bins: Path, data: Path, work: Path, concurrency: int, budget: int, timeout: float) -> dict:
    ns = f"bench-rss-{uuid.uuid4().hex[:8]}"
    d = work / ns
    logs = d / "logs"
    logs.mkdir(parents=True)
    env = fleet_env(ns, d / "store", data)
    env.update({
        "ENGAGE_CONCURRENCY": str(concurrency),
        "ENGAGE_AUDIO_MEMORY_BYTES": str(budget),
    })
    procs = {}
    try:
        for s in STAGES:
            procs[s] = subprocess.Popen([str(bins / f"engage-{s}")], env=env,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=open(logs / f"{s}.log", "wb"))
        deadline = time.monotonic() + 60
        for s in STAGES:
            while "consuming" not in (logs / f"{s}.log").read_text(errors="replace"):
                if procs[s].poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"engage-{s} did not start: "
                                       f"{(logs / f'{s}.log').read_text()[:3000]}")
                time.sleep(0.1)
        base = {s: hwm_kib(procs[s].pid) for s in ("download", "analyze")}
        t0 = time.monotonic()
        enq = subprocess.run([str(bins / "engage"), "enqueue", "--activity",
                              str(data / "activity.jsonl"), "--sessions", str(data / "sessions.csv")],
                             env=env, capture_output=True, text=True, check=True)
        batch = enq.stdout.strip()
        st = subprocess.run([str(bins / "engage"), "status", batch, "--wait", "--timeout",
                             str(int(timeout))], env=env, capture_output=True, text=True)
        wall = time.monotonic() - t0
        if st.returncode != 0:
            raise RuntimeError(f"batch did not complete: {st.stdout[-2000:]}")
        # The last progress line holds the final counts.
        found = re.findall(r"failed: (\{[^}]*\})", st.stdout)
        failed = json.loads(found[-1]) if found else {}
        peak = {s: hwm_kib(procs[s].pid) for s in ("download", "analyze")}
        for s, p in procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"engage-{s} died during the run (exit {p.returncode})")
        return {"concurrency": concurrency, "budget": budget, "wall_s": round(wall, 1),
                "failed": failed, "idle_kib": base, "peak_kib": peak}
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        cleanup(ns)
        shutil.rmtree(d, ignore_errors=True)


def cleanup(ns: str):
    """Deletes the run's queues and Redis keys."""
    names = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name"], capture_output=True,
                           text=True).stdout.split()
    for q in names:
        if q.startswith(ns + "."):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", q], capture_output=True)
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"*{ns}*"], capture_output=True,
                          text=True).stdout.split()
    for k in keys:
        subprocess.run(["redis-cli", "del", k], capture_output=True)


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f}"


OFF = 1 << 42


def render(info: dict, rows: list, budgets: list, command: str) -> str:
    name = lambda b: "off" if b == OFF else f"{b / 2**20:,.0f} MiB"
    out = [f"Command: `{command}`", "",
           f"Batch: {info['objects']} distinct WAV objects (48 kHz stereo 16-bit noise), "
           f"{info['bytes'] / 1e9:.2f} GB in all; sizes (bytes: count) "
           + ", ".join(f"{int(s):,}: {n}" for s, n in info["by_size"].items()) + ". "
           "The 200 MB files are over the 600 s limit (refused from their header after the "
           "fetch); the 100 MB ones decode fully (26 M samples each).", "",
           "Peak RSS is the kernel's high-water mark (VmHWM) of each worker process over the "
           "whole batch; budget `off` is 4 TiB (no bound: the workers before the budget). "
           f"The default budget is 1,536 MiB.", "",
           "| concurrency | worker | " + " | ".join(f"peak RSS, budget {name(b)} (MiB)" for b in budgets)
           + " | off / default | wall per budget (s) |",
           "|---:|---|" + "---:|" * len(budgets) + "---:|---|"]
    by = {(r["concurrency"], r["budget"]): r for r in rows}
    for c in sorted({r["concurrency"] for r in rows}):
        for w in ("download", "analyze"):
            cells, walls = [], []
            for b in budgets:
                r = by.get((c, b))
                cells.append(mib(r["peak_kib"][w]) if r else "–")
                walls.append(str(r["wall_s"]) if r else "–")
            d, off = by.get((c, budgets[0])), by.get((c, OFF))
            ratio = f"{off['peak_kib'][w] / d['peak_kib'][w]:.2f}×" if d and off else "–"
            out.append(f"| {c} | {w} | " + " | ".join(cells) + f" | {ratio} | {' / '.join(walls)} |")
    out.append("")
    out.append("Failed items by budget (the same in every run at a budget that fits the largest "
               "object's need; a smaller budget turns what it cannot hold into `audio_too_large`):")
    out.append("")
    for b in budgets:
        fails = sorted({json.dumps(r["failed"], sort_keys=True) for r in rows if r["budget"] == b})
        out.append(f"- {name(b)}: " + "; ".join(fails))
    return "\n".join(out) + "\n"


def write_results(path: Path, body: str):
    text = path.read_text() if path.exists() else "# Audio memory benchmark\n\n<!-- generated -->\n<!-- end generated -->\n"
    start, end = "<!-- generated -->", "<!-- end generated -->"
    i, j = text.index(start), text.index(end)
    path.write_text(text[: i + len(start)] + "\n" + body + text[j:])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bins", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--concurrency", default="32,200")
    ap.add_argument("--budgets", default=f"{1536 << 20},{512 << 20}",
                    help="comma-separated budgets in bytes, the default first; `off` is added")
    ap.add_argument("--learners", type=int, default=8)
    ap.add_argument("--responses", type=int, default=6)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--results", type=Path)
    ap.add_argument("--command", default="bench/memory/run.sh")
    a = ap.parse_args()
    a.work, a.bins = a.work.resolve(), a.bins.resolve()
    data = a.work / f"data-{a.learners}-{a.responses}"
    info = make_data(a.bins, data, a.learners, a.responses)
    print(json.dumps(info), flush=True)
    budgets = [int(b) for b in a.budgets.split(",")] + [OFF]
    rows = []
    for c in [int(x) for x in a.concurrency.split(",")]:
        for budget in budgets:
            r = run(a.bins, data, a.work, c, budget, a.timeout)
            print(json.dumps(r), flush=True)
            rows.append(r)
    body = render(info, rows, budgets, a.command)
    print(body)
    if a.results:
        write_results(a.results, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
