#!/usr/bin/env python3
"""Gemini quota benchmark of the product: the five real worker binaries over
RabbitMQ and Redis, `ENGAGE_ANALYZER=gemini`, against the Gemini-wire fake
(see bench/gemini/README.md).

Each row: a fresh namespace on the shared broker and Redis, a fresh
`fake-gemini` process (quota Q RPM as a sliding 60 s window, service time
uniform 1-8 s, one JSON line per request via --log-requests), the workers,
one batch (`engage enqueue`) whose selected responses link >= k*Q distinct
small speech WAVs (so each costs exactly one paid call), waited for with
`engage status --wait`; then the workers and the fake are stopped, the
namespace's queues and Redis keys deleted, and the row is measured from the
fake's request log:

- quota use: the fake's sliding 60 s window occupancy (requests the fake's
  quota admitted, i.e. counted, in (t-60 s, t]) / Q, sampled every 0.5 s from
  the end of the first window (first admission + 60 s) to the last admission,
  averaged; 100 % = no permitted call left unmade;
- 429s by cause: the fake's limiter (`quota_rpm`/`quota_tpm`/`quota_rpd`) vs
  injected (`injected_429`);
- calls per distinct audio (all requests, and paid = admitted ones);
- wall time (enqueue -> batch complete) vs the physical minimum paid/Q minutes;
- the batch's outputs vs a reference run of the same data (the fleet against
  the fake with no quota and no latency; `engage run` analyzes acoustically
  only), file by file (bench/chaos/chaos.py's comparison), and the summary's
  failed items;
- beside the seed's one-call-at-a-time rate (one analyze worker,
  ENGAGE_CONCURRENCY=1, no quota, for a fixed time).

    quota_bench.py [--quick] [--bins target/release] [--work bench/data/gemini]
                   [--results bench/gemini/RESULTS.md] [--only ROW,...]

Needs RabbitMQ on 127.0.0.1:5672 and Redis on 127.0.0.1:6379 (or --amqp /
--redis), pika, and `cargo build --release --workspace --bins`.
"""
from __future__ import annotations

import argparse
import array
import datetime as dt
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent / "pipeline"))
sys.path.insert(0, str(HERE.parent / "chaos"))
from fleet_bench import ANSI, delete_queues, delete_redis_keys, fleet_env  # noqa: E402
from tiny_audio import audio_links  # noqa: E402
from chaos import same_outputs  # noqa: E402

WINDOW_S = 60.0
SAMPLE_S = 0.5
MODEL = "gemini-3.8-flash"  # replaced at start by the built CLI's default (product_model)
API_KEY = "fake-gemini-key"
LATENCY_MS = (1000, 8000)
BASE_STAGES = ["clean", "match", "download", "aggregate"]
TARGET_USE = 0.97


# --------------------------------------------------------------- processes ---

LIVE: list[subprocess.Popen] = []  # every child still to stop, killed on exit


def spawn(argv: list, env: dict | None, log: Path, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    """Starts a child with stderr to `log`; stdout to DEVNULL, a PIPE (text) or a file Path."""
    with open(log, "wb") as err, \
            open(stdout if isinstance(stdout, Path) else os.devnull, "wb") as out:
        # The child keeps its own descriptors.
        p = subprocess.Popen([str(a) for a in argv], env=env, stdin=subprocess.DEVNULL,
                             stdout=out if isinstance(stdout, Path) else stdout, stderr=err,
                             text=stdout is subprocess.PIPE)
    LIVE.append(p)
    return p


def stop(p: subprocess.Popen, grace: float = 15.0):
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if p in LIVE:
        LIVE.remove(p)


def kill_all():
    for p in list(LIVE):
        if p.poll() is None:
            p.kill()
    for p in list(LIVE):
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            pass
    LIVE.clear()


def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def poll_until(what: str, timeout: float, f, every: float = 0.1):
    """Polls f() until it returns a true value; raises TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = f()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def engage(bins: Path, env: dict, *args: str) -> str:
    r = subprocess.run([str(bins / "engage"), *args], env=env, capture_output=True, text=True,
                       check=False)
    if r.returncode != 0:
        raise RuntimeError(f"engage {' '.join(args)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def product_model(bins: Path) -> str:
    """The Gemini model the built binaries use by default (`engage config show
    --json`, without any ENGAGE_* setting); the fake serves it and the fleet is
    given it explicitly."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ENGAGE_") and k != "GEMINI_API_KEY"}
    r = subprocess.run([str(bins / "engage"), "config", "show", "--json"], env=env,
                       capture_output=True, text=True, check=False)
    try:
        sections = json.loads(r.stdout)["sections"]
        gemini = next(x for x in sections if x.get("section") == "gemini")
        return next(f["value"] for f in gemini["fields"] if f["field"] == "model")
    except (ValueError, KeyError, StopIteration) as e:
        raise RuntimeError(f"cannot read the default Gemini model from `engage config show "
                           f"--json`: {e}: {r.stdout[-500:]} {r.stderr[-500:]}") from e


# -------------------------------------------------------------------- fake ---

class Fake:
    """One fake-gemini process with a request log."""

    def __init__(self, bins: Path, d: Path, *, rpm: int | None, latency_ms=LATENCY_MS,
                 rpd: int | None = None, day_s: float | None = None, burst: tuple | None = None,
                 seed: int = 7):
        self.log = d / "fake-requests.jsonl"
        argv = [bins / "fake-gemini", "--log-requests", self.log, "--model", MODEL,
                "--seed", seed, "--latency-ms", latency_ms[0]]
        if latency_ms[1] != latency_ms[0]:
            argv += ["--latency-max-ms", latency_ms[1]]
        if rpm:
            argv += ["--rpm", rpm]
        if rpd:
            argv += ["--rpd", rpd, "--day-secs", day_s, "--rpd-retry-info"]
        if burst:
            argv += ["--burst-429", burst[0], "--burst-retry-delay", burst[1]]
        self.argv = " ".join(str(a) for a in argv[1:])
        self.proc = spawn(argv, None, d / "fake-gemini.stderr", stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()  # the fake prints this before serving
        if "listening on " not in line:
            stop(self.proc)
            raise RuntimeError(f"fake-gemini did not start ({line!r}): "
                               f"{(d / 'fake-gemini.stderr').read_text()[-1000:]}")
        self.url = line.split("listening on ", 1)[1].strip()
        self.tail = LogTail(self.log)

    def burst(self):
        self.proc.send_signal(signal.SIGUSR1)

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        if self.proc in LIVE:
            LIVE.remove(self.proc)
        self.tail.read()
        for line in (out or "").splitlines():
            if line.startswith("{"):
                return json.loads(line)
        return {}


class LogTail:
    """Reads the complete lines appended to a JSON-lines file since the last read."""

    def __init__(self, path: Path):
        self.path, self.offset, self.records = path, 0, []
        self.first_admit: float | None = None

    def read(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.records
        end = chunk.rfind(b"\n") + 1
        for line in chunk[:end].splitlines():
            if line.strip():
                self.records.append(json.loads(line))
        self.offset += end
        return self.records

    def first_admit_s(self) -> float | None:
        """Wall time (s) of the first admission, once there is one."""
        if self.first_admit is None:
            admits = [r["admit_ms"] for r in self.read() if r["admit_ms"] is not None]
            self.first_admit = min(admits) / 1000 if admits else None
        return self.first_admit


# ------------------------------------------------------------------- fleet ---

class Fleet:
    def __init__(self, bins: Path, env: dict, logs: Path):
        self.bins, self.env, self.logs = bins, env, logs
        self.procs: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, stage: str, n: int = 1, extra: dict | None = None):
        """Starts n workers of a stage and waits until each consumes."""
        env = dict(self.env, **(extra or {}))
        started = []
        for _ in range(n):
            log = self.logs / f"{stage}-{len(self.procs) + 1}.log"
            p = spawn([self.bins / f"engage-{stage}"], env, log)
            self.procs.append((stage, p, log))
            started.append((stage, p, log))
        for stage_, p, log in started:
            def ready(p=p, log=log, stage_=stage_):
                if p.poll() is not None:
                    raise RuntimeError(f"engage-{stage_} exited ({p.returncode}): "
                                       f"{ANSI.sub('', log.read_text(errors='replace'))[-2000:]}")
                return "consuming" in ANSI.sub("", log.read_text(errors="replace"))
            poll_until(f"engage-{stage_} to consume ({log})", 60, ready)

    def stop(self):
        for _, p, _ in self.procs:
            if p.poll() is None:
                p.terminate()
        for _, p, _ in self.procs:
            stop(p, grace=20)


# -------------------------------------------------------------------- data ---

# Real speech (2.7 s, 8 kHz mono, 44 KB): long enough and voiced enough to pass the
# analyze stage's pre-filter (>= 0.3 s, >= 0.1 s of voice), so every item is a paid call.
SPEECH = ROOT / "tests" / "fixtures" / "audio" / "speech_8k.wav"


def wav_bytes(i: int, base: array.array, rate: int) -> bytes:
    """The speech sample with i written into its first samples: distinct for every i."""
    frames = array.array("h", base)
    frames[0], frames[1], frames[2] = i & 0x3FFF, (i >> 14) & 0x3FFF, 0x1234
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames.tobytes())
    return buf.getvalue()


def write_distinct_audio(data: Path) -> int:
    """One distinct small WAV at every audio object the log links to (allowed bucket)."""
    with wave.open(str(SPEECH), "rb") as w:
        if (w.getnchannels(), w.getsampwidth()) != (1, 2):
            raise RuntimeError(f"{SPEECH}: expected 16-bit mono")
        rate = w.getframerate()
        tone = array.array("h", w.readframes(w.getnframes()))
    targets, _, _ = audio_links(str(data / "activity.jsonl"), {"learner-audio"})
    for i, (bucket, key) in enumerate(targets):
        path = data / "s3" / bucket / Path(*key.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav_bytes(i, tone, rate))
    return len(targets)


@dataclass
class Dataset:
    path: Path
    learners: int
    audio: int           # distinct audio the reference run paid for
    reference: Path      # the reference run's outputs
    summary: dict


def base_env(a, ns: str, d: Path, data: Path, fake_url: str, rpm: int) -> dict:
    env = fleet_env(ns, d / "store", data)
    env.update({
        "ENGAGE_AMQP_URL": a.amqp,
        "ENGAGE_REDIS_URL": a.redis,
        "ENGAGE_ANALYZER": "gemini",
        "GEMINI_API_KEY": API_KEY,
        "ENGAGE_GEMINI__BASE_URL": fake_url,
        "ENGAGE_GEMINI__MODEL": MODEL,
        "ENGAGE_GEMINI_RPM": str(rpm),
        "ENGAGE_GEMINI_TPM": "1000000000",
        "ENGAGE_GEMINI_RPD": "0",
        "ENGAGE_DRAIN_TIMEOUT_S": "5",
    })
    return env


def cleanup_namespace(a, ns: str):
    try:
        delete_queues(ns, int(a.amqp.rsplit(":", 1)[1].split("/")[0]))
    except Exception as e:  # noqa: BLE001 - best effort, reported
        print(f"  (could not delete the queues of {ns}: {e})", file=sys.stderr)
    try:
        delete_redis_keys(int(a.redis.rsplit(":", 1)[1].split("/")[0]), ns)
    except Exception as e:  # noqa: BLE001
        print(f"  (could not delete the Redis keys of {ns}: {e})", file=sys.stderr)


def reference_run(a, data: Path) -> tuple[int, Path, dict]:
    """The batch through the fleet against a fake with no quota and no latency:
    (distinct audio paid, outputs dir, summary)."""
    ns = f"gbench-ref-{uuid.uuid4().hex[:8]}"
    d = a.work / ns
    (d / "logs").mkdir(parents=True)
    fake = Fake(a.bins, d, rpm=None, latency_ms=(0, 0))
    fleet = Fleet(a.bins, base_env(a, ns, d, data, fake.url, 1_000_000), d / "logs")
    try:
        for s in BASE_STAGES:
            fleet.start(s)
        fleet.start("analyze", 2)
        batch = engage(a.bins, fleet.env, "enqueue", "--activity", str(data / "activity.jsonl"),
                       "--sessions", str(data / "sessions.csv")).strip()
        engage(a.bins, fleet.env, "status", batch, "--wait", "--timeout", "600")
        out = data / "reference-out"
        engage(a.bins, fleet.env, "report", batch, "--out", str(out))
    finally:
        fleet.stop()
        fake.stop()
        cleanup_namespace(a, ns)
    paid = {h for r in fake.tail.records if r["admit_ms"] is not None for h in r["audio"]}
    summary = json.loads((out / "summary.json").read_text())
    # Links to a bucket that is not allowed are part of the generated data; any
    # other failure means the audio did not reach Gemini.
    other = {k: v for k, v in summary.get("failed", {}).items() if k != "bucket_not_allowed"}
    if other or not summary.get("analyzed"):
        raise RuntimeError(f"the reference run analyzed {summary.get('analyzed')} items and "
                           f"failed {summary.get('failed')} (see {d / 'logs'})")
    return len(paid), out, summary


def existing_dataset(a, min_audio: int, max_audio: float) -> Dataset | None:
    """The smallest dataset already made with min_audio <= audio <= max_audio."""
    found = []
    for meta in a.work.glob("data-*/bench-meta.json"):
        m = json.loads(meta.read_text())
        if m.get("model") == MODEL and min_audio <= m["audio"] <= max_audio:
            found.append(Dataset(meta.parent, m["learners"], m["audio"],
                                 meta.parent / "reference-out", m["summary"]))
    return min(found, key=lambda x: x.audio, default=None)


def dataset(a, min_audio: int, any_size: bool = False) -> Dataset:
    """Generated data whose batch pays for at least `min_audio` distinct audio
    (and at most about 1.3x that unless `any_size`), made once and reused."""
    have = existing_dataset(a, min_audio, math.inf if any_size else max(1.3 * min_audio,
                                                                        min_audio + 30))
    if have:
        return have
    learners = max(10, math.ceil(min_audio / 5.0))
    for _ in range(4):
        data = a.work / f"data-{learners}"
        meta = data / "bench-meta.json"
        if not (data / "audio-written").exists():
            if data.exists():
                subprocess.run(["rm", "-rf", str(data)], check=True)
            engage(a.bins, dict(os.environ), "gen-data", "--learners", str(learners),
                   "--responses", "8", "--seed", "5", "--no-audio", "--out", str(data))
            write_distinct_audio(data)
            (data / "audio-written").touch()
        # The reference depends on the model (part of the analyzer id in the outputs).
        if not meta.exists() or json.loads(meta.read_text()).get("model") != MODEL:
            print(f"  reference run on {learners} learners ...", flush=True)
            if (data / "reference-out").exists():
                subprocess.run(["rm", "-rf", str(data / "reference-out")], check=True)
            n, out, summary = reference_run(a, data)
            meta.write_text(json.dumps({"learners": learners, "audio": n, "summary": summary,
                                        "model": MODEL}))
        m = json.loads(meta.read_text())
        print(f"  {learners} learners: {m['audio']} distinct audio", flush=True)
        if m["audio"] >= min_audio:
            return Dataset(data, learners, m["audio"], data / "reference-out", m["summary"])
        learners = math.ceil(learners * min_audio / max(1, m["audio"]) * 1.03) + 1
    raise RuntimeError(f"could not generate {min_audio} distinct audio")


# ---------------------------------------------------------------- measures ---

def occupancy(admits_s: list[float], q: int, t_from: float, t_to: float) -> float | None:
    """Mean of (admissions in (t - 60 s, t]) / q over t = t_from, t_from + 0.5 s, ... <= t_to."""
    if t_to < t_from or not admits_s:
        return None
    total, n, lo, hi = 0, 0, 0, 0
    t = t_from
    while t <= t_to + 1e-9:
        while hi < len(admits_s) and admits_s[hi] <= t:
            hi += 1
        while lo < hi and admits_s[lo] <= t - WINDOW_S:
            lo += 1
        total += hi - lo
        n += 1
        t += SAMPLE_S
    return total / n / q


def measure(records: list[dict], q: int | None) -> dict:
    admits = sorted(r["admit_ms"] / 1000 for r in records if r["admit_ms"] is not None)
    causes: dict[str, int] = {}
    for r in records:
        if r["status"] != 200 or r["cause"] != "ok":
            causes[r["cause"]] = causes.get(r["cause"], 0) + 1
    calls: dict[str, int] = {}
    paid: dict[str, int] = {}
    for r in records:
        for h in r["audio"]:
            calls[h] = calls.get(h, 0) + 1
            if r["admit_ms"] is not None:
                paid[h] = paid.get(h, 0) + 1
    m = {
        "requests": len(records),
        "paid": len(admits),
        "distinct_audio": len(calls),
        "causes": causes,
        "quota_429": sum(v for k, v in causes.items() if k.startswith("quota_")),
        "self_429": causes.get("quota_rpm", 0) + causes.get("quota_tpm", 0),
        "injected_429": causes.get("injected_429", 0),
        "max_calls_per_audio": max(calls.values(), default=0),
        "mean_calls_per_audio": (sum(calls.values()) / len(calls)) if calls else 0.0,
        "max_paid_per_audio": max(paid.values(), default=0),
        "mean_paid_per_audio": (sum(paid.values()) / len(paid)) if paid else 0.0,
        "first_admit": admits[0] if admits else None,
        "last_admit": admits[-1] if admits else None,
        "max_quota_retry_ms": max((r["retry_ms"] or 0 for r in records
                                   if r["cause"] in ("quota_rpm", "quota_tpm")), default=None),
    }
    if q and admits:
        m["quota_use"] = occupancy(admits, q, admits[0] + WINDOW_S, admits[-1])
    m["admits"] = admits
    return m


# --------------------------------------------------------------------- rows ---

@dataclass
class Row:
    key: str
    what: str
    q: int | None            # the fake's RPM quota (None: no quota)
    workers: int
    windows: float           # backlog in windows of Q (ignored by the seed row)
    fleet_rpm: int | None = None
    concurrency: int | None = None   # analyze workers' ENGAGE_CONCURRENCY
    seed_for_s: float | None = None  # seed row: measure this long, then stop
    burst: tuple | None = None       # (n, retryDelay, seconds after the first admission)
    scale_to: int | None = None      # analyze workers after `scale_after_s`
    scale_after_s: float = 120.0
    rpd: tuple | None = None         # (RPD, day seconds)
    target: bool = False             # a quota-use target row
    result: dict = field(default_factory=dict)


def rows_for(quick: bool) -> list[Row]:
    if quick:
        return [
            Row("seed", "seed rate: 1 analyze worker, ENGAGE_CONCURRENCY=1, no quota", None, 1, 0,
                fleet_rpm=1000, concurrency=1, seed_for_s=45),
            Row("q120-w4", "steady backlog, Q=120, 4 analyze workers", 120, 4, 2, target=True),
            Row("burst", "Q=120, 4 workers, burst of 4 injected 429s (retryDelay 10s) mid-run",
                120, 4, 2, burst=(4, "10s", 59.5)),
        ]
    return [
        Row("seed", "seed rate: 1 analyze worker, ENGAGE_CONCURRENCY=1, no quota", None, 1, 0,
            fleet_rpm=1000, concurrency=1, seed_for_s=180),
        Row("q40-w4", "steady backlog, Q=40, 4 analyze workers", 40, 4, 5, target=True),
        Row("q40-w8", "steady backlog, Q=40, 8 analyze workers", 40, 8, 5, target=True),
        Row("q120-w4", "steady backlog, Q=120, 4 analyze workers", 120, 4, 5, target=True),
        Row("q120-w8", "steady backlog, Q=120, 8 analyze workers", 120, 8, 5, target=True),
        Row("burst", "Q=120, 4 workers, burst of 8 injected 429s (retryDelay 10s) mid-run",
            120, 4, 5, burst=(8, "10s", 119.5)),
        Row("scale", "Q=120, analyze workers 1 -> 4 two minutes after the first call",
            120, 1, 5, scale_to=4, scale_after_s=120.0),
        Row("rpd", "Q=120, 4 workers, per-day quota 150 per 120 s day, exhausted and resumed",
            120, 4, 5 / 3, rpd=(150, 120.0)),
    ]


def run_row(a, row: Row, data: Dataset) -> dict:
    ns = f"gbench-{row.key}-{uuid.uuid4().hex[:6]}"
    d = a.work / ns
    (d / "logs").mkdir(parents=True)
    fake = Fake(a.bins, d, rpm=row.q, rpd=row.rpd[0] if row.rpd else None,
                day_s=row.rpd[1] if row.rpd else None,
                burst=row.burst[:2] if row.burst else None)
    env = base_env(a, ns, d, data.path, fake.url, row.fleet_rpm or row.q)
    fleet = Fleet(a.bins, env, d / "logs")
    analyze_env = {"ENGAGE_CONCURRENCY": str(row.concurrency)} if row.concurrency else None
    res: dict = {"namespace": ns, "fake": fake.argv, "audio_in_batch": data.audio,
                 "events": []}
    status = None
    try:
        for s in BASE_STAGES:
            fleet.start(s)
        fleet.start("analyze", row.workers, analyze_env)
        if row.seed_for_s:
            timeout = row.seed_for_s + 120
        elif row.rpd:
            timeout = math.ceil(data.audio / row.rpd[0]) * row.rpd[1] + 180
        else:
            minimum = data.audio / row.q * 60
            timeout = max(3 * minimum, minimum + 240)
        t0 = time.time()
        batch = engage(a.bins, env, "enqueue", "--activity", str(data.path / "activity.jsonl"),
                       "--sessions", str(data.path / "sessions.csv")).strip()
        res["batch"] = batch
        status_out = d / "status.txt"
        status = spawn([a.bins / "engage", "status", batch, "--wait", "--timeout", int(timeout)],
                       env, d / "status.stderr", stdout=status_out)
        burst_done = scale_done = False
        complete = False
        last_resume = 0.0
        while True:
            rc = status.poll()
            if rc is not None:
                complete = rc == 0
                break
            now = time.time()
            fake.tail.read()  # first_admit_s() stops reading once it has its answer
            first = fake.tail.first_admit_s()
            if row.seed_for_s and first and now >= first + row.seed_for_s:
                res["events"].append(f"stopped after {row.seed_for_s:.0f} s of calls")
                break
            if row.burst and not burst_done and first and now >= first + row.burst[2]:
                fake.burst()
                burst_done = True
                res["t_burst"] = now
                res["events"].append(f"SIGUSR1 burst at +{now - first:.1f} s after the first call")
            if row.scale_to and not scale_done and first and now >= first + row.scale_after_s:
                fleet.start("analyze", row.scale_to - row.workers, analyze_env)
                scale_done = True
                res["t_scale"] = time.time()
                res["events"].append(f"analyze workers {row.workers} -> {row.scale_to} at "
                                     f"+{res['t_scale'] - first:.1f} s (consuming)")
            if row.rpd:
                # The fleet pauses on a per-day 429 until midnight Pacific, as
                # it would with Google. The operator's move once the quota is
                # back (here: the fake's short day has rolled over, which its
                # RetryInfo says) is `engage resume`.
                day_429 = [r for r in fake.tail.records
                           if r["cause"] == "quota_rpd" and r["t_ms"] / 1000 > last_resume]
                if day_429 and "paused_status" not in res and now >= day_429[0]["t_ms"] / 1000 + 2:
                    line = engage(a.bins, env, "status", batch).strip().splitlines()
                    res["paused_status"] = line[-1] if line else ""
                    res["events"].append(f"`engage status` while paused: `{res['paused_status']}`")
                if day_429:
                    due = max(r["t_ms"] / 1000 + (r["retry_ms"] or 0) / 1000 for r in day_429)
                    if now >= due + 0.5:
                        said = engage(a.bins, env, "resume").strip()
                        last_resume = time.time()
                        res.setdefault("resumes", []).append(last_resume)
                        res["events"].append(f"`engage resume` at +{last_resume - (first or t0):.1f} s "
                                             f"after the first call: {said}")
            if fake.proc.poll() is not None:
                raise RuntimeError(f"fake-gemini exited ({fake.proc.returncode})")
            time.sleep(0.2)
        t_end = time.time()
        res["wall_s"] = t_end - t0
        res["complete"] = complete
        lines = status_out.read_text(errors="replace").strip().splitlines()
        res["status_line"] = lines[-2] if len(lines) >= 2 else (lines[-1] if lines else "")
        if complete:
            out = d / "out"
            engage(a.bins, env, "report", batch, "--out", str(out))
            diff = same_outputs(data.reference, out)
            summary = json.loads((out / "summary.json").read_text())
            res["outputs_equal"] = not diff
            res["outputs_diff"] = diff
            # Failed items beyond the reference's own (links to disallowed buckets).
            res["failed"] = {k: v - data.summary.get("failed", {}).get(k, 0)
                             for k, v in summary.get("failed", {}).items()
                             if v != data.summary.get("failed", {}).get(k, 0)}
            res["analyzed"] = summary.get("analyzed")
            res["cost"] = summary.get("cost", {})
    finally:
        if status is not None:
            stop(status, grace=2)
        fleet.stop()
        res["fake_stats"] = fake.stop()
        cleanup_namespace(a, ns)
    m = measure(fake.tail.records, row.q)
    res.update(m)
    admits = m["admits"]
    if row.seed_for_s and admits:
        span_end = admits[0] + row.seed_for_s
        n = sum(1 for t in admits if t < span_end)
        res["calls_per_min"] = n / row.seed_for_s * 60
    elif admits and res.get("wall_s"):
        res["calls_per_min"] = m["paid"] / res["wall_s"] * 60
    if row.q and m["paid"]:
        # paid/Q minutes (the brief's figure), and the exact physical minimum of a
        # sliding window: the last call cannot be admitted before floor((paid-1)/Q)
        # windows have passed, and takes at least the shortest service time.
        res["paid_over_q_s"] = m["paid"] / row.q * 60
        res["minimum_s"] = (m["paid"] - 1) // row.q * WINDOW_S + LATENCY_MS[0] / 1000
        if row.rpd:  # the day quota binds: calls beyond RPD wait for the day window
            res["minimum_s"] = max(res["minimum_s"], (m["paid"] - 1) // row.rpd[0] * row.rpd[1]
                                   + LATENCY_MS[0] / 1000)
    if row.scale_to and "t_scale" in res and admits:
        res["use_before_scale"] = occupancy(admits, row.q, admits[0] + WINDOW_S, res["t_scale"])
        res["use_after_scale"] = occupancy(admits, row.q, max(res["t_scale"], admits[0] + WINDOW_S),
                                           admits[-1])
    if row.rpd:
        rpd429 = sorted((r["t_ms"] / 1000, r["retry_ms"]) for r in fake.tail.records
                        if r["cause"] == "quota_rpd")
        if rpd429:
            t429, retry_ms = rpd429[0]
            after = [t for t in admits if t > t429]
            res["rpd_first_429_after_s"] = t429 - admits[0]
            res["rpd_retry_s"] = (retry_ms or 0) / 1000
            res["rpd_resumed_after_s"] = (after[0] - t429) if after else None
    if row.burst and "t_burst" in res:
        inj = sorted(r["t_ms"] / 1000 for r in fake.tail.records if r["cause"] == "injected_429")
        if inj:
            after = [t for t in admits if t > inj[-1]]
            res["burst_first_429_s"] = inj[0] - res["t_burst"]
            res["burst_last_429_to_next_call_s"] = (after[0] - inj[-1]) if after else None
            res["burst_span_s"] = inj[-1] - inj[0]
    del res["admits"]
    return res


# ------------------------------------------------------------------ report ---

def pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def num(v, fmt="{:.1f}") -> str:
    return "–" if v is None else fmt.format(v)


def render(a, rows: list[Row], seed_rate: float | None, started: dt.datetime, wall: float) -> str:
    mode = "quick" if a.quick else "full"
    cmd = "bench/gemini/quota_bench.py " + " ".join(sys.argv[1:])
    L = [
        "# Gemini quota benchmark (the product)",
        "",
        f"**Mode: {mode}**" + (" — a smoke run with short backlogs (2 windows, so quota use is "
                               "measured over about one window); not the product figure."
                               if a.quick else "."),
        "",
        f"Command: `{cmd}` — started {started:%Y-%m-%d %H:%M} UTC, {wall / 60:.1f} min wall, "
        f"{os.cpu_count()} cores, binaries `{a.bins}`.",
        "",
        "The five real worker binaries over RabbitMQ and Redis (a fresh namespace per row), "
        "`ENGAGE_ANALYZER=gemini`, `ENGAGE_GEMINI_RPM=Q` (the fake's quota), against `fake-gemini` "
        "(a fresh process per row): quota Q requests per sliding 60 s window, service time uniform "
        f"{LATENCY_MS[0] / 1000:g}–{LATENCY_MS[1] / 1000:g} s. Every audio is a distinct 2.7 s speech WAV, so "
        "each costs exactly one paid call. See README.md for the definitions.",
        "",
        "- **quota use**: mean of (requests the fake's quota admitted in the last 60 s) / Q, "
        "sampled every 0.5 s from the first admission + 60 s to the last admission. *Admitted* = "
        "counted by the fake's quota (entered its sliding window); quota-rejected and injected 429s "
        "are not counted. 100% = no permitted call left unmade.",
        "- **429s**: quota = produced by the fake's limiter (`rpm`/`tpm`: the fleet exceeded the "
        "quota it was told; `rpd`: the per-day quota, which the fleet was not told); injected = "
        "scripted faults.",
        "- **calls / audio**: all generateContent requests per distinct audio (max / mean); "
        "**paid / audio**: admitted requests per audio (max; must be 1).",
        "- **wall ÷ min**: enqueue → batch complete, ÷ the physical minimum of a sliding window: "
        "⌊(paid − 1) / Q⌋ windows + the shortest service time (1 s); **paid/Q** = paid calls / Q "
        "minutes is shown beside it (it overstates the minimum by up to one window).",
        "- **calls/min**: paid calls ÷ wall; **× seed**: ÷ the seed row's rate "
        + (f"({seed_rate:.1f} calls/min)." if seed_rate else "(not measured)."),
        "",
        "| row | what | Q (RPM) | analyze workers | distinct audio called | quota use | 429 quota (rpm/tpm/rpd) "
        "| 429 injected | calls / audio (max / mean) | paid / audio (max) | wall (s) | paid/Q (s) "
        "| min (s) | wall ÷ min | calls/min | × seed | batch = reference |",
        "|---|---|---:|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        x = r.result
        if not x:
            continue
        if "error" in x:
            L.append(f"| {r.key} | {r.what} | {r.q or '–'} | {r.workers} | – | ERROR: "
                     f"{x['error']} |" + " |" * 11)
            continue
        c = x.get("causes", {})
        q429 = f"{c.get('quota_rpm', 0)}/{c.get('quota_tpm', 0)}/{c.get('quota_rpd', 0)}"
        workers = f"{r.workers} → {r.scale_to}" if r.scale_to else str(r.workers)
        if r.concurrency:
            workers += f" (concurrency {r.concurrency})"
        if r.seed_for_s:
            batch = f"n/a (stopped after {r.seed_for_s:.0f} s)"
        elif not x.get("complete"):
            batch = "NOT COMPLETE"
        elif x.get("outputs_equal") and not x.get("failed"):
            batch = "yes"
        else:
            batch = f"NO: differs {x.get('outputs_diff')}, failed {x.get('failed')}"
        use = pct(x.get("quota_use")) if r.q and not r.rpd else "– (day-bound)" if r.rpd else "–"
        if r.scale_to:
            use += f" (1 worker {pct(x.get('use_before_scale'))}, {r.scale_to}: " \
                   f"{pct(x.get('use_after_scale'))})"
        rate = x.get("calls_per_min")
        ratio = (x["wall_s"] / x["minimum_s"]) if x.get("minimum_s") and x.get("wall_s") \
            and not r.seed_for_s else None
        L.append(
            f"| {r.key} | {r.what} | {r.q or 'none'} | {workers} | {x.get('distinct_audio', '–')} | "
            f"{use} | {q429} | {x.get('injected_429', 0)} | "
            f"{x.get('max_calls_per_audio', 0)} / {x.get('mean_calls_per_audio', 0):.2f} | "
            f"{x.get('max_paid_per_audio', 0)} | {num(x.get('wall_s'))} | "
            f"{num(x.get('paid_over_q_s')) if not r.seed_for_s else '–'} | "
            f"{num(x.get('minimum_s')) if not r.seed_for_s else '–'} | {num(ratio, '{:.2f}')} | "
            f"{num(rate)} | {num(rate / seed_rate if rate and seed_rate else None, '{:.2f}')} | "
            f"{batch} |")
    L += ["", "## Targets", ""]
    targets = [r for r in rows if r.target]
    for want in ([("q40-w4", 40, 4), ("q40-w8", 40, 8), ("q120-w4", 120, 4), ("q120-w8", 120, 8)]):
        r = next((r for r in targets if r.key == want[0]), None)
        if r is None or not r.result or "error" in r.result:
            L.append(f"- quota use ≥ 97% at Q={want[1]}, {want[2]} workers: **NOT RUN**"
                     + (" (quick mode)" if a.quick and r is None else
                        f" ({r.result.get('error')})" if r and r.result else ""))
            continue
        u = r.result.get("quota_use")
        ok = u is not None and u >= TARGET_USE
        L.append(f"- quota use ≥ 97% at Q={want[1]}, {want[2]} workers: "
                 f"**{'PASS' if ok else 'MISS'}** ({pct(u)})")
    ran = [r for r in rows if r.result and "error" not in r.result]
    self429 = sum(r.result.get("self_429", 0) for r in ran)
    L.append(f"- zero self-caused 429s (quota `rpm`/`tpm` 429s from the fake's limiter, all rows): "
             f"**{'PASS' if ran and self429 == 0 else 'MISS'}** ({self429}"
             + (": " + ", ".join(f"{r.key} {r.result['self_429']} (longest retryDelay "
                                 f"{num(r.result.get('max_quota_retry_ms'), '{:.0f}')} ms)"
                                 for r in ran if r.result.get("self_429")) if self429 else "")
             + ")")
    twice = max((r.result.get("max_paid_per_audio", 0) for r in ran), default=0)
    L.append(f"- no audio paid twice (all rows): **{'PASS' if ran and twice <= 1 else 'MISS'}** "
             f"(most paid calls for one audio: {twice})")
    batches = [r for r in ran if not r.seed_for_s]
    bad = [r.key for r in batches if not (r.result.get("complete") and r.result.get("outputs_equal")
                                          and not r.result.get("failed"))]
    L.append(f"- every batch complete, outputs = reference, no failed item: "
             f"**{'PASS' if batches and not bad else 'MISS'}**" + (f" ({', '.join(bad)})" if bad else ""))
    rpd = next((r for r in ran if r.rpd), None)
    if rpd:
        resumed = rpd.result.get("rpd_resumed_after_s")
        L.append(f"- per-day quota exhausted → the fleet pauses and resumes when the day frees "
                 f"(`rpd` row): **{'PASS' if resumed is not None and rpd.result.get('complete') else 'MISS'}**"
                 + (f" (resumed {resumed:.1f} s after the first per-day 429, which said "
                    f"{rpd.result.get('rpd_retry_s', 0):.1f} s)" if resumed is not None
                    else " (no call after the first per-day 429 before the row's deadline)"
                    if "rpd_first_429_after_s" in rpd.result else " (never exhausted)"))
    L += ["", "## Events", ""]
    for r in ran:
        x = r.result
        ev = list(x.get("events", []))
        if r.burst and "burst_first_429_s" in x:
            ev.append(f"{x['injected_429']} injected 429s answered over {x['burst_span_s']:.1f} s "
                      f"(first {x['burst_first_429_s']:.2f} s after the signal); next paid call "
                      f"{num(x.get('burst_last_429_to_next_call_s'), '{:.2f}')} s after the last one "
                      f"(retryDelay {r.burst[1]})")
        if r.rpd:
            if "rpd_first_429_after_s" in x:
                res_after = x.get("rpd_resumed_after_s")
                ev.append(f"per-day quota ({r.rpd[0]} per {r.rpd[1]:.0f} s day) first exhausted "
                          f"{x['rpd_first_429_after_s']:.1f} s after the first call; its 429 said "
                          f"RetryInfo {x['rpd_retry_s']:.1f} s; "
                          + (f"the fleet resumed {res_after:.1f} s later" if res_after is not None
                             else "**the fleet did not resume before the row's deadline**"))
            else:
                ev.append("the per-day quota was never exhausted")
        if x.get("status_line"):
            ev.append(f"last status: `{x['status_line']}`")
        ev.append(f"fake: `fake-gemini {x.get('fake')}`; namespace `{x.get('namespace')}`")
        L.append(f"- **{r.key}**: " + "; ".join(ev))
    L.append("")
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short rows, about 6 minutes")
    ap.add_argument("--bins", type=Path, default=ROOT / "target" / "release")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "data" / "gemini")
    ap.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/%2f")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379")
    ap.add_argument("--only", help="comma-separated row keys (default: all of the mode's rows)")
    a = ap.parse_args()
    a.bins, a.work = a.bins.resolve(), a.work.resolve()
    for b in ["engage", "fake-gemini", *(f"engage-{s}" for s in [*BASE_STAGES, "analyze"])]:
        if not (a.bins / b).is_file():
            print(f"missing {a.bins / b}: cargo build --release --workspace --bins", file=sys.stderr)
            return 2
    a.work.mkdir(parents=True, exist_ok=True)
    global MODEL
    MODEL = product_model(a.bins)
    print(f"model: {MODEL} (the binaries' default)", flush=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    rows = rows_for(a.quick)
    if a.only:
        keep = set(a.only.split(","))
        rows = [r for r in rows if r.key in keep]
    started = dt.datetime.now(dt.timezone.utc)
    t_start = time.monotonic()
    seed_rate = None

    def need(r: Row) -> int:
        # The seed row: enough work for its measured span (about 13 calls a minute).
        return int(r.seed_for_s / 60 * 20) + 20 if r.seed_for_s else math.ceil(r.windows * r.q)

    try:
        for n in sorted({need(r) for r in rows if not r.seed_for_s}):
            print(f"data for >= {n} distinct audio", flush=True)
            dataset(a, n)
        for r in rows:
            data = dataset(a, need(r), any_size=bool(r.seed_for_s))
            print(f"[{r.key}] running on {data.audio} audio ({data.learners} learners)", flush=True)
            try:
                r.result = run_row(a, r, data)
            except (RuntimeError, TimeoutError) as e:
                r.result = {"error": str(e)[:300]}
            if r.seed_for_s and r.result.get("calls_per_min"):
                seed_rate = r.result["calls_per_min"]
            x = r.result
            print(f"[{r.key}] " + (f"ERROR {x['error']}" if "error" in x else
                  f"use {pct(x.get('quota_use'))}, 429 {x.get('causes')}, paid {x.get('paid')}, "
                  f"max paid/audio {x.get('max_paid_per_audio')}, wall {num(x.get('wall_s'))} s, "
                  f"complete {x.get('complete')}, equal {x.get('outputs_equal')}"), flush=True)
            (a.work / "results.json").write_text(json.dumps(
                {r.key: r.result for r in rows if r.result}, indent=1, default=str))
    except KeyboardInterrupt:
        print("interrupted: stopping every process started", file=sys.stderr)
        kill_all()
        return 130
    finally:
        kill_all()
    text = render(a, rows, seed_rate, started, time.monotonic() - t_start)
    a.results.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
