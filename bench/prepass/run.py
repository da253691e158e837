#!/usr/bin/env python3
"""Clean pre-pass benchmark: a gzip activity log through the clean stage of a
real fleet (release `engage-clean` workers, RabbitMQ, Redis, a local store on
tmpfs), read as ONE job (pieces bigger than the log: what every gzip log was
before the pre-pass) vs CUT into segments that 1 and 2 clean workers take.

Usage: bench/prepass/run.py [SIZE_MB]   (default 530; DATA=/dev/shm/prepass)

Per configuration: wall time from `engage enqueue` to every clean piece done
(read from the batch ledger in Redis), the pre-pass's own time (its log line),
the workers' CPU time (user + system, /proc), and MB/s of uncompressed log
per wall second. The cleaned counters of every configuration must agree
(summed from the pieces' done.json; kept + repeats, since repeats across
pieces are dropped by the report) before its time counts. Writes
bench/prepass/RESULTS.md. Only the clean stage runs: match jobs stay queued
and are deleted with the namespace.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
BINS = ROOT / "target" / "release"
SEG_BYTES = 64 * 1024 * 1024
CONFIGS = [
    # name, clean workers, piece bytes
    ("one job (no cut), 1 worker", 1, 1 << 50),
    ("cut into 64 MiB segments, 1 worker", 1, SEG_BYTES),
    ("cut into 64 MiB segments, 2 workers", 2, SEG_BYTES),
]


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def redis(*args) -> str:
    return sh("redis-cli", "-h", "127.0.0.1", "-p", "6379", *args).strip()


def pieces(ns: str, batch: str) -> tuple[int, int]:
    p = f"{{{ns}:{batch}}}"
    exp = redis("HGET", f"{p}:meta", "pieces_expected")
    if not exp:
        return (0, -1)
    extra = int(redis("SCARD", f"{p}:pieces_extra") or 0)
    done = int(redis("SCARD", f"{p}:pieces_done") or 0)
    return (done, int(exp) + extra)


def cleanup(ns: str):
    for q in sh("rabbitmqctl", "-q", "list_queues", "name").split():
        if q.startswith(ns + "."):
            subprocess.run(["rabbitmqctl", "-q", "delete_queue", q], capture_output=True)
    keys = redis("--scan", "--pattern", f"*{ns}*").split()
    for i in range(0, len(keys), 500):
        redis("DEL", *keys[i:i + 500])


def counters(store: Path, batch: str) -> dict:
    total = {}
    for done in (store / "batches" / batch / "clean").glob("*/done.json"):
        d = json.loads(done.read_text())
        for k, v in d["stats"].items():
            if isinstance(v, dict):
                for r, n in v.items():
                    total[f"rejected.{r}"] = total.get(f"rejected.{r}", 0) + n
            else:
                total[k] = total.get(k, 0) + v
    # Repeats across pieces are dropped downstream (the report), not in
    # clean: only their sum with the kept records is the same for any cut.
    total["kept+duplicates"] = total.pop("kept", 0) + total.pop("duplicates", 0)
    return total


def run(name: str, workers: int, piece_bytes: int, data: Path, gz: Path) -> dict:
    ns = "bench-prepass-" + uuid.uuid4().hex[:8]
    store = data / f"store-{ns}"
    logs = data / f"logs-{ns}"
    logs.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGE_")}
    env.update({
        "ENGAGE_NAMESPACE": ns,
        "ENGAGE_STORE": f"file://{store}",
        "ENGAGE_INPUT_PREFIXES": f"file://{data}",
        "ENGAGE_AUDIO_BUCKETS": "learner-audio",
        "ENGAGE_METRICS_ADDR": "127.0.0.1:0",
        "ENGAGE_CLEAN_PIECE_BYTES": str(piece_bytes),
        "RUST_LOG": "info",
    })
    procs = [subprocess.Popen([BINS / "engage-clean"], env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL,
                              stderr=open(logs / f"clean-{i}.log", "w"))
             for i in range(workers)]
    try:
        # Wait until every worker consumes (its queue has that many consumers).
        deadline = time.time() + 60
        while True:
            out = sh("rabbitmqctl", "-q", "list_queues", "name", "consumers")
            if any(l.split() == [f"{ns}.clean", str(workers)] for l in out.splitlines()):
                break
            if time.time() > deadline:
                raise SystemExit(f"{name}: workers did not start")
            time.sleep(0.2)
        cpu0 = sum(cpu_seconds(p.pid) for p in procs)
        t0 = time.time()
        batch = sh(BINS / "engage", "enqueue", "--activity", str(gz),
                   "--sessions", str(data / "sessions.csv"), env=env).strip()
        while True:
            done, expected = pieces(ns, batch)
            if expected > 0 and done == expected:
                break
            if time.time() - t0 > 3600:
                raise SystemExit(f"{name}: clean did not finish")
            time.sleep(0.05)
        wall = time.time() - t0
        cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
        prepass = None
        for f in logs.iterdir():
            for line in f.read_text().splitlines():
                if "pre-pass cut the file into segments" in line:
                    m = re.search(r"seconds=([0-9.]+)", line)
                    prepass = float(m.group(1)) if m else None
        return {"name": name, "workers": workers, "pieces": expected, "wall": wall,
                "cpu": cpu, "prepass": prepass, "counters": counters(store, batch)}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        cleanup(ns)
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def main():
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 530
    data = Path(os.environ.get("DATA", "/dev/shm/prepass")) / str(size)
    data.mkdir(parents=True, exist_ok=True)
    plain = data / "activity.jsonl"
    if not plain.exists():
        subprocess.run([sys.executable, ROOT / "bench/clean-match/gen.py", str(size), data],
                       check=True)
    gz = data / "activity.jsonl.gz"
    if not gz.exists():
        with open(gz, "wb") as out:
            subprocess.run(["gzip", "-6", "-c", plain], stdout=out, check=True)
    mb = plain.stat().st_size / 1e6
    gz_mb = gz.stat().st_size / 1e6
    rows = [run(n, w, b, data, gz) for n, w, b in CONFIGS]
    ref = rows[0]["counters"]
    for r in rows[1:]:
        if r["counters"] != ref:
            raise SystemExit(f"{r['name']}: counters differ from one job's: {r['counters']} vs {ref}")
    commit = sh("git", "-C", ROOT, "rev-parse", "--short", "HEAD").strip()
    load = Path("/proc/loadavg").read_text().split()[:3]
    lines = [
        "# Clean pre-pass benchmark",
        "",
        "`bench/prepass/run.py` (see its docstring): a gzip activity log (`bench/clean-match/gen.py`,",
        f"{mb:,.0f} MB of JSON Lines, {gz_mb:,.0f} MB gzip -6) through the clean stage of a fleet of",
        "release `engage-clean` workers (RabbitMQ, Redis, local store on tmpfs), from `engage enqueue`",
        "to every clean piece done. \"One job\" sets pieces bigger than the log, so the pre-pass cleans",
        "it itself (from the decompressed copy it wrote to a local temp file: what every gzip log was",
        "before the pre-pass, plus that copy). The cleaned counters of every row",
        f"agree ({ref.get('read', 0):,} records read; kept plus repeats compared, since repeats",
        "across pieces are dropped downstream, by the report).",
        "",
        f"Machine: 2 cores, shared with other work (load average {' '.join(load)} at the end);",
        f"engage {commit}.",
        "",
        "| configuration | clean pieces | wall s | vs one job | pre-pass s | CPU s | MB/s (uncompressed) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        pre = f"{r['prepass']:.2f}" if r["prepass"] is not None else "—"
        lines.append(
            f"| {r['name']} | {r['pieces']} | {r['wall']:.2f} | {rows[0]['wall'] / r['wall']:.2f}x "
            f"| {pre} | {r['cpu']:.2f} | {mb / r['wall']:,.0f} |")
    lines.append("")
    (HERE / "RESULTS.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
